"""Per-sender jitter buffer: reorders voice frames and paces them out, sans-I/O.

The network side calls :meth:`JitterBuffer.push` with each received frame's
sequence number (and, to let the buffer adapt, its arrival time); the play-out
side calls :meth:`JitterBuffer.pop` once per frame of the sender's (every
``frame_ms`` of play-out) and gets a :class:`Frame`, a :class:`Lost` (decode FEC
from ``next_payload`` or conceal) or ``None`` (nothing to play: prebuffering or
idle). A "tick" below is one such pop.

Sequence numbers are the sender's uint32 frame counters (one per capture tick of
its frame duration, 10, 20 or 40 ms) and wrap at 2**32; they are compared with
serial-number arithmetic (RFC 1982 style). Every time constant is set in
milliseconds or seconds and turned into the sender's frames per buffer, so a
stream of 10 or 40 ms frames behaves in time as one of 20 ms frames.

Without arrival times the buffer keeps a fixed prebuffer depth
(``target_frames``). Once :meth:`JitterBuffer.push` is given ``now`` it adapts:

* jitter: a frame's relative delay is ``arrival - seq * frame_ms``; its spread is
  how much later than the fastest frame of the last couple of seconds it came
  (NetEQ's relative delay, which a constant path delay and a slow clock drift
  do not disturb). The target depth is ``ceil(p95 spread / frame_ms) + 1`` frames,
  clamped to ``[min_frames, max_frames]``; the + 1 covers the unknown phase
  between arrivals and play-out ticks. The shrink window below measures that
  phase: on a calm network (p95 spread under a quarter of a frame, which still
  rounds up to a whole frame) and when every arrival of a window came a whole tick
  early, the buffer may settle one frame below target, until a frame is ever late;
* grow fast: a frame that missed its tick raises the target at once. When the
  buffer runs dry the play-out waits (a :class:`Lost` that does not advance, so
  the decoder conceals one tick) and the late frame plays when it comes: the
  delay has grown by one frame instead of the frame being lost. If a later frame
  comes instead, the ticks already concealed stand for the missing ones;
* shrink slowly: when for a few seconds every frame arrived at least one tick
  before it was needed and the buffer was above target, one frame is dropped
  (there is no time-stretching), preferably a quiet one (a small Opus packet).
  This also bounds the delay when the sender's clock runs fast; a slow sender's
  clock drains the buffer and costs one concealed tick each time it runs dry.
  The constructor's target is a guess, not a measurement: once the estimate is in,
  every spare frame a short window shows goes at once (on quiet ticks in a row),
  until the buffer first has none spare; from then on it shrinks slowly.

While the sender repeats frames (``set_extra_frames``: copies come up to that many
ticks late), the buffer grows to the raised target at losses; once there, a dip
from a burst of loss (the newest frames missing) is not taken for lateness: the
copies of the missing frames are still to come. It grows only at losses, never on
quiet frames ahead of them: in running speech a "quiet" frame is often a soft
consonant, and every stretch (and the drop that later cuts it back) is a jump in
the speech that costs more than a copy that comes too late (replayed traces of the
namespace calls, 15 % loss in bursts of 3: PESQ-WB 3.52 growing on quiet frames,
3.63 without, about 4 frames less delay). With spread copies the level also swings
above target with the fastest arrivals, so a frame is dropped only when more than
``SPREAD_SHRINK_SLACK_MS`` is spare (3.33 without that slack).

So a :class:`Lost` for ``seq`` may be followed by the :class:`Frame` for the same
``seq``; a frame is still never played twice.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from bangor.settings import FRAME_MS
from bangor.wire.voice import MAX_REDUNDANT, SEQ_MODULO

_HALF = SEQ_MODULO // 2

# Time with nothing buffered after which the stream counts as idle (the sender
# stopped talking): 200 ms of concealment (10 ticks of 20 ms), then silence.
IDLE_MS = 200

# After an idle reset, frames up to this far behind the last one played are
# stale copies and dropped; farther behind means the sender restarted its count.
REPLAY_HORIZON_S = 30.0  # 1500 frames of 20 ms

# --- Adaptation; used only once push() has been given arrival times. ---------

# Seconds of arrivals whose fastest frame is the reference for the spread. Long
# enough to hold many packets, short enough that a 0.5 % clock drift adds only
# 10 ms to the spread and that a changed path delay is forgotten quickly.
DELAY_WINDOW = 2.0
# Seconds of spreads kept for the percentile: 10 s of speech (500 frames of 20 ms),
# so one unlucky packet does not move the 95th percentile yet the target follows
# the network.
HISTORY_S = 10.0
TARGET_PERCENTILE = 0.95
# Below this many seconds of spreads the estimate is noise: keep the constructor's target.
MIN_SAMPLES_S = 1.0
# A frame that missed its tick raises the target at once to what it needed, for
# this many seconds, before enough of them move the percentile: grow fast.
PEAK_HOLD = 5.0
# Shrink slowly: with n spare frames (every frame of the window came n ticks early or
# more, and the buffer is n frames above target) drop one after SHRINK_S / n seconds:
# for 20 ms frames 6 s for one, 3 s for two. Slow for one, because a dropped frame is
# audible and a talk spurt often starts a frame or two deep (pre-roll); with two it
# outpaces a sender clock 0.5 % fast (one frame per 4 s), so drift levels off at
# target + 2. The rate at which delay is cut depends only on the spare milliseconds:
# 10 ms frames, two spare, drop 10 ms per 3 s like 20 ms frames, one spare, 20 ms per 6 s.
# FAST_SHRINK_EXCESS_MS or more spare (after a long stall) go one frame per
# FAST_SHRINK_S.
SHRINK_S = 6.0
FAST_SHRINK_EXCESS_MS = 80
FAST_SHRINK_S = 0.5
# While the sender spreads its copies (a wait beyond MAX_REDUNDANT frames), this much
# more must be spare before a frame is dropped: the level swings with the fastest
# arrivals, and every drop and the stall that follows it is a jump in the speech.
SPREAD_SHRINK_SLACK_MS = 40
# A due drop waits for a quiet frame: Opus is VBR, and a packet under this fraction of
# the running mean size is nearly always a pause (silence ~30-70 bytes, speech ~110 at
# 40 kbit/s for 20 ms), where a missing frame is not heard. After DROP_PATIENCE_S any
# frame goes, so the delay stays bounded for a sender that never pauses.
QUIET_FRACTION = 0.6
# A stream whose smallest packet lately is this close to the mean has no pauses to find
# (steady silence, or noise): its smallest packets count as quiet.
STEADY_FRACTION = 0.9
DROP_PATIENCE_S = 2.0
# Settling from the constructor's guess: a window this long shows the spare frames,
# then all of them go, on quiet frames (any after SETTLE_PATIENCE_S): the start of a
# stream is no time to wait long for a pause with 40 ms too much delay.
SETTLE_WINDOW_S = 0.25
SETTLE_PATIENCE_S = 2.0
# Time constant of the running means of the packet size and of the buffer level
# behind delay_ms: each frame weighs frame_ms / SMOOTHING_MS (0.02 for 20 ms).
SMOOTHING_MS = 1000
# A p95 spread up to this fraction of a frame is a calm network: the frame the target
# holds for the tick phase may be given back when the arrivals show it is spare.
CALM_SPREAD = 0.25
# Re-anchor the relative delays before seq distances get anywhere near 2**31.
_ANCHOR_LIMIT = 2**30


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b between two uint32 sequence numbers, in [-2**31, 2**31)."""
    return (a - b + _HALF) % SEQ_MODULO - _HALF


@dataclass(frozen=True)
class Frame:
    """The frame due at this tick arrived: decode ``payload``."""

    seq: int
    payload: bytes


@dataclass(frozen=True)
class Lost:
    """The frame due at this tick is missing: conceal this tick.

    ``next_payload`` is the following frame if it is already buffered, so its
    in-band FEC can rebuild this one; else None (conceal). An adaptive buffer
    that waits for a late frame returns ``Lost(seq, None)`` without giving up on
    ``seq``: its :class:`Frame` may follow at a later tick.
    """

    seq: int
    next_payload: bytes | None


@dataclass(frozen=True)
class JitterStats:
    """Counters since creation; ``depth`` is the number of frames buffered now."""

    received: int  # every push, including those then dropped
    played: int  # Frame results
    lost: int  # frames due in a talk spurt that never played (not the tail before idle)
    late: int  # arrived after their play-out tick had passed
    duplicates: int
    overflow: int  # dropped because the buffer span exceeded max_frames
    depth: int
    dropped: int  # dropped unplayed to cut the delay (buffer above target)
    stretched: int  # ticks concealed while play-out waited for a late frame
    target: int  # target depth in frames now
    recovered: int  # holes filled by a copy from a later packet (redundancy)
    delay_ms: float  # frames buffered at play-out ticks, mean over ~1 s, in ms
    jitter_ms: float  # 95th percentile of the relative-delay spread


def _ticks(seconds: float, frame_ms: float) -> int:
    # A duration in whole frames of frame_ms, at least one.
    return max(round(seconds * 1000 / frame_ms), 1)


class JitterBuffer:
    """Jitter buffer for one sender's stream of ``frame_ms`` frames (20 ms by default).

    Depths (target, max, min) are in the sender's frames. Fixed depth until
    :meth:`push` is given arrival times, adaptive from then on. Invariant:
    received + recovered == played + late + duplicates + overflow + dropped + depth.
    """

    def __init__(
        self,
        target_frames: int = 3,
        max_frames: int = 25,
        min_frames: int = 1,
        *,
        frame_ms: float = FRAME_MS,
    ) -> None:
        if frame_ms <= 0:
            raise ValueError(f"frame_ms must be > 0, got {frame_ms}")
        if min_frames < 1:
            raise ValueError(f"min_frames must be >= 1, got {min_frames}")
        if target_frames < min_frames:
            raise ValueError(f"target_frames must be >= {min_frames}, got {target_frames}")
        if max_frames < target_frames:
            raise ValueError(f"max_frames ({max_frames}) must be >= target_frames")
        self.frame_ms = frame_ms
        self._frame_s = frame_ms / 1000
        # The time constants above, in this sender's frames.
        self._idle_ticks = _ticks(IDLE_MS / 1000, frame_ms)
        self._replay_horizon = _ticks(REPLAY_HORIZON_S, frame_ms)
        self._history = _ticks(HISTORY_S, frame_ms)
        self._min_samples = _ticks(MIN_SAMPLES_S, frame_ms)
        self._shrink_ticks = _ticks(SHRINK_S, frame_ms)
        self._fast_excess = max(math.ceil(FAST_SHRINK_EXCESS_MS / frame_ms), 2)
        self._fast_shrink_ticks = _ticks(FAST_SHRINK_S, frame_ms)
        self._spread_slack = math.ceil(SPREAD_SHRINK_SLACK_MS / frame_ms)
        self._drop_patience = _ticks(DROP_PATIENCE_S, frame_ms)
        self._settle_patience = _ticks(SETTLE_PATIENCE_S, frame_ms)
        self._settle_ticks = _ticks(SETTLE_WINDOW_S, frame_ms)
        self._smoothing = min(frame_ms / SMOOTHING_MS, 1.0)
        self._target = target_frames
        self._initial_target = target_frames
        self._base_target = target_frames  # what the jitter alone calls for
        self._extra = 0  # frames added while the sender repeats frames (redundancy)
        self._min = min_frames
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
        self._dropped = 0
        self._stretched = 0
        self._recovered = 0
        self._copies: set[int] = set()  # buffered frames that came as copies
        self._level_mean = 0.0
        # Adaptation (see the module docstring).
        self._adaptive = False
        self._sampling = False  # arrivals are timed only once a spurt plays (not pre-roll)
        self._anchor: int | None = None  # seq whose relative delay is arrival - 0
        # Sliding minimum of the relative delays: (arrival, delay), delays increasing.
        self._fastest: deque[tuple[float, float]] = deque()
        self._spreads: deque[float] = deque()
        self._buckets = [0] * (max_frames + 1)  # spreads by whole frames, rounded up
        self._peak = 0
        self._peak_until = -math.inf
        self._stall_run = 0  # ticks concealed while waiting for self._next
        # Shrink window: ticks, and the fewest and most ticks a frame arrived early by.
        self._win_ticks = 0
        self._win_min = max_frames
        self._win_max = -1
        self._drop_pending = 0  # frames to drop, one a tick (more than one only settling)
        self._drop_wait = 0  # ticks the pending drop has waited for a quiet frame
        self._size_mean = 0.0
        # The smallest packet lately: drops to each smaller one, creeps up to bigger ones.
        self._size_floor = math.inf
        # The constructor's target still stands in for a measured one: shrink fast.
        self._settling = True
        # The target holds a frame for the unknown tick phase; the shrink window may
        # give it back, until a frame comes late (the phase or jitter needs it after all).
        self._phase_frame_spare = True
        self._peak_holds = False  # the target is raised by a late frame (PEAK_HOLD)
        self._wide = 0  # spreads in the history above CALM_SPREAD of a frame

    def push(self, seq: int, payload: bytes, *, now: float | None = None) -> None:
        """Queue one received frame; drops (and counts) duplicates, late and overflow.

        ``now`` is the arrival time in seconds on any monotonic clock; given once,
        the buffer adapts its depth (pass it for every frame that came off the
        network, leave it out for frames released from elsewhere).
        """
        if not 0 <= seq < SEQ_MODULO:
            raise ValueError(f"sequence number out of uint32 range: {seq}")
        self._received += 1
        if now is not None:
            self._adaptive = True
        if self._already_played(seq):
            self._late += 1
            self._observe(seq, now, overdue=True)
            self._note_margin(-1)
            return
        if self._next is None:
            self._next = seq
        offset = seq_diff(seq, self._next)
        if offset < 0:
            if self._playing or self._span_after_lowering(-offset) > self._max:
                self._late += 1
                self._observe(seq, now, overdue=True)
                self._note_margin(offset)
                return
            # Still prebuffering: an earlier frame arrived out of order, start there.
            self._next = seq
            offset = 0
        if seq in self._copies:
            # Its copy overtook it: the original is no duplicate, and its timing counts.
            self._copies.discard(seq)
            self._recovered -= 1
        elif seq in self._frames:
            self._duplicates += 1
            return
        # The play-out is waiting for exactly this frame: it came after its tick.
        self._observe(seq, now, overdue=offset == 0 and self._stall_run > 0)
        self._note_margin(offset)
        size = len(payload)
        if self._size_mean:
            self._size_mean += (size - self._size_mean) * self._smoothing
        else:
            self._size_mean = size  # not a ramp up from 0: early frames would all be loud
        floor = self._size_floor
        self._size_floor = size if size <= floor else floor + (size - floor) * self._smoothing
        self._frames[seq] = payload
        if offset >= self._max:
            self._advance_to((seq - self._max + 1) % SEQ_MODULO)
        if len(self._frames) >= self._target:
            self._playing = True

    def push_redundant(self, seq: int, payload: bytes) -> None:
        """A copy of an earlier frame carried by a later packet: it only fills a hole.

        Copies of frames already buffered or played are ignored (not duplicates: the
        sender repeats every frame); a copy in time for its tick is counted as
        recovered. Copies say nothing about network timing.
        """
        if not 0 <= seq < SEQ_MODULO:
            raise ValueError(f"sequence number out of uint32 range: {seq}")
        if self._next is None or seq in self._frames or self._already_played(seq):
            return
        offset = seq_diff(seq, self._next)
        if offset < 0:
            if self._playing or self._span_after_lowering(-offset) > self._max:
                return
            self._next = seq  # still prebuffering: start the spurt there
        elif offset >= self._max:
            return
        self._frames[seq] = payload
        self._copies.add(seq)
        self._recovered += 1

    def set_extra_frames(self, extra: int) -> None:
        """Frames to wait beyond what the jitter calls for, so copies can arrive.

        A sender that repeats each frame in its next ``extra`` packets recovers a
        loss only if play-out waits that long; 0 when it does not repeat frames.
        """
        if extra != self._extra:
            self._extra = max(extra, 0)
            self._set_target(self._base_target)

    def _set_target(self, base: int) -> None:
        self._base_target = base
        self._target = min(max(base + self._extra, self._min), self._max)

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
        self._sampling = True
        level = self._level()
        self._tick(level)
        seq = self._next
        if not self._frames:
            self._empty_ticks += 1
            if self._empty_ticks > self._idle_ticks:
                self._reset()
                return None
            if self._adaptive:
                # Wait for it: if it is only late, it plays when it comes.
                self._stall_run += 1
                self._cancel_drop()
                return Lost(seq, None)
            self._tail_lost += 1
            self._next = (seq + 1) % SEQ_MODULO
            return Lost(seq, None)
        self._empty_ticks = 0
        self._lost += self._tail_lost
        self._tail_lost = 0
        if self._adaptive:
            following = (seq + 1) % SEQ_MODULO
            if self._drop_pending and self._stall_run == 0 and following in self._frames:
                self._drop_wait += 1
                payload = self._frames.get(seq)
                # A gap, a quiet frame, or waited long enough: skip it.
                if (
                    payload is None
                    or len(payload) <= self._quiet_size()
                    or self._drop_wait >= self._patience()
                ):
                    self._drop_due()
            elif seq not in self._frames:
                if level < self._stall_floor() and self._stall_run < self._target:
                    # Less buffered than the jitter calls for: the frame may be late.
                    self._stall_run += 1
                    self._cancel_drop()
                    return Lost(seq, None)
                self._skip_concealed()
        seq = self._next
        self._next = (seq + 1) % SEQ_MODULO
        payload = self._frames.pop(seq, None)
        self._copies.discard(seq)
        if payload is not None:
            self._stretched += self._stall_run
            self._stall_run = 0
            self._played += 1
            self._last_played = seq
            return Frame(seq, payload)
        self._lost += 1
        return Lost(seq, self._frames.get(self._next))

    def stats(self) -> JitterStats:
        """A snapshot of the counters and of the adaptation."""
        return JitterStats(
            received=self._received,
            played=self._played,
            lost=self._lost,
            late=self._late,
            duplicates=self._duplicates,
            overflow=self._overflow,
            depth=len(self._frames),
            dropped=self._dropped,
            stretched=self._stretched,
            target=self._target,
            recovered=self._recovered,
            delay_ms=round(self._level_mean * self.frame_ms, 1),
            jitter_ms=round(self._jitter() * 1000, 1),
        )

    # --- play-out ----------------------------------------------------------------

    def _already_played(self, seq: int) -> bool:
        # Checked even while prebuffering: an idle reset forgets the play-out point.
        if self._last_played is None:
            return False
        return 0 <= seq_diff(self._last_played, seq) < self._replay_horizon

    def _span_after_lowering(self, by: int) -> int:
        # Span (first to last buffered seq, inclusive) if play-out started `by` earlier.
        assert self._next is not None
        last = max((seq_diff(s, self._next) for s in self._frames), default=0)
        return last + by + 1

    def _level(self) -> int:
        # Frames of audio from the one due to the newest buffered, holes included.
        assert self._next is not None
        if not self._frames:
            return 0
        return max(seq_diff(s, self._next) for s in self._frames) + 1

    def _advance_to(self, new_next: int) -> None:
        # Move play-out forward so the span stays within max_frames; older frames go.
        for s in [s for s in self._frames if seq_diff(s, new_next) < 0]:
            del self._frames[s]
            self._copies.discard(s)
            self._overflow += 1
        self._next = new_next
        self._stretched += self._stall_run
        self._stall_run = 0

    def _skip_concealed(self) -> None:
        # A later frame came instead of the one waited for: the ticks concealed while
        # waiting stand for the missing frames, so skip as many (they are lost).
        assert self._next is not None
        while self._stall_run and self._next not in self._frames:
            self._lost += 1
            self._stall_run -= 1
            self._next = (self._next + 1) % SEQ_MODULO
        self._stretched += self._stall_run
        self._stall_run = 0

    def _drop_due(self) -> None:
        # Cut the delay by one frame: skip the one due (the next one is buffered).
        assert self._next is not None
        self._copies.discard(self._next)
        if self._frames.pop(self._next, None) is not None:
            self._dropped += 1
        else:
            self._lost += 1  # missing anyway: skipping it saves a concealed tick
        self._next = (self._next + 1) % SEQ_MODULO
        self._drop_pending -= 1
        self._drop_wait = 0

    def _note_margin(self, offset: int) -> None:
        # A frame arrived `offset` ticks before its play-out tick (< 0: late).
        if self._adaptive and self._sampling:
            self._win_min = min(self._win_min, offset)
            self._win_max = max(self._win_max, offset)
            if offset < 1:
                self._cancel_drop()  # no frame to spare after all

    def _tick(self, level: int) -> None:
        # Once per play-out tick: the mean level for delay_ms, and the shrink window.
        self._level_mean += (level - self._level_mean) * self._smoothing
        if not self._adaptive:
            return
        self._win_ticks += 1
        # Spare frames: every arrival in the window came this many ticks early or more
        # (one frame less would have kept them all on time), and the depth the earliest
        # implies is this much above target. Lost frames do not count against it.
        count = len(self._spreads)
        estimated = count >= self._min_samples
        floor = self._target
        calm = self._wide <= (1 - TARGET_PERCENTILE) * count
        spare = self._phase_frame_spare and not self._extra and not self._peak_holds
        if estimated and calm and spare:
            floor = max(floor - 1, self._min)
        excess = min(self._win_min, self._win_max + 1 - floor)
        if self._extra > MAX_REDUNDANT:
            # The fastest arrivals lift the level above target: not spare (docstring).
            excess -= self._spread_slack
        settling = self._settling and estimated
        fast = excess >= self._fast_excess
        if settling:
            wait = self._settle_ticks
        elif fast:
            wait = self._fast_shrink_ticks
        else:
            wait = self._shrink_ticks // max(excess, 1)
        if self._win_ticks >= wait:
            if excess >= 1:
                # Settling, every spare frame goes (on quiet ticks in a row); else one.
                self._drop_pending = excess if settling else 1
            elif estimated:
                self._settling = False  # nothing spare: what is left was measured
            self._new_window()

    def _stall_floor(self) -> int:
        # Below this level a missing frame may only be late: wait for it. While the
        # sender repeats frames the target holds `extra` frames for their copies; once
        # the buffer has grown to it, a burst of loss that takes the newest frames dips
        # the level by its length without any frame being late, and waiting then would
        # only stretch speech (the copies of the missing frame are still to come).
        # Grown: the mean level within a frame of where growth stops (target - 1).
        if self._extra and self._level_mean >= self._target - 2:
            return self._base_target - 1
        return self._target - 1

    def _quiet_size(self) -> float:
        # Packets up to this size are quiet: well under the mean (a pause in speech), or
        # in a steady stream (all about one size: silence or noise) the smallest ones.
        steady = self._size_floor >= STEADY_FRACTION * self._size_mean
        return max(QUIET_FRACTION * self._size_mean, self._size_floor if steady else 0.0)

    def _patience(self) -> int:
        # While settling, the spare frames are the prebuffer's guess: wait less for quiet.
        return self._settle_patience if self._settling else self._drop_patience

    def _cancel_drop(self) -> None:
        self._drop_pending = 0
        self._drop_wait = 0

    def _new_window(self) -> None:
        self._win_ticks = 0
        self._win_min = self._max
        self._win_max = -1

    def _reset(self) -> None:
        # Idle: forget the play-out point; the next push prebuffers a new spurt.
        # What was learnt about the network is kept.
        self._frames.clear()
        self._copies.clear()
        self._next = None
        self._playing = False
        self._empty_ticks = 0
        self._wait_ticks = 0
        self._tail_lost = 0
        self._stall_run = 0
        self._sampling = False
        self._cancel_drop()
        self._new_window()

    # --- jitter estimate -----------------------------------------------------------

    def _observe(self, seq: int, now: float | None, *, overdue: bool) -> None:
        """Learn from one arrival; ``overdue``: it came after its play-out tick."""
        if now is None or not self._sampling:
            # Untimed, or the opening frames of a spurt, which a sender with voice
            # activity detection releases in one burst (pre-roll): not jitter.
            return
        if self._anchor is None or abs(seq_diff(seq, self._anchor)) > _ANCHOR_LIMIT:
            self._anchor = seq
            self._fastest.clear()
        frame_s = self._frame_s
        delay = now - seq_diff(seq, self._anchor) * frame_s
        fastest = self._fastest
        while fastest and fastest[-1][1] >= delay:
            fastest.pop()
        fastest.append((now, delay))
        while fastest[0][0] < now - DELAY_WINDOW:
            fastest.popleft()
        spread = delay - fastest[0][1]
        # Rounded up to whole frames; the epsilon keeps 20.000000001 ms at 1 frame.
        frames = math.ceil(spread / frame_s - 1e-6)
        if frames > self._max:
            return  # no depth we allow would have saved it (or a restarted counter)
        if len(self._spreads) == self._history:
            old = self._spreads.popleft()
            self._buckets[math.ceil(old / frame_s - 1e-6)] -= 1
            self._wide -= old > CALM_SPREAD * frame_s
        self._spreads.append(spread)
        self._buckets[frames] += 1
        self._wide += spread > CALM_SPREAD * frame_s
        if overdue:
            self._phase_frame_spare = False
            if now >= self._peak_until:
                self._peak = 0
            # At least 2: whatever its spread, one frame of depth was not enough.
            self._peak = max(self._peak, frames + 1, 2)
            self._peak_until = now + PEAK_HOLD
        self._update_target(now)

    def _update_target(self, now: float) -> None:
        count = len(self._spreads)
        target = self._initial_target
        if count >= self._min_samples:
            rank = math.ceil(TARGET_PERCENTILE * count)
            seen = 0
            for frames, n in enumerate(self._buckets):
                seen += n
                if seen >= rank:
                    target = frames + 1  # the + 1: arrivals and ticks are out of phase
                    break
        self._peak_holds = now < self._peak_until and self._peak > target
        if self._peak_holds:
            target = self._peak
        self._set_target(target)

    def _jitter(self) -> float:
        # The 95th percentile spread, in seconds.
        if not self._spreads:
            return 0.0
        ordered = sorted(self._spreads)
        return ordered[math.ceil(TARGET_PERCENTILE * len(ordered)) - 1]
