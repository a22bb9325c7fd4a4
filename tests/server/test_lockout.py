"""Lockout bookkeeping: the back-off schedule and names without an account (pure)."""

from __future__ import annotations

import pytest

from bangor.errors import ThrottledError
from bangor.server.lockout import UnknownLogins, backoff, lock_steps, shown_name
from bangor.settings import ServerSettings


def test_lock_steps_match_the_backoff_below_the_cap() -> None:
    settings = ServerSettings()  # 3 free, then 1 s doubling to 300 s
    steps = lock_steps(settings)
    assert steps[:3] == [(4, 1.0), (5, 2.0), (6, 4.0)]
    assert steps[-1] == (12, 256.0)
    assert backoff(13, settings) == 300.0 and backoff(3, settings) == 0.0
    assert all(delay == backoff(n, settings) for n, delay in steps)


def test_lock_steps_when_the_first_lock_is_already_capped() -> None:
    assert lock_steps(ServerSettings(login_backoff_base=10.0, login_backoff_max=5.0)) == []


def test_failures_are_counted_before_the_check_and_lock_at_once() -> None:
    unknown = UnknownLogins(ServerSettings())
    assert [unknown.count_failure("ghost", 0.0) for _ in range(4)] == [1, 2, 3, 4]
    # The 4th count locked the name: nothing more is counted (or hashed) until 1 s.
    with pytest.raises(ThrottledError) as locked:
        unknown.count_failure("ghost", 0.5)
    assert locked.value.retry_after == 0.5
    unknown.check("other", 0.5)
    assert unknown.count_failure("ghost", 1.0) == 5


def test_junk_names_cannot_push_out_a_lock() -> None:
    unknown = UnknownLogins(ServerSettings(max_tracked_unknown_logins=3))
    for _ in range(4):
        unknown.count_failure("ghost", 0.0)  # locked until 1.0
    for i in range(100):
        unknown.count_failure(f"junk{i}", 0.1)
    assert len(unknown) == 3
    with pytest.raises(ThrottledError):
        unknown.check("ghost", 0.5)


def test_when_every_place_is_locked_new_names_wait() -> None:
    settings = ServerSettings(max_tracked_unknown_logins=2, login_free_failures=0)
    unknown = UnknownLogins(settings)
    unknown.count_failure("a", 0.0)  # locked until 1.0
    unknown.count_failure("b", 0.5)  # locked until 1.5
    with pytest.raises(ThrottledError) as full:
        unknown.count_failure("c", 0.5)
    assert full.value.retry_after == 0.5  # when a's lock ends
    assert "c" not in unknown
    assert unknown.count_failure("c", 1.0) == 1  # a's place, now unlocked
    assert "a" not in unknown and "b" in unknown


def test_names_are_forgotten_by_time_not_by_crowding() -> None:
    settings = ServerSettings(unknown_login_memory=60.0)
    unknown = UnknownLogins(settings)
    unknown.count_failure("old", 0.0)
    unknown.count_failure("new", 30.0)
    unknown.count_failure("newer", 61.0)  # a new name arrives: "old" has been quiet 61 s
    assert "old" not in unknown and "new" in unknown
    assert unknown.count_failure("new", 62.0) == 2  # still remembered


def test_a_lock_outlives_the_memory() -> None:
    settings = ServerSettings(unknown_login_memory=1.0, login_backoff_base=100.0)
    unknown = UnknownLogins(settings)
    for _ in range(4):
        unknown.count_failure("ghost", 0.0)  # locked until 100
    unknown.count_failure("someone", 50.0)
    with pytest.raises(ThrottledError):
        unknown.check("ghost", 60.0)


def test_shown_name_hides_what_was_typed() -> None:
    shown = shown_name("my secret password")
    assert shown.startswith("#") and len(shown) == 9
    assert "secret" not in shown
    assert shown == shown_name("my secret password") != shown_name("my secret passwore")
