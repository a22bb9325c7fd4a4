"""Speech quality under packet loss: PESQ-WB of the repair schemes, ideal receiver.

Speech from espeak-ng is encoded with the client's Opus settings, packets are lost at
random (seeded), and an ideal receiver (it waits as long as needed, as the jitter buffer
does while loss is reported) rebuilds each 20 ms frame from, in this order: its own
packet; a copy in one of the packets that repeat it (redundancy, as ``VoiceFrame``
carries them: the next ``depth`` packets, or those the spread distances name); the next
packet's in-band FEC (when FEC is on); Opus concealment. The result is scored with
PESQ-WB against the clean input, mean over ``--seeds`` loss patterns. ``--bursty``:
the losses come in bursts (Gilbert-Elliott, ``tests/usernetem.py``, mean 3 and 5
packets) and spread copies join the schemes. The same schemes run through real
processes in ``tests/integration/test_loss.py`` and ``bench/bursty.py``.

Run::

    .venv/bin/python bench/quality.py [--seeds 5] [--bitrate 40000] [--bursty]
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soxr
from pesq import pesq

from bangor.audio.codec import OpusDecoder, OpusEncoder
from bangor.io.devices import read_wav
from bangor.settings import FRAME_SAMPLES, SAMPLE_RATE

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.usernetem import GilbertElliott

TEXT = (
    "The quick brown fox jumps over the lazy dog. Bangor carries voices between friends "
    "on bad networks, and the server never hears a word. Seven silver swans swam south."
)
# (loss, mean burst: 0 = random)
LOSSES = ((0.0, 0), (0.05, 0), (0.15, 0))
BURSTY = ((0.05, 3), (0.15, 3), (0.05, 5), (0.15, 5))
# (label, distances back of the copies, FEC on)
SCHEMES: tuple[tuple[str, tuple[int, ...], bool], ...] = (
    ("PLC only", (), False),
    ("FEC", (), True),
    ("RED 1", (1,), False),
    ("RED 2", (1, 2), False),
    ("RED 2 + FEC", (1, 2), True),
    ("RED 3", (1, 2, 3), False),
)
SPREAD = (
    ("RED 2", (1, 2), False),
    ("RED 3", (1, 2, 3), False),
    ("spread 2-4", (2, 4), False),
    ("spread 4-8", (4, 8), False),
    ("spread 4-8 + FEC", (4, 8), True),
    ("spread 3-5-8", (3, 5, 8), False),
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


def receive(
    packets: list[bytes], arrived: list[bool], distances: tuple[int, ...], fec: bool
) -> np.ndarray:
    decoder = OpusDecoder()
    out = []
    for k, packet in enumerate(packets):
        copy_in = [k + d for d in distances if k + d < len(packets) and arrived[k + d]]
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
    parser.add_argument("--bursty", action="store_true", help="bursts of loss, spread copies")
    args = parser.parse_args()
    losses = LOSSES[1:] + BURSTY if args.bursty else LOSSES
    schemes = SPREAD if args.bursty else SCHEMES
    pcm = speech()
    print(f"PESQ-WB, {len(pcm) / SAMPLE_RATE:.1f} s of espeak-ng speech, Opus {args.bitrate} bit/s")
    print(f"mean of {args.seeds} loss patterns; ideal receiver\n")
    heads = [f"{loss:.0%} loss" + (f", bursts of {b}" if b else "") for loss, b in losses]
    print("| Scheme | kbit/s sent | " + " | ".join(heads) + " |")
    print("|---|---|" + "---|" * len(losses))
    for label, distances, fec in schemes:
        cells = []
        sizes = []
        for loss, burst in losses:
            packets = encode(pcm, args.bitrate, loss, fec)
            sizes.append(sum(len(p) for p in packets) * (1 + len(distances)) / len(packets))
            values = []
            for seed in range(args.seeds):
                model = GilbertElliott(loss, burst, random.Random(seed))
                arrived = [not model.lose() for _ in packets]
                values.append(score(pcm, receive(packets, arrived, distances, fec)))
            cells.append(f"{statistics.mean(values):.2f}")
        kbps = max(sizes) * 8 / 20
        print(f"| {label} | {kbps:.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
