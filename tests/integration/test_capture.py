"""The capture chain with real processes: a speaker in fan noise or typing sends a file
with noise suppression on and off, a listener records; and noise alone, with
suppression on, keeps the voice gate shut. One server, a room per condition, all
rooms at once to keep the test short."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from tests.audiocheck import (
    SR,
    align,
    fan_noise,
    key_clicks,
    make_speech_wav,
    mix_at_snr,
    pesq_wb,
    read_wav_48k,
)
from tests.integration.conftest import ServerProcess

pytestmark = pytest.mark.integration

TEXT = "The quick brown fox jumps over the lazy dog. A stitch in time saves nine."
NOISE_ALONE_S = 4.0


def write_wav(path: Path, x: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(np.clip(np.rint(x * 32767), -32768, 32767).astype("<i2").tobytes())


def test_noise_suppression_through_real_processes(server: ServerProcess, tmp_path: Path) -> None:
    make_speech_wav(tmp_path / "speech.wav", TEXT)
    # The speakers start at once: the lead-in covers the others' start-up (imports,
    # the model's loading), which on a loaded machine may stall a client.
    lead_in, tail = np.zeros(SR), np.zeros(SR // 2)
    clean = np.concatenate([lead_in, read_wav_48k(tmp_path / "speech.wav") * 0.5, tail])
    rng = np.random.default_rng(15)
    files = {
        "fan": mix_at_snr(clean, fan_noise(len(clean), rng), 5.0),
        "clicks": mix_at_snr(clean, key_clicks(len(clean), rng), 5.0),
    }
    length = int(NOISE_ALONE_S * SR)
    alone = 0.03 * fan_noise(length, rng) + 0.3 * key_clicks(length, rng, per_second=10)
    paths = {}
    for name, x in [*files.items(), ("alone", alone)]:
        paths[name] = tmp_path / f"{name}.wav"
        write_wav(paths[name], x / max(1.0, float(np.abs(x).max()) / 0.95))
    runs = [(name, ns) for name in files for ns in ("on", "off")] + [("alone", "on")]
    for i in range(len(runs)):
        server.add_user(f"speaker{i}")
        server.add_user(f"listener{i}")
    seconds = len(clean) / SR
    # Every room at once (a pair per condition): the test stays short.
    invites = [server.create_room(f"speaker{i}", f"room{i}") for i in range(len(runs))]
    listeners = [
        server.join(
            invite,
            f"listener{i}",
            *("--input", "silence", "--output", str(tmp_path / f"heard{i}.wav")),
            *("--duration", str(seconds + 6)),
        )
        for i, invite in enumerate(invites)
    ]
    for listener in listeners:
        listener.event("joined")
    speakers = []
    for (name, ns), invite, i in zip(runs, invites, range(len(runs)), strict=True):
        # PESQ judges the suppressor; the gate's talk spurts (each with its own
        # play-out delay) would blur it. Noise alone is the gate's own test.
        gate = ("--vad", "off") if name != "alone" else ()
        args = ("--input", str(paths[name]), "--output", "null", "--noise-suppression", ns)
        speakers.append(
            server.join(invite, f"speaker{i}", *args, *gate, "--duration", str(seconds + 3))
        )
    for client in [*speakers, *listeners]:
        assert client.wait() == 0, client.stderr.seen

    # PESQ over the speech and a little around it (the lead-in would only add silence).
    reference = clean[len(lead_in) - SR // 4 :]
    scores = {}
    for i, (name, ns) in enumerate(runs[:-1]):
        heard = read_wav_48k(tmp_path / f"heard{i}.wav")
        assert np.sqrt(np.mean(np.square(heard))) > 1e-3, f"{name} {ns}: nothing heard"
        scores[name, ns] = pesq_wb(reference, align(reference, heard)[1])
        # How evenly the speaker's frames came (a starved client sends in bursts).
        jitter = max(
            float(sender["jitter_ms"])  # type: ignore[index]
            for e in listeners[i].events()
            if e["event"] == "stats"
            for sender in e["senders"].values()  # type: ignore[union-attr]
        )
        print(
            f"NS through processes, {name} {ns}: PESQ-WB {scores[name, ns]:.2f}, "
            f"listener's jitter up to {jitter:.0f} ms"
        )
    for name, gain in (("fan", 0.25), ("clicks", 0.3)):
        off, on = scores[name, "off"], scores[name, "on"]
        print(f"NS through processes, {name}: PESQ-WB {off:.2f} -> {on:.2f} (+{on - off:.2f})")
        assert on - off >= gain
    stats = [e for e in speakers[-1].events() if e["event"] == "stats"][-1]
    sent, suppressed = stats["sent"], stats["suppressed"]
    assert isinstance(sent, int) and isinstance(suppressed, int)
    print(f"NS through processes, noise alone: {sent} of {sent + suppressed} frames sent")
    assert sent + suppressed > NOISE_ALONE_S * 50 * 0.9
    assert sent < 0.15 * (sent + suppressed)
