"""Password hashing under load: a few Argon2 hashes at once, a bounded, fair queue.

Argon2id takes 19 MiB and tens of milliseconds per hash. Run on the default thread
pool, a burst of logins hashed many at once and grew the server by well over 100 MiB
that glibc kept. Here :class:`HashAdmission` (pure bookkeeping) decides whether a login
may wait for a hashing thread, and :class:`HashPool` runs the admitted hashes on its
own few threads. A login that finds no place is refused at once with
:class:`~bangor.errors.BusyError` and a retry hint, before anything is counted or hashed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import time
from collections.abc import Callable
from types import TracebackType
from typing import NoReturn, TypeVar

from bangor.errors import BusyError

T = TypeVar("T")

# Retry hints stay in this range: never "now" (the retry would meet the same crowd), never
# so long that a real user gives up.
MIN_BUSY_HINT = 0.5
MAX_BUSY_HINT = 10.0
# First guess of one hash's duration (seconds) until hashes have been timed; weight of the
# newest timing in the running average.
INITIAL_HASH_SECONDS = 0.1
_AVERAGE_WEIGHT = 0.2


class HashAdmission:
    """Places for hashes: ``workers`` running plus ``queue`` waiting, ``per_source`` each.

    Pure bookkeeping, no threads or clock: the shell calls :meth:`admit` before it counts
    a failure or hashes, and :meth:`release` once the hash has finished (or never ran),
    with the seconds it took.
    """

    def __init__(self, workers: int, queue: int, per_source: int) -> None:
        if workers < 1 or queue < 0 or per_source < 1:
            raise ValueError("hash pool needs workers >= 1, queue >= 0 and per_source >= 1")
        self.workers = workers
        self.capacity = workers + queue
        self.per_source = per_source
        self.in_use = 0
        self.by_source: dict[str, int] = {}
        self.seconds_per_hash = INITIAL_HASH_SECONDS
        self.refused = 0  # BusyErrors raised so far

    def retry_after(self) -> float:
        """Seconds until the places now taken have been worked through, within bounds."""
        backlog = self.in_use * self.seconds_per_hash / self.workers
        return min(max(backlog, MIN_BUSY_HINT), MAX_BUSY_HINT)

    def admit(self, source: str) -> None:
        """Take a place for ``source`` or raise :class:`BusyError` (nothing taken)."""
        if self.by_source.get(source, 0) >= self.per_source:
            self._refuse("too many logins from your address at once")
        if self.in_use >= self.capacity:
            self._refuse("server is busy checking logins")
        self.in_use += 1
        self.by_source[source] = self.by_source.get(source, 0) + 1

    def _refuse(self, why: str) -> NoReturn:
        self.refused += 1
        retry = self.retry_after()
        raise BusyError(f"{why}; try again in {retry:.1f} s", retry)

    def release(self, source: str, seconds: float | None = None) -> None:
        """Give back ``source``'s place; ``seconds``: how long its hash took, if it ran."""
        self.in_use -= 1
        left = self.by_source[source] - 1
        if left:
            self.by_source[source] = left
        else:
            del self.by_source[source]
        if seconds is not None:
            self.seconds_per_hash += _AVERAGE_WEIGHT * (seconds - self.seconds_per_hash)


# glibc's mallopt parameter: allocations at least this big get their own mapping.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20


def return_hash_memory() -> bool:
    """Make glibc give each hash's 19 MiB back to the system as soon as it is freed.

    By default glibc soon serves blocks that size from the hashing thread's own heap,
    whose free top it keeps (``malloc_trim`` does not shrink a thread's heap), so a
    server that once hashed stays bigger for good. With a fixed mmap threshold each
    such block is mapped and unmapped; measured here that costs about 6-10 ms on a
    25-35 ms hash. Process-wide; False where the C library has no ``mallopt``.
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


class HashTicket:
    """One admitted place; run at most one hash with it.

    Leaving the ``with`` block without running gives the place back at once; after
    :meth:`run` the place is held until the hashing thread is done with it, even if the
    waiting coroutine was cancelled (a thread cannot be stopped mid-hash).
    """

    def __init__(self, pool: HashPool, source: str) -> None:
        self._pool = pool
        self._source = source
        self._used = False

    def __enter__(self) -> HashTicket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._used:
            self._used = True
            self._pool._release(self._source, None)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self._used:
            raise RuntimeError("a hash ticket runs one hash")
        self._used = True
        return await self._pool._run(self._source, fn, *args)


class HashPool:
    """Admitted hashes on ``workers`` threads of their own (never the default pool)."""

    def __init__(self, workers: int, queue: int, per_source: int) -> None:
        self.admission = HashAdmission(workers, queue, per_source)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="argon2"
        )

    def reserve(self, source: str) -> HashTicket:
        """A place for one hash for ``source``; :class:`BusyError` when there is none."""
        self.admission.admit(source)
        return HashTicket(self, source)

    async def run(self, source: str, fn: Callable[..., T], *args: object) -> T:
        """Reserve and run in one step (for callers with nothing to do in between)."""
        with self.reserve(source) as ticket:
            return await ticket.run(fn, *args)

    def close(self) -> None:
        """Stop taking hashes; queued ones are dropped, running ones finish on their own."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, source: str, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        timing: list[float] = []

        def job() -> T:
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                timing.append(time.perf_counter() - start)

        def done(_: concurrent.futures.Future[T]) -> None:
            # Runs on the hashing thread, or here if the job was cancelled before it ran.
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(self._release, source, timing[0] if timing else None)

        try:
            future = self._executor.submit(job)
        except RuntimeError:  # shut down
            self._release(source, None)
            raise
        future.add_done_callback(done)
        return await asyncio.wrap_future(future)

    def _release(self, source: str, seconds: float | None) -> None:
        self.admission.release(source, seconds)
