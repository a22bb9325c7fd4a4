"""Jitter buffer: ordering, loss, lateness, wrap-around, bounds and idle reset; then the
adaptive depth, driven by arrival times on a hand-set clock (no sleeps)."""

from __future__ import annotations

import itertools
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bangor.audio.jitter import (
    IDLE_MS,
    REPLAY_HORIZON_S,
    SPREAD_SHRINK_SLACK_MS,
    Frame,
    JitterBuffer,
    JitterStats,
    Lost,
    seq_diff,
)
from bangor.settings import FRAME_MS
from bangor.wire.voice import SEQ_MODULO

Jitter = Callable[[float], float]
FRAME_S = FRAME_MS / 1000
IDLE_TICKS = IDLE_MS // FRAME_MS  # 10
REPLAY_HORIZON = round(REPLAY_HORIZON_S * 1000 / FRAME_MS)  # 1500


def payload(seq: int) -> bytes:
    return seq.to_bytes(4, "big") + b"opus"


def drain(jb: JitterBuffer, ticks: int) -> list[Frame | Lost | None]:
    return [jb.pop() for _ in range(ticks)]


def played(results: list[Frame | Lost | None]) -> list[int]:
    return [r.seq for r in results if isinstance(r, Frame)]


def check_accounting(jb: JitterBuffer) -> JitterStats:
    s = jb.stats()
    assert (
        s.received + s.recovered
        == s.played + s.late + s.duplicates + s.overflow + s.dropped + s.depth
    )
    return s


def test_prebuffers_then_plays_in_order() -> None:
    jb = JitterBuffer(target_frames=3)
    jb.push(100, payload(100))
    assert jb.pop() is None
    jb.push(101, payload(101))
    assert jb.pop() is None
    jb.push(102, payload(102))
    results = []
    for seq in range(103, 110):
        results.append(jb.pop())
        jb.push(seq, payload(seq))
    assert results == [Frame(s, payload(s)) for s in range(100, 107)]
    assert replace(check_accounting(jb), delay_ms=0.0) == JitterStats(
        received=10,
        played=7,
        lost=0,
        late=0,
        duplicates=0,
        overflow=0,
        depth=3,
        dropped=0,
        stretched=0,
        target=3,  # no arrival times: the depth stays fixed
        recovered=0,
        delay_ms=0.0,
        jitter_ms=0.0,
    )


def test_reordered_within_window() -> None:
    jb = JitterBuffer(target_frames=3)
    for seq in (2, 0, 1, 5, 3, 4, 7, 6):
        jb.push(seq, payload(seq))
    assert played(drain(jb, 8)) == list(range(8))
    assert jb.stats().lost == 0


def test_reordered_before_start_moves_playout_back() -> None:
    jb = JitterBuffer(target_frames=3)
    jb.push(11, payload(11))
    jb.push(10, payload(10))
    jb.push(12, payload(12))
    assert played(drain(jb, 3)) == [10, 11, 12]


def test_duplicates_dropped_and_counted() -> None:
    jb = JitterBuffer(target_frames=2)
    for seq in (0, 0, 1, 1, 2, 0):
        jb.push(seq, payload(seq))
    assert played(drain(jb, 3)) == [0, 1, 2]
    jb.push(1, payload(1))  # a copy arriving after its frame played
    s = check_accounting(jb)
    assert (s.duplicates, s.late, s.played) == (3, 1, 3)


def test_stale_copy_after_idle_does_not_replay() -> None:
    jb = JitterBuffer(target_frames=1)
    jb.push(7, payload(7))
    assert played(drain(jb, IDLE_TICKS + 3)) == [7]
    # The stream went idle and forgot its play-out point, but not what it played.
    jb.push(7, payload(7))
    assert drain(jb, 3) == [None, None, None]
    assert jb.stats().late == 1


def test_sender_restart_after_idle_plays() -> None:
    jb = JitterBuffer(target_frames=1)
    jb.push(REPLAY_HORIZON + 100, payload(0))
    drain(jb, IDLE_TICKS + 3)
    jb.push(0, payload(0))  # far behind: a restarted counter, not a stale copy
    assert drain(jb, 1) == [Frame(0, payload(0))]


def test_lost_frame_carries_next_payload_for_fec() -> None:
    jb = JitterBuffer(target_frames=3)
    for seq in (0, 1, 3, 4):
        jb.push(seq, payload(seq))
    results = drain(jb, 5)
    assert results == [
        Frame(0, payload(0)),
        Frame(1, payload(1)),
        Lost(2, payload(3)),
        Frame(3, payload(3)),
        Frame(4, payload(4)),
    ]
    assert jb.stats().lost == 1


def test_bursty_loss() -> None:
    jb = JitterBuffer(target_frames=3)
    for seq in (0, 1, 2, 7, 8):
        jb.push(seq, payload(seq))
    results = drain(jb, 9)
    assert played(results) == [0, 1, 2, 7, 8]
    lost = [r for r in results if isinstance(r, Lost)]
    # Only the last frame of the burst can be rebuilt from FEC.
    assert lost == [Lost(3, None), Lost(4, None), Lost(5, None), Lost(6, payload(7))]
    assert jb.stats().lost == 4


def test_late_arrival_dropped() -> None:
    jb = JitterBuffer(target_frames=2)
    for seq in (0, 1, 3):
        jb.push(seq, payload(seq))
    assert drain(jb, 3) == [Frame(0, payload(0)), Frame(1, payload(1)), Lost(2, payload(3))]
    jb.push(2, payload(2))  # its tick has passed
    assert jb.pop() == Frame(3, payload(3))
    s = check_accounting(jb)
    assert (s.late, s.lost, s.played) == (1, 1, 3)


def test_wrap_around() -> None:
    jb = JitterBuffer(target_frames=3)
    seqs = [(SEQ_MODULO - 3 + i) % SEQ_MODULO for i in range(8)]
    order = [seqs[1], seqs[0], seqs[2], seqs[4], seqs[3], seqs[5], seqs[7], seqs[6]]
    for seq in order:
        jb.push(seq, payload(seq))
    assert played(drain(jb, 8)) == seqs
    assert seqs[3] == 0
    jb.push(SEQ_MODULO - 1, payload(0))
    assert jb.stats().late == 1


def test_seq_diff_is_serial() -> None:
    assert seq_diff(0, SEQ_MODULO - 1) == 1
    assert seq_diff(SEQ_MODULO - 1, 0) == -1
    assert seq_diff(5, 5) == 0
    assert seq_diff(2**31 - 1, 0) == 2**31 - 1


def test_overflow_bounded() -> None:
    jb = JitterBuffer(target_frames=3, max_frames=10)
    for seq in range(30):
        jb.push(seq, payload(seq))
        assert jb.stats().depth <= 10
    s = check_accounting(jb)
    assert (s.overflow, s.depth) == (20, 10)
    # Play-out moved forward to the newest max_frames frames.
    assert played(drain(jb, 10)) == list(range(20, 30))


def test_jump_ahead_bounds_the_wait() -> None:
    jb = JitterBuffer(target_frames=2, max_frames=10)
    for seq in (0, 1):
        jb.push(seq, payload(seq))
    jb.push(1000, payload(1000))
    # Frames far behind the newest are dropped instead of waiting 20 seconds.
    results = drain(jb, 10)
    assert played(results) == [1000]
    assert check_accounting(jb).overflow == 2


def test_idle_resets_and_prebuffers_again() -> None:
    jb = JitterBuffer(target_frames=3)
    for seq in range(3):
        jb.push(seq, payload(seq))
    results = drain(jb, 3 + IDLE_TICKS + 5)
    assert played(results) == [0, 1, 2]
    tail = results[3:]
    # The tail is concealed for IDLE_TICKS ticks, then the stream is idle.
    assert all(isinstance(r, Lost) for r in tail[:IDLE_TICKS])
    assert tail[IDLE_TICKS:] == [None] * 5
    assert jb.stats().lost == 0  # the sender stopped; nothing was lost
    # A new talk spurt, far ahead: prebuffer again and play it from its start.
    jb.push(500, payload(500))
    assert jb.pop() is None
    jb.push(501, payload(501))
    jb.push(502, payload(502))
    assert played(drain(jb, 3)) == [500, 501, 502]
    assert check_accounting(jb).played == 6


def test_gap_shorter_than_idle_counts_as_loss() -> None:
    jb = JitterBuffer(target_frames=1)
    jb.push(0, payload(0))
    assert jb.pop() == Frame(0, payload(0))
    assert drain(jb, 3) == [Lost(1, None), Lost(2, None), Lost(3, None)]
    jb.push(4, payload(4))
    assert jb.pop() == Frame(4, payload(4))
    assert jb.stats().lost == 3


def test_short_spurt_plays_without_waiting_for_target() -> None:
    jb = JitterBuffer(target_frames=3)
    jb.push(0, payload(0))
    # One frame alone starts after target_frames ticks, not at the next spurt.
    assert drain(jb, 3) == [None, None, Frame(0, payload(0))]


@pytest.mark.parametrize(
    ("target", "maximum", "minimum", "frame_ms", "error"),
    [
        (0, 5, 1, FRAME_MS, "target_frames must be >= 1"),
        (5, 4, 1, FRAME_MS, "max_frames"),
        (3, 5, 0, FRAME_MS, "min_frames must be >= 1"),
        (3, 5, 1, 0, "frame_ms must be > 0"),
    ],
)
def test_bad_sizes_rejected(
    target: int, maximum: int, minimum: int, frame_ms: float, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        JitterBuffer(target, maximum, minimum, frame_ms=frame_ms)


@pytest.mark.parametrize("seq", [SEQ_MODULO, -1])
def test_bad_seq_rejected(seq: int) -> None:
    with pytest.raises(ValueError, match="out of uint32 range"):
        JitterBuffer().push(seq, b"")
    with pytest.raises(ValueError, match="out of uint32 range"):
        JitterBuffer().push_redundant(seq, b"")


@settings(max_examples=300, deadline=None)
@given(
    start=st.sampled_from([0, 1000, SEQ_MODULO - 20]),
    count=st.integers(1, 60),
    data=st.data(),
)
def test_no_frame_plays_twice(start: int, count: int, data: st.DataObject) -> None:
    seqs = [(start + i) % SEQ_MODULO for i in range(count)]
    kept = data.draw(st.lists(st.sampled_from(seqs), max_size=count * 2), label="arrivals")
    arrivals = data.draw(st.permutations(kept), label="order")
    ticks_between = data.draw(
        st.lists(st.integers(0, 3), min_size=len(arrivals), max_size=len(arrivals)),
        label="ticks",
    )
    jb = JitterBuffer(target_frames=3, max_frames=8)
    out: list[int] = []
    for seq, ticks in zip(arrivals, ticks_between, strict=True):
        jb.push(seq, payload(seq))
        out.extend(played(drain(jb, ticks)))
    out.extend(played(drain(jb, 30)))
    assert len(out) == len(set(out))
    assert all(seq_diff(b, a) > 0 for a, b in itertools.pairwise(out))
    for seq in out:
        assert seq in kept
    s = check_accounting(jb)
    assert s.played == len(out)
    assert s.depth == 0


# --- Adaptive depth: a simulated sender, network and play-out clock ------------------
#
# Frame i leaves the sender at i * 20 ms of its own clock (stretched by `drift`), takes
# LATENCY plus some jitter, and is pushed with its arrival time; play-out ticks fall
# every 20 ms, PHASE into each slot. Everything runs on that hand-set clock.

LATENCY = 0.030
PHASE = 0.0071


@dataclass
class Playout:
    results: list[Frame | Lost | None]
    arrived: dict[int, float]  # seq -> arrival time
    played_at: dict[int, float]  # seq -> tick time it played at
    targets: list[tuple[float, int]]  # (time, target) every 5 ticks

    def delay(self, since: float = 0.0) -> list[float]:
        """Seconds each frame waited in the buffer, for frames played after `since`."""
        return [t - self.arrived[s] for s, t in self.played_at.items() if t >= since]

    def target_at(self, when: float) -> int:
        return [target for t, target in self.targets if t <= when][-1]


def sender(
    count: int,
    *,
    jitter: Callable[[float], float] = lambda sent: 0.0,
    drift: float = 0.0,
    lose: Callable[[int], bool] = lambda i: False,
    first: int = 0,
    frame_s: float = FRAME_S,
) -> list[tuple[float, int]]:
    """(arrival time, seq) of `count` frames of `frame_s`; the sender's clock runs `drift` fast."""
    timed = []
    for i in range(count):
        if lose(i):
            continue
        sent = i * frame_s / (1 + drift)
        timed.append((sent + LATENCY + jitter(sent), (first + i) % SEQ_MODULO))
    return sorted(timed)


def uniform(spread: float, seed: int, start: float = 0.0, end: float = math.inf) -> Jitter:
    rng = random.Random(seed)
    return lambda sent: rng.uniform(0, spread) if start <= sent < end else 0.0


def run(
    jb: JitterBuffer,
    timed: list[tuple[float, int]],
    seconds: float,
    payload_of: Callable[[int], bytes] = payload,
    depth: int = 0,
) -> Playout:
    """Play `timed` arrivals out; each packet also carries copies of `depth` frames before it.

    One pop per frame of the buffer's own duration (``jb.frame_ms``).
    """
    out = Playout([], {}, {}, [])
    queue = deque(timed)
    frame_s = jb.frame_ms / 1000
    for tick in range(round(seconds / frame_s)):
        now = tick * frame_s + PHASE
        while queue and queue[0][0] < now:
            when, seq = queue.popleft()
            for back in range(min(depth, seq), 0, -1):
                jb.push_redundant(seq - back, payload_of(seq - back))
            jb.push(seq, payload_of(seq), now=when)
            out.arrived.setdefault(seq, when)
        result = jb.pop()
        out.results.append(result)
        if isinstance(result, Frame):
            assert result.seq not in out.played_at, f"{result.seq} played twice"
            out.played_at[result.seq] = now
        if tick % 5 == 0:
            out.targets.append((now, jb.stats().target))
    check_accounting(jb)
    return out


def missed(jb: JitterBuffer) -> int:
    """Frames that did not play at their first tick: late, lost, or waited for."""
    s = jb.stats()
    return s.late + s.lost + s.stretched


@pytest.mark.parametrize(("spread", "expected"), [(0.0, 1), (0.0005, 2)])
def test_calm_network_converges_to_a_low_target(spread: float, expected: int) -> None:
    jb = JitterBuffer()  # starts 3 deep until it has measured
    out = run(jb, sender(1000, jitter=uniform(spread, seed=1)), 21)
    s = jb.stats()
    assert s.target == expected
    assert missed(jb) == 0
    assert s.played + s.dropped == 1000
    assert s.jitter_ms == pytest.approx(spread * 1000 * 0.95, abs=0.1)
    # 60 ms at first, then no more than the target (plus the tick phase).
    assert max(out.delay(since=12)) <= expected * FRAME_S
    assert s.delay_ms <= expected * FRAME_MS


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_jitter_raises_the_target_and_late_frames_become_rare(seed: int) -> None:
    jb = JitterBuffer(target_frames=1)  # the worst start: no depth at all
    count = 3000  # 60 s
    run(jb, sender(count, jitter=uniform(0.030, seed)), 61)
    s = jb.stats()
    assert s.target == 3  # ceil(28.5 ms / 20 ms) + 1
    assert 27 <= s.jitter_ms <= 30
    assert missed(jb) / count < 0.01
    assert s.played + s.lost == count


def test_target_comes_back_down_after_the_jitter_stops() -> None:
    jb = JitterBuffer()
    jitter = uniform(0.030, seed=4, start=20, end=50)
    out = run(jb, sender(90 * 50, jitter=jitter), 91)
    assert out.target_at(19) == 1
    assert all(target == 3 for t, target in out.targets if 23 <= t < 50)
    assert missed(jb) < 10
    # The 10 s history forgets the jitter, then the surplus frames are dropped.
    calm_again = min(t for t, target in out.targets if t > 50 and target == 1)
    assert calm_again < 50 + 11
    assert max(out.delay(since=50 + 25)) <= FRAME_S
    assert jb.stats().delay_ms <= FRAME_MS


def test_a_late_frame_raises_the_target_at_once_and_still_plays() -> None:
    jb = JitterBuffer(target_frames=1)
    timed = [
        (when + (0.050 if seq >= 600 else 0.0), seq) for when, seq in sender(700)
    ]  # from frame 600 on, the path is 50 ms slower
    out = run(jb, timed, 14.2)
    assert out.target_at(11.9) == 1
    assert out.target_at(12.2) == 4  # ceil(50 ms / 20 ms) + 1
    s = jb.stats()
    # Frame 600 was due at tick 602: the play-out waited 2 ticks (concealing them)
    # instead of losing it, and the delay grew by as much.
    assert (s.lost, s.late, s.stretched) == (0, 0, 2)
    assert out.results[602:605] == [Lost(600, None), Lost(600, None), Frame(600, payload(600))]
    assert sorted(out.played_at) == list(range(700))


def test_bursty_loss_conceals_each_missing_frame_once() -> None:
    jb = JitterBuffer(target_frames=1)
    burst = range(300, 305)
    out = run(jb, sender(600, lose=lambda i: i in burst), 12.5)
    s = jb.stats()
    assert (s.lost, s.late, s.stretched) == (5, 0, 0)
    assert sorted(out.played_at) == [i for i in range(600) if i not in burst]
    concealed = [r for r in out.results if isinstance(r, Lost)]
    assert len(concealed) == 5 + IDLE_TICKS  # the burst, then the tail after the end
    # The burst did not add delay.
    assert max(out.delay(since=305 * FRAME_S)) <= FRAME_S


def test_bursty_loss_with_depth_rebuilds_the_last_frame_from_fec() -> None:
    jb = JitterBuffer()
    timed = sender(600, jitter=uniform(0.020, seed=5), lose=lambda i: 300 <= i < 304)
    out = run(jb, timed, 12.5)
    assert jb.stats().target == 2
    assert Lost(303, payload(304)) in out.results
    assert jb.stats().lost == 4


def test_reordered_frames_all_play_in_order() -> None:
    jb = JitterBuffer()
    # Every other pair swapped: the odd frame overtakes the even one by 5 ms.
    timed = sorted((when + (0.025 if seq % 4 == 0 else 0.0), seq) for when, seq in sender(1000))
    out = run(jb, timed, 21)
    s = jb.stats()
    assert (s.lost, s.late, s.played) == (0, 0, 1000)
    order = [r.seq for r in out.results if isinstance(r, Frame)]
    assert order == list(range(1000))
    assert s.target == 3  # 25 ms of spread


def test_duplicates_play_once() -> None:
    jb = JitterBuffer(target_frames=1)
    timed = sender(500)
    copies = sorted(timed + [(when + 0.003, seq) for when, seq in timed[::3]])
    out = run(jb, copies, 11)
    s = jb.stats()
    assert (s.duplicates, s.played, s.lost) == (len(timed[::3]), 500, 0)
    assert sorted(out.played_at) == list(range(500))


@pytest.mark.parametrize(
    ("drift", "spread", "max_delay"),
    [(0.005, 0.0, 0.080), (0.005, 0.010, 0.090), (-0.005, 0.0, 0.030), (-0.005, 0.010, 0.040)],
)
def test_clock_drift_keeps_the_delay_bounded(drift: float, spread: float, max_delay: float) -> None:
    """10 minutes from a sender whose clock runs 0.5 % fast or slow.

    Constant-size payloads: no frame looks quiet, so every drop waits its longest.
    """
    count = 600 * 50
    jb = JitterBuffer()
    out = run(jb, sender(count, drift=drift, jitter=uniform(spread, seed=6)), 606)
    s = jb.stats()
    delays = out.delay(since=10)
    assert max(delays) <= max_delay
    assert s.played + s.dropped == count
    assert (s.late, s.lost) == (0, 0)
    # 0.5 % of 30000 frames = 150: fast, they are dropped; slow, their ticks concealed.
    if drift > 0:
        assert 140 <= s.dropped <= 155
        assert s.stretched == 0
    else:
        assert s.dropped <= 2
        assert 140 <= s.stretched <= 155


def speechlike(seq: int) -> bytes:
    """~110-byte packets, with a 5-frame pause of 40-byte packets every 40 frames."""
    size = 40 if seq % 40 < 5 else 110
    return seq.to_bytes(4, "big") + bytes(size - 4)


def test_latency_drops_pick_quiet_frames() -> None:
    jb = JitterBuffer(target_frames=6)  # starts deep, then converges to 1
    out = run(jb, sender(1000), 21, payload_of=speechlike)
    s = jb.stats()
    assert s.dropped == 5 and s.lost == 0
    dropped = set(range(1000)) - set(out.played_at)
    assert all(len(speechlike(seq)) == 40 for seq in dropped)


def test_a_talk_spurts_preroll_burst_is_not_jitter() -> None:
    """A sender with voice activity detection sends nothing in pauses, then its
    pre-roll: the two frames before the first voiced one, all at once."""
    timed: list[tuple[float, int]] = []
    for spurt in range(60):
        first = spurt * 65  # 0.3 s of talk, 1 s of silence
        for seq in range(first - 2, first + 15):
            timed.append((max(seq, first) * FRAME_S + LATENCY, seq))
    jb = JitterBuffer()
    run(jb, [(when, seq) for when, seq in timed if seq >= 0], 80)
    s = jb.stats()
    assert s.target == 1 and s.jitter_ms < 1
    assert missed(jb) == 0


def test_sender_restart_does_not_inflate_the_target() -> None:
    jb = JitterBuffer()
    before = sender(500, first=70_000)
    after = [(when + 12, seq) for when, seq in sender(500)]  # restarted from 0
    out = run(jb, before + after, 23)
    assert jb.stats().target == 1
    assert len(out.played_at) == 1000 - jb.stats().dropped


def test_fixed_buffer_reports_its_target() -> None:
    jb = JitterBuffer(target_frames=4)
    for seq in range(10):
        jb.push(seq, payload(seq))
    drain(jb, 10)
    s = jb.stats()
    assert (s.target, s.jitter_ms, s.dropped, s.stretched) == (4, 0.0, 0, 0)


@settings(max_examples=300, deadline=None)
@given(
    start=st.sampled_from([0, 1000, SEQ_MODULO - 20]),
    count=st.integers(1, 60),
    data=st.data(),
)
def test_no_frame_plays_twice_with_arrival_times(
    start: int, count: int, data: st.DataObject
) -> None:
    seqs = [(start + i) % SEQ_MODULO for i in range(count)]
    kept = data.draw(st.lists(st.sampled_from(seqs), max_size=count * 2), label="arrivals")
    arrivals = data.draw(st.permutations(kept), label="order")
    gaps = data.draw(
        st.lists(st.floats(0, 0.1), min_size=len(arrivals), max_size=len(arrivals)),
        label="gaps",
    )
    ticks_between = data.draw(
        st.lists(st.integers(0, 3), min_size=len(arrivals), max_size=len(arrivals)),
        label="ticks",
    )
    jb = JitterBuffer(target_frames=3, max_frames=8)
    out: list[int] = []
    now = 0.0
    for seq, gap, ticks in zip(arrivals, gaps, ticks_between, strict=True):
        now += gap
        jb.push(seq, payload(seq), now=now)
        out.extend(played(drain(jb, ticks)))
    out.extend(played(drain(jb, 60)))
    assert len(out) == len(set(out))
    assert all(seq_diff(b, a) > 0 for a, b in itertools.pairwise(out))
    for seq in out:
        assert seq in kept
    s = check_accounting(jb)
    assert s.played == len(out)
    assert s.depth == 0
    assert 1 <= s.target <= 8


# --- redundancy: copies of earlier frames in later packets ---------------------


def test_a_copy_fills_the_hole_of_a_lost_frame() -> None:
    jb = JitterBuffer(target_frames=3)
    jb.push(0, payload(0))
    jb.push(1, payload(1))
    jb.push_redundant(1, payload(1))  # packet 2 lost; packet 3 repeats 1 and 2
    jb.push_redundant(2, payload(2))
    jb.push(3, payload(3))
    results = drain(jb, 4)
    assert played(results) == [0, 1, 2, 3]
    s = check_accounting(jb)
    assert (s.recovered, s.lost, s.duplicates) == (1, 0, 0)


def test_copies_of_played_or_buffered_frames_change_nothing() -> None:
    jb = JitterBuffer(target_frames=1)
    jb.push(0, payload(0))
    assert played(drain(jb, 1)) == [0]
    jb.push_redundant(0, b"stale")
    jb.push(1, payload(1))
    jb.push_redundant(1, b"copy")
    results = drain(jb, 1)
    assert results == [Frame(1, payload(1))]
    assert check_accounting(jb).recovered == 0


def test_a_copy_that_comes_after_its_tick_is_ignored() -> None:
    jb = JitterBuffer(target_frames=1)
    jb.push(0, payload(0))
    jb.push(2, payload(2))
    assert played(drain(jb, 2)) == [0]  # 1 was concealed
    jb.push_redundant(1, payload(1))
    results = drain(jb, 1)
    assert played(results) == [2]
    assert check_accounting(jb).recovered == 0


def test_a_copy_before_any_frame_is_ignored() -> None:
    """Nothing to fill yet: a copy cannot start a stream (its packet's frame does)."""
    jb = JitterBuffer(target_frames=1)
    jb.push_redundant(4, payload(4))
    assert drain(jb, 3) == [None, None, None]
    assert check_accounting(jb).recovered == 0


def test_a_copy_beyond_the_buffers_span_is_ignored() -> None:
    jb = JitterBuffer(target_frames=1, max_frames=5)
    jb.push(0, payload(0))
    jb.push_redundant(5, payload(5))  # 5 frames ahead of the next to play: no room
    assert check_accounting(jb).recovered == 0
    assert played(drain(jb, 6)) == [0]


def test_a_copy_before_the_first_frame_starts_the_spurt_there() -> None:
    jb = JitterBuffer(target_frames=2)
    jb.push(5, payload(5))
    jb.push_redundant(4, payload(4))  # packet 4 was lost, 5 repeats it
    assert played(drain(jb, 4)) == [4, 5]


def test_extra_frames_raise_the_target_and_fall_back() -> None:
    jb = JitterBuffer(target_frames=2, max_frames=10)
    jb.set_extra_frames(2)
    assert jb.stats().target == 4
    jb.set_extra_frames(2)  # the same again changes nothing
    assert jb.stats().target == 4
    jb.set_extra_frames(0)
    assert jb.stats().target == 2
    jb.set_extra_frames(20)
    assert jb.stats().target == 10  # never beyond max_frames


@pytest.mark.parametrize("seed", range(3))
def test_with_redundancy_and_the_wait_for_it_random_loss_is_recovered(seed: int) -> None:
    rng = random.Random(seed)
    timed = sender(1500, jitter=uniform(0.002, seed), lose=lambda i: rng.random() < 0.15)
    waiting = JitterBuffer()
    waiting.set_extra_frames(2)
    run(waiting, timed, 32.0, depth=2)
    hasty = JitterBuffer()
    run(hasty, timed, 32.0, depth=2)
    lost_15 = 1500 - len(timed)
    w, h = waiting.stats(), hasty.stats()
    # Two copies leave about 0.15**3 = 0.3 % lost; waiting for them gets nearly all.
    assert w.recovered > 0.8 * lost_15
    assert w.lost < 0.02 * 1500
    # Without the wait the buffer still gets most copies, but only by stalling the
    # play-out (stretched ticks) and cutting back later (dropped frames): audible.
    assert w.stretched + w.dropped < h.stretched + h.dropped


def test_waiting_for_far_copies_grows_at_a_loss_and_a_burst_does_not_stall() -> None:
    """Spread copies (wire.voice) come up to 8 ticks late: the buffer grows to wait for
    them at a loss, not on quiet frames before it (in running speech a small packet is
    often a soft consonant: stretching it is heard), and a later burst that takes the
    newest frames is not mistaken for lateness once it has grown."""
    quiet = set(range(0, 1000, 10))  # one frame in ten is a small packet
    gone = {*range(200, 212), *range(300, 312), *range(600, 604), *range(606, 613)}
    jb = JitterBuffer()
    results: list[Frame | Lost | None] = []
    for tick in range(1000):
        now = tick * FRAME_S + PHASE
        seq = tick - 1  # each frame arrives within the tick after it was sent
        if seq >= 0 and seq not in gone:
            jb.push(seq, payload(seq) + (b"" if seq in quiet else bytes(100)), now=now)
        if tick == 100:
            jb.set_extra_frames(8)  # the sender now spreads copies up to 8 ticks back
        results.append(jb.pop())
    s = check_accounting(jb)
    assert not any(isinstance(r, Lost) for r in results[:200])  # no stretch before a loss
    # The first bursts grew it near the target (9: one frame for the calm network + 8).
    assert s.target == 9 and s.delay_ms >= 7 * FRAME_MS
    lost = [r.seq for r in results[500:] if isinstance(r, Lost)]
    # The later burst dipped the level without making it wait (stretch): none was late.
    assert lost == sorted(seq for seq in gone if seq >= 600)


def test_an_original_that_comes_after_its_copy_is_no_duplicate() -> None:
    jb = JitterBuffer(target_frames=3)
    jb.push(0, payload(0), now=0.0)
    jb.push_redundant(1, payload(1))  # packet 2 (carrying 1) overtook packet 1
    jb.push(2, payload(2), now=0.04)
    jb.push(1, payload(1), now=0.045)
    s = check_accounting(jb)
    assert (s.duplicates, s.recovered, s.received) == (0, 0, 3)
    assert played(drain(jb, 3)) == [0, 1, 2]


# --- other frame durations: 10 and 40 ms senders behave the same in time -------------


def frames_of(ms: int, seconds: float) -> int:
    return round(seconds * 1000 / ms)


@pytest.mark.parametrize("ms", [10, 40])
def test_in_order_frames_of_other_durations_play_with_a_low_delay(ms: int) -> None:
    count = frames_of(ms, 20)
    jb = JitterBuffer(frames_of(ms, 0.06), frames_of(ms, 0.5), frame_ms=ms)
    out = run(jb, sender(count, frame_s=ms / 1000), 21)
    s = check_accounting(jb)
    assert s.played + s.dropped == count and (s.late, s.lost) == (0, 0)
    assert list(out.played_at) == sorted(out.played_at)
    # Calm network: one frame of depth, reached by dropping the prebuffer's spare
    # frames; the wait in the buffer is then the same in time as for 20 ms frames.
    assert s.target == 1
    assert s.dropped == frames_of(ms, 0.06) - 1
    assert max(out.delay(since=15)) <= 0.020


@pytest.mark.parametrize("ms", [10, 40])
def test_reordered_frames_of_other_durations_all_play_in_order(ms: int) -> None:
    count = frames_of(ms, 10)
    timed = sender(count, frame_s=ms / 1000)
    # Every other pair swapped: each second frame comes 2 ms before the first.
    swapped = [(when - (0.002 + ms / 1000) * (seq % 4 == 1), seq) for when, seq in timed]
    jb = JitterBuffer(frames_of(ms, 0.06), frames_of(ms, 0.5), frame_ms=ms)
    out = run(jb, sorted(swapped), 11)
    s = check_accounting(jb)
    assert (s.played + s.dropped, s.lost, s.late) == (count, 0, 0)
    assert list(out.played_at) == sorted(out.played_at)  # in order, each once


@pytest.mark.parametrize("ms", [10, 40])
def test_lost_frames_of_other_durations_are_each_concealed_once(ms: int) -> None:
    count = frames_of(ms, 10)
    gone = set(range(20, count - 20, 17))
    jb = JitterBuffer(frames_of(ms, 0.06), frames_of(ms, 0.5), frame_ms=ms)
    out = run(jb, sender(count, frame_s=ms / 1000, lose=lambda i: i in gone), 11)
    s = check_accounting(jb)
    assert s.lost == len(gone) and s.played + s.dropped == count - len(gone)
    assert not set(out.played_at) & gone
    assert list(out.played_at) == sorted(out.played_at)


@pytest.mark.parametrize("ms", [10, 20, 40])
def test_a_stream_goes_idle_after_the_same_time_whatever_its_frames(ms: int) -> None:
    jb = JitterBuffer(1, frames_of(ms, 0.5), frame_ms=ms)
    for seq in range(3):
        jb.push(seq, payload(seq))
    results = drain(jb, 3 + frames_of(ms, 0.5))
    tail = results[3:]
    concealed = sum(isinstance(r, Lost) for r in tail)
    assert concealed * ms == IDLE_MS  # 200 ms of concealment, then silence
    assert tail[concealed:] == [None] * (len(tail) - concealed)


@pytest.mark.parametrize(
    ("ms", "drift", "max_delay"),
    # The bounds of the 20 ms test for this drift and jitter; 40 ms frames add 20 ms.
    [(10, 0.005, 0.090), (10, -0.005, 0.040), (40, 0.005, 0.110), (40, -0.005, 0.060)],
)
def test_clock_drift_with_other_frame_durations_keeps_the_delay_bounded(
    ms: int, drift: float, max_delay: float
) -> None:
    """5 minutes from a sender whose clock runs 0.5 % fast or slow, jitter up to 10 ms."""
    count = frames_of(ms, 300)
    jb = JitterBuffer(frames_of(ms, 0.06), frames_of(ms, 0.5), frame_ms=ms)
    timed = sender(count, drift=drift, jitter=uniform(0.010, seed=7), frame_s=ms / 1000)
    out = run(jb, timed, 306)
    s = jb.stats()
    assert max(out.delay(since=10)) <= max_delay
    assert s.played + s.dropped == count
    assert s.late + s.lost <= 2
    # 0.5 % of 300 s = 1.5 s of audio: fast, dropped; slow, concealed while waiting.
    if drift > 0:
        assert 1.3 <= s.dropped * ms / 1000 <= 1.6
    else:
        assert 1.3 <= s.stretched * ms / 1000 <= 1.6


@pytest.mark.parametrize("ms", [10, 20, 40])
def test_jitter_is_measured_in_milliseconds_whatever_the_frames(ms: int) -> None:
    count = frames_of(ms, 30)
    jb = JitterBuffer(frames_of(ms, 0.06), frames_of(ms, 0.5), frame_ms=ms)
    run(jb, sender(count, jitter=uniform(0.030, seed=8), frame_s=ms / 1000), 31)
    s = jb.stats()
    assert 26 <= s.jitter_ms <= 30.5
    # The target covers the spread plus one frame of phase: ~30 ms + one frame.
    assert 30 <= s.target * ms <= 30 + 2 * ms
    assert missed(jb) < 0.02 * count


@settings(max_examples=200, deadline=None)
@given(
    ms=st.sampled_from([10, 40]),
    count=st.integers(1, 60),
    data=st.data(),
)
def test_no_frame_of_any_duration_plays_twice(ms: int, count: int, data: st.DataObject) -> None:
    seqs = list(range(count))
    kept = data.draw(st.lists(st.sampled_from(seqs), max_size=count * 2), label="arrivals")
    arrivals = data.draw(st.permutations(kept), label="order")
    gaps = data.draw(
        st.lists(st.floats(0, 0.1), min_size=len(arrivals), max_size=len(arrivals)),
        label="gaps",
    )
    jb = JitterBuffer(3, 8, frame_ms=ms)
    out: list[int] = []
    now = 0.0
    for seq, gap in zip(arrivals, gaps, strict=True):
        now += gap
        jb.push(seq, payload(seq), now=now)
        out.extend(played(drain(jb, round(gap * 1000 / ms))))
    out.extend(played(drain(jb, 60)))
    assert len(out) == len(set(out))
    assert out == sorted(out)
    assert check_accounting(jb).played == len(out)


# --- settling: the constructor's guess goes fast, the tick phase's frame when spare ---


def test_calm_network_settles_to_one_frame_of_delay_within_seconds() -> None:
    # Arrivals 16.6 ms before the tick: the frame the target holds for the phase is spare.
    jb = JitterBuffer()  # 3 deep until it has measured
    out = run(jb, sender(500, jitter=uniform(0.0005, seed=1)), 10.5)
    s = jb.stats()
    assert s.target == 2 and missed(jb) == 0
    assert max(out.delay(since=5.0)) <= FRAME_S  # before: 3 frames until 6 s, 2 until 12 s


def test_an_unlucky_tick_phase_keeps_the_phase_frame() -> None:
    # Arrivals straddle the tick (7.1 ms): one frame less would make some late.
    timed = [(when - 0.0128, seq) for when, seq in sender(1000, jitter=uniform(0.0005, seed=2))]
    jb = JitterBuffer()
    out = run(jb, timed, 21)
    assert missed(jb) == 0
    assert max(out.delay(since=5.0)) <= 2 * FRAME_S


def test_ten_ms_frames_of_steady_silence_settle_within_a_second_and_a_half() -> None:
    # 60 ms of start-up guess in 10 ms frames; packets all one size (digital silence).
    jb = JitterBuffer(6, 50, frame_ms=10)
    out = run(jb, sender(600, jitter=uniform(0.0005, seed=1), frame_s=0.01), 6)
    s = jb.stats()
    assert (s.target, s.dropped, missed(jb)) == (2, 5, 0)
    assert max(out.delay(since=1.5)) <= 0.010


@pytest.mark.parametrize("spare", [2, 5])
def test_waiting_for_far_copies_drops_only_what_is_well_beyond_the_target(spare: int) -> None:
    """With spread copies, a level up to SPREAD_SHRINK_SLACK_MS above target is left
    alone (a drop there is a jump in the speech, and a stall soon pays it back); more
    than that is still cut, so the delay stays bounded."""
    slack = math.ceil(SPREAD_SHRINK_SLACK_MS / FRAME_MS)
    jb = JitterBuffer()
    jb.set_extra_frames(8)  # the sender spreads copies up to 8 ticks back
    target = 1 + 8  # once measured: a calm network needs one frame, plus the 8 waited
    lead = target + spare - 1  # the level at each tick is lead + 1
    for seq in range(lead):
        jb.push(seq, payload(seq), now=0.0)
    for tick in range(1500):  # 30 s, every frame `lead` ticks ahead of its play-out
        jb.push(tick + lead, payload(tick + lead), now=tick * FRAME_S + PHASE)
        jb.pop()
    s = check_accounting(jb)
    assert s.target == target and s.lost == 0
    if spare <= slack:
        assert s.dropped == 0
    else:
        assert s.dropped >= spare - slack and s.depth <= target + slack
