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
    # No loss, but the hole at 93 is judged as a burst only now (10 packets later).
    assert meter.interval() == LossReport(100, 100, 1, 1)
    assert meter.total() == LossReport(200, 190, 10, 10)


def test_reordered_packets_are_not_loss() -> None:
    meter = LossMeter()
    feed(meter, [0, 2, 1, 3, 5, 4, 6])
    assert meter.total() == LossReport(7, 7)


def test_counts_across_wrap_around() -> None:
    meter = LossMeter()
    start = PACKET_MODULO - 20
    feed(meter, [n for n in range(start, start + 40) if n != start + 25])
    assert meter.total() == LossReport(40, 39, 1, 1)


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


def test_bursts_are_runs_of_missing_packets() -> None:
    meter = LossMeter()
    lost = {10, 11, 12, 30, 50, 51, 52, 53, 54}  # runs of 3, 1 and 5
    feed(meter, [n for n in range(100) if n not in lost])
    report = meter.interval()
    assert (report.burst_lost, report.bursts, report.burst) == (9, 3, 3.0)
    feed(meter, list(range(100, 200)))
    assert meter.interval().burst == 0.0  # none in this one
    assert meter.total().bursts == 3


def test_a_reordered_packet_is_not_a_burst_and_a_run_is_judged_once_settled() -> None:
    meter = LossMeter()
    feed(meter, [0, 1, 3, 4, 2, 5, 7, 8, 9])  # 2 came late; 6 is missing
    assert meter.interval().bursts == 0  # 6 not judged yet: 7 and 8 might be reordered
    feed(meter, list(range(10, 30)))
    report = meter.interval()
    assert (report.burst_lost, report.bursts) == (1, 1)
    assert meter.total().lost == 1


def test_a_run_across_intervals_counts_once() -> None:
    meter = LossMeter()
    feed(meter, list(range(20)))
    feed(meter, list(range(24, 40)))  # 20..23 lost; judged once 10 more came
    first = meter.interval()
    feed(meter, list(range(40, 60)))
    second = meter.interval()
    assert first.bursts + second.bursts == 1
    assert first.burst_lost + second.burst_lost == 4


def test_gilbert_elliott_bursts_are_measured() -> None:
    from tests.usernetem import GilbertElliott

    model = GilbertElliott(0.15, 3, random.Random(3))
    meter = LossMeter()
    feed(meter, [n for n in range(20_000) if not model.lose()])
    assert meter.total().burst == pytest.approx(3, rel=0.1)
