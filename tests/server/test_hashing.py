"""The bounded hashing pool: admission (pure) and the threads that run the hashes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from bangor.errors import BusyError
from bangor.server.hashing import (
    INITIAL_HASH_SECONDS,
    MAX_BUSY_HINT,
    MIN_BUSY_HINT,
    HashAdmission,
    HashPool,
)

# -- admission (no threads, no clock) -----------------------------------------------


def test_places_are_workers_plus_queue_then_busy_with_a_hint() -> None:
    admission = HashAdmission(workers=2, queue=3, per_source=10)
    for i in range(5):
        admission.admit(f"10.0.0.{i}")
    with pytest.raises(BusyError, match=r"^server is busy checking logins; try again in ") as busy:
        admission.admit("10.0.0.9")
    assert MIN_BUSY_HINT <= busy.value.retry_after <= MAX_BUSY_HINT
    assert admission.in_use == 5  # the refusal took nothing
    assert admission.refused == 1
    admission.release("10.0.0.0", 0.05)
    admission.admit("10.0.0.9")


def test_one_source_holds_at_most_per_source_places() -> None:
    admission = HashAdmission(workers=1, queue=10, per_source=2)
    admission.admit("attacker")
    admission.admit("attacker")
    with pytest.raises(BusyError, match=r"^too many logins from your address at once"):
        admission.admit("attacker")
    admission.admit("friend")  # others still get in
    admission.release("attacker")
    admission.admit("attacker")
    assert admission.by_source == {"attacker": 2, "friend": 1}


def test_releasing_everything_leaves_no_trace() -> None:
    admission = HashAdmission(workers=1, queue=1, per_source=2)
    admission.admit("a")
    admission.admit("a")
    admission.release("a")
    admission.release("a")
    assert admission.in_use == 0 and admission.by_source == {}


def test_retry_hint_follows_the_measured_hash_time() -> None:
    admission = HashAdmission(workers=1, queue=40, per_source=100)
    assert admission.seconds_per_hash == INITIAL_HASH_SECONDS
    for _ in range(30):
        admission.admit("a")
        admission.release("a", 0.3)
    assert admission.seconds_per_hash == pytest.approx(0.3, abs=0.01)
    for _ in range(10):
        admission.admit("a")
    # 10 places, one worker, 0.3 s each: about 3 s until they are through.
    assert admission.retry_after() == pytest.approx(3.0, abs=0.1)
    for _ in range(30):
        admission.admit("a")
    assert admission.retry_after() == MAX_BUSY_HINT


@pytest.mark.parametrize(("workers", "queue", "per_source"), [(0, 1, 1), (1, -1, 1), (1, 1, 0)])
def test_nonsense_sizes_refused(workers: int, queue: int, per_source: int) -> None:
    with pytest.raises(ValueError):
        HashAdmission(workers, queue, per_source)


# -- the pool -------------------------------------------------------------------------


class Gate:
    """A stand-in for a hash that waits until released, counting who is inside."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0
        self.threads: set[str] = set()

    def __call__(self, value: int) -> int:
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self.threads.add(threading.current_thread().name)
        self.open.wait(10)
        with self.lock:
            self.inside -= 1
        return value * 2


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.001)


async def test_pool_runs_at_most_workers_at_once_on_its_own_threads() -> None:
    pool = HashPool(workers=2, queue=3, per_source=10)
    gate = Gate()
    try:
        jobs = [asyncio.create_task(pool.run(f"s{i}", gate, i)) for i in range(5)]
        await until(lambda: gate.inside == 2)
        with pytest.raises(BusyError):  # 2 running + 3 waiting: full
            await pool.run("late", gate, 99)
        gate.open.set()
        assert await asyncio.gather(*jobs) == [0, 2, 4, 6, 8]
        assert gate.most_inside == 2
        assert all(name.startswith("argon2") for name in gate.threads)
        await until(lambda: pool.admission.in_use == 0)
    finally:
        gate.open.set()
        pool.close()


async def test_a_cancelled_waiter_keeps_its_place_until_the_thread_is_done() -> None:
    pool = HashPool(workers=1, queue=0, per_source=1)
    gate = Gate()
    try:
        job = asyncio.create_task(pool.run("a", gate, 1))
        await until(lambda: gate.inside == 1)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        # The thread still hashes: its place is not free for another hash yet.
        with pytest.raises(BusyError):
            pool.reserve("b")
        gate.open.set()
        await until(lambda: pool.admission.in_use == 0)
        assert await pool.run("b", gate, 2) == 4
    finally:
        gate.open.set()
        pool.close()


async def test_a_ticket_not_used_gives_its_place_back() -> None:
    pool = HashPool(workers=1, queue=0, per_source=1)
    try:
        with pool.reserve("a"):
            assert pool.admission.in_use == 1
        assert pool.admission.in_use == 0
        with pool.reserve("a") as ticket:
            assert await ticket.run(int, "7") == 7
            with pytest.raises(RuntimeError):
                await ticket.run(int, "8")
        await until(lambda: pool.admission.in_use == 0)
    finally:
        pool.close()
