"""The ``bangor user add|remove|passwd|list`` and ``bangor room list --data-dir`` commands.

:mod:`bangor.cli` parses the arguments and calls :func:`run_user_command`,
which runs its own event loop. Every failure reaches the CLI as a
:class:`~bangor.errors.BangorError` with a message fit to print.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import TextIO

from bangor.errors import BangorError, StoreError
from bangor.server.database import short_reason
from bangor.server.passwords import check_password
from bangor.server.store import Store, check_user_name, clash_warning, database_url
from bangor.text import escape

log = logging.getLogger(__name__)

USER_ACTIONS = ("add", "remove", "passwd", "list")


def run_user_command(
    action: str,
    name: str | None,
    url: str,
    read_password: Callable[[str], str],
    out: TextIO,
    err: TextIO | None = None,
) -> int:
    """Run one ``bangor user`` action against the store at ``url``; return 0.

    ``read_password(prompt)`` is asked for the password of ``add`` and
    ``passwd``. Raises :class:`BangorError` subclasses on failure. ``list`` prints the
    names on ``out``, one a line, and names that differ only in case (kept apart since
    names ignore case) as warnings on ``err`` (default stderr).
    """
    if action not in USER_ACTIONS:
        raise BangorError(f"unknown user action {action!r} (use {', '.join(USER_ACTIONS)})")
    url = database_url(None, url)
    password: str | None = None
    if action != "list":
        if not name:
            raise StoreError(f"'bangor user {action}' needs a user name")
        if action == "add":
            name = check_user_name(name)
        if action in ("add", "passwd"):
            # Read before the event loop starts: read_password may block on a terminal.
            password = read_password(f"Password for {name}: ")
            check_password(password)
    try:
        lines, warnings = asyncio.run(_run(action, name or "", password, url))
    except BangorError:
        raise
    except Exception as exc:
        # Never show a driver traceback; keep it for --debug style logging.
        log.debug("bangor user %s failed", action, exc_info=True)
        raise StoreError(f"database error: {short_reason(exc)}") from None
    for line in lines:
        print(line, file=out)
    for line in warnings:
        print(f"bangor: warning: {line}", file=err or sys.stderr)
    return 0


async def _run(
    action: str, name: str, password: str | None, url: str
) -> tuple[list[str], list[str]]:
    """The lines to print, and the warnings."""
    store = await Store.open(url)
    try:
        if action == "add":
            assert password is not None
            await store.add_user(name, password)
            return [f"added user {name}"], []
        if action == "passwd":
            assert password is not None
            return [f"password changed for {await store.set_password(name, password)}"], []
        if action == "remove":
            return [f"removed user {await store.remove_user(name)}"], []
        clashes = await store.name_clashes()
        return await store.list_users(), [clash_warning(group) for group in clashes]
    finally:
        await store.close()


def run_room_list(url: str, out: TextIO) -> int:
    """``bangor room list --data-dir|--db``: every room, for the server's operator."""
    url = database_url(None, url)
    try:
        lines = asyncio.run(_room_lines(url))
    except BangorError:
        raise
    except Exception as exc:
        log.debug("bangor room list failed", exc_info=True)
        raise StoreError(f"database error: {short_reason(exc)}") from None
    for line in lines:
        print(line, file=out)
    return 0


async def _room_lines(url: str) -> list[str]:
    store = await Store.open(url)
    try:
        rooms = await store.list_rooms()
        bans = await store.ban_counts()
    finally:
        await store.close()
    # Names come from users: escaped. Who is in a call only the running server knows.
    return [
        f"{escape(room.name)}\t{room.id}\towner {escape(room.owner_name)}\t"
        f"join token {'set' if room.token_hash else 'none (any account may join)'}\t"
        f"{bans.get(room.id, 0)} banned"
        for room in rooms
    ]
