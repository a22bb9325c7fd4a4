"""How often a session (and an account, over all its sessions) may join, relay and chat.

Sans-I/O: ``now`` comes in, a verdict goes out; ``server/app.py`` acts on it.

Each kind of request has a token bucket per session and one per account (a user with
many sessions shares the account's). A request passes only if both have a token. A
session that stays over a limit is told so (joins and chat: a THROTTLED refusal; peer
messages: dropped, counted) and, when it keeps at it for ``throttle_close_after``
seconds, closed. It counts as back within the limit once both its buckets for that kind
have refilled to half: an honest client that bursts once is never closed.

Leaving a room is not limited: it must always work, and each leave follows a join, so the
join limit bounds leaves too.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum, StrEnum

from bangor.settings import ServerSettings
from bangor.wire.ratelimit import TokenBucket


class Kind(StrEnum):
    JOIN = "join"
    PEER = "peer"
    CHAT = "say"  # the request's tag, as the refusal's ``ref`` names it


class Verdict(Enum):
    ALLOW = "allow"
    REFUSE = "refuse"  # over the limit: refuse (or drop) this one
    CLOSE = "close"  # over it for too long: end the session


@dataclass(frozen=True)
class Rate:
    per_second: float
    burst: int


def session_rates(settings: ServerSettings) -> dict[Kind, Rate]:
    return {
        Kind.JOIN: Rate(settings.join_rate, settings.join_burst),
        Kind.PEER: Rate(settings.peer_rate, settings.peer_burst),
        Kind.CHAT: Rate(settings.chat_rate, settings.chat_burst),
    }


def user_rates(settings: ServerSettings) -> dict[Kind, Rate]:
    return {
        Kind.JOIN: Rate(settings.user_join_rate, settings.user_join_burst),
        Kind.PEER: Rate(settings.user_peer_rate, settings.user_peer_burst),
        Kind.CHAT: Rate(settings.user_chat_rate, settings.user_chat_burst),
    }


class UserBuckets:
    """The accounts' buckets, shared by their sessions, kept after the sessions end.

    Kept so that logging in again does not start an account afresh; a bucket that has
    refilled is forgotten (a new one would be the same). At most ``max_users`` are kept;
    beyond that full ones go first, then the least recently used.
    """

    def __init__(self, rates: dict[Kind, Rate], max_users: int) -> None:
        self._rates = rates
        self._max_users = max_users
        self._buckets: OrderedDict[int, dict[Kind, TokenBucket]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def get(self, user_id: int, kind: Kind, now: float) -> TokenBucket:
        buckets = self._buckets.get(user_id)
        if buckets is None:
            self._make_room(now)
            buckets = {k: TokenBucket(r.per_second, r.burst, now) for k, r in self._rates.items()}
            self._buckets[user_id] = buckets
        else:
            self._buckets.move_to_end(user_id)
        return buckets[kind]

    def _make_room(self, now: float) -> None:
        """Room for one more account."""
        if len(self._buckets) < self._max_users:
            return
        for user_id, buckets in list(self._buckets.items()):
            if all(b.full(now) for b in buckets.values()):
                del self._buckets[user_id]
        while len(self._buckets) >= self._max_users:
            self._buckets.popitem(last=False)


class SessionLimits:
    """One session's buckets, its account's, and since when it has been over a limit."""

    def __init__(
        self, settings: ServerSettings, users: UserBuckets, user_id: int, now: float
    ) -> None:
        self._own = {
            k: TokenBucket(r.per_second, r.burst, now) for k, r in session_rates(settings).items()
        }
        self._users = users
        self._user_id = user_id
        self._close_after = settings.throttle_close_after
        self._over_since: dict[Kind, float] = {}
        self.refused: dict[Kind, int] = dict.fromkeys(Kind, 0)

    def over_since(self, kind: Kind) -> float | None:
        """When the session's current run over the ``kind`` limit began (None: within it)."""
        return self._over_since.get(kind)

    def check(self, kind: Kind, now: float) -> Verdict:
        own = self._own[kind]
        shared = self._users.get(self._user_id, kind, now)
        have_own, have_shared = own.level(now), shared.level(now)
        if have_own >= own.burst / 2 and have_shared >= shared.burst / 2:
            self._over_since.pop(kind, None)  # recovered: a later burst starts afresh
        if have_own >= 1 and have_shared >= 1:
            own.take(now)
            shared.take(now)
            return Verdict.ALLOW
        self.refused[kind] += 1
        since = self._over_since.setdefault(kind, now)
        return Verdict.CLOSE if now - since >= self._close_after else Verdict.REFUSE
