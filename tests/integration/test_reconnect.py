"""Calls survive the server: a restart mid-call, a server that stays away, a clean leave."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from bangor.client.media import host_addresses
from tests.audiocheck import longest_gap_ms, read_wav_48k, tone_present
from tests.integration.conftest import Client, ServerProcess, start_server

pytestmark = pytest.mark.integration

TONE_HZ = 440


def restart(server: ServerProcess, tmp_path: Path) -> ServerProcess:
    """Tell the server it restarts (SIGUSR1), wait for it to end, start it again on the
    same port and data directory (so the same key)."""
    server.proc.send_signal(signal.SIGUSR1)
    assert server.proc.wait(10) == 0  # the fixture checks its log for tracebacks
    return start_server(tmp_path, port=server.port)


def call_through_restart(
    server: ServerProcess, tmp_path: Path, *args: str
) -> tuple[Client, Client, ServerProcess]:
    """alice plays a tone to bob, who writes what he hears; the server restarts mid-call.
    Returns both clients (exited 0) and the new server."""
    server.add_user("alice")
    server.add_user("bob")
    invite = server.create_room("alice")
    common = ("--vad", "off", "--duration", "9", *args)
    bob = server.join(
        invite, "bob", "--input", "silence", "--output", str(tmp_path / "bob.wav"), *common
    )
    bob.event("joined")
    alice = server.join(invite, "alice", "--input", f"tone:{TONE_HZ}", "--output", "null", *common)
    alice.event("joined")
    bob.event("member_verified")
    want = "direct" if "--relay-only" not in args else "relay"
    bob.stdout.wait_for(lambda line: f'"path": "{want}"' in line)
    time.sleep(1)  # a second of tone on the path before the restart
    new = restart(server, tmp_path)
    try:
        for client in (alice, bob):
            trying = client.event("reconnecting")
            assert trying["attempt"] == 1 and "restarting" in str(trying["reason"])
            back = client.event("reconnected", timeout=10)
            assert back["resumed"] is True  # the same session id: keys and paths went on
        assert alice.wait() == 0, alice.stderr.seen
        assert bob.wait() == 0, bob.stderr.seen
    except BaseException:
        new.proc.kill()
        raise
    return alice, bob, new


def tone_gap_ms(path: Path) -> int:
    heard = tone_present(read_wav_48k(path), TONE_HZ)
    assert heard.sum() * 10 > 4000, "under 4 s of the tone heard in all"
    return longest_gap_ms(heard)


def test_restart_mid_call_direct_path_audio_never_stops(
    server: ServerProcess, tmp_path: Path
) -> None:
    if not host_addresses():
        pytest.skip("no interface address besides loopback: no direct path on this machine")
    _alice, bob, new = call_through_restart(server, tmp_path)
    try:
        # Nobody left or joined again: the members' channels went on over the new server.
        kinds = [e["event"] for e in bob.events()]
        around = kinds[kinds.index("reconnecting") : kinds.index("reconnected") + 3]
        assert "member_left" not in around and "member_joined" not in around, kinds
        gap = tone_gap_ms(tmp_path / "bob.wav")
        print(f"direct path: longest gap {gap} ms")
        assert gap <= 100, f"the tone stopped for {gap} ms over a direct path"
    finally:
        new.proc.send_signal(signal.SIGTERM)
        new.proc.wait(10)


def test_restart_mid_call_relay_only_gap_under_5_s(server: ServerProcess, tmp_path: Path) -> None:
    _alice, _bob, new = call_through_restart(server, tmp_path, "--relay-only")
    try:
        gap = tone_gap_ms(tmp_path / "bob.wav")
        print(f"relay only: longest gap {gap} ms")
        assert 0 < gap < 5000, f"the tone stopped for {gap} ms through the relay"
    finally:
        new.proc.send_signal(signal.SIGTERM)
        new.proc.wait(10)


def test_gives_up_after_the_setting_with_exit_5(server: ServerProcess, tmp_path: Path) -> None:
    server.add_user("alice")
    invite = server.create_room("alice")
    alice = server.join(invite, "alice", "--reconnect-for", "2")
    alice.event("joined")
    server.proc.kill()
    started = time.monotonic()
    assert alice.event("reconnecting")["attempt"] == 1
    assert alice.wait(timeout=15) == 5
    took = time.monotonic() - started
    assert 1.0 < took < 6.0, took
    events = alice.events()
    assert len([e for e in events if e["event"] == "reconnecting"]) >= 2
    assert not any(e["event"] == "reconnected" for e in events)
    left = next(e for e in events if e["event"] == "left")
    assert "gave up reconnecting after 2 s" in str(left["reason"])
    assert events[-1]["event"] == "error" and events[-1]["code"] == 5


def test_clean_leave_never_reconnects(server: ServerProcess, tmp_path: Path) -> None:
    server.add_user("alice")
    invite = server.create_room("alice")
    alice = server.join(invite, "alice", "--duration", "1")
    assert alice.wait() == 0
    bob = server.join(invite, "alice", "--input", "silence", "--output", "null")
    bob.event("joined")
    bob.proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert bob.wait() == 0
    for client in (alice, bob):
        kinds = [e["event"] for e in client.events()]
        assert "reconnecting" not in kinds and kinds[-1] == "left", kinds
