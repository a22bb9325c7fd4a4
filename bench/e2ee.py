"""End-to-end encryption benchmark: what SFrame sender keys cost per voice frame.

What it measures, in one process (no network), each as the median over ``--repeat``
timeit runs of ``--number`` calls, reported in microseconds per call:

1. **Opus**: ``OpusEncoder(bitrate=40000).encode`` of 20 ms of a voiced tone (a 140 Hz
   fundamental with harmonics and a little noise, continuous across frames, so the
   encoder sees a steady signal and makes 80-100-byte packets), and
   ``OpusDecoder.decode`` of the packets it produced.
2. **E2EE**: ``Outbound.seal`` and ``Inbound.open`` (``bangor.wire.senderkeys``) of a
   real Opus packet from that run (80-100 bytes), each frame opened once (replay
   protection refuses a second open). The bare ``SFrameContext.encrypt``/``decrypt``
   beneath them are timed too, so the wrapper's own share is visible.
3. **Rare events**: the first frame after a join (the receiver derives the ratcheted
   key and commits it), a forged frame with a KID a few steps ahead (what a forger on
   the path can make a receiver spend), and ``Inbound.install`` of a new key (leave).

Then the E2EE share of the media CPU of a room with one talker and N-1 listeners, per
20 ms frame: ``(seal + (N-1) * open) / (encode + (N-1) * decode + seal + (N-1) * open)``
for N = 2, 4, 8. Without libopus the codec rows and the share are left out and a random
payload of ``--payload-size`` bytes is used.

Run::

    .venv/bin/python bench/e2ee.py              # 2000 calls per run, 7 runs
    .venv/bin/python bench/e2ee.py -n 5000 -r 11
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import sys
import timeit
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import numpy as np

from bangor.audio.codec import OpusDecoder, OpusEncoder
from bangor.errors import CodecUnavailableError, PacketError
from bangor.settings import FRAME_SAMPLES, SAMPLE_RATE, ClientSettings
from bangor.wire.senderkeys import (
    PURPOSE_VOICE,
    Inbound,
    Outbound,
    fresh_sender_key,
)
from bangor.wire.sframe import SFrameContext, SFrameKey, make_kid

BITRATE = 40_000
TONE_HZ = 140.0  # a low male voice's fundamental
HARMONICS = (1.0, 0.5, 0.33, 0.25, 0.2)
AMPLITUDE = 6000  # int16 peak of the harmonic sum, well below clipping
# A little breath noise: a bare tone packs into 72-87 B, with it 81-99 B like speech.
NOISE = 200
NOISE_SEED = 1
WARMUP_FRAMES = 25  # the encoder settles on a steady packet size after ~0.5 s
TONE_FRAMES = 250  # 5 s of PCM cycled through by the encode timing
METADATA = b"room 1 / voice / member 2"  # what a caller binds as SFrame metadata
MEMBERS = (2, 4, 8)
RARE_NUMBER = 200  # rare events: calls per run (each builds fresh state)
TAG_SIZE = 16
T = TypeVar("T")


def median_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Median over ``repeat`` runs of the per-call time of ``fn``, in microseconds."""
    runs = timeit.Timer(fn).repeat(repeat=repeat, number=number)
    return statistics.median(runs) / number * 1e6


def tone_frames(count: int) -> list[np.ndarray]:
    t = np.arange(count * FRAME_SAMPLES) / SAMPLE_RATE
    wave = np.zeros_like(t)
    for i, a in enumerate(HARMONICS):
        wave += a * np.sin(2 * np.pi * TONE_HZ * (i + 1) * t)
    noise = np.random.default_rng(NOISE_SEED).standard_normal(len(t))
    pcm = (AMPLITUDE / sum(HARMONICS) * wave + NOISE * noise).astype(np.int16)
    return [pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in range(count)]


def cycle(items: Sequence[T]) -> Callable[[], T]:
    """A function returning the next item each call, round and round."""
    it = itertools.cycle(items)
    return lambda: next(it)


def make_inbound(settings: ClientSettings) -> Inbound:
    return Inbound.from_settings(settings)


def metadata_for(purpose: bytes) -> bytes:
    return METADATA


class Codec:
    """Opus packets and timings; CodecUnavailableError without libopus."""

    def __init__(self, number: int, repeat: int) -> None:
        frames = tone_frames(TONE_FRAMES)
        encoder = OpusEncoder(bitrate=BITRATE)
        packets = [encoder.encode(pcm) for pcm in frames]
        steady = packets[WARMUP_FRAMES:]
        # The packet whose size is the median of the steady state stands for "a frame".
        self.packet = sorted(steady, key=len)[len(steady) // 2]
        self.sizes = (min(map(len, steady)), max(map(len, steady)))

        next_pcm = cycle(frames)
        timing_encoder = OpusEncoder(bitrate=BITRATE)
        self.encode_us = median_us(lambda: timing_encoder.encode(next_pcm()), number, repeat)
        next_packet = cycle(steady)
        decoder = OpusDecoder()
        self.decode_us = median_us(lambda: decoder.decode(next_packet()), number, repeat)


def sealed_frames(out: Outbound, payload: bytes, count: int) -> Iterator[bytes]:
    return iter([out.seal(PURPOSE_VOICE, METADATA, payload) for _ in range(count)])


def time_e2ee(payload: bytes, number: int, repeat: int) -> dict[str, float]:
    settings = ClientSettings()
    results: dict[str, float] = {}

    out = Outbound(fresh_sender_key())
    results["Outbound.seal"] = median_us(
        lambda: out.seal(PURPOSE_VOICE, METADATA, payload), number, repeat
    )

    # Every frame may open once, so seal enough distinct ones for all runs.
    out = Outbound(fresh_sender_key())
    inb = make_inbound(settings)
    inb.install(out.key, metadata_for, 0.0)
    frames = sealed_frames(out, payload, number * repeat)
    results["Inbound.open"] = median_us(
        lambda: inb.open(PURPOSE_VOICE, METADATA, next(frames), 0.0), number, repeat
    )

    # The bare SFrame layer underneath, for the wrapper's overhead.
    key = os.urandom(32)
    sender, receiver = SFrameContext(), SFrameContext()
    sender.add_send_key(1, key)
    receiver.add_receive_key(1, key)
    results["SFrameContext.encrypt (bare)"] = median_us(
        lambda: sender.encrypt(1, METADATA, payload), number, repeat
    )
    raw = iter([sender.encrypt(1, METADATA, payload) for _ in range(number * repeat)])
    results["SFrameContext.decrypt (bare)"] = median_us(
        lambda: receiver.decrypt(METADATA, next(raw)), number, repeat
    )
    return results


def time_rare(payload: bytes, repeat: int) -> dict[str, float]:
    """Per-event costs that build fresh state each call (setup excluded where possible)."""
    settings = ClientSettings()
    results: dict[str, float] = {}
    n = RARE_NUMBER

    # First frame after a join: receiver derives one ratchet step and commits.
    cases: list[tuple[Inbound, bytes]] = []
    for _ in range(n * repeat):
        out = Outbound(fresh_sender_key())
        inb = make_inbound(settings)
        inb.install(out.key, metadata_for, 0.0)
        out.ratchet()
        cases.append((inb, out.seal(PURPOSE_VOICE, METADATA, payload)))
    it = iter(cases)

    def first_after_join() -> None:
        inb, frame = next(it)
        inb.open(PURPOSE_VOICE, METADATA, frame, 0.0)

    results["open, first frame after a join (derive + commit)"] = median_us(
        first_after_join, n, repeat
    )

    # A forged frame 5 steps ahead: the first costs the chain, the rest one AEAD check.
    inb = make_inbound(settings)
    inb.install(fresh_sender_key(), metadata_for, 0.0)
    forged = SFrameKey(make_kid(0, 0, 5), os.urandom(32)).seal(0, METADATA, payload)

    def forged_ahead() -> None:
        with contextlib.suppress(PacketError):
            inb.open(PURPOSE_VOICE, METADATA, forged, 0.0)

    results["open, forged frame 5 steps ahead (cached chain)"] = median_us(forged_ahead, n, repeat)

    key0 = fresh_sender_key()

    def forged_fresh() -> None:
        fresh = make_inbound(settings)
        fresh.install(key0, metadata_for, 0.0)
        with contextlib.suppress(PacketError):
            fresh.open(PURPOSE_VOICE, METADATA, forged, 0.0)

    def install_only() -> None:
        make_inbound(settings).install(key0, metadata_for, 0.0)

    install_us = median_us(install_only, n, repeat)
    results["Inbound() + install (first key)"] = install_us
    results["open, forged frame 5 steps ahead (first one)"] = (
        median_us(forged_fresh, n, repeat) - install_us
    )

    # A leave: install of the next generation's key into a receiver holding one.
    pairs = []
    for _ in range(n * repeat):
        inb = make_inbound(settings)
        inb.install(key0, metadata_for, 0.0)
        pairs.append(inb)
    nxt = fresh_sender_key(1)
    it2 = iter(pairs)
    results["install of a new generation (leave)"] = median_us(
        lambda: next(it2).install(nxt, metadata_for, 0.0), n, repeat
    )
    out = Outbound(fresh_sender_key())
    results["Outbound.ratchet (join)"] = median_us(out.ratchet, n, repeat)
    out = Outbound(fresh_sender_key())
    results["Outbound.rotate (leave)"] = median_us(out.rotate, n, repeat)
    return results


def table(rows: Sequence[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:{width}}  {value:>10}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Per-frame cost of Bangor's end-to-end encryption against Opus."
    )
    parser.add_argument("-n", "--number", type=int, default=2000, help="calls per timing run")
    parser.add_argument("-r", "--repeat", type=int, default=7, help="timing runs (median)")
    parser.add_argument(
        "-p",
        "--payload-size",
        type=int,
        default=90,
        help="payload bytes when libopus is missing (default 90)",
    )
    args = parser.parse_args(argv)
    if args.number < 1 or args.repeat < 1 or not 1 <= args.payload_size <= 1200:
        parser.error("--number and --repeat must be >= 1, --payload-size 1..1200")

    try:
        codec: Codec | None = Codec(args.number, args.repeat)
    except CodecUnavailableError as exc:
        print(f"note: {exc}; codec rows and the E2EE share are left out")
        codec = None
    payload = codec.packet if codec else os.urandom(args.payload_size)
    e2ee = time_e2ee(payload, args.number, args.repeat)
    rare = time_rare(payload, args.repeat)

    print(
        f"Bangor E2EE benchmark: median of {args.repeat} runs x {args.number} calls, "
        "microseconds per call\n"
    )
    if codec:
        lo, hi = codec.sizes
        print(
            f"voice payload: {len(payload)} B Opus packet ({BITRATE // 1000} kbit/s, 20 ms "
            f"tone; steady-state packets {lo}-{hi} B); SFrame adds a {TAG_SIZE} B tag and "
            "a 1-4 B header\n"
        )
    else:
        print(f"voice payload: {len(payload)} random bytes\n")

    rows = []
    if codec:
        rows += [("OpusEncoder.encode", f"{codec.encode_us:.1f}")]
        rows += [("OpusDecoder.decode", f"{codec.decode_us:.1f}")]
    rows += [(name, f"{us:.1f}") for name, us in e2ee.items()]
    print("per frame:")
    table(rows)
    seal_us, open_us = e2ee["Outbound.seal"], e2ee["Inbound.open"]
    extra_seal = seal_us - e2ee["SFrameContext.encrypt (bare)"]
    extra_open = open_us - e2ee["SFrameContext.decrypt (bare)"]
    print(f"  (senderkeys over bare SFrame: seal {extra_seal:+.1f}, open {extra_open:+.1f})\n")

    if codec:
        print("one talker, N-1 listeners, per 20 ms frame (whole room):")
        share_rows = []
        for n in MEMBERS:
            crypto = seal_us + (n - 1) * open_us
            media = codec.encode_us + (n - 1) * codec.decode_us + crypto
            share_rows.append(
                (
                    f"N={n}: E2EE {crypto:.1f} us of {media:.1f} us",
                    f"{100 * crypto / media:.1f} %",
                )
            )
        table(share_rows)
        print()

    print(f"rare events (median of {args.repeat} runs x {RARE_NUMBER}):")
    table([(name, f"{us:.1f}") for name, us in rare.items()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
