"""Processes ending and pipes closing: clear messages and exit codes, never a traceback."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    BANGOR,
    Client,
    LineReader,
    ServerProcess,
    client_env,
    free_port,
    start_bangor,
)

pytestmark = pytest.mark.integration

SHUTDOWN_NOTICED = 4.0  # seconds from the server's signal to each client's exit
QUIET = ("--input", "silence", "--output", "null")
# These calls end with the server (tests/integration/test_reconnect.py has the ones that
# outlive it).
NO_RECONNECT = ("--reconnect-for", "0")


def quiet_join(server: ServerProcess, invite: str, user: str) -> Client:
    client = server.join(invite, user, *QUIET, *NO_RECONNECT)
    client.event("joined")
    return client


def no_traceback(lines: list[str]) -> bool:
    return not any("Traceback" in line for line in lines)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_server_ends_every_call_with_exit_5(
    server: ServerProcess, sig: signal.Signals
) -> None:
    server.add_user("alice")
    server.add_user("bob")
    invite = server.create_room("alice")
    clients = [quiet_join(server, invite, user) for user in ("alice", "bob")]
    server.proc.send_signal(sig)
    started = time.monotonic()
    for client in clients:
        assert client.wait(timeout=15) == 5, client.stderr.seen
        assert time.monotonic() - started < SHUTDOWN_NOTICED
        assert "error: the server is shutting down" in client.stderr.seen
        assert no_traceback(client.stderr.seen)
        reason = "the server is shutting down"
        assert client.events()[-2:] == [
            {"event": "left", "reason": reason},
            {"event": "error", "code": 5, "message": reason},
        ]
    assert server.proc.wait(10) == 0
    lines = server.stderr.rest()
    assert no_traceback(lines), lines
    assert lines[-1] == "bangor.server: stopped"


def test_stopping_a_host_ends_its_guests_calls_with_exit_5(tmp_path: Path) -> None:
    port = free_port()
    hoster = start_bangor(
        ["host", "--port", str(port), "--user", "hoster", "--json", *QUIET],
        tmp_path / "host",
    )
    code = hoster.event("invite")["invite"]
    assert isinstance(code, str)
    hoster.event("joined")
    guest = start_bangor(
        ["join", code, "--user", "guest", "--json", *QUIET, *NO_RECONNECT],
        tmp_path / "guest",
    )
    guest.event("joined")
    hoster.proc.send_signal(signal.SIGTERM)
    assert hoster.wait() == 0, hoster.stderr.seen
    assert guest.wait() == 5, guest.stderr.seen
    assert "error: the server is shutting down" in guest.stderr.seen
    assert no_traceback(hoster.stderr.seen + guest.stderr.seen)


def read_one_line_and_close(args: list[str], home: Path) -> tuple[str, int, list[str]]:
    """What ``bangor ARGS | head -1`` does to bangor: its first line, then the reader goes."""
    env = client_env(home, "")
    env.pop("BANGOR_PASSWORD")
    proc = subprocess.Popen(
        [BANGOR, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    stderr = LineReader(proc.stderr)
    first = proc.stdout.readline()
    proc.stdout.close()
    code = proc.wait(timeout=20)  # the next event (at most one stats period) finds the pipe gone
    return first, code, stderr.rest()


@pytest.fixture
def open_invite(tmp_path: Path) -> Iterator[str]:
    hoster = start_bangor(
        ["host", "--port", str(free_port()), "--user", "hoster", "--json", *QUIET],
        tmp_path / "host",
    )
    invite = hoster.event("invite")["invite"]
    assert isinstance(invite, str)
    hoster.event("joined")
    yield invite
    hoster.proc.send_signal(signal.SIGTERM)
    assert hoster.wait() == 0
    assert no_traceback(hoster.stderr.seen), hoster.stderr.seen


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_join_into_head_ends_without_a_traceback(
    open_invite: str, tmp_path: Path, as_json: bool
) -> None:
    args = ["join", open_invite, "--user", "piped", "--headless", *QUIET]
    args += ["--json"] if as_json else []
    first, code, stderr = read_one_line_and_close(args, tmp_path / "piped")
    assert first.startswith('{"event": ') == as_json and first.strip(), first
    assert code == 1  # Python's recipe for a closed pipe: no traceback, status 1
    assert no_traceback(stderr), stderr


def test_host_into_head_ends_without_a_traceback(tmp_path: Path) -> None:
    args = ["host", "--port", str(free_port()), "--user", "hoster", "--json"]
    first, code, stderr = read_one_line_and_close([*args, *QUIET], tmp_path / "host")
    assert first.startswith('{"event": "invite"'), first
    assert code == 1
    assert no_traceback(stderr), stderr
