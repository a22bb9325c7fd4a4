"""Two real clients talk through a real server on loopback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.audiocheck import (
    align,
    envelope_correlation,
    make_speech_wav,
    pesq_wb,
    read_wav_48k,
)
from tests.integration.conftest import ServerProcess

pytestmark = pytest.mark.integration

SPEECH = (
    "The quick brown fox jumps over the lazy dog. Bangor carries voices between friends, "
    "and the server never hears a word."
)


def speech_call(server: ServerProcess, tmp_path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """alice speaks a WAV, bob records; returns (reference, recording, bob's events)."""
    speech = tmp_path / "speech.wav"
    make_speech_wav(speech, SPEECH)
    reference = read_wav_48k(speech)
    server.add_user("alice")
    server.add_user("bob")
    invite = server.create_room("alice")

    recording = tmp_path / "bob.wav"
    alice, bob = server.speak_to(
        invite,
        speech,
        len(reference) / 48000,
        *("--input", "silence", "--output", str(recording), "--name", "Bob"),
        stdin="hello bob\n",
    )
    joined = bob.event("member_joined")
    assert joined["member"]["user"] == "alice"  # type: ignore[index]
    chat = bob.event("chat")
    assert chat["text"] == "hello bob"
    assert bob.event("member_left")["member"]["user"] == "alice"  # type: ignore[index]
    assert bob.events()[-1]["event"] == "left"
    return reference, read_wav_48k(recording), {"alice": alice.events(), "bob": bob.events()}


def assert_same_speech(reference: np.ndarray, recorded: np.ndarray) -> tuple[float, float]:
    delay, aligned = align(reference, recorded)
    assert 0 < delay / 48000 < 2.0, f"speech arrived {delay / 48000:.2f} s late"
    # The adaptive jitter buffer may move the delay by a frame or two mid-call.
    corr = envelope_correlation(reference, aligned, max_shift_ms=40)
    score = pesq_wb(reference, aligned)
    assert corr > 0.9, f"envelope correlation {corr:.3f}"
    assert score > 3.0, f"PESQ-WB {score:.2f}"
    return corr, score


def test_speech_and_chat_between_two_clients(server: ServerProcess, tmp_path: Path) -> None:
    reference, recorded, events = speech_call(server, tmp_path)
    corr, score = assert_same_speech(reference, recorded)
    print(f"loopback call: envelope correlation {corr:.3f}, PESQ-WB {score:.2f}")
    # The first path event names the member it is to (none while alice was alone).
    bob_id = next(e for e in events["bob"] if e["event"] == "joined")["you"]["session_id"]  # type: ignore[index]
    paths = [e for e in events["alice"] if e["event"] == "path"]
    assert paths[0]["path"] == "relay" and paths[0]["peer"] == bob_id


def test_two_speakers_are_mixed(server: ServerProcess, tmp_path: Path) -> None:
    """Two people talk at once; the third hears both, each decoded and mixed."""
    for user in ("alice", "bob", "carol"):
        server.add_user(user)
    invite = server.create_room("alice")
    recording = tmp_path / "carol.wav"
    carol = server.join(
        invite, "carol", "--input", "silence", "--output", str(recording), "--duration", "6"
    )
    carol.event("joined")
    speakers = [
        server.join(invite, user, "--input", f"tone:{hz}", "--output", "null", "--duration", "4")
        for user, hz in (("alice", 440), ("bob", 1250))
    ]
    for speaker in speakers:
        assert speaker.wait() == 0
    assert carol.wait() == 0
    audio = read_wav_48k(recording)
    spectrum = np.abs(np.fft.rfft(audio))
    freqs = np.fft.rfftfreq(len(audio), 1 / 48000)

    def band(hz: float) -> float:
        return float(spectrum[(freqs > hz - 10) & (freqs < hz + 10)].sum())

    floor = float(np.median(spectrum)) * 20 * 2  # what 20 Hz of noise would hold, doubled
    assert band(440) > 100 * floor and band(1250) > 100 * floor
    assert band(800) < band(440) / 100  # nothing much between them: no distortion products
    assert np.max(np.abs(audio)) < 1.0  # and no clipping
    joined = {e["member"]["user"] for e in carol.events() if e["event"] == "member_joined"}  # type: ignore[index]
    assert joined == {"alice", "bob"}
