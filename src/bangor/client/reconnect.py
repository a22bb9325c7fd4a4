"""Getting a call back after its control channel or server went away.

:func:`reconnect_delay` is the back-off (jittered, exponential; a restarting server's
spread first); :func:`reconnect` tries until it is back or the time is up. Which errors
are worth another try is decided here too, in one place.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bangor.client import events as ev
from bangor.errors import BangorError, BusyError, ConnectError, ServerGoneError
from bangor.settings import ClientSettings

T = TypeVar("T")
# After a restarting server's goodbye, this many more tries come every reconnect_delay
# (jittered) before the delay starts to double: a refused connection costs the server
# nothing while it is down, and the call is back the moment it listens again.
RESTART_FAST_TRIES = 20


def worth_reconnecting(error: BangorError, settings: ClientSettings) -> bool:
    """A lost connection, a dead or departing server: yes. Refusals (a wrong password
    now, a deleted room, a server key that changed) end the call as they would a join."""
    return settings.reconnect_for > 0 and isinstance(error, ConnectError)


def reconnect_delay(
    attempt: int,
    settings: ClientSettings,
    restart_in: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds before try ``attempt`` (1, 2, ...).

    A restarting server asked us back within ``restart_in`` seconds: the first try comes
    at a random moment in that window, so a big room does not stampede it, and the next
    ``RESTART_FAST_TRIES`` every ``reconnect_delay``. Otherwise (and after that) the delay
    doubles from ``reconnect_delay`` up to ``reconnect_max_delay``; each is a random point
    in the upper half of its value ("equal jitter")."""
    rng = rng or random.Random()
    if restart_in is not None and restart_in > 0:
        if attempt == 1:
            return rng.uniform(0, restart_in)
        attempt = max(attempt - 1 - RESTART_FAST_TRIES, 1)
    base = min(settings.reconnect_delay * 2 ** (attempt - 1), settings.reconnect_max_delay)
    return rng.uniform(base / 2, base)


async def reconnect(
    error: BangorError,
    settings: ClientSettings,
    enter: Callable[[], Awaitable[T]],
    emit: Callable[[ev.Event], None],
    clock: Callable[[], float],
) -> tuple[T, int]:
    """Call ``enter`` until it works: its result and the number of tries.

    Between tries a ``reconnecting`` event says when the next comes and why the last
    failed. Lost connections and busy answers (a database that is away, a server
    checking many logins) are tried again; any other refusal is raised at once. After
    ``reconnect_for`` seconds, :class:`ConnectError` (exit 5)."""
    give_up = clock() + settings.reconnect_for
    restart_in = error.restart_in if isinstance(error, ServerGoneError) else None
    last: BangorError = error
    attempt = 0
    while True:
        attempt += 1
        delay = reconnect_delay(attempt, settings, restart_in)
        if clock() + delay > give_up:
            raise ConnectError(
                f"gave up reconnecting after {settings.reconnect_for:g} s (last: {last})"
            )
        emit(ev.Reconnecting(attempt, round(delay, 3), str(last)))
        await asyncio.sleep(delay)
        try:
            return await asyncio.wait_for(enter(), max(give_up - clock(), 0.001)), attempt
        except TimeoutError:
            raise ConnectError(
                f"gave up reconnecting after {settings.reconnect_for:g} s (last: {last})"
            ) from None
        except (ConnectError, BusyError) as exc:
            last = exc
