"""Sliding-window replay protection for media counters (RFC 6479, WireGuard style).

The window is a Python int used as a bitmap: bit ``i`` stands for counter
``highest - i``. Big ints shift and mask in C, so one check costs well under a
microsecond for a 2048-bit window.

Call :meth:`ReplayWindow.accept` only after the packet's AEAD tag verified;
otherwise a forger could move the window and make real packets look old.
"""

from __future__ import annotations

REPLAY_WINDOW = 2048  # bits: at 50 packets/s, 40 s of reordering tolerance
COUNTER_LIMIT = 2**64  # counters are uint64 on the wire


class ReplayWindow:
    """Remembers which of the last ``size`` counters were seen."""

    __slots__ = ("_bitmap", "_highest", "_mask", "_size")

    def __init__(self, size: int = REPLAY_WINDOW) -> None:
        if size < 1:
            raise ValueError("replay window size must be at least 1")
        self._size = size
        self._mask = (1 << size) - 1
        self._bitmap = 0
        self._highest = -1

    @property
    def size(self) -> int:
        return self._size

    @property
    def highest(self) -> int:
        """Highest counter accepted so far; -1 before the first."""
        return self._highest

    def accept(self, counter: int) -> bool:
        """Record ``counter``; False (and no change) if replayed, too old or out of range."""
        if counter < 0 or counter >= COUNTER_LIMIT:
            return False
        highest = self._highest
        if counter > highest:
            shift = counter - highest
            if shift >= self._size:
                self._bitmap = 1
            else:
                self._bitmap = ((self._bitmap << shift) | 1) & self._mask
            self._highest = counter
            return True
        offset = highest - counter
        if offset >= self._size:
            return False
        bit = 1 << offset
        if self._bitmap & bit:
            return False
        self._bitmap |= bit
        return True
