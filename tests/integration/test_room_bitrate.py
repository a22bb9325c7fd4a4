"""A room's bitrate cap, end to end: `room create --max-bitrate` to a joiner's encoder."""

from __future__ import annotations

import pytest

from bangor.cli import main
from bangor.errors import ExitCode
from tests.integration.conftest import Client, ServerProcess, run_bangor

pytestmark = pytest.mark.integration


def sending_bitrate(client: Client) -> float:
    """The bitrate a joined client reports in its first stats event (5 s after joining)."""
    stats = client.event("stats", timeout=30)
    assert client.wait() == 0, client.stderr.seen
    sending = stats["sending"]
    assert isinstance(sending, dict)
    bitrate = sending["bitrate"]
    assert isinstance(bitrate, int | float)
    return bitrate


def test_room_cap_holds_the_joiner_below_its_own_bitrate(server: ServerProcess) -> None:
    for user in ("alice", "bob", "carol", "dave"):
        server.add_user(user)
    capped = server.create_room("alice", "capped", args=["--max-bitrate", "16000"])
    free = server.create_room("alice", "free")
    quiet = ("--input", "silence", "--output", "null", "--duration", "6")
    # Three calls at once (the first periodic stats event takes 5 s).
    bob = server.join(capped, "bob", "--bitrate", "40000", *quiet)
    carol = server.join(free, "carol", "--bitrate", "40000", *quiet)
    dave = server.join(capped, "dave", "--bitrate", "12000", *quiet)
    assert sending_bitrate(bob) == 16000  # the room's cap wins over --bitrate
    assert sending_bitrate(carol) == 40000  # no cap: as asked
    assert sending_bitrate(dave) == 12000  # below the cap the client's choice stands


@pytest.mark.parametrize("value", ["5999", "510001", "0", "16k"])
def test_max_bitrate_out_of_range_is_a_usage_error(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["room", "create", "r", "--server", "127.0.0.1:1", "--max-bitrate", value])
    assert info.value.code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "--max-bitrate" in err
    assert "6000..510000 bit/s" in err or "not a whole number" in err


def test_max_bitrate_in_help() -> None:
    result = run_bangor(["room", "create", "--help"], check=True)
    assert "--max-bitrate BPS" in result.stdout
