"""Per-sender jitter buffer: reorders voice frames and paces them out, sans-I/O.

The network side calls :meth:`JitterBuffer.push` with each received frame's
sequence number; the play-out side calls :meth:`JitterBuffer.pop` once per
20 ms tick and gets a :class:`Frame`, a :class:`Lost` (decode FEC from
``next_payload`` or conceal) or ``None`` (nothing to play: prebuffering or idle).

Sequence numbers are the sender's uint32 frame counters and wrap at 2**32;
they are compared with serial-number arithmetic (RFC 1982 style).

This buffer holds a fixed prebuffer depth (``target_frames``). An adaptive
buffer can change ``self._target`` from the arrival statistics without
touching the play-out logic.
"""

from __future__ import annotations

from dataclasses import dataclass

SEQ_MODULUS = 2**32
_HALF = 2**31

# Consecutive ticks with nothing buffered after which the stream counts as idle
# (the sender stopped talking): 10 ticks = 200 ms of concealment, then silence.
IDLE_TICKS = 10

# After an idle reset, frames up to this far behind the last one played are
# stale copies and dropped; farther behind means the sender restarted its count.
REPLAY_HORIZON = 1500  # 30 s


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b between two uint32 sequence numbers, in [-2**31, 2**31)."""
    return (a - b + _HALF) % SEQ_MODULUS - _HALF


@dataclass(frozen=True)
class Frame:
    """The frame due at this tick arrived: decode ``payload``."""

    seq: int
    payload: bytes


@dataclass(frozen=True)
class Lost:
    """The frame due at this tick is missing.

    ``next_payload`` is the following frame if it is already buffered, so its
    in-band FEC can rebuild this one; else None (conceal).
    """

    seq: int
    next_payload: bytes | None


@dataclass(frozen=True)
class JitterStats:
    """Counters since creation; ``depth`` is the number of frames buffered now."""

    received: int  # every push, including those then dropped
    played: int  # Frame results
    lost: int  # Lost results inside a talk spurt (not the tail before idle)
    late: int  # arrived after their play-out tick had passed
    duplicates: int
    overflow: int  # dropped because the buffer span exceeded max_frames
    depth: int


class JitterBuffer:
    """Fixed-depth jitter buffer for one sender's stream of 20 ms frames.

    Invariant: received == played + late + duplicates + overflow + depth.
    """

    def __init__(self, target_frames: int = 3, max_frames: int = 25) -> None:
        if target_frames < 1:
            raise ValueError(f"target_frames must be >= 1, got {target_frames}")
        if max_frames < target_frames:
            raise ValueError(f"max_frames ({max_frames}) must be >= target_frames")
        self._target = target_frames
        self._max = max_frames
        self._frames: dict[int, bytes] = {}
        # Next sequence number to play; None before the first frame of a spurt.
        self._next: int | None = None
        self._last_played: int | None = None  # survives idle resets
        self._playing = False
        self._empty_ticks = 0
        self._wait_ticks = 0  # pop ticks spent prebuffering with frames queued
        # Lost results handed out while the buffer was empty: only real losses if
        # the stream resumes, else the sender simply stopped (not counted).
        self._tail_lost = 0
        self._received = 0
        self._played = 0
        self._lost = 0
        self._late = 0
        self._duplicates = 0
        self._overflow = 0

    def push(self, seq: int, payload: bytes) -> None:
        """Queue one received frame; drops (and counts) duplicates, late and overflow."""
        if not 0 <= seq < SEQ_MODULUS:
            raise ValueError(f"sequence number out of uint32 range: {seq}")
        self._received += 1
        if self._already_played(seq):
            self._late += 1
            return
        if self._next is None:
            self._next = seq
        offset = seq_diff(seq, self._next)
        if offset < 0:
            if self._playing or self._span_after_lowering(-offset) > self._max:
                self._late += 1
                return
            # Still prebuffering: an earlier frame arrived out of order, start there.
            self._next = seq
            offset = 0
        if seq in self._frames:
            self._duplicates += 1
            return
        self._frames[seq] = payload
        if offset >= self._max:
            self._advance_to((seq - self._max + 1) % SEQ_MODULUS)
        if len(self._frames) >= self._target:
            self._playing = True

    def pop(self) -> Frame | Lost | None:
        """Play-out tick: the frame due now, a Lost marker, or None if nothing plays."""
        if not self._playing:
            if not self._frames:
                return None
            # A spurt shorter than the prebuffer must not wait for the next one.
            self._wait_ticks += 1
            if self._wait_ticks < self._target:
                return None
            self._playing = True
        assert self._next is not None
        seq = self._next
        if not self._frames:
            self._empty_ticks += 1
            if self._empty_ticks > IDLE_TICKS:
                self._reset()
                return None
            self._tail_lost += 1
            self._next = (seq + 1) % SEQ_MODULUS
            return Lost(seq, None)
        self._empty_ticks = 0
        self._lost += self._tail_lost
        self._tail_lost = 0
        self._next = (seq + 1) % SEQ_MODULUS
        payload = self._frames.pop(seq, None)
        if payload is not None:
            self._played += 1
            self._last_played = seq
            return Frame(seq, payload)
        self._lost += 1
        return Lost(seq, self._frames.get(self._next))

    def stats(self) -> JitterStats:
        """A snapshot of the counters."""
        return JitterStats(
            received=self._received,
            played=self._played,
            lost=self._lost,
            late=self._late,
            duplicates=self._duplicates,
            overflow=self._overflow,
            depth=len(self._frames),
        )

    def _already_played(self, seq: int) -> bool:
        # Checked even while prebuffering: an idle reset forgets the play-out point.
        if self._last_played is None:
            return False
        return 0 <= seq_diff(self._last_played, seq) < REPLAY_HORIZON

    def _span_after_lowering(self, by: int) -> int:
        # Span (first to last buffered seq, inclusive) if play-out started `by` earlier.
        assert self._next is not None
        last = max((seq_diff(s, self._next) for s in self._frames), default=0)
        return last + by + 1

    def _advance_to(self, new_next: int) -> None:
        # Move play-out forward so the span stays within max_frames; older frames go.
        for s in [s for s in self._frames if seq_diff(s, new_next) < 0]:
            del self._frames[s]
            self._overflow += 1
        self._next = new_next

    def _reset(self) -> None:
        # Idle: forget the play-out point; the next push prebuffers a new spurt.
        self._frames.clear()
        self._next = None
        self._playing = False
        self._empty_ticks = 0
        self._wait_ticks = 0
        self._tail_lost = 0
