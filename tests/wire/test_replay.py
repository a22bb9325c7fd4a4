"""Tests for bangor.wire.replay."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bangor.wire.replay import REPLAY_WINDOW, ReplayWindow

TOP = 2**64 - 1


def test_initial_state() -> None:
    w = ReplayWindow()
    assert w.highest == -1
    assert w.size == REPLAY_WINDOW == 2048


def test_a_window_holds_at_least_one_counter() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ReplayWindow(0)
    w = ReplayWindow(1)  # only the highest counter: anything older is refused
    assert w.accept(5) and not w.accept(5) and not w.accept(4) and w.accept(6)


def test_fixed_sequence() -> None:
    w = ReplayWindow(64)
    assert w.accept(0)
    assert not w.accept(0)
    assert w.accept(5)
    assert w.highest == 5
    assert w.accept(3)
    assert not w.accept(3)
    assert w.accept(1)
    assert w.accept(64)  # 64 - 64 == 0: counter 0 now falls out of the window
    assert not w.accept(0)
    assert w.accept(2)
    assert w.highest == 64


def test_window_boundary_exact() -> None:
    w = ReplayWindow(128)
    assert w.accept(1000)
    assert not w.accept(1000 - 128)  # <= highest - size: too old
    assert w.accept(1000 - 127)  # the oldest counter still inside
    assert not w.accept(1000 - 127)


def test_rejection_changes_nothing() -> None:
    w = ReplayWindow(32)
    for c in (10, 12, 40):
        assert w.accept(c)
    before = (w.highest, w._bitmap)
    for c in (40, 8, 12 - 32, -1, 2**64, 2**70):
        assert not w.accept(c)
    assert (w.highest, w._bitmap) == before


def test_top_counters() -> None:
    w = ReplayWindow()
    assert not w.accept(2**64)
    assert w.highest == -1
    assert w.accept(TOP)
    assert not w.accept(TOP)
    assert w.accept(TOP - 1)
    assert not w.accept(TOP - REPLAY_WINDOW)
    assert w.accept(TOP - REPLAY_WINDOW + 1)


def test_big_jump_forward_clears_window() -> None:
    w = ReplayWindow(256)
    for c in range(100):
        assert w.accept(c)
    assert w.accept(10**12)
    assert not w.accept(99)
    assert w.accept(10**12 - 1)
    assert w.accept(10**12 + 256)  # jump of exactly one window
    assert not w.accept(10**12)
    assert w.accept(10**12 + 1)


@pytest.mark.parametrize("size", [1, 7, 64, REPLAY_WINDOW])
def test_whole_window_sweep(size: int) -> None:
    rng = random.Random(size)
    base = 5000
    w = ReplayWindow(size)
    assert w.accept(base + size - 1)
    counters = list(range(base, base + size - 1))
    rng.shuffle(counters)
    for c in counters:
        assert w.accept(c), c
    rng.shuffle(counters)
    for c in [*counters, base + size - 1]:
        assert not w.accept(c), c
    assert not w.accept(base - 1)


def _reference(size: int, counters: list[int]) -> list[bool]:
    seen: set[int] = set()
    highest = -1
    out = []
    for c in counters:
        ok = 0 <= c < 2**64 and c > highest - size and c not in seen
        if ok:
            seen.add(c)
            highest = max(highest, c)
        out.append(ok)
    return out


@settings(max_examples=300)
@given(
    st.integers(min_value=1, max_value=80),
    st.lists(
        st.one_of(
            st.integers(min_value=0, max_value=300),
            st.integers(min_value=2**64 - 200, max_value=2**64 + 2),
        ),
        max_size=200,
    ),
)
def test_matches_set_reference(size: int, counters: list[int]) -> None:
    w = ReplayWindow(size)
    assert [w.accept(c) for c in counters] == _reference(size, counters)
