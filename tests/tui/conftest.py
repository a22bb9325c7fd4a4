"""Pilot tests of the terminal UI against a real server process.

The server fixture and process helpers are the integration tests' own (imported, so
both suites start servers the same way).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keyring
import pytest
from keyring.backend import KeyringBackend
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import Input, RichLog

from bangor.tui import BangorApp
from bangor.tui.app import CallScreen
from tests.integration.conftest import ServerProcess, server  # noqa: F401 (a fixture)

WAIT_TIMEOUT = 20.0
POLL = 0.05  # seconds between checks of a condition the UI should reach
# Screenshots for docs/ are written only when asked: BANGOR_SCREENSHOTS=docs
SCREENSHOT_DIR = os.environ.get("BANGOR_SCREENSHOTS")
DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(autouse=True)
def user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The in-process client's identity, known keys and config live in tmp_path; no keyring."""
    monkeypatch.setenv("BANGOR_HOME", str(tmp_path / "tui-home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    monkeypatch.delenv("BANGOR_PASSWORD", raising=False)
    yield


async def wait_until(
    pilot: Pilot[Any], condition: Callable[[], object], what: str, timeout: float = WAIT_TIMEOUT
) -> None:
    """Let the app run until ``condition()`` holds; fail with ``what`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(POLL)


def call_screen(app: BangorApp) -> CallScreen:
    screen = app.screen
    assert isinstance(screen, CallScreen), screen
    return screen


def chat_text(app: BangorApp) -> str:
    """What the chat pane shows, as plain text on one line (wrapped lines joined)."""
    log = app.screen.query_one("#chat", RichLog)
    return " ".join(" ".join(strip.text for strip in log.lines).split())


def fill(app: BangorApp, **values: str) -> None:
    for field_id, value in values.items():
        app.screen.query_one(f"#{field_id}", Input).value = value


def screenshot(app: BangorApp, name: str, tmp_path: Path) -> Path:
    """An SVG of the screen: into docs/ when BANGOR_SCREENSHOTS=docs, else tmp_path."""
    directory = DOCS if SCREENSHOT_DIR == "docs" else tmp_path
    path = app.save_screenshot(filename=f"{name}.svg", path=str(directory))
    assert Path(path).read_text().startswith("<svg")
    return Path(path)


def plain(value: object) -> str:
    return value.plain if isinstance(value, Text) else str(value)


__all__ = [
    "MemoryKeyring",
    "ServerProcess",
    "call_screen",
    "chat_text",
    "fill",
    "plain",
    "screenshot",
    "wait_until",
]


class MemoryKeyring(KeyringBackend):
    """A keyring backend in memory, standing in for the OS keyring."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.passwords: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.passwords.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.passwords[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.passwords.pop((service, username), None)


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    before = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(before)
