"""Processes ending and pipes closing: clear messages and exit codes, never a traceback."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.integration.conftest import (
    Client,
    ServerProcess,
    free_port,
    start_bangor,
)

pytestmark = pytest.mark.integration

SHUTDOWN_NOTICED = 4.0  # seconds from the server's signal to each client's exit
QUIET = ("--input", "silence", "--output", "null")


def quiet_join(server: ServerProcess, invite: str, user: str) -> Client:
    client = server.join(invite, user, *QUIET)
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
        ["join", code, "--user", "guest", "--json", *QUIET],
        tmp_path / "guest",
    )
    guest.event("joined")
    hoster.proc.send_signal(signal.SIGTERM)
    assert hoster.wait() == 0, hoster.stderr.seen
    assert guest.wait() == 5, guest.stderr.seen
    assert "error: the server is shutting down" in guest.stderr.seen
    assert no_traceback(hoster.stderr.seen + guest.stderr.seen)
