"""Jitter buffer: ordering, loss, lateness, wrap-around, bounds and idle reset."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bangor.audio.jitter import (
    IDLE_TICKS,
    REPLAY_HORIZON,
    SEQ_MODULUS,
    Frame,
    JitterBuffer,
    JitterStats,
    Lost,
    seq_diff,
)


def payload(seq: int) -> bytes:
    return seq.to_bytes(4, "big") + b"opus"


def drain(jb: JitterBuffer, ticks: int) -> list[Frame | Lost | None]:
    return [jb.pop() for _ in range(ticks)]


def played(results: list[Frame | Lost | None]) -> list[int]:
    return [r.seq for r in results if isinstance(r, Frame)]


def check_accounting(jb: JitterBuffer) -> JitterStats:
    s = jb.stats()
    assert s.received == s.played + s.late + s.duplicates + s.overflow + s.depth
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
    assert check_accounting(jb) == JitterStats(
        received=10, played=7, lost=0, late=0, duplicates=0, overflow=0, depth=3
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
    seqs = [(SEQ_MODULUS - 3 + i) % SEQ_MODULUS for i in range(8)]
    order = [seqs[1], seqs[0], seqs[2], seqs[4], seqs[3], seqs[5], seqs[7], seqs[6]]
    for seq in order:
        jb.push(seq, payload(seq))
    assert played(drain(jb, 8)) == seqs
    assert seqs[3] == 0
    jb.push(SEQ_MODULUS - 1, payload(0))
    assert jb.stats().late == 1


def test_seq_diff_is_serial() -> None:
    assert seq_diff(0, SEQ_MODULUS - 1) == 1
    assert seq_diff(SEQ_MODULUS - 1, 0) == -1
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


@pytest.mark.parametrize(("target", "maximum"), [(0, 5), (5, 4)])
def test_bad_sizes_rejected(target: int, maximum: int) -> None:
    with pytest.raises(ValueError):
        JitterBuffer(target, maximum)


def test_bad_seq_rejected() -> None:
    with pytest.raises(ValueError):
        JitterBuffer().push(SEQ_MODULUS, b"")


@settings(max_examples=300, deadline=None)
@given(
    start=st.sampled_from([0, 1000, SEQ_MODULUS - 20]),
    count=st.integers(1, 60),
    data=st.data(),
)
def test_no_frame_plays_twice(start: int, count: int, data: st.DataObject) -> None:
    seqs = [(start + i) % SEQ_MODULUS for i in range(count)]
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
