"""Ctrl-C and SIGTERM cancel a command cleanly, also where the event loop cannot
install signal handlers (Windows' loops raise NotImplementedError)."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import pytest

from bangor import cli


async def _wait_for_signal(seen: list[Any]) -> None:
    seen.append(signal.getsignal(signal.SIGINT))
    signal.raise_signal(signal.SIGINT)
    await asyncio.Event().wait()  # only the cancel the signal brings ends this


def _refuse(self: asyncio.AbstractEventLoop, *args: object) -> None:
    raise NotImplementedError


@pytest.fixture
def stdlib_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    # uvloop's methods cannot be patched; the stdlib loop's can.
    monkeypatch.setitem(sys.modules, "uvloop", None)


def test_ctrl_c_cancels_without_add_signal_handler(
    stdlib_loop: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(asyncio.SelectorEventLoop, "add_signal_handler", _refuse)
    before = signal.getsignal(signal.SIGINT)
    seen: list[Any] = []
    # The command's task is cancelled (as with add_signal_handler), which the commands
    # turn into a clean exit; not a KeyboardInterrupt traceback from inside the loop.
    with pytest.raises(asyncio.CancelledError):
        cli._run(lambda: _wait_for_signal(seen))
    assert seen and seen[0] is not before  # the fallback handler was in place
    assert signal.getsignal(signal.SIGINT) is before  # and is gone afterwards


def test_the_fallback_covers_sigterm_and_ctrl_break(monkeypatch: pytest.MonkeyPatch) -> None:
    installed: dict[int, Any] = {}
    monkeypatch.setattr(signal, "SIGBREAK", 21, raising=False)  # Windows' Ctrl-Break
    monkeypatch.setattr(signal, "signal", lambda sig, handler: installed.setdefault(sig, handler))

    class WindowsLoop:
        def __init__(self) -> None:
            self.cancels: list[object] = []

        def add_signal_handler(self, *args: object) -> None:
            raise NotImplementedError

        def call_soon_threadsafe(self, callback: object) -> None:
            self.cancels.append(callback)

    class Task:
        def cancel(self) -> None:
            pass

    loop, task = WindowsLoop(), Task()
    cli._cancel_on_signals(loop, task)  # type: ignore[arg-type]
    assert set(installed) == {signal.SIGINT, signal.SIGTERM, 21}
    installed[signal.SIGTERM](signal.SIGTERM, None)
    assert loop.cancels == [task.cancel]


def test_where_the_loop_can_it_installs_the_handlers(stdlib_loop: None) -> None:
    seen: list[Any] = []
    with pytest.raises(asyncio.CancelledError):
        cli._run(lambda: _wait_for_signal(seen))
    # asyncio's own handler (it wakes the loop through its self-pipe), not ours.
    assert seen and seen[0] is not signal.default_int_handler
