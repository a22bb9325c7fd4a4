"""CPU time of the Opus codec per 20 ms frame: encode, decode and concealment.

The codec runs once per frame per speaker (decode) and once per frame for your own
voice (encode), so it is the client's hot path. The signal is synthetic voiced speech
(a gliding pitch with harmonics and syllable-rate loudness, plus a little noise), so
the encoder works as on a voice; 40 kbit/s, complexity 9, FEC on, as a call sends.

    .venv/bin/python bench/codec.py                      # the libopus Bangor picks
    .venv/bin/python bench/codec.py --library /usr/lib/x86_64-linux-gnu/libopus.so.0

Prints the library and the median over ``--repeat`` runs of the mean per frame, in
microseconds (``--json``: one object).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np

from bangor.audio import codec
from bangor.audio.codec import OpusDecoder, OpusEncoder
from bangor.settings import FRAME_SAMPLES, SAMPLE_RATE

BITRATE = 40_000
FRAMES = 500  # 10 s of audio per run


def voice(frames: int, seed: int = 7) -> list[np.ndarray]:
    """``frames`` 20 ms frames of a voiced, speech-like signal."""
    t = np.arange(frames * FRAME_SAMPLES) / SAMPLE_RATE
    pitch = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)  # a gliding voice, 80-160 Hz
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 25))
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    noise = np.random.default_rng(seed).normal(0, 0.02, len(t))
    pcm = np.clip(0.25 * harmonics * syllables + noise, -1, 1)
    samples = np.round(pcm * 32767).astype(np.int16)
    return [samples[i : i + FRAME_SAMPLES] for i in range(0, len(samples), FRAME_SAMPLES)]


def per_frame_us(run: Callable[[], None], frames: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) / frames * 1e6)
    return statistics.median(times)


def measure(frames: int, repeat: int) -> dict[str, float]:
    pcm = voice(frames)
    packets = [OpusEncoder(bitrate=BITRATE).encode(f) for f in pcm]

    def encode() -> None:
        encoder = OpusEncoder(bitrate=BITRATE)
        for frame in pcm:
            encoder.encode(frame)

    def decode() -> None:
        decoder = OpusDecoder()
        for packet in packets:
            decoder.decode(packet)

    def conceal() -> None:
        decoder = OpusDecoder()
        decoder.decode(packets[0])
        for _ in range(frames):
            decoder.conceal()

    encode()  # warm caches and the library's CPU dispatch once
    return {
        "encode_us": per_frame_us(encode, frames, repeat),
        "decode_us": per_frame_us(decode, frames, repeat),
        "conceal_us": per_frame_us(conceal, frames, repeat),
        "packet_bytes": statistics.mean(len(p) for p in packets),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Opus encode/decode time per 20 ms frame")
    parser.add_argument("--library", help="a libopus file to use instead of Bangor's pick")
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    library = "?"
    if hasattr(codec, "load_libopus"):  # so this runs against older Bangors too
        if args.library:
            from bangor.audio import libopus

            codec._libopus = libopus._bind(args.library, "given")
        lib = codec.load_libopus()
        library = f"{lib.version} ({lib.source}: {lib.path})"
    result = {"library": library, **measure(args.frames, args.repeat)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"library: {result['library']}")
    for key in ("encode_us", "decode_us", "conceal_us"):
        print(f"{key.removesuffix('_us')}: {result[key]:.1f} us per 20 ms frame")
    print(f"packets: {result['packet_bytes']:.0f} bytes on average")


if __name__ == "__main__":
    main()
