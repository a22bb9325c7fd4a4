"""`bangor host` (an embedded open server) and `bangor serve --open`, as users run them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.audiocheck import make_speech_wav, read_wav_48k
from tests.integration.conftest import (
    Client,
    ServerProcess,
    free_port,
    run_bangor,
    start_bangor,
    start_server,
    stop_server,
)
from tests.integration.test_call import SPEECH, assert_same_speech

pytestmark = pytest.mark.integration


def host(home: Path, port: int, *args: str, prefix: tuple[str, ...] = ()) -> tuple[Client, str]:
    """Start ``bangor host`` and return it with the invite code it announced."""
    proc = start_bangor(
        ["host", "--port", str(port), "--user", "hoster", "--json", *args], home, prefix=prefix
    )
    invite = proc.event("invite")
    assert invite["port"] == port
    code = invite["invite"]
    assert isinstance(code, str) and code.startswith("bangor:")
    return proc, code


def test_a_friend_joins_the_host_with_the_code_alone_and_is_heard(tmp_path: Path) -> None:
    speech = tmp_path / "speech.wav"
    make_speech_wav(speech, SPEECH)
    reference = read_wav_48k(speech)
    seconds = len(reference) / 48000
    heard = tmp_path / "host.wav"
    hoster, code = host(
        tmp_path / "host",
        free_port(),
        *("--input", "silence", "--output", str(heard), "--duration", str(seconds + 5)),
    )
    hoster.event("joined")
    # No account, no password anywhere: the invite is enough.
    guest = start_bangor(
        [
            "join",
            code,
            "--user",
            "guest",
            "--json",
            "--input",
            str(speech),
            *("--output", "null", "--duration", str(seconds + 1.5)),
        ],
        tmp_path / "guest",
    )
    assert guest.event("joined")["room"] == "bangor"
    assert guest.wait() == 0, guest.stderr.seen
    assert hoster.wait() == 0, hoster.stderr.seen
    assert not any("Traceback" in line for line in hoster.stderr.seen)
    assert_same_speech(reference, read_wav_48k(heard))


def test_the_host_keeps_its_invite_and_room_secret_private(tmp_path: Path) -> None:
    home = tmp_path / "host"
    port = free_port()
    codes = []
    for _ in range(2):
        proc, code = host(home, port, "--input", "silence", "--output", "null", "--duration", "1")
        assert proc.wait() == 0
        codes.append(code)
    assert codes[0] == codes[1]  # friends keep the code they were given
    room_file = home / "host" / "room.json"
    assert stat.S_IMODE(os.stat(room_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home / "host" / "server.key").st_mode) == 0o600
    # Plain output: the invite alone on the first line, for scripts and for copying.
    plain = start_bangor(
        [
            "host",
            "--port",
            str(port),
            "--user",
            "hoster",
            "--input",
            "silence",
            *("--output", "null", "--duration", "1"),
        ],
        home,
    )
    assert plain.wait() == 0
    assert plain.stdout.seen[0] == codes[0]


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        proc = start_bangor(["host", "--port", str(server.port)], tmp_path / "host")
        assert proc.wait() == 1
        assert any("cannot listen on port" in line for line in proc.stderr.seen)
        assert not any("Traceback" in line for line in proc.stderr.seen)
    finally:
        stop_server(server)


def test_an_open_server_needs_no_accounts(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "server"
    serve = start_bangor(
        ["serve", "--open", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data)],
        tmp_path / "admin",
    )
    try:
        serve.stderr.wait_for(lambda line: "listening on" in line)
        assert any("open mode" in line for line in serve.stderr.seen)
        env = {k: v for k, v in os.environ.items() if k != "BANGOR_PASSWORD"}
        env["BANGOR_HOME"] = str(tmp_path / "anyone")
        created = run_bangor(
            ["room", "create", "games", "--server", f"127.0.0.1:{port}", "--user", "anyone"],
            env=env,
        )
        assert created.returncode == 0, created.stderr
        code = created.stdout.strip()
        joined = run_bangor(
            [
                "join",
                code,
                "--user",
                "someone",
                "--json",
                "--input",
                "silence",
                *("--output", "null", "--duration", "1"),
            ],
            env=env,
        )
        assert joined.returncode == 0, joined.stderr
        assert '"event": "joined"' in joined.stdout
    finally:
        serve.proc.terminate()
        assert serve.wait() == 0


def test_a_server_with_accounts_asks_for_the_password_and_counts_no_failure(
    server: ServerProcess, tmp_path: Path
) -> None:
    server.add_user("alice")
    invite = server.create_room("alice")
    env = {k: v for k, v in os.environ.items() if k != "BANGOR_PASSWORD"}
    env["BANGOR_HOME"] = str(tmp_path / "alice")
    for _ in range(5):  # more than the free failures: none of these may count
        result = run_bangor(["join", invite, "--user", "alice", "--headless"], env=env)
        assert result.returncode == 1
        assert "set BANGOR_PASSWORD" in result.stderr
        assert "Traceback" not in result.stderr
    ok = server.join(invite, "alice", "--input", "silence", "--output", "null", "--duration", "1")
    assert ok.wait() == 0, ok.stderr.seen  # not locked out
    assert not any("login failed" in line for line in server.stderr.rest(timeout=1))
