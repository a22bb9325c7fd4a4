"""Word from PostgreSQL that `bangor user remove` (another process) deleted an account.

The removal NOTIFYs ``ACCOUNTS_CHANNEL`` with the account's name as stored, in its own
transaction; every server on the database (one alone, or each node of a cluster) LISTENs
on a connection of its own and ends that account's sessions at once. SQLite has no such
channel, and a notification sent while the listening connection is down is lost: the
server's periodic check of its sessions' accounts (``account_check_interval``,
``Server.check_accounts``) catches both.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from bangor.errors import StoreUnavailableError
from bangor.server.database import CONNECT_TIMEOUT, Database
from bangor.server.store import ACCOUNTS_CHANNEL

if TYPE_CHECKING:
    import asyncpg  # type: ignore[import-untyped]

log = logging.getLogger("bangor.server")


class RemovalListener:
    """A LISTEN on ``ACCOUNTS_CHANNEL``, held until :meth:`close`."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    @classmethod
    async def start(cls, db: Database, removed: Callable[[str], None]) -> RemovalListener | None:
        """Call ``removed`` with each removed account's name; None on SQLite (nothing to
        listen to). StoreUnavailableError: PostgreSQL could not be reached."""
        if db.dialect != "postgresql":
            return None
        import asyncpg  # only here: a server on SQLite never loads it (2.5 MiB)

        try:
            connection = await asyncpg.connect(db.where, timeout=CONNECT_TIMEOUT)
            await connection.add_listener(
                ACCOUNTS_CHANNEL, lambda _conn, _pid, _channel, name: removed(str(name))
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreUnavailableError(f"cannot listen for account changes: {exc}") from None
        return cls(connection)

    async def close(self) -> None:
        import asyncpg

        with contextlib.suppress(OSError, asyncpg.PostgresError):
            await self._connection.close(timeout=1)
