"""Login lockout: the back-off schedule, and failed logins of names without an account.

Pure bookkeeping (``now`` comes in, nothing is awaited), so a failure can be counted in
the same step as the lock is checked, before any password is hashed. Accounts keep
their count in the database (``Store.authenticate``, with one SQL update built from
:func:`lock_steps`); names without an account keep it here, so a lockout looks the
same for both and does not tell whether an account exists.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from bangor.errors import ThrottledError
from bangor.settings import ServerSettings

# Exponents above this never matter: the cap wins long before, and 2.0**large overflows.
_MAX_EXPONENT = 64
# A key for this process only, so a logged name hash links lines of one server run but
# cannot be looked up in a dictionary of common passwords.
_LOG_KEY = secrets.token_bytes(16)


def shown_name(name: str) -> str:
    """How a login name that is not (known to be) an account appears in the log.

    People type passwords into the name field; the log gets a short keyed hash instead.
    """
    digest = hashlib.blake2s(name.encode("utf-8", "replace"), key=_LOG_KEY, digest_size=4)
    return f"#{digest.hexdigest()}"


def check_lock(locked_until: float, now: float) -> None:
    """Raise :class:`ThrottledError` while a name (real or not) is locked."""
    if now < locked_until:
        retry_after = locked_until - now
        raise ThrottledError(
            f"too many failed logins; try again in {math.ceil(retry_after)} s", retry_after
        )


def backoff(failures: int, settings: ServerSettings) -> float:
    """Seconds a name stays locked after its ``failures``-th failed login (0: not locked)."""
    if failures <= settings.login_free_failures:
        return 0.0
    exponent = min(failures - settings.login_free_failures - 1, _MAX_EXPONENT)
    delay: float = settings.login_backoff_base * 2.0**exponent
    return min(delay, settings.login_backoff_max)


def lock_steps(settings: ServerSettings) -> list[tuple[int, float]]:
    """(failures, seconds locked) for each count whose lock is below the cap, in order.

    Counts past the last step lock for ``login_backoff_max``; the store turns these into
    one SQL ``CASE``, so the count and the lock change in a single update.
    """
    steps = []
    failures = settings.login_free_failures + 1
    while failures <= settings.login_free_failures + _MAX_EXPONENT + 1:
        delay = backoff(failures, settings)
        if delay >= settings.login_backoff_max:
            break
        steps.append((failures, delay))
        failures += 1
    return steps


@dataclass
class _Entry:
    failures: int
    locked_until: float
    last_failure: float


class UnknownLogins:
    """Failed logins of names without an account (at most ``max_tracked_unknown_logins``).

    Entries are kept in order of their last failure. One is forgotten once it is not
    locked and ``unknown_login_memory`` seconds have passed since its last failure, or,
    when the table is full, if it is the oldest one that is not locked. A locked entry is
    never pushed out by new names: with every place locked, new names are refused
    (throttled) until a lock ends.
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._names: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def check(self, name: str, now: float) -> None:
        """Raise :class:`ThrottledError` if ``name`` is locked (nothing is counted)."""
        entry = self._names.get(name)
        if entry is not None:
            check_lock(entry.locked_until, now)

    def count_failure(self, name: str, now: float) -> int:
        """Count one failure for ``name`` before its password is checked; the new count.

        Raises :class:`ThrottledError` if the name is locked, or if it is new and every
        place is held by a locked name.
        """
        self.check(name, now)
        entry = self._names.pop(name, None)
        if entry is None:
            self._make_room(now)
            entry = _Entry(0, 0.0, now)
        entry.failures += 1
        entry.last_failure = now
        delay = backoff(entry.failures, self.settings)
        if delay:
            entry.locked_until = now + delay
        self._names[name] = entry  # newest last
        return entry.failures

    def _make_room(self, now: float) -> None:
        self._forget_old(now)
        if len(self._names) < self.settings.max_tracked_unknown_logins:
            return
        for name, entry in self._names.items():
            if entry.locked_until <= now:
                del self._names[name]
                return
        soonest = min(entry.locked_until for entry in self._names.values())
        check_lock(soonest, now)

    def _forget_old(self, now: float) -> None:
        horizon = now - self.settings.unknown_login_memory
        stale = []
        for name, entry in self._names.items():
            if entry.last_failure > horizon:
                break  # every later entry failed more recently
            if entry.locked_until <= now:
                stale.append(name)
        for name in stale:
            del self._names[name]
