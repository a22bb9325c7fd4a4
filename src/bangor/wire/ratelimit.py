"""A token bucket, sans-I/O: every call takes ``now``, nothing reads a clock.

The server meters each session's and each account's joins, peer messages and chat with
it (``server/limits.py``); a member meters the problem reports another member causes
(``wire/e2ee.py``).
"""

from __future__ import annotations

import math
from collections import Counter


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; starts full."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if not (rate >= 0 and math.isfinite(rate)):  # also rejects NaN
            raise ValueError(f"rate must be a finite number >= 0, got {rate}")
        if not (burst >= 1 and math.isfinite(burst)):
            raise ValueError(f"burst must be a finite number >= 1, got {burst}")
        self.rate = rate
        self.burst = float(burst)
        self._tokens = self.burst
        self._last = now

    def level(self, now: float) -> float:
        """Tokens available at ``now`` (a clock that steps back adds nothing)."""
        if now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
        return self._tokens

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False (and nothing spent) if not."""
        if self.level(now) < 1:
            return False
        self._tokens -= 1
        return True

    def full(self, now: float) -> bool:
        """Whether the bucket is as good as new (forgetting it would change nothing)."""
        return self.level(now) >= self.burst


class ReportLimiter:
    """The first ``burst`` reports are shown, then about one per ``interval``; the rest are
    counted by text, and the counts are due ``interval`` after the first one held back.

    So a flood of bad messages from one source makes a handful of lines, not one each.
    """

    __slots__ = ("_bucket", "_due", "_interval", "held")

    MAX_KINDS = 4  # distinct texts counted apart; the rest under OTHER
    OTHER = "other problems"

    def __init__(self, burst: int, interval: float, now: float) -> None:
        if not (interval > 0 and math.isfinite(interval)):
            raise ValueError(f"interval must be a finite number > 0, got {interval}")
        self._bucket = TokenBucket(1 / interval, burst, now)
        self._interval = interval
        self._due: float | None = None
        self.held: Counter[str] = Counter()  # reports held back, by text

    def allow(self, report: str, now: float) -> bool:
        """True: show ``report`` now; False: it was counted instead."""
        if self._bucket.take(now):
            return True
        if report not in self.held and len(self.held) >= self.MAX_KINDS:
            report = self.OTHER
        self.held[report] += 1
        if self._due is None:
            self._due = now + self._interval
        return False

    def get_timer(self) -> float | None:
        """When counts are due (None: nothing held back)."""
        return self._due

    def take_due(self, now: float, *, force: bool = False) -> Counter[str]:
        """The reports held back, by text, if due at ``now`` (or ``force``), and start
        counting afresh; empty if nothing is due."""
        if self._due is None or (now < self._due and not force):
            return Counter()
        held, self.held, self._due = self.held, Counter(), None
        return held
