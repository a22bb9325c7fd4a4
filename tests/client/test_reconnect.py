"""The reconnect back-off and loop, without a server."""

from __future__ import annotations

import asyncio
import random

import pytest

from bangor.client import events as ev
from bangor.client.reconnect import (
    RESTART_FAST_TRIES,
    reconnect,
    reconnect_delay,
    worth_reconnecting,
)
from bangor.errors import (
    AuthError,
    BusyError,
    ConnectError,
    DroppedError,
    KeyPinError,
    RefusedError,
    ServerGoneError,
)
from bangor.settings import ClientSettings

SETTINGS = ClientSettings()


@pytest.mark.parametrize("seed", range(20))
def test_delays_double_with_jitter_up_to_the_max(seed: int) -> None:
    rng = random.Random(seed)
    for attempt in range(1, 12):
        base = min(0.25 * 2 ** (attempt - 1), SETTINGS.reconnect_max_delay)
        delay = reconnect_delay(attempt, SETTINGS, rng=rng)
        assert base / 2 <= delay <= base


def test_a_restarting_server_spreads_the_first_try_over_its_window() -> None:
    rng = random.Random(1)
    firsts = [reconnect_delay(1, SETTINGS, 2.0, rng) for _ in range(2000)]
    assert 0 <= min(firsts) < 0.05 and 1.95 < max(firsts) <= 2.0
    # Spread evenly: each half second of the window gets about a quarter of the room.
    quarters = [sum(1 for d in firsts if q / 2 <= d < (q + 1) / 2) for q in range(4)]
    assert all(400 < n < 600 for n in quarters), quarters
    # Then tries every reconnect_delay while it is down (refused connections cost it
    # nothing), and the usual doubling after that.
    for attempt in range(2, RESTART_FAST_TRIES + 3):
        assert 0.125 <= reconnect_delay(attempt, SETTINGS, 2.0, rng) <= 0.25
    assert 0.25 <= reconnect_delay(RESTART_FAST_TRIES + 3, SETTINGS, 2.0, rng) <= 0.5


def test_which_errors_are_worth_another_try() -> None:
    assert worth_reconnecting(ConnectError("lost"), SETTINGS)
    assert worth_reconnecting(ServerGoneError("the server is restarting", 2.0), SETTINGS)
    assert not worth_reconnecting(ConnectError("lost"), ClientSettings(reconnect_for=0))
    for refusal in (AuthError("no"), KeyPinError("key"), RefusedError(5, "no such room")):
        assert not worth_reconnecting(refusal, SETTINGS)


async def test_reconnect_tries_until_it_works_and_says_so_each_time() -> None:
    settings = ClientSettings(reconnect_delay=0.01)
    failures: list[Exception] = [DroppedError("reset"), BusyError("accounts unavailable", 1.0)]
    events: list[ev.Event] = []

    async def enter() -> str:
        if failures:
            raise failures.pop(0)
        return "in"

    loop = asyncio.get_running_loop()
    result = await reconnect(ConnectError("lost"), settings, enter, events.append, loop.time)
    assert result == ("in", 3)
    assert [(e.attempt, e.reason) for e in events if isinstance(e, ev.Reconnecting)] == [
        (1, "lost"),
        (2, "reset"),
        (3, "accounts unavailable"),
    ]


async def test_reconnect_gives_up_after_the_setting() -> None:
    settings = ClientSettings(reconnect_delay=0.01, reconnect_max_delay=0.02, reconnect_for=0.2)
    events: list[ev.Event] = []

    async def enter() -> str:
        raise ConnectError("cannot reach server")

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ConnectError, match=r"gave up reconnecting after 0.2 s \(last: cannot"):
        await reconnect(ConnectError("lost"), settings, enter, events.append, loop.time)
    assert loop.time() - started <= 0.3
    assert len(events) >= 5


async def test_a_try_that_hangs_is_cut_at_the_deadline() -> None:
    settings = ClientSettings(reconnect_delay=0.01, reconnect_for=0.1)

    async def enter() -> str:
        await asyncio.Event().wait()  # a server that accepts and never answers
        return "never"

    loop = asyncio.get_running_loop()
    with pytest.raises(ConnectError, match="gave up reconnecting"):
        await reconnect(ConnectError("lost"), settings, enter, lambda e: None, loop.time)


async def test_a_refusal_ends_it_at_once() -> None:
    async def enter() -> str:
        raise AuthError("wrong user name or password")

    loop = asyncio.get_running_loop()
    with pytest.raises(AuthError):
        await reconnect(ConnectError("lost"), SETTINGS, enter, lambda e: None, loop.time)
