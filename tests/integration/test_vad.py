"""Voice activity detection with real processes: pauses cost no packets and stay silent."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from tests.audiocheck import SR, align, envelope_correlation, make_speech_wav, read_wav_48k
from tests.integration.conftest import ServerProcess

pytestmark = pytest.mark.integration

SENTENCES = (
    "Can you hear me now?",
    "I will wait a moment between sentences.",
    "Silence costs nothing on the wire.",
)
PAUSE_S = 5.0
FRAMES_PER_S = 50


def speech_with_pauses(tmp_path: Path) -> tuple[Path, np.ndarray, list[tuple[int, int]]]:
    """Sentences with 5 s of digital silence between them, as a 48 kHz WAV.

    Returns the file, its samples (float, as read back) and the (start, end)
    sample ranges of the pauses.
    """
    pause = np.zeros(int(PAUSE_S * SR))
    parts: list[np.ndarray] = []
    pauses: list[tuple[int, int]] = []
    for i, text in enumerate(SENTENCES):
        if i:
            start = sum(map(len, parts))
            pauses.append((start, start + len(pause)))
            parts.append(pause)
        wav = tmp_path / f"sentence{i}.wav"
        make_speech_wav(wav, text)
        parts.append(read_wav_48k(wav))
    pcm = np.round(np.concatenate(parts) * 32767).astype("<i2")
    path = tmp_path / "pauses.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.tobytes())
    return path, read_wav_48k(path), pauses


def test_speech_with_long_pauses_sends_far_fewer_packets(
    server: ServerProcess, tmp_path: Path
) -> None:
    speech, reference, pauses = speech_with_pauses(tmp_path)
    seconds = len(reference) / SR
    assert 12 < seconds < 20
    frames = -(-len(reference) // 960)
    server.add_user("alice")
    server.add_user("bob")
    invite = server.create_room("alice")
    recording = tmp_path / "bob.wav"
    alice, bob = server.speak_to(
        invite, speech, seconds, "--input", "silence", "--output", str(recording)
    )

    # Alice sent only while speaking: far fewer packets than 50 a second of audio.
    sent = [e for e in alice.events() if e["event"] == "stats"][-1]
    assert isinstance(sent["sent"], int) and isinstance(sent["suppressed"], int)
    print(
        f"VAD: {seconds:.1f} s of audio ({frames} frames): alice sent {sent['sent']} voice "
        f"packets ({sent['sent'] / frames:.0%}), suppressed {sent['suppressed']}"
    )
    assert sent["sent"] < 0.5 * seconds * FRAMES_PER_S
    assert sent["sent"] + sent["suppressed"] == frames
    # The pauses went unsent but for the hang-over after each sentence (300 ms).
    pause_frames = sum(end - start for start, end in pauses) // 960
    assert sent["suppressed"] > pause_frames - len(pauses) * 20
    # Measured at the other end too: what bob got from alice is what she sent.
    final = [e for e in bob.events() if e["event"] == "stats"][-1]
    assert isinstance(final["received"], int)
    assert 0.95 * sent["sent"] <= final["received"] <= sent["sent"]
    # Bob, listening to digital silence, sent no voice at all.
    assert final["sent"] == 0 and final["suppressed"] > 0

    # Bob heard every sentence. Each one is a talk spurt with its own play-out
    # delay (the receiver's jitter buffer restarts after a pause), so each is lined
    # up on its own, near where the whole recording lines up.
    recorded = read_wav_48k(recording)
    delay, aligned = align(reference, recorded)
    assert 0 < delay / SR < 2.0, f"speech arrived {delay / SR:.2f} s late"
    bounds = [0, *(edge for pause in pauses for edge in pause), len(reference)]
    margin = SR // 4
    for i in range(len(SENTENCES)):
        start, end = bounds[2 * i], bounds[2 * i + 1]
        window = recorded[max(start + delay - margin, 0) : end + delay + margin]
        offset, heard = align(reference[start:end], window)
        spurt_delay = max(start + delay - margin, 0) + offset - start
        corr = envelope_correlation(reference[start:end], heard)
        print(
            f"VAD: sentence {i}: envelope correlation {corr:.3f}, "
            f"delay {spurt_delay / SR * 1000:.0f} ms"
        )
        assert corr > 0.8, f"sentence {i}: envelope correlation {corr:.3f}"
        assert abs(spurt_delay - delay) < 0.2 * SR, f"sentence {i} arrived out of step"
    # ...and silence in the pauses: no concealment noise played while nothing came.
    for start, end in pauses:
        middle = aligned[start + SR : end - SR]
        assert np.max(np.abs(middle)) < 1e-3, "noise in a pause"
