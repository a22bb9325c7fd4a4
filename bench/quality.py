"""Speech quality under random packet loss: PESQ-WB of the repair schemes, ideal receiver.

Speech from espeak-ng is encoded with the client's Opus settings, packets are lost at
random (seeded), and an ideal receiver (it waits as long as needed, as the jitter buffer
does while loss is reported) rebuilds each 20 ms frame from, in this order: its own
packet; a copy in one of the next ``depth`` packets (redundancy, as ``VoiceFrame``
carries them); the next packet's in-band FEC (when FEC is on); Opus concealment. The
result is scored with PESQ-WB against the clean input, mean over ``--seeds`` loss
patterns. The same schemes run through real processes and ``tc netem`` in
``tests/integration/test_loss.py``.

Run::

    .venv/bin/python bench/quality.py [--seeds 5] [--bitrate 40000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soxr
from pesq import pesq

from bangor.audio.codec import OpusDecoder, OpusEncoder
from bangor.io.devices import read_wav
from bangor.settings import FRAME_SAMPLES, SAMPLE_RATE

TEXT = (
    "The quick brown fox jumps over the lazy dog. Bangor carries voices between friends "
    "on bad networks, and the server never hears a word. Seven silver swans swam south."
)
LOSSES = (0.0, 0.05, 0.15)
# (label, depth of redundancy, FEC on)
SCHEMES = (
    ("PLC only", 0, False),
    ("FEC", 0, True),
    ("RED 1", 1, False),
    ("RED 2", 2, False),
    ("RED 2 + FEC", 2, True),
    ("RED 3", 3, False),
)
PESQ_SR = 16_000


def speech() -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-w", str(path), TEXT], check=True, capture_output=True)
        pcm = read_wav(path)
    return np.pad(pcm, (0, -len(pcm) % FRAME_SAMPLES))


def encode(pcm: np.ndarray, bitrate: int, loss: float, fec: bool) -> list[bytes]:
    expected = round(loss * 100) if fec else 0
    encoder = OpusEncoder(bitrate=bitrate, fec=fec, expected_loss=expected)
    return [encoder.encode(pcm[i : i + FRAME_SAMPLES]) for i in range(0, len(pcm), FRAME_SAMPLES)]


def receive(packets: list[bytes], arrived: list[bool], depth: int, fec: bool) -> np.ndarray:
    decoder = OpusDecoder()
    out = []
    for k, packet in enumerate(packets):
        copy_in = [j for j in range(k + 1, min(k + 1 + depth, len(packets))) if arrived[j]]
        if arrived[k] or copy_in:
            out.append(decoder.decode(packet))  # its own packet or a full copy of it
        elif fec and k + 1 < len(packets) and arrived[k + 1]:
            out.append(decoder.decode_fec(packets[k + 1]))
        else:
            out.append(decoder.conceal())
    return np.concatenate(out)


def score(reference: np.ndarray, degraded: np.ndarray) -> float:
    ref = soxr.resample(reference.astype(np.float64), SAMPLE_RATE, PESQ_SR)
    deg = soxr.resample(degraded.astype(np.float64), SAMPLE_RATE, PESQ_SR)
    n = min(len(ref), len(deg))
    return float(pesq(PESQ_SR, ref[:n], deg[:n], "wb"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--bitrate", type=int, default=40_000)
    args = parser.parse_args()
    pcm = speech()
    print(f"PESQ-WB, {len(pcm) / SAMPLE_RATE:.1f} s of espeak-ng speech, Opus {args.bitrate} bit/s")
    print(f"mean of {args.seeds} random loss patterns; ideal receiver\n")
    print("| Scheme | kbit/s sent | " + " | ".join(f"{x:.0%} loss" for x in LOSSES) + " |")
    print("|---|---|" + "---|" * len(LOSSES))
    for label, depth, fec in SCHEMES:
        cells = []
        sizes = []
        for loss in LOSSES:
            packets = encode(pcm, args.bitrate, loss, fec)
            sizes.append(sum(len(p) for p in packets) * (1 + depth) / len(packets))
            values = []
            for seed in range(args.seeds):
                rng = random.Random(seed)
                arrived = [rng.random() >= loss for _ in packets]
                values.append(score(pcm, receive(packets, arrived, depth, fec)))
            cells.append(f"{statistics.mean(values):.2f}")
        kbps = max(sizes) * 8 / 20
        print(f"| {label} | {kbps:.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
