"""The metrics' integer counters: the forwarding-time histogram's buckets and sum."""

from __future__ import annotations

import math

import pytest

from bangor.server.counters import FORWARD_BUCKETS_NS, Timings


def test_a_duration_goes_in_the_first_bucket_it_fits_bounds_included() -> None:
    timings = Timings((10, 100))
    for ns in (0, 10, 11, 100, 101, 10**9):
        timings.observe(ns)
    assert timings.counts == [2, 2, 2]  # <=10, <=100, above
    assert timings.count == 6
    assert timings.total_ns == 0 + 10 + 11 + 100 + 101 + 10**9


def test_cumulative_buckets_are_in_seconds_and_end_at_infinity() -> None:
    timings = Timings((1_000, 2_000_000))
    timings.observe(500)
    timings.observe(1_500_000)
    timings.observe(3_000_000)
    assert timings.cumulative() == [(1e-6, 1), (2e-3, 2), (math.inf, 3)]


def test_the_default_buckets_span_microseconds_to_tens_of_milliseconds() -> None:
    timings = Timings()
    assert timings.bounds == FORWARD_BUCKETS_NS
    assert len(timings.counts) == len(FORWARD_BUCKETS_NS) + 1
    assert FORWARD_BUCKETS_NS[0] == 10_000 and FORWARD_BUCKETS_NS[-1] >= 10_000_000


@pytest.mark.parametrize("bounds", [(), (10, 10), (100, 10)])
def test_bounds_must_increase(bounds: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="increasing"):
        Timings(bounds)
