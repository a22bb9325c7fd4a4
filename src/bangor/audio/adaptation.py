"""What a sender does about the loss its listeners report: redundancy, FEC, bitrate.

Sans-I/O: listeners' reports (loss fraction, arrival time) in, a :class:`SendPlan`
out. The worst listener of the last ``hold`` seconds decides, since one stream
goes to everybody: a clean network gets no redundancy and no FEC (they would
cost bits and, for FEC, quality), loss turns redundancy on at once, and it goes
back down only after ``hold`` seconds without reports that call for it. Until the
first report arrives (at most ``startup`` seconds after the first :meth:`plan`) the sender
repeats frames as deeply as allowed: a newcomer knows nothing of the network yet, and on
a lossy link the first reports can take seconds over TCP; a clean report ends it.

Measured with ``bench/quality.py`` (PESQ-WB, 40 kbit/s, ideal receiver): at 5 % loss
concealment alone scores 2.27, in-band FEC 3.38, one repeated frame 3.92, two 4.14
(clean: 4.14); at 15 %: 1.43, 2.42, 2.93 and 3.97. Asking Opus for FEC bits on top
of redundancy lowers the score (two frames + FEC: 3.76 and 3.00), because the FEC
bits come out of the primary frame. So FEC is used only while redundancy is off.

Bursts: when listeners report that their losses come in runs (a mean burst of
``spread_burst`` packets or more, Wi-Fi and mobile links), copies of neighbouring
ticks go down together with the frame they repeat. Then the same number of copies is
spread out instead (``wire.voice``): the farthest ``reach`` ticks back, about
``REACH_PER_BURST`` mean bursts, so even a long run passes before it, and the others
evenly between; a copy more than ``max_depth`` is allowed for it (``max_spread_depth``,
from 10 % loss on). ``bench/quality.py --bursty --seeds 5`` (ideal receiver, 15 % loss
in bursts of 3): copies of ticks n-1, n-2 score 2.39; n-4, n-8 3.78; n-3, n-5, n-8 3.81
(random 15 %: 3.94, 4.06, 4.14). The price is delay (the listener waits ``reach``
frames for a copy) and, with the third copy, bits. A sender spreads only while every
listener has said it reads spread frames (its reports carry a burst length): one from
before would drop them whole.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from bangor.wire.voice import MAX_REDUNDANT, MAX_SPREAD

# Opus' packet_loss_perc hint above this buys little more FEC and costs quality.
MAX_EXPECTED_LOSS = 25
# Keep at most this many reports per listener (one a second: far more than `hold`).
MAX_REPORTS = 64
# The farthest copy goes this many mean bursts back (capped at MAX_SPREAD): a burst
# is geometric, so 2.7 means covers all but (1 - 1/b)^(2.7 b), about 7 % of them.
REACH_PER_BURST = 2.7


@dataclass(frozen=True)
class SendPlan:
    depth: int  # earlier frames repeated in each packet (0: none)
    expected_loss: int  # percent, for the encoder's in-band FEC (0: no FEC bits)
    bitrate: int  # bit/s of each Opus frame
    # Distances back (rising) of the ticks repeated, `depth` of them; () = the `depth`
    # ticks just before (consecutive).
    spread: tuple[int, ...] = ()


class SendAdapter:
    """Turns listeners' loss reports into a plan for the encoder and packetizer."""

    def __init__(
        self,
        bitrate: int,
        *,
        fec: bool = True,
        max_depth: int = 2,
        thresholds: Sequence[float] = (0.01, 0.03, 0.10),
        hold: float = 10.0,
        max_bitrate: int | None = None,
        startup: float = 10.0,
        spread_burst: float = 1.6,
        max_spread_depth: int = 3,
    ) -> None:
        if len(thresholds) > MAX_REDUNDANT or list(thresholds) != sorted(thresholds):
            raise ValueError(f"thresholds must rise, at most {MAX_REDUNDANT} of them")
        self._bitrate = bitrate
        self._fec = fec
        if not 0 <= max_depth <= MAX_REDUNDANT:
            raise ValueError(f"redundancy depth must be 0..{MAX_REDUNDANT}, got {max_depth}")
        self._max_depth = max_depth
        if not 0 <= max_spread_depth <= MAX_REDUNDANT:
            raise ValueError(f"spread depth must be 0..{MAX_REDUNDANT}, got {max_spread_depth}")
        self._max_spread_depth = max_spread_depth
        self._thresholds = tuple(thresholds)
        self._hold = hold
        self._max_bitrate = max_bitrate
        # Per listener: (time, loss, mean burst or 0) of its recent reports.
        self._reports: dict[int, deque[tuple[float, float, float]]] = {}
        # Listeners not known to read spread frames (joined, or their reports lack bursts).
        self._plain: set[int] = set()
        self._spread_burst = spread_burst  # 0: never spread
        self._startup = startup
        self._started_at: float | None = None  # the first plan()'s time
        self._reported = False

    def set_max_bitrate(self, max_bitrate: int | None) -> None:
        """The room's cap (from the server), None or 0 for none."""
        self._max_bitrate = max_bitrate or None

    def joined(self, listener: int) -> None:
        """A new listener: no spreading until it shows it reads spread frames."""
        self._plain.add(listener)

    def report(self, listener: int, loss: float, now: float, burst: float | None = None) -> None:
        """A listener's loss fraction (0..1) of our packets over its last interval.

        ``burst``: the mean packets it lost in a row (0: none); None from a listener
        that does not say, which cannot read spread frames.
        """
        self._reported = True
        if burst is None:
            self._plain.add(listener)
        else:
            self._plain.discard(listener)
        reports = self._reports.setdefault(listener, deque(maxlen=MAX_REPORTS))
        reports.append((now, min(max(loss, 0.0), 1.0), max(burst or 0.0, 0.0)))

    def forget(self, listener: int) -> None:
        self._reports.pop(listener, None)
        self._plain.discard(listener)

    def worst_loss(self, now: float) -> float:
        """The highest loss any listener reported within the last ``hold`` seconds."""
        worst = 0.0
        for reports in self._reports.values():
            while reports and reports[0][0] < now - self._hold:
                reports.popleft()
            worst = max([worst, *(loss for _, loss, _ in reports)])
        return worst

    def worst_burst(self, now: float) -> float:
        """The longest mean burst of any listener within the last ``hold`` seconds.

        Each listener's reports are pooled (lost packets over runs), so one interval
        with a single long run does not decide alone.
        """
        self.worst_loss(now)  # drops the expired reports
        worst = 0.0
        for reports in self._reports.values():
            lost = sum(loss for _, loss, burst in reports if burst >= 1)
            runs = sum(loss / burst for _, loss, burst in reports if burst >= 1)
            if runs:
                worst = max(worst, lost / runs)
        return worst

    def initial(self) -> SendPlan:
        """The plan before the clock starts (the first :meth:`plan` starts it)."""
        return SendPlan(self._max_depth, 0, self._capped(self._bitrate))

    def _capped(self, bitrate: int) -> int:
        return min(bitrate, self._max_bitrate) if self._max_bitrate is not None else bitrate

    def plan(self, now: float) -> SendPlan:
        loss = self.worst_loss(now)
        called_for = sum(loss >= t for t in self._thresholds)
        depth = min(called_for, self._max_depth)
        if self._started_at is None:
            self._started_at = now
        if not self._reported and now < self._started_at + self._startup:
            depth = self._max_depth  # no report yet: assume the worst until one comes
        spread = self._spread(min(called_for, self._max_spread_depth), now)
        depth = len(spread) or depth
        expected = min(round(loss * 100), MAX_EXPECTED_LOSS) if self._fec and not depth else 0
        return SendPlan(depth, expected, self._capped(self._bitrate), spread)

    def _spread(self, depth: int, now: float) -> tuple[int, ...]:
        if not depth or self._plain or not self._spread_burst:
            return ()
        burst = self.worst_burst(now)
        if burst < self._spread_burst:
            return ()
        reach = min(MAX_SPREAD, max(depth, math.ceil(REACH_PER_BURST * burst)))
        # Evenly up to reach, rounded half up: rising, since reach / depth >= 1.
        return tuple(math.floor(reach * (i + 1) / depth + 0.5) for i in range(depth))
