"""Packet loss and bitrate of one sender's stream, as a listener sees it; sans-I/O.

Loss is counted from the sender's 16-bit packet numbers (``VoiceFrame.packet``),
not from its tick sequence numbers: a sender with voice activity detection skips
ticks while silent, so a gap in ``seq`` says nothing, while every packet sent
takes the next packet number. Like an RTP receiver report (RFC 3550 A.3), the
expected count is the highest packet number seen (extended past wrap-around)
minus the first plus one, and the loss is what was expected and did not come.
Frames recovered from a later packet's redundancy still count as lost packets:
the sender adapts to what the network loses, not to what got repaired.

Bursts: how many packets in a row go missing tells the sender how far apart to put
the copies of a frame (``wire.voice``: spread redundancy). A run of missing numbers
is judged once ``SETTLE`` more packets have come after it, so a packet that was only
reordered fills its hole first; the mean burst is lost packets per run.
"""

from __future__ import annotations

from dataclasses import dataclass

from bangor.settings import FRAME_MS
from bangor.wire.voice import PACKET_MODULO

_HALF = PACKET_MODULO // 2
# A jump this far ahead is a restarted counter, not loss (over 10 s of packets).
RESTART_GAP = 500
# Packets after a missing one before it counts as lost in a burst: reordering by the
# network's jitter is over by then (200 ms at 20 ms), and the jitter buffer gave up.
SETTLE = 10


@dataclass(frozen=True)
class LossReport:
    """One interval (or the whole stream) of a sender's packets."""

    expected: int
    received: int
    burst_lost: int = 0  # packets of the runs of missing ones judged so far
    bursts: int = 0  # runs of missing packets (a burst of loss) that began

    @property
    def burst(self) -> float:
        """Mean packets lost in a row; 0 without loss."""
        return self.burst_lost / self.bursts if self.bursts else 0.0

    @property
    def lost(self) -> int:
        return max(self.expected - self.received, 0)

    @property
    def loss(self) -> float:
        """Fraction of expected packets that never came, 0..1."""
        return self.lost / self.expected if self.expected else 0.0


class LossMeter:
    """Counts expected and received packets of one sender; reports per interval."""

    def __init__(self) -> None:
        self._started = False
        self._last_raw = 0  # the highest packet number seen, as sent (16 bits)
        self._highest = 0  # the same, extended: counts up past wrap-around
        self._received = 0
        self._interval_highest = 0  # extended highest at the last interval()
        self._interval_received = 0
        self._opus_bytes = 0
        self._opus_ms = 0.0  # audio in the primary frames counted in _opus_bytes
        # Bursts: numbers (extended) from _judged on that arrived, not judged yet.
        self._arrived: set[int] = set()
        self._judged = 0  # the first number not judged yet
        self._in_run = False  # the last one judged was missing
        self._burst_lost = self._bursts = 0
        self._interval_burst_lost = self._interval_bursts = 0

    def on_packet(self, packet: int, opus_bytes: int, frame_ms: float = FRAME_MS) -> None:
        """A packet arrived: its packet number, the size and duration of its primary frame."""
        self._opus_bytes += opus_bytes
        self._opus_ms += frame_ms
        self._received += 1
        if not self._started:
            self._started = True
            self._last_raw = packet
            self._highest = 0  # the first one is number 0
            self._interval_highest = -1  # so the first interval expects it too
            self._received = 1
            self._interval_received = 0
            self._arrived = {0}
            return
        delta = (packet - self._last_raw + _HALF) % PACKET_MODULO - _HALF
        if delta > RESTART_GAP or delta < -RESTART_GAP:
            delta = 1  # a restarted counter: carry on as if this came next
        number = self._highest + delta
        if number >= self._judged:
            self._arrived.add(number)
        if delta > 0:
            self._highest = number
            self._last_raw = packet
            self._judge(number - SETTLE)

    def _judge(self, upto: int) -> None:
        # Runs of missing numbers up to `upto` (inclusive): counted, then forgotten.
        arrived = self._arrived
        while self._judged <= upto:
            if self._judged in arrived:
                arrived.discard(self._judged)
                self._in_run = False
            else:
                self._burst_lost += 1
                self._bursts += not self._in_run
                self._in_run = True
            self._judged += 1

    def total(self) -> LossReport:
        """Since the first packet."""
        if not self._started:
            return LossReport(0, 0)
        return LossReport(self._highest + 1, self._received, self._burst_lost, self._bursts)

    def interval(self) -> LossReport:
        """Since the last call (a receiver report's "fraction lost")."""
        if not self._started:
            return LossReport(0, 0)
        expected = self._highest - self._interval_highest
        received = self._received - self._interval_received
        burst_lost = self._burst_lost - self._interval_burst_lost
        bursts = self._bursts - self._interval_bursts
        self._interval_highest = self._highest
        self._interval_received = self._received
        self._interval_burst_lost = self._burst_lost
        self._interval_bursts = self._bursts
        return LossReport(expected, received, burst_lost, bursts)

    @property
    def kbps(self) -> float:
        """Mean Opus bitrate of the primary frames received (kbit/s while talking)."""
        if not self._opus_ms:
            return 0.0
        return self._opus_bytes * 8 / self._opus_ms
