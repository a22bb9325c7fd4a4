"""TokenBucket and ReportLimiter with a hand-set clock."""

from __future__ import annotations

import math

import pytest

from bangor.wire.ratelimit import ReportLimiter, TokenBucket


def test_bucket_spends_its_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(2.0, 3, now=10.0)
    assert [bucket.take(10.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(10.4)  # 0.8 of a token
    assert bucket.take(10.5)  # one token after 0.5 s
    assert not bucket.take(10.5)
    assert bucket.level(100.0) == 3  # never more than the burst
    assert bucket.full(100.0)


def test_a_refused_take_spends_nothing() -> None:
    bucket = TokenBucket(1.0, 1, now=0.0)
    assert bucket.take(0.0)
    for _ in range(100):
        assert not bucket.take(0.5)
    assert bucket.take(1.0)  # the refusals did not push the next token back


def test_a_clock_stepping_back_adds_nothing() -> None:
    bucket = TokenBucket(1.0, 2, now=5.0)
    assert bucket.take(5.0) and bucket.take(5.0)
    assert not bucket.take(1.0)
    assert bucket.level(5.5) == pytest.approx(0.5)  # counted from 5.0, not from 1.0


@pytest.mark.parametrize(
    ("rate", "burst"), [(-1.0, 1), (math.nan, 1), (math.inf, 1), (1.0, 0), (1.0, math.nan)]
)
def test_bucket_refuses_nonsense_settings(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        TokenBucket(rate, burst, now=0.0)


def test_reports_beyond_the_burst_are_counted_and_summed_up_once_due() -> None:
    limiter = ReportLimiter(3, 10.0, now=0.0)
    shown = [limiter.allow(f"bad {i % 2}", 0.0) for i in range(1000)]
    assert shown.count(True) == 3 and shown[:3] == [True] * 3
    assert limiter.get_timer() == 10.0
    assert limiter.take_due(9.9) == {}  # not due yet
    assert limiter.take_due(10.0) == {"bad 0": 498, "bad 1": 499}
    assert limiter.get_timer() is None and limiter.take_due(20.0) == {}
    # The bucket refills at one report per interval: one more is shown later.
    assert limiter.allow("later", 10.0)
    assert not limiter.allow("later again", 10.0)


def test_only_a_few_kinds_of_report_are_counted_apart() -> None:
    limiter = ReportLimiter(1, 10.0, now=0.0)
    assert limiter.allow("shown", 0.0)
    for i in range(100):
        assert not limiter.allow(f"text {i % 10}", 0.0)  # e.g. texts with numbers in them
    held = limiter.take_due(0.0, force=True)  # taken early (the call is over, say)
    kept = {f"text {i}": 10 for i in range(ReportLimiter.MAX_KINDS)}
    assert held == {**kept, ReportLimiter.OTHER: 100 - 10 * ReportLimiter.MAX_KINDS}
    with pytest.raises(ValueError, match="interval"):
        ReportLimiter(1, 0.0, now=0.0)
