"""A small async SQL layer over aiosqlite and asyncpg: pooled connections, transactions,
errors mapped into Bangor's.

The store's queries are few and fixed, so it speaks SQL itself: an ORM or SQLAlchemy
Core cost an idle server 23 MiB of its 64 (issue 18). SQL is written once, with
PostgreSQL's ``$1`` placeholders; on SQLite they become ``?1``, which the sqlite3 module
binds by position. asyncpg is imported only for a PostgreSQL URL.

Driver errors never leave here: they become :class:`StoreUnavailableError` (the database
cannot be reached), :class:`ConflictError` (a constraint refused a write) or
:class:`StoreError`, with the driver's own first line as the reason and never the
statement's parameters (a password hash, maybe).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

from bangor.errors import BangorError, StoreError, StoreUnavailableError
from bangor.server import sqlite
from bangor.settings import ServerSettings

if TYPE_CHECKING:
    import aiosqlite
    import asyncpg  # type: ignore[import-untyped]

log = logging.getLogger("bangor.server.store")

SQLITE_SCHEMES = ("sqlite+aiosqlite", "sqlite")
POSTGRESQL_SCHEMES = (
    *("postgresql+asyncpg", "postgresql+psycopg", "postgresql+psycopg_async"),
    *("postgresql", "postgres"),
)
# asyncpg waits a minute for a connection by default; a host that drops packets should
# be said to be unreachable sooner.
CONNECT_TIMEOUT = 10.0
_MAX_REASON = 200
# SQLSTATE classes of a database that is not there: 08 connection exception, 57P
# operator intervention (admin shutdown, crash shutdown, cannot connect now).
_UNREACHABLE_STATES = ("08", "57P")
_PLACEHOLDER = re.compile(r"\$(\d+)")


class ConflictError(StoreError):
    """A write broke a constraint (a name taken meanwhile, a row gone)."""


class Row(Protocol):
    """A result row: by column index or by name (sqlite3.Row and asyncpg.Record both)."""

    def __getitem__(self, key: int | str) -> Any: ...


class Connection(Protocol):
    """One connection, inside :meth:`Database.read` or :meth:`Database.write`."""

    dialect: str

    async def fetch(self, sql: str, *args: object) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: object) -> Row | None: ...

    async def fetchval(self, sql: str, *args: object) -> Any: ...

    async def execute(self, sql: str, *args: object) -> int:
        """Run ``sql``; the number of rows it changed."""
        ...


def short_reason(exc: BaseException) -> str:
    """One short line saying why a database operation failed, without parameters."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    lines = text.strip().splitlines()
    line = lines[0].strip() if lines else ""
    return (line or type(exc).__name__)[:_MAX_REASON]


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached (rather than that a statement
    failed): a refused or lost connection, a server shutting down or starting up."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError | asyncio.TimeoutError):
            return True
        state = getattr(cause, "sqlstate", None)
        if isinstance(state, str) and state.startswith(_UNREACHABLE_STATES):
            return True
        if type(cause).__module__.startswith("asyncpg") and type(cause).__name__ in (
            "ConnectionDoesNotExistError",
            "InterfaceError",
            "InternalClientError",
        ):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _conflict(exc: BaseException) -> bool:
    """A constraint refused the write: SQLite's IntegrityError, PostgreSQL's class 23."""
    if isinstance(exc, sqlite3.IntegrityError):
        return True
    state = getattr(exc, "sqlstate", None)
    return isinstance(state, str) and state.startswith("23")


def _driver_error(exc: BaseException) -> bool:
    module = type(exc).__module__
    return isinstance(exc, sqlite3.Error | OSError | asyncio.TimeoutError) or module.startswith(
        "asyncpg"
    )


@asynccontextmanager
async def mapped_errors() -> AsyncIterator[None]:
    """Turn driver failures into Bangor's store errors (see the module's docstring)."""
    try:
        yield
    except BangorError:
        raise
    except Exception as exc:
        if not _driver_error(exc):
            raise
        log.debug("database error", exc_info=True)
        if _conflict(exc):
            raise ConflictError(f"database refused the change: {short_reason(exc)}") from None
        if unreachable(exc):
            raise StoreUnavailableError(f"database unreachable: {short_reason(exc)}") from None
        raise StoreError(f"database error: {short_reason(exc)}") from None


def parse_url(url: str) -> tuple[str, str]:
    """(dialect, where) of a database URL: ("sqlite", file path) or ("postgresql", an
    asyncpg DSN). :class:`StoreError` for any other scheme."""
    scheme, sep, rest = url.strip().partition("://")
    scheme = scheme.lower()
    if sep and scheme in SQLITE_SCHEMES:
        # sqlite:///relative.db, sqlite:////absolute.db, sqlite:// (memory) as SQLAlchemy had.
        path = rest[1:] if rest.startswith("/") else rest
        return "sqlite", path.partition("?")[0] or ":memory:"
    if sep and scheme in POSTGRESQL_SCHEMES:
        return "postgresql", f"postgresql://{rest}"
    raise StoreError(f"unsupported database URL {redact_url(url)!r}")


def redact_url(url: str) -> str:
    """Hide any password in a database URL so it can be logged or shown."""
    # user:password@ in the authority (the password may hold ':' or '/'), and asyncpg's
    # password query parameter.
    shown = re.sub(r"^([^:/?#]+://[^:/@?#]*):[^@]*@", r"\1:***@", url)
    return re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", shown)


@functools.lru_cache(maxsize=256)
def _sqlite_sql(sql: str) -> str:
    return _PLACEHOLDER.sub(r"?\1", sql)


class _SqliteConnection:
    """An aiosqlite connection in autocommit mode: BEGIN is ours to issue."""

    dialect = "sqlite"

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self.raw = connection

    async def _run(self, sql: str, args: Sequence[object]) -> tuple[list[Row], int]:
        async with self.raw.execute(_sqlite_sql(sql), tuple(args)) as cursor:
            rows = await cursor.fetchall()
            return list(rows), cursor.rowcount

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        return (await self._run(sql, args))[0]

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        rows = (await self._run(sql, args))[0]
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: object) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]

    async def execute(self, sql: str, *args: object) -> int:
        return (await self._run(sql, args))[1]


class _PgConnection:
    dialect = "postgresql"

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.raw = connection

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        return list(await self.raw.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        row: Row | None = await self.raw.fetchrow(sql, *args)
        return row

    async def fetchval(self, sql: str, *args: object) -> Any:
        return await self.raw.fetchval(sql, *args)

    async def execute(self, sql: str, *args: object) -> int:
        status: str = await self.raw.execute(sql, *args)
        # "UPDATE 3", "INSERT 0 1", "DELETE 0": the count is the last word.
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0


class Database:
    """A pool of connections to one SQLite file or PostgreSQL database."""

    def __init__(self, url: str, dialect: str, where: str, pool_size: int) -> None:
        self.url = url  # as opened, password and all: never to be logged
        self.shown = redact_url(url)
        self.dialect = dialect
        self.where = where  # the SQLite file, or the asyncpg DSN (with its password)
        self.pool_size = pool_size
        self._pg_pool: asyncpg.Pool | None = None
        self._idle: list[aiosqlite.Connection] = []
        self._slots = asyncio.Semaphore(pool_size)
        self._closed = False

    @classmethod
    async def open(cls, url: str, pool_size: int = ServerSettings.db_pool_size) -> Database:
        """A pool for ``url``, checked by one connection. StoreError (or
        StoreUnavailableError) saying why it cannot be opened."""
        shown = redact_url(url)
        dialect, where = parse_url(url)
        if dialect == "sqlite":
            sqlite.check_path(where, shown)
            if where == ":memory:":
                pool_size = 1  # each connection would have a database of its own
        database = cls(url, dialect, where, pool_size)
        try:
            async with mapped_errors():
                if dialect == "postgresql":
                    import asyncpg  # only here: a server on SQLite never loads it (2.5 MiB)

                    # No floor (min_size 0): asyncpg would keep reconnecting to a
                    # database that is down, logging a traceback each time.
                    database._pg_pool = await asyncpg.create_pool(
                        where, min_size=0, max_size=pool_size, timeout=CONNECT_TIMEOUT
                    )
                    async with database.read():  # fail here if it cannot be reached
                        pass
                else:
                    async with database.read():
                        pass
        except StoreError as exc:
            await database.close()
            raise type(exc)(f"cannot open database {shown}: {exc}") from None
        return database

    async def _sqlite_connect(self) -> aiosqlite.Connection:
        import aiosqlite

        connection = await aiosqlite.connect(self.where, isolation_level=None)
        try:
            connection.row_factory = sqlite3.Row
            for pragma in sqlite.PRAGMAS:
                await connection.execute(pragma)
        except BaseException:
            await connection.close()
            raise
        return connection

    @asynccontextmanager
    async def _sqlite(self) -> AsyncIterator[_SqliteConnection]:
        if self._closed:
            raise StoreError("database closed")
        async with self._slots:
            raw = self._idle.pop() if self._idle else await self._sqlite_connect()
            try:
                yield _SqliteConnection(raw)
            finally:
                if not raw.in_transaction and not self._closed:
                    self._idle.append(raw)
                else:
                    # Left inside a transaction (its ROLLBACK failed or was cancelled):
                    # closing the connection rolls it back.
                    await asyncio.shield(raw.close())

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Connection]:
        """A connection for reads, each statement its own transaction."""
        async with mapped_errors():
            if self._pg_pool is not None:
                async with self._pg_pool.acquire() as raw:
                    yield _PgConnection(raw)
            else:
                async with self._sqlite() as connection:
                    yield connection

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Connection]:
        """A transaction, committed when the block ends and rolled back if it raises.

        On SQLite it begins IMMEDIATE: it takes the write lock at once, so "count, check
        the limit, insert" runs one writer at a time (others wait up to the busy timeout)
        while readers go on.
        """
        async with mapped_errors():
            if self._pg_pool is not None:
                async with self._pg_pool.acquire() as raw, raw.transaction():
                    yield _PgConnection(raw)
                return
            async with self._sqlite() as connection:
                await connection.execute("BEGIN IMMEDIATE")
                try:
                    yield connection
                except BaseException:
                    await connection.execute("ROLLBACK")
                    raise
                await connection.execute("COMMIT")

    async def close(self) -> None:
        """Close every connection; later uses fail with StoreError."""
        self._closed = True
        if self._pg_pool is not None:
            pool, self._pg_pool = self._pg_pool, None
            await pool.close()
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.close()
