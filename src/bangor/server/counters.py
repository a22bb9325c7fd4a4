"""What the server counts for ``serve --metrics``: plain integers, sans-I/O.

The server's objects bump these as things happen (cheap increments, no library call);
``server/metrics.py`` reads them only when Prometheus scrapes. Nothing here names a
user, a room or an address: totals, by kind or reason.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

# Upper bounds (nanoseconds) of the relay's forwarding-time buckets: 10 us to 50 ms. One
# voice datagram to a few listeners takes tens of microseconds on a small machine.
FORWARD_BUCKETS_NS = (
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    50_000_000,
)


class Timings:
    """A histogram of durations in nanoseconds: a count per bucket (not cumulative; the
    last is above every bound) and the sum. :meth:`observe` is one bisect and two adds."""

    __slots__ = ("bounds", "counts", "total_ns")

    def __init__(self, bounds: tuple[int, ...] = FORWARD_BUCKETS_NS) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("bucket bounds must be increasing")
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total_ns = 0

    def observe(self, ns: int) -> None:
        # bisect_left: a duration equal to a bound belongs to that bucket (le, "<=").
        self.counts[bisect_left(self.bounds, ns)] += 1
        self.total_ns += ns

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound in seconds, observations at or below it), the last bound infinite."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, None), self.counts, strict=True):
            running += n
            out.append((float("inf") if bound is None else bound / 1e9, running))
        return out


@dataclass
class ServerCounts:
    """The control side's counters (``server/app.py`` bumps them)."""

    handshakes_started: int = 0  # control connections accepted (TCP, or a browser's stream)
    handshakes_completed: int = 0  # the Noise handshake finished
    handshakes_failed: int = 0  # broke the protocol before login
    logins: int = 0
    login_failures: Counter[str] = field(default_factory=Counter)  # by reason
    room_requests: Counter[str] = field(default_factory=Counter)  # by request tag
    room_refusals: Counter[str] = field(default_factory=Counter)  # by request tag
    throttled: Counter[str] = field(default_factory=Counter)  # by limits.Kind value
    throttle_closed: Counter[str] = field(default_factory=Counter)  # sessions closed, by kind
    backlog_drops: int = 0  # sessions dropped for not reading their control channel
    heartbeat_failures: int = 0  # cluster heartbeats the database did not take
    forward_times: Timings = field(default_factory=Timings)
    # Whether to time forwarding at all: only --metrics reads the histogram, so a server
    # without it keeps the two clock reads a datagram off its hot path.
    timing: bool = False
