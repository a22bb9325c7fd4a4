"""Admission of control connections before login (sans-I/O).

Like OpenSSH's MaxStartups, PerSourceMaxStartups and LoginGraceTime, with one change:
when a cap is full the newcomer is admitted and the connection in that scope that has
gone longest without progress (a whole Noise message, then its hello) is closed; one
whose password is being checked goes last. A real client sends its first Noise message
the moment it connects and each next one a round trip later; a flood sends nothing,
drips, or stops after the handshake, so the flood is what goes, not the real users who
share its address.

Times are the caller's ``now`` (seconds, any monotonic clock). The caller closes what
:meth:`Admission.admit` and :meth:`Admission.handle_timer` return, tells
:meth:`Admission.progressed` as a connection gets further, and :meth:`Admission.done`
when it logged in or went away.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Generic, TypeVar

from bangor.settings import ServerSettings

K = TypeVar("K")

# Sources remembered per report period for "most from"; a wide flood cannot grow it further.
MAX_REPORTED_SOURCES = 1024


class Stage(IntEnum):
    """How far a connection got (a login being checked is evicted last)."""

    CONNECTED = 0  # accepted, no whole Noise message yet
    GREETED = 1  # Noise message 1 read (and message 2 sent)
    HANDSHAKEN = 2  # Noise handshake complete, no hello yet
    LOGGING_IN = 3  # hello read: the password is being checked


class Reason(Enum):
    """Why admission closed a connection (the values are the log's words)."""

    ADDRESS = "evicted, address full"
    NETWORK = "evicted, network full"
    TOTAL = "evicted, server full"
    FIRST_MESSAGE = "no first message in time"
    HANDSHAKE = "no login in time"
    PROTOCOL = "broke the protocol"

    @property
    def timed_out(self) -> bool:
        return self in (Reason.FIRST_MESSAGE, Reason.HANDSHAKE)


@dataclass(frozen=True)
class Closing(Generic[K]):
    """Close ``key`` now, for ``reason``."""

    key: K
    reason: Reason


@dataclass(frozen=True)
class Report:
    """What admission closed since the last report (one log line)."""

    seconds: float
    counts: tuple[tuple[Reason, int], ...]
    busiest: str  # the source address most of them came from
    busiest_count: int

    @property
    def total(self) -> int:
        return sum(n for _, n in self.counts)

    def __str__(self) -> str:
        detail = "; ".join(f"{n} {reason.value}" for reason, n in self.counts)
        period = f" in the last {self.seconds:.0f} s" if self.seconds >= 1 else ""
        return (
            f"closed {self.total} connection(s) before login{period} ({detail}); "
            f"most from {self.busiest} ({self.busiest_count})"
        )


def source_of(address: str, v4_prefix: int, v6_prefix: int) -> tuple[str, str]:
    """(address, network) for counting: an IPv4-mapped IPv6 address counts as IPv4;
    the network is the /v4_prefix or /v6_prefix around it. Not an IP: itself twice."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return address, address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = v4_prefix if ip.version == 4 else v6_prefix
    return str(ip), str(ipaddress.ip_network((ip, prefix), strict=False))


@dataclass
class _Entry:
    address: str
    network: str
    created: float
    progressed: float  # when it last got a stage further (created, at first)
    stage: Stage = Stage.CONNECTED


class Admission(Generic[K]):
    """Unauthenticated connections: caps per address, per network and in total, deadlines."""

    def __init__(self, settings: ServerSettings) -> None:
        caps = (
            settings.max_unauthenticated_per_address,
            settings.max_unauthenticated_per_network,
            settings.max_unauthenticated,
        )
        if min(caps) < 1:
            raise ValueError("unauthenticated connection caps must be at least 1")
        self.settings = settings
        self._entries: dict[K, _Entry] = {}
        self._per_address: Counter[str] = Counter()
        self._per_network: Counter[str] = Counter()
        # Closed since the last report, by reason and by source address.
        self._counts: Counter[Reason] = Counter()
        self._sources: Counter[str] = Counter()
        self._period_start: float | None = None
        self._last_report = float("-inf")
        self.closed: Counter[Reason] = Counter()  # since start, for the metrics

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def stage(self, key: K) -> Stage | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.stage

    # --- inputs -----------------------------------------------------------------

    def admit(self, key: K, address: str, now: float) -> list[Closing[K]]:
        """Take a new connection from ``address``; returns the ones to close for it."""
        s = self.settings
        address, network = source_of(address, s.network_prefix_v4, s.network_prefix_v6)
        closing: list[Closing[K]] = []
        while self._per_address[address] >= s.max_unauthenticated_per_address:
            closing.append(self._evict(Reason.ADDRESS, now, address=address))
        while self._per_network[network] >= s.max_unauthenticated_per_network:
            closing.append(self._evict(Reason.NETWORK, now, network=network))
        while len(self._entries) >= s.max_unauthenticated:
            closing.append(self._evict(Reason.TOTAL, now))
        self._entries[key] = _Entry(address, network, now, now)
        self._per_address[address] += 1
        self._per_network[network] += 1
        return closing

    def progressed(self, key: K, stage: Stage, now: float) -> None:
        """``key`` got as far as ``stage`` at ``now`` (never moves back)."""
        entry = self._entries.get(key)
        if entry is not None and stage > entry.stage:
            entry.stage = stage
            entry.progressed = now

    def failed(self, key: K, now: float) -> None:
        """``key`` broke the protocol before login: counted for the report, then done."""
        entry = self._entries.get(key)
        if entry is not None:
            self._count(Reason.PROTOCOL, entry.address, now)
            self.done(key)

    def done(self, key: K) -> None:
        """``key`` logged in or closed: it no longer counts. Idempotent."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        for counter, name in (
            (self._per_address, entry.address),
            (self._per_network, entry.network),
        ):
            counter[name] -= 1
            if counter[name] <= 0:
                del counter[name]

    # --- timers -----------------------------------------------------------------

    def _deadline(self, entry: _Entry) -> float:
        s = self.settings
        if entry.stage is Stage.CONNECTED:
            return entry.created + min(s.first_message_timeout, s.handshake_timeout)
        return entry.created + s.handshake_timeout

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` has something to do next (a deadline or a report)."""
        times = [self._deadline(entry) for entry in self._entries.values()]
        if self._counts:
            assert self._period_start is not None
            due = self._last_report + self.settings.admission_log_interval
            times.append(max(due, self._period_start))
        return min(times, default=None)

    def handle_timer(self, now: float) -> list[Closing[K]]:
        """Connections whose deadline has passed (they no longer count)."""
        expired: list[Closing[K]] = []
        for key, entry in list(self._entries.items()):
            if now >= self._deadline(entry):
                first = entry.stage is Stage.CONNECTED
                reason = Reason.FIRST_MESSAGE if first else Reason.HANDSHAKE
                expired.append(Closing(key, reason))
                self._count(reason, entry.address, now)
                self.done(key)
        return expired

    def report(self, now: float) -> Report | None:
        """At most one report per ``admission_log_interval``, only when something was closed."""
        if not self._counts or now < self._last_report + self.settings.admission_log_interval:
            return None
        assert self._period_start is not None
        busiest, busiest_count = self._sources.most_common(1)[0]
        counts = tuple((reason, self._counts[reason]) for reason in Reason if self._counts[reason])
        report = Report(now - self._period_start, counts, busiest, busiest_count)
        self._counts.clear()
        self._sources.clear()
        self._period_start = None
        self._last_report = now
        return report

    # --- internals --------------------------------------------------------------

    def _evict(
        self, reason: Reason, now: float, *, address: str | None = None, network: str | None = None
    ) -> Closing[K]:
        """From the scope (``address``/``network`` None: any), the connection from the
        busiest network, then one not logging in, then the one longest without progress:
        one network cannot push out the others, nor a flood from one address (idle,
        dripping, or stopping after the handshake) its real users, which progress every
        round trip. Progress, not stage: a flood can finish the handshake, then idle."""
        candidates = [
            (
                -self._per_network[entry.network],
                entry.stage is Stage.LOGGING_IN,
                entry.progressed,
                n,
                key,
            )
            for n, (key, entry) in enumerate(self._entries.items())
            if (address is None or entry.address == address)
            and (network is None or entry.network == network)
        ]
        *_, key = min(candidates, key=lambda c: c[:4])
        self._count(reason, self._entries[key].address, now)
        self.done(key)
        return Closing(key, reason)

    def _count(self, reason: Reason, address: str, now: float) -> None:
        if self._period_start is None:
            self._period_start = now
        self._counts[reason] += 1
        self.closed[reason] += 1
        if address in self._sources or len(self._sources) < MAX_REPORTED_SOURCES:
            self._sources[address] += 1
