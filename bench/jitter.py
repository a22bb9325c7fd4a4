"""Jitter buffer benchmark: CPU per frame of push + pop, sans-I/O, no network.

Feeds one sender's stream through ``bangor.audio.jitter.JitterBuffer`` as the client
does (one push per arriving frame, one pop per play-out tick) and prints microseconds
per frame (median of ``-r`` runs of ``-n`` frames):

- fixed: ``push(seq, payload)`` without arrival times (the fixed-depth buffer);
- adaptive, calm / jittery: ``push(..., now=...)`` with arrival times spread by 0 or
  up to 30 ms (uniform), 1 % of frames lost; "n/a" where the module has no ``now``.

Run::

    .venv/bin/python bench/jitter.py
    .venv/bin/python bench/jitter.py --frame-ms 10   # a sender of 10 ms frames
    PYTHONPATH=/other/checkout/src .venv/bin/python bench/jitter.py   # another version
"""

from __future__ import annotations

import argparse
import inspect
import random
import statistics
import time
from collections.abc import Sequence

from bangor.audio.jitter import JitterBuffer

PAYLOAD = bytes(90)  # a typical 40 kbit/s Opus packet
LOSS = 0.01


def arrivals(count: int, jitter: float, seed: int, frame_s: float) -> list[tuple[float, int]]:
    """(arrival time, seq) in arrival order; the play-out ticks every frame_s."""
    rng = random.Random(seed)
    out = [
        (seq * frame_s + rng.uniform(0, jitter), seq)
        for seq in range(count)
        if rng.random() >= LOSS
    ]
    out.sort()
    return out


def make_buffer(frame_ms: int) -> JitterBuffer:
    if frame_ms == 20:
        return JitterBuffer()  # also in versions without frame_ms
    # The client's 60 ms target and 500 ms maximum, in frames of this duration.
    return JitterBuffer(60 // frame_ms or 1, 500 // frame_ms, frame_ms=frame_ms)


def run(stream: list[tuple[float, int]], timed: bool, frame_ms: int) -> float:
    """Seconds of CPU per frame to push the stream and pop it tick by tick."""
    buffer = make_buffer(frame_ms)
    frame_s = frame_ms / 1000
    ticks = int(stream[-1][0] / frame_s) + 30
    i = 0
    start = time.perf_counter()
    for tick in range(ticks):
        now = tick * frame_s
        while i < len(stream) and stream[i][0] <= now:
            arrived, seq = stream[i]
            if timed:
                buffer.push(seq, PAYLOAD, now=arrived)
            else:
                buffer.push(seq, PAYLOAD)
            i += 1
        buffer.pop()
    return (time.perf_counter() - start) / ticks


def median_us(stream: list[tuple[float, int]], timed: bool, repeat: int, frame_ms: int) -> float:
    return statistics.median(run(stream, timed, frame_ms) for _ in range(repeat)) * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--frames", type=int, default=20_000)
    parser.add_argument("-r", "--repeat", type=int, default=7)
    parser.add_argument(
        "--frame-ms", type=int, choices=[10, 20, 40], default=20, help="the sender's frames"
    )
    opts = parser.parse_args(argv)
    ms = opts.frame_ms
    adaptive = "now" in inspect.signature(JitterBuffer.push).parameters
    calm = arrivals(opts.frames, 0.0, 1, ms / 1000)
    jittery = arrivals(opts.frames, 0.030, 2, ms / 1000)
    print(
        f"jitter buffer: {opts.frames} frames of {ms} ms, median of {opts.repeat} runs, "
        "µs per frame"
    )
    print(f"  fixed (no arrival times)       {median_us(jittery, False, opts.repeat, ms):6.2f}")
    for name, stream in (("calm", calm), ("jittery (30 ms)", jittery)):
        value = f"{median_us(stream, True, opts.repeat, ms):6.2f}" if adaptive else "   n/a"
        print(f"  adaptive, {name:<20} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
