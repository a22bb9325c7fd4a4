"""Accounts and rooms in SQL: SQLAlchemy Core (async) over SQLite or PostgreSQL.

SQLite (WAL) in the data directory is the default; PostgreSQL is used through
asyncpg when given a URL. The schema is brought to the newest Alembic revision
every time a store is opened. Nothing here is on the per-packet path.

Password hashes never leave this module in a log line or an exception message:
database errors are reduced to the driver's own short message, never
SQLAlchemy's rendering (which quotes the statement's parameters).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import pathlib
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bangor.errors import (
    AlreadyExistsError,
    AuthError,
    BangorError,
    LimitError,
    NotFoundError,
    StoreError,
    ThrottledError,
)
from bangor.server import passwords
from bangor.server.schema import ROOM_ID_BYTES, rooms, users
from bangor.settings import MAX_BITRATE, MIN_BITRATE, ServerSettings

log = logging.getLogger(__name__)

DB_FILE_NAME = "bangor.db"
MIGRATIONS_DIR = pathlib.Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 5_000
_MAX_REASON = 200

_USER_NAME_CHARS = re.compile(r"[A-Za-z0-9_.-]+")
_ASYNC_SCHEMES = frozenset(
    {"postgresql+asyncpg", "postgresql+psycopg", "postgresql+psycopg_async", "sqlite+aiosqlite"}
)
_DEFAULT_SETTINGS = ServerSettings()


@dataclass(frozen=True)
class Room:
    """A room as the store keeps it (members and keys live elsewhere)."""

    id: str
    name: str
    owner_id: int
    owner_name: str
    max_bitrate: int | None = None  # Opus bit/s each member sends at most; None: no cap


def database_url(data_dir: pathlib.Path | None, db: str | None) -> str:
    """Return the async SQLAlchemy URL for ``--db URL`` or the data directory.

    ``postgresql://`` / ``postgres://`` become ``postgresql+asyncpg://`` and
    ``sqlite://`` becomes ``sqlite+aiosqlite://``; async URLs pass unchanged.
    Without a URL, the SQLite file in ``data_dir`` is used (the directory is
    created private, 0700, if missing).
    """
    if db is not None:
        db = db.strip()
        scheme, sep, rest = db.partition("://")
        scheme = scheme.lower()
        if sep and scheme in ("postgresql", "postgres"):
            return f"postgresql+asyncpg://{rest}"
        if sep and scheme == "sqlite":
            return f"sqlite+aiosqlite://{rest}"
        if sep and scheme in _ASYNC_SCHEMES:
            return db
        raise StoreError(
            f"unsupported database URL {redact_url(db)!r} (use postgresql://... or sqlite:///path)"
        )
    if data_dir is None:
        raise StoreError("no database: give a data directory or a database URL")
    if not data_dir.is_dir():
        try:
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            # mkdir's mode is filtered by the umask; the key and accounts are private.
            os.chmod(data_dir, 0o700)
        except OSError as exc:
            raise StoreError(
                f"cannot create data directory {data_dir}: {exc.strerror or exc}"
            ) from None
    return f"sqlite+aiosqlite:///{(data_dir / DB_FILE_NAME).resolve()}"


def redact_url(url: str) -> str:
    """Hide any password in a database URL so it can be logged or shown."""
    try:
        rendered = make_url(url).render_as_string(hide_password=True)
    except Exception:
        # Unparsable: blank out anything between "user:" and "@" by hand.
        rendered = re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)
    # asyncpg also accepts the password as a query parameter.
    return re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", rendered)


def check_user_name(name: str, max_len: int = _DEFAULT_SETTINGS.max_user_name) -> None:
    """Raise :class:`StoreError` unless ``name`` is a valid user name."""
    if not (1 <= len(name) <= max_len and _USER_NAME_CHARS.fullmatch(name)):
        raise StoreError(
            f"user name must be 1 to {max_len} characters of letters, digits, '_', '.' or '-'"
        )


def check_room_name(name: str, max_len: int = _DEFAULT_SETTINGS.max_room_name) -> None:
    """Raise :class:`StoreError` unless ``name`` is a valid room name."""
    if not 1 <= len(name) <= max_len or name != name.strip():
        raise StoreError(
            f"room name must be 1 to {max_len} characters without leading or trailing spaces"
        )
    if any(not ch.isprintable() for ch in name):
        raise StoreError("room name must not contain control characters")


def check_max_bitrate(max_bitrate: int | None) -> None:
    """Raise :class:`StoreError` unless ``max_bitrate`` is None or a bitrate Opus can do."""
    if max_bitrate is not None and not MIN_BITRATE <= max_bitrate <= MAX_BITRATE:
        raise StoreError(
            f"room bitrate cap must be {MIN_BITRATE}..{MAX_BITRATE} bit/s "
            f"(or none), got {max_bitrate}"
        )


def short_reason(exc: BaseException) -> str:
    """One short line saying why a database operation failed, without parameters."""
    cause: BaseException = exc
    if isinstance(exc, StatementError):
        # str(StatementError) quotes the SQL parameters (a password hash, maybe).
        if exc.orig is None:
            return type(exc).__name__
        cause = exc.orig
    # SQLAlchemy's asyncpg adapter chains the real asyncpg error.
    if cause.__cause__ is not None and type(cause).__module__.startswith("sqlalchemy"):
        cause = cause.__cause__
    text = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
    lines = text.strip().splitlines()
    line = lines[0].strip() if lines else ""
    if not line:
        line = type(cause).__name__
    return line[:_MAX_REASON]


@asynccontextmanager
async def _db_errors() -> AsyncIterator[None]:
    """Turn driver and SQLAlchemy failures into :class:`StoreError`."""
    try:
        yield
    except BangorError:
        raise
    except (SQLAlchemyError, OSError) as exc:
        log.debug("database error", exc_info=True)
        raise StoreError(f"database error: {short_reason(exc)}") from None


def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets the server read while `bangor user` writes; foreign keys make
        # ON DELETE CASCADE work; busy_timeout waits for a writer instead of failing.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _check_sqlite_path(database: str | None, shown: str) -> None:
    """Fail early and clearly where SQLite could not open the file.

    Also works around aiosqlite leaving its worker thread behind (to crash
    noisily at exit) when the connect itself fails.
    """
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = pathlib.Path(database)
    if path.exists():
        ok = os.access(path, os.R_OK | os.W_OK)
        reason = "file is not readable and writable"
    elif not path.parent.is_dir():
        ok, reason = False, f"directory {path.parent} does not exist"
    else:
        ok = os.access(path.parent, os.W_OK | os.X_OK)
        reason = f"directory {path.parent} is not writable"
    if not ok:
        raise StoreError(f"cannot open database {shown}: {reason}")


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    command.upgrade(_alembic_config(connection), revision)


async def migrate(connection: AsyncConnection, revision: str = "head") -> None:
    """Run the Alembic migrations on ``connection`` up to ``revision``."""
    await connection.run_sync(_upgrade, revision)


def _check_lock(locked_until: float, now: float) -> None:
    """Raise ThrottledError while a name (real or not) is locked."""
    if now < locked_until:
        retry_after = locked_until - now
        raise ThrottledError(
            f"too many failed logins; try again in {math.ceil(retry_after)} s", retry_after
        )


def _backoff(failures: int, settings: ServerSettings) -> float:
    """Seconds an account stays locked after its ``failures``-th failed login."""
    # Capped exponent: 2.0**large overflows, and the cap below wins long before.
    exponent = min(failures - settings.login_free_failures - 1, 64)
    delay: float = settings.login_backoff_base * 2.0**exponent
    return min(delay, settings.login_backoff_max)


class Store:
    """The account and room store over one async engine."""

    def __init__(self, engine: AsyncEngine, settings: ServerSettings = _DEFAULT_SETTINGS) -> None:
        self.engine = engine
        self.settings = settings
        # Failed logins for names with no account: (failures, locked until). Kept in
        # memory (bounded, oldest forgotten first) so unknown names are throttled
        # exactly like real ones and a lockout does not reveal that an account exists.
        self._unknown: OrderedDict[str, tuple[int, float]] = OrderedDict()

    @classmethod
    async def open(cls, url: str, settings: ServerSettings = _DEFAULT_SETTINGS) -> Store:
        """Connect, migrate the schema to the newest revision and return the store.

        ``url`` may also be a plain ``postgresql://`` or ``sqlite://`` URL.
        """
        url = database_url(None, url)
        shown = redact_url(url)
        try:
            engine = create_async_engine(url)
        except Exception as exc:
            # Unknown dialect, missing driver, malformed URL.
            raise StoreError(f"cannot open database {shown}: {short_reason(exc)}") from None
        if engine.dialect.name == "sqlite":
            try:
                _check_sqlite_path(engine.url.database, shown)
            except StoreError:
                await engine.dispose()
                raise
            event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        try:
            async with engine.begin() as connection:
                await migrate(connection)
        except CommandError as exc:
            # E.g. the database was migrated by a newer Bangor.
            await engine.dispose()
            raise StoreError(f"cannot open database {shown}: {short_reason(exc)}") from None
        except Exception as exc:
            await engine.dispose()
            log.debug("cannot open database %s", shown, exc_info=True)
            raise StoreError(f"cannot open database {shown}: {short_reason(exc)}") from None
        log.debug("opened database %s", shown)
        return cls(engine, settings)

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()

    # -- users ---------------------------------------------------------------

    async def add_user(self, name: str, password: str) -> int:
        """Create an account and return its id."""
        check_user_name(name, self.settings.max_user_name)
        password_hash = await asyncio.to_thread(passwords.hash_password, password)
        async with _db_errors():
            try:
                async with self.engine.begin() as conn:
                    result = await conn.execute(
                        users.insert().values(
                            name=name, password_hash=password_hash, created_at=time.time()
                        )
                    )
            except IntegrityError:
                raise AlreadyExistsError(f"user {name} exists already") from None
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    async def open_user(self, name: str) -> int:
        """The id of ``name`` for a server in open mode, made on first use.

        Open mode has no passwords; the row exists so rooms have an owner (and the
        per-user room limit holds). Its password is random and forgotten, so the name
        cannot log in should the server later run with accounts.
        """
        check_user_name(name, self.settings.max_user_name)
        for _attempt in range(2):
            async with _db_errors(), self.engine.connect() as conn:
                found = (
                    await conn.execute(sa.select(users.c.id).where(users.c.name == name))
                ).scalar_one_or_none()
            if found is not None:
                return int(found)
            try:
                return await self.add_user(name, secrets.token_urlsafe(32))
            except AlreadyExistsError:
                continue  # made by a concurrent login a moment ago
        raise StoreError(f"cannot make open-mode user {name}")

    async def remove_user(self, name: str) -> None:
        """Delete an account and (by cascade) the rooms it owns."""
        async with _db_errors(), self.engine.begin() as conn:
            result = await conn.execute(users.delete().where(users.c.name == name))
            if result.rowcount == 0:
                raise NotFoundError(f"no such user {name}")

    async def set_password(self, name: str, password: str) -> None:
        """Replace a user's password; also lifts any login lock."""
        password_hash = await asyncio.to_thread(passwords.hash_password, password)
        async with _db_errors(), self.engine.begin() as conn:
            result = await conn.execute(
                users.update()
                .where(users.c.name == name)
                .values(password_hash=password_hash, failed_logins=0, locked_until=0.0)
            )
            if result.rowcount == 0:
                raise NotFoundError(f"no such user {name}")

    async def list_users(self) -> list[str]:
        """All user names, sorted."""
        async with _db_errors(), self.engine.connect() as conn:
            result = await conn.execute(sa.select(users.c.name).order_by(users.c.name))
            return [row.name for row in result]

    async def authenticate(self, name: str, password: str, now: float) -> int:
        """Check a login and return the user id.

        Raises :class:`ThrottledError` while the account is locked after too many
        failures (without looking at the password), else :class:`AuthError` with
        one message for both unknown users and wrong passwords.
        """
        async with _db_errors(), self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(
                        users.c.id,
                        users.c.password_hash,
                        users.c.locked_until,
                    ).where(users.c.name == name)
                )
            ).first()
        # No transaction is held while hashing: SQLite writers would wait on it.
        if row is None:
            failures, locked_until = self._unknown.get(name, (0, 0.0))
            _check_lock(locked_until, now)
            # Spend the same work as a real check so timing does not reveal
            # whether the account exists.
            await asyncio.to_thread(passwords.verify_password, passwords.dummy_hash(), password)
            self._record_unknown_failure(name, failures + 1, now)
            raise AuthError("wrong user name or password")
        user_id = int(row.id)
        _check_lock(float(row.locked_until), now)
        ok = await asyncio.to_thread(passwords.verify_password, row.password_hash, password)
        if not ok:
            await self._record_failure(user_id, now)
            raise AuthError("wrong user name or password")
        values: dict[str, Any] = {"failed_logins": 0, "locked_until": 0.0}
        if passwords.needs_rehash(row.password_hash):
            values["password_hash"] = await asyncio.to_thread(passwords.hash_password, password)
        async with _db_errors(), self.engine.begin() as conn:
            await conn.execute(users.update().where(users.c.id == user_id).values(**values))
        return user_id

    def _record_unknown_failure(self, name: str, failures: int, now: float) -> None:
        locked_until = 0.0
        if failures > self.settings.login_free_failures:
            locked_until = now + _backoff(failures, self.settings)
        self._unknown[name] = (failures, locked_until)
        self._unknown.move_to_end(name)
        while len(self._unknown) > self.settings.max_tracked_unknown_logins:
            self._unknown.popitem(last=False)

    async def _record_failure(self, user_id: int, now: float) -> None:
        async with _db_errors(), self.engine.begin() as conn:
            # Incremented in SQL so concurrent failures all count.
            await conn.execute(
                users.update()
                .where(users.c.id == user_id)
                .values(failed_logins=users.c.failed_logins + 1)
            )
            failures = (
                await conn.execute(sa.select(users.c.failed_logins).where(users.c.id == user_id))
            ).scalar_one()
            if failures > self.settings.login_free_failures:
                locked_until = now + _backoff(failures, self.settings)
                await conn.execute(
                    users.update().where(users.c.id == user_id).values(locked_until=locked_until)
                )
                log.info("user id %d locked after %d failed logins", user_id, failures)

    # -- rooms ---------------------------------------------------------------

    async def create_room(
        self, owner_id: int, name: str, max_rooms: int, max_bitrate: int | None = None
    ) -> Room:
        """Create a room owned by ``owner_id`` with a fresh random id.

        ``max_bitrate``: the Opus bit/s each member may send at most (None: no cap).
        """
        check_room_name(name, self.settings.max_room_name)
        check_max_bitrate(max_bitrate)
        async with _db_errors():
            try:
                async with self.engine.begin() as conn:
                    # Locking the owner's row serializes their room creations
                    # (PostgreSQL), so the limit holds under concurrency.
                    owner_name = (
                        await conn.execute(
                            sa.select(users.c.name).where(users.c.id == owner_id).with_for_update()
                        )
                    ).scalar_one_or_none()
                    if owner_name is None:
                        raise NotFoundError("no such user")
                    count = (
                        await conn.execute(
                            sa.select(sa.func.count())
                            .select_from(rooms)
                            .where(rooms.c.owner_id == owner_id)
                        )
                    ).scalar_one()
                    if count >= max_rooms:
                        raise LimitError(f"user already owns {max_rooms} rooms (the limit)")
                    taken = (
                        await conn.execute(
                            sa.select(rooms.c.id).where(
                                rooms.c.owner_id == owner_id, rooms.c.name == name
                            )
                        )
                    ).first()
                    if taken is not None:
                        raise AlreadyExistsError(f"you already have a room named {name}")
                    room_id = secrets.token_hex(ROOM_ID_BYTES)
                    await conn.execute(
                        rooms.insert().values(
                            id=room_id,
                            name=name,
                            owner_id=owner_id,
                            created_at=time.time(),
                            max_bitrate=max_bitrate,
                        )
                    )
            except IntegrityError:
                # Lost a race with a concurrent create of the same name.
                raise AlreadyExistsError(f"you already have a room named {name}") from None
        return Room(room_id, name, owner_id, owner_name, max_bitrate)

    def _room_query(self) -> sa.Select[Any]:
        return sa.select(
            rooms.c.id,
            rooms.c.name,
            rooms.c.owner_id,
            users.c.name.label("owner_name"),
            rooms.c.max_bitrate,
        ).select_from(rooms.join(users, rooms.c.owner_id == users.c.id))

    @staticmethod
    def _room(row: sa.Row[Any]) -> Room:
        return Room(row.id, row.name, row.owner_id, row.owner_name, row.max_bitrate)

    async def get_room(self, room_id: str) -> Room:
        """The room with this id, or :class:`NotFoundError`."""
        async with _db_errors(), self.engine.connect() as conn:
            row = (await conn.execute(self._room_query().where(rooms.c.id == room_id))).first()
        if row is None:
            raise NotFoundError("no such room")
        return self._room(row)

    async def list_rooms(self, owner_id: int | None = None) -> list[Room]:
        """All rooms, or those of one owner, sorted by owner name then room name."""
        query = self._room_query().order_by(users.c.name, rooms.c.name, rooms.c.id)
        if owner_id is not None:
            query = query.where(rooms.c.owner_id == owner_id)
        async with _db_errors(), self.engine.connect() as conn:
            result = await conn.execute(query)
            return [self._room(row) for row in result]

    async def delete_room(self, room_id: str) -> None:
        """Delete a room; :class:`NotFoundError` if there is none with this id."""
        async with _db_errors(), self.engine.begin() as conn:
            result = await conn.execute(rooms.delete().where(rooms.c.id == room_id))
            if result.rowcount == 0:
                raise NotFoundError("no such room")
