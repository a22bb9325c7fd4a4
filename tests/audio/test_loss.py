"""Packet loss as a listener counts it from packet numbers."""

from __future__ import annotations

import random

import pytest

from bangor.audio.loss import LossMeter, LossReport
from bangor.wire.voice import PACKET_MODULO


def feed(meter: LossMeter, numbers: list[int]) -> None:
    for n in numbers:
        meter.on_packet(n % PACKET_MODULO, 100)


def test_no_packets_no_loss() -> None:
    meter = LossMeter()
    assert meter.total() == LossReport(0, 0)
    assert meter.interval().loss == 0.0


def test_every_packet_arrives() -> None:
    meter = LossMeter()
    feed(meter, list(range(50)))
    assert meter.interval() == LossReport(50, 50)
    assert meter.total().loss == 0.0


def test_holes_are_loss_and_intervals_are_separate() -> None:
    meter = LossMeter()
    feed(meter, [n for n in range(100) if n % 10 != 3])  # 10 % lost
    first = meter.interval()
    assert (first.expected, first.received, first.lost) == (100, 90, 10)
    feed(meter, list(range(100, 200)))
    assert meter.interval() == LossReport(100, 100)
    assert meter.total() == LossReport(200, 190)


def test_reordered_packets_are_not_loss() -> None:
    meter = LossMeter()
    feed(meter, [0, 2, 1, 3, 5, 4, 6])
    assert meter.total() == LossReport(7, 7)


def test_counts_across_wrap_around() -> None:
    meter = LossMeter()
    start = PACKET_MODULO - 20
    feed(meter, [n for n in range(start, start + 40) if n != start + 25])
    assert meter.total() == LossReport(40, 39)


def test_a_restarted_counter_is_not_counted_as_loss() -> None:
    meter = LossMeter()
    feed(meter, list(range(1000, 1010)))
    feed(meter, list(range(40000, 40010)))  # the sender restarted its count
    assert meter.total() == LossReport(20, 20)


@pytest.mark.parametrize("rate", [0.0, 0.05, 0.15, 0.5])
def test_random_loss_is_measured(rate: float) -> None:
    rng = random.Random(7)
    meter = LossMeter()
    kept = [n for n in range(5000) if rng.random() >= rate]
    feed(meter, kept)
    # The last packets being lost is invisible until a later one comes.
    assert meter.total().loss == pytest.approx(rate, abs=0.015)


def test_bitrate_of_the_primary_frames() -> None:
    meter = LossMeter()
    assert meter.kbps == 0.0  # nothing heard yet
    for n in range(10):
        meter.on_packet(n, 100)  # 100 bytes per 20 ms = 40 kbit/s
    assert meter.kbps == pytest.approx(40.0)
