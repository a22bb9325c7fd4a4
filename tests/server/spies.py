"""Test helpers for the login path: a stand-in for the password check, and a bounded wait."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import TracebackType

import pytest

from bangor.server import passwords


class VerifySpy:
    """Stands in for ``passwords.verify_password``: counts the checks (they run on the
    hashing threads) and, while held, makes them wait until :meth:`release`.

    As a context manager it releases on the way out, so a failing test leaves no
    hashing thread waiting.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, held: bool = False) -> None:
        self.real = passwords.verify_password
        self.calls = 0
        self._lock = threading.Lock()
        self._released = threading.Event()
        if not held:
            self._released.set()
        monkeypatch.setattr(passwords, "verify_password", self)

    def __call__(self, stored: str, password: str) -> bool:
        with self._lock:
            self.calls += 1
        self._released.wait(10)
        return self.real(stored, password)

    def release(self) -> None:
        self._released.set()

    def __enter__(self) -> VerifySpy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop (and the hashing threads) until ``condition`` holds, at most 5 s."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)
