"""End-to-end encryption with real processes: what the server sees, who hears whom."""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bangor.audio.codec import OpusEncoder
from bangor.io.devices import open_source
from bangor.server.store import DB_FILE_NAME
from bangor.settings import ClientSettings
from bangor.wire.invite import SECRET_SIZE, Invite
from tests.audiocheck import make_speech_wav, read_wav_48k
from tests.integration.conftest import (
    Client,
    ServerProcess,
    client_env,
    run_bangor,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.integration

TAP_SERVER = str(Path(__file__).with_name("tap_server.py"))
EVIL_SERVER = str(Path(__file__).with_name("evil_server.py"))
SECRET_CHAT = "the eagle lands at midnight"


def band(audio: np.ndarray, hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    freqs = np.fft.rfftfreq(len(audio), 1 / 48000)
    return float(spectrum[(freqs > hz - 10) & (freqs < hz + 10)].sum())


def join(
    server: ServerProcess, invite: str, user: str, *args: str, stdin: str | None = None
) -> Client:
    """A client with no sound card: silence in, nothing out, unless the test says otherwise."""
    return server.join(invite, user, "--input", "silence", "--output", "null", *args, stdin=stdin)


def identity_of(server: ServerProcess, user: str) -> dict[str, str]:
    result = run_bangor(["identity", "--json"], env=client_env(server.home / user), check=True)
    data: dict[str, str] = json.loads(result.stdout)
    return data


@pytest.fixture
def tapped(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    """A real server process that records every byte it handles, before and after decryption."""
    tap = tmp_path / "server.tap"
    server = start_server(tmp_path, command=(sys.executable, TAP_SERVER, str(tap)))
    yield server, tap
    stop_server(server)


def read_tap(path: Path) -> dict[bytes, list[bytes]]:
    data = path.read_bytes()
    records: dict[bytes, list[bytes]] = {}
    pos = 0
    while pos < len(data):
        kind, size = data[pos : pos + 1], int.from_bytes(data[pos + 1 : pos + 5], "big")
        records.setdefault(kind, []).append(data[pos + 5 : pos + 5 + size])
        pos += 5 + size
    return records


def opus_frames(wav: Path) -> list[bytes]:
    """The Opus frames the client makes of this file (same encoder, same settings)."""
    source = open_source(str(wav))
    encoder = OpusEncoder(bitrate=ClientSettings().bitrate)
    frames = []
    while (pcm := source.read()) is not None:
        frames.append(encoder.encode(pcm))
    source.close()
    return frames


def test_server_sees_no_chat_text_and_no_opus(
    tapped: tuple[ServerProcess, Path], tmp_path: Path
) -> None:
    server, tap = tapped
    speech = tmp_path / "speech.wav"
    make_speech_wav(speech, "Nobody but Bob may hear this sentence, not even the server.")
    seconds = len(read_wav_48k(speech)) / 48000
    for user in ("alice", "bob"):
        server.add_user(user)
    invite = server.create_room("alice")
    bob = join(
        server,
        invite,
        "bob",
        "--output",
        str(tmp_path / "bob.wav"),
        "--duration",
        str(seconds + 3),
        "--relay-only",  # all voice through the server, so the tap sees it all
        stdin="",
    )
    bob.event("joined")
    alice = join(
        server,
        invite,
        "alice",
        "--input",
        str(speech),
        "--duration",
        str(seconds + 1),
        "--relay-only",
        stdin=SECRET_CHAT + "\n",
    )
    assert bob.event("chat")["text"] == SECRET_CHAT
    assert bob.proc.stdin is not None
    bob.proc.stdin.write("roger that, over\n")
    bob.proc.stdin.flush()
    assert alice.event("chat")["text"] == "roger that, over"
    assert alice.wait() == 0 and bob.wait() == 0
    stop_server(server)

    records = read_tap(tap)
    everything = b"".join(b"".join(r) for r in records.values())
    # The tap works: it saw logins in clear (inside Noise) and many voice payloads.
    assert any(b"alice" in m for m in records[b"C"])
    assert len(records[b"U"]) > seconds * 40
    # No chat text, in either direction, in any form the server handled.
    for text in (SECRET_CHAT, "roger that", "eagle"):
        assert text.encode() not in everything
    # No Opus frame alice encoded (not even a 12-byte piece of one).
    frames = [f for f in opus_frames(speech) if len(f) >= 24]
    assert len(frames) > seconds * 40
    assert not [f for f in frames if f[4:16] in everything or f[-12:] in everything]
    # The server does not learn the members' device identity keys either.
    for user in ("alice", "bob"):
        assert bytes.fromhex(identity_of(server, user)["public_key"]) not in everything


def test_member_without_the_room_secret_hears_nobody_and_is_heard_by_nobody(
    server: ServerProcess, tmp_path: Path
) -> None:
    for user in ("alice", "bob", "mallory"):
        server.add_user(user)
    invite = server.create_room("alice")
    real = Invite.parse(invite)
    # Mallory has an account and the room id, but not the secret.
    forged = Invite(real.host, real.port, real.room_id, bytes(SECRET_SIZE), real.fingerprint)
    # The server keeps her out: her invite derives no valid join token (PROTOCOL.md 3.15).
    refused = join(server, forged.encode(), "mallory")
    assert refused.wait() == 4
    assert "no such room" in refused.event("error")["message"]  # type: ignore[operator]
    # A server that lets her in anyway (here: its database lost the token) gains her
    # nothing: the members' pair channels need the secret itself.
    with sqlite3.connect(server.data_dir / DB_FILE_NAME) as db:
        db.execute("UPDATE rooms SET token_hash = NULL")
    bob = join(server, invite, "bob", "--output", str(tmp_path / "bob.wav"), "--duration", "7")
    bob.event("joined")
    alice = join(server, invite, "alice", "--input", "tone:440", "--duration", "6")
    bob.event("member_verified")
    mallory = join(
        server,
        forged.encode(),
        "mallory",
        "--input",
        "tone:1250",
        "--output",
        str(tmp_path / "mallory.wav"),
        "--duration",
        "4",
        stdin="can anyone hear me?\n",
    )
    rejected = bob.event("member_rejected")
    assert rejected["member"]["user"] == "mallory"  # type: ignore[index]
    assert alice.event("member_rejected")["member"]["user"] == "mallory"  # type: ignore[index]
    assert {e["member"]["user"] for e in [mallory.event("member_rejected")]} <= {"alice", "bob"}  # type: ignore[index]
    assert mallory.wait() == 0 and alice.wait() == 0 and bob.wait() == 0
    assert not [e for e in bob.events() if e["event"] == "chat"]
    assert any("WARNING" in line and "mallory" in line for line in bob.stderr.seen) is False
    heard = read_wav_48k(tmp_path / "bob.wav")
    assert band(heard, 440) > 100 * band(heard, 1250)  # alice, and no trace of mallory
    silence = read_wav_48k(tmp_path / "mallory.wav")
    assert np.max(np.abs(silence)) < 1e-3, "mallory must hear nothing"


def test_safety_numbers_match_and_a_changed_key_is_a_loud_warning(
    server: ServerProcess, tmp_path: Path
) -> None:
    for user in ("alice", "bob"):
        server.add_user(user)
    invite = server.create_room("alice")
    bob = join(server, invite, "bob", "--duration", "20")
    bob.event("joined")
    alice = join(server, invite, "alice", "--duration", "1.5")
    seen_by_bob = bob.event("member_verified")
    seen_by_alice = alice.event("member_verified")
    assert seen_by_bob["safety_number"] == seen_by_alice["safety_number"]
    assert seen_by_bob["trust"] == "new"
    assert seen_by_bob["fingerprint"] == identity_of(server, "alice")["fingerprint"]
    assert alice.wait() == 0
    bob.event("member_left")
    # Alice again from a new device (another data dir, so another identity key).
    server.home.joinpath("alice").rename(server.home / "alice-old-laptop")
    again = join(server, invite, "alice", "--duration", "1.5")
    changed = bob.event("key_changed")
    assert changed["member"]["user"] == "alice"  # type: ignore[index]
    bob.stdout.wait_for(lambda line: '"trust": "changed"' in line)
    verified = [e for e in bob.events() if e["event"] == "member_verified"]
    assert [e["trust"] for e in verified] == ["new", "changed"]
    assert verified[0]["safety_number"] != verified[1]["safety_number"]
    assert again.wait() == 0
    bob.proc.terminate()
    assert bob.wait() == 0


def test_voice_flows_through_rekeys_without_gaps(server: ServerProcess, tmp_path: Path) -> None:
    """carol joins and leaves three times while alice talks to bob: no frame may be lost."""
    for user in ("alice", "bob", "carol"):
        server.add_user(user)
    invite = server.create_room("alice")
    alice = join(server, invite, "alice", "--input", "tone:440", "--duration", "14")
    alice.event("joined")
    # bob leaves first, so his final stats still count alice's stream.
    bob = join(server, invite, "bob", "--output", str(tmp_path / "bob.wav"), "--duration", "10")
    bob.event("member_verified")
    for _ in range(3):
        carol = join(server, invite, "carol", "--duration", "1.2")
        assert carol.wait() == 0
        assert carol.event("member_verified")
    assert bob.wait() == 0
    alice.proc.terminate()
    assert alice.wait() == 0
    final = [e for e in bob.events() if e["event"] == "stats"][-1]
    assert final["undecryptable"] == 0
    (alice_stats,) = [s for s in final["senders"].values() if s["received"] > 300]  # type: ignore[union-attr]
    assert alice_stats["lost"] == 0 and alice_stats["late"] == 0, alice_stats
    audio = read_wav_48k(tmp_path / "bob.wav")
    frames = audio[: len(audio) // 960 * 960].reshape(-1, 960)
    rms = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1))
    talking = rms[rms > 0.5 * np.median(rms[rms > 0])]
    first, last = np.flatnonzero(rms > 0.5 * np.median(talking))[[0, -1]]
    assert np.all(rms[first : last + 1] > 0.5 * np.median(talking)), "a gap in alice's voice"


def test_server_replaying_and_corrupting_key_messages_achieves_only_reports(
    tmp_path: Path,
) -> None:
    """Every pair message is followed by replays of the pair's old ones and a forged copy."""
    server = start_server(tmp_path, command=(sys.executable, EVIL_SERVER))
    try:
        for user in ("alice", "bob", "carol"):
            server.add_user(user)
        invite = server.create_room("alice")
        bob = join(server, invite, "bob", "--output", str(tmp_path / "bob.wav"), "--duration", "9")
        bob.event("joined")
        alice = join(server, invite, "alice", "--input", "tone:440", "--duration", "12")
        bob.event("member_verified")
        carol = join(server, invite, "carol", "--duration", "1.5")  # a join and a leave: rekeys
        assert carol.wait() == 0
        assert bob.wait() == 0
        alice.proc.terminate()
        assert alice.wait() == 0
    finally:
        stop_server(server)
    for client in (alice, bob):
        events = client.events()
        assert not [e for e in events if e["event"] == "member_rejected"], events
        problems = [str(e["message"]) for e in events if e["event"] == "warning"]
        assert any("replayed" in p for p in problems), problems
        assert any("authentication" in p or "handshake" in p for p in problems), problems
    final = [e for e in bob.events() if e["event"] == "stats"][-1]
    assert final["undecryptable"] == 0
    heard = read_wav_48k(tmp_path / "bob.wav")
    assert band(heard, 440) > 100 * band(heard, 1250)
    frames = heard[: len(heard) // 960 * 960].reshape(-1, 960)
    rms = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1))
    assert (rms > 0.5 * rms.max()).sum() > 5 * 50, "alice must be heard for most of the call"
