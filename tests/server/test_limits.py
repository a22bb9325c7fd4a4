"""Session and account rate limits (server/limits.py) with a hand-set clock."""

from __future__ import annotations

from bangor.server.limits import Kind, SessionLimits, UserBuckets, Verdict, user_rates
from bangor.settings import ServerSettings

SETTINGS = ServerSettings()


def limits_for(
    user_id: int, users: UserBuckets | None = None, now: float = 0.0, **overrides: float
) -> tuple[SessionLimits, UserBuckets]:
    settings = ServerSettings(**overrides)  # type: ignore[arg-type]
    if users is None:
        users = UserBuckets(user_rates(settings), settings.max_limited_users)
    return SessionLimits(settings, users, user_id, now), users


def verdicts(limits: SessionLimits, kind: Kind, count: int, now: float) -> list[Verdict]:
    return [limits.check(kind, now) for _ in range(count)]


def test_a_session_gets_its_burst_then_its_rate() -> None:
    limits, _ = limits_for(1)
    burst = SETTINGS.join_burst
    got = verdicts(limits, Kind.JOIN, burst + 3, 0.0)
    assert got == [Verdict.ALLOW] * burst + [Verdict.REFUSE] * 3
    assert limits.check(Kind.JOIN, 1 / SETTINGS.join_rate) is Verdict.ALLOW
    assert limits.refused[Kind.JOIN] == 3
    # Kinds are metered apart: peer messages still have their own burst.
    assert verdicts(limits, Kind.PEER, SETTINGS.peer_burst, 1.0) == [Verdict.ALLOW] * 200


def test_an_account_shares_its_budget_over_its_sessions() -> None:
    first, users = limits_for(7)
    sessions = [first] + [limits_for(7, users)[0] for _ in range(2)]
    other, _ = limits_for(8, users)
    allowed = 0
    for limits in sessions:
        allowed += verdicts(limits, Kind.JOIN, SETTINGS.join_burst, 0.0).count(Verdict.ALLOW)
    # Not 3 x join_burst (15): the account's bucket ran dry.
    assert allowed == SETTINGS.user_join_burst == 10
    # A new session of the same account starts with the account's empty bucket...
    third, _ = limits_for(7, users)
    assert third.check(Kind.JOIN, 0.0) is Verdict.REFUSE
    # ...while another account is untouched.
    assert other.check(Kind.JOIN, 0.0) is Verdict.ALLOW


def test_staying_over_a_limit_closes_the_session() -> None:
    limits, _ = limits_for(1)
    now = 0.0
    seen = []
    while now < 10:
        seen.append((now, limits.check(Kind.PEER, now)))
        now += 0.001  # 1000 a second against a rate of 100
    first_close = next(t for t, v in seen if v is Verdict.CLOSE)
    first_refusal = next(t for t, v in seen if v is Verdict.REFUSE)
    assert first_close - first_refusal >= SETTINGS.throttle_close_after
    assert first_close - first_refusal < SETTINGS.throttle_close_after + 0.01
    assert limits.over_since(Kind.PEER) == first_refusal


def test_a_burst_now_and_then_never_closes_the_session() -> None:
    limits, _ = limits_for(1)
    for second in range(60):  # every second, twice the burst at once, then calm
        got = verdicts(limits, Kind.PEER, 2 * SETTINGS.peer_burst, float(second * 2))
        assert Verdict.CLOSE not in got
        assert got.count(Verdict.ALLOW) == SETTINGS.peer_burst
    assert limits.refused[Kind.PEER] == 60 * SETTINGS.peer_burst


def test_account_buckets_are_bounded_and_forget_only_what_refilled() -> None:
    users = UserBuckets(user_rates(SETTINGS), max_users=3)
    for user_id in range(3):
        assert users.get(user_id, Kind.JOIN, 0.0).take(0.0)  # none of them full
    users.get(3, Kind.JOIN, 0.0)  # over the bound: the least recently used goes
    assert len(users) == 3
    drained = users.get(1, Kind.JOIN, 0.0)
    assert drained.level(0.0) == SETTINGS.user_join_burst - 1  # 1 was kept, as it was
    # Later, every bucket has refilled: making room forgets all the refilled ones.
    users.get(4, Kind.JOIN, 100.0)
    assert len(users) == 1
