"""Accounts and rooms in SQL: SQLAlchemy Core (async) over SQLite or PostgreSQL.

SQLite (WAL) in the data directory is the default; PostgreSQL is used through
asyncpg when given a URL. The schema is brought to the newest Alembic revision
every time a store is opened (Alembic itself is imported only when it is behind).
Nothing here is on the per-packet path.

Password hashes never leave this module in a log line or an exception message:
database errors are reduced to the driver's own short message, never
SQLAlchemy's rendering (which quotes the statement's parameters).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pathlib
import re
import secrets
import time
import unicodedata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import regex  # type: ignore[import-untyped]
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    SQLAlchemyError,
    StatementError,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bangor.errors import (
    AlreadyExistsError,
    AuthError,
    BangorError,
    BusyError,
    LimitError,
    NotFoundError,
    StoreError,
    StoreUnavailableError,
)
from bangor.server import passwords, sqlite
from bangor.server.hashing import HashPool
from bangor.server.lockout import UnknownLogins, backoff, check_lock, lock_steps, shown_name
from bangor.server.schema import ROOM_ID_BYTES, room_bans, rooms, users
from bangor.settings import MAX_BITRATE, MIN_BITRATE, ServerSettings
from bangor.text import user_key

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

DB_FILE_NAME = "bangor.db"
ACCOUNTS_CHANNEL = "bangor_accounts_removed"  # PostgreSQL NOTIFY: a removed account's name
MIGRATIONS_DIR = pathlib.Path(__file__).resolve().parent / "migrations"
_MAX_REASON = 200

_ASYNC_SCHEMES = frozenset(
    {"postgresql+asyncpg", "postgresql+psycopg", "postgresql+psycopg_async", "sqlite+aiosqlite"}
)
_DEFAULT_SETTINGS = ServerSettings()


@dataclass(frozen=True)
class Account:
    """An account as a login finds it: its id and its name as stored."""

    id: int
    name: str


def _find_account(name: str, *columns: sa.ColumnElement[Any]) -> sa.Select[Any]:
    """``columns`` (default id and name) of the account ``name`` logs in to: the one with
    its exact spelling among names that clashed before 0004 (no key), else the one with
    its key."""
    normal = unicodedata.normalize("NFKC", name)
    return (
        sa.select(*(columns or (users.c.id, users.c.name)))
        .where(
            sa.or_(
                users.c.name_key == user_key(normal),
                sa.and_(users.c.name_key.is_(None), users.c.name == normal),
            )
        )
        .order_by(users.c.name_key.is_not(None))  # false first: the exact spelling wins
        .limit(1)
    )


@dataclass(frozen=True)
class Room:
    """A room as the store keeps it (members and keys live elsewhere)."""

    id: str
    name: str
    owner_id: int
    owner_name: str
    max_bitrate: int | None = None  # Opus bit/s each member sends at most; None: no cap
    # SHA-256 of the join token a joiner must show (PROTOCOL.md 3.15); None: no token yet.
    token_hash: bytes | None = None


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
            data_dir.mkdir(mode=sqlite.DATA_DIR_MODE, parents=True, exist_ok=True)
            # mkdir's mode is filtered by the umask; the key and accounts are private.
            os.chmod(data_dir, sqlite.DATA_DIR_MODE)
        except OSError as exc:
            raise StoreError(
                f"cannot create data directory {data_dir}: {exc.strerror or exc}"
            ) from None
    else:
        sqlite.secure_data_dir(data_dir)
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


# UAX #31's Recommended Scripts (Table 5): those in wide use today. Letters of others
# (Cherokee, Runic, ...: historic, or confusable with Latin) are refused.
NAME_SCRIPTS = (
    *("Arab", "Armn", "Beng", "Bopo", "Cyrl", "Deva", "Ethi", "Geor", "Grek", "Gujr"),
    *("Guru", "Hang", "Hani", "Hebr", "Hira", "Kana", "Khmr", "Knda", "Laoo", "Latn"),
    *("Mlym", "Mymr", "Orya", "Sinh", "Taml", "Telu", "Thaa", "Thai", "Tibt"),
)
_SCRIPT_NAMES = (
    "Arabic, Armenian, Bengali, Bopomofo, Cyrillic, Devanagari, Ethiopic, Georgian, Greek, "
    "Gujarati, Gurmukhi, Hangul, Han, Hebrew, Hiragana, Katakana, Khmer, Kannada, Lao, Latin, "
    "Malayalam, Myanmar, Oriya, Sinhala, Tamil, Telugu, Thaana, Thai, Tibetan"
)
# UTS #39's augmented script sets: a Japanese name mixes Han, Hiragana and Katakana, a
# Korean one Han and Hangul, a Chinese one Han and Bopomofo; no other scripts mix.
_AUGMENTED = {
    "Hani": {"Hani", "Jpan", "Kore", "Hanb"},
    "Hira": {"Jpan"},
    "Kana": {"Jpan"},
    "Hang": {"Kore"},
    "Bopo": {"Hanb"},
}
# Letters and marks that show nothing (Default_Ignorable_Code_Point outside Cf): Hangul
# fillers, variation selectors, the combining grapheme joiner, Khmer inherent vowels,
# Mongolian variation selectors.
_INVISIBLE = (
    frozenset(
        (0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F, 0x3164, 0xFFA0)
    )
    | frozenset(range(0xFE00, 0xFE10))
    | frozenset(range(0xE0100, 0xE01F0))
)
_NAME_PUNCTUATION = frozenset("_.-")
_SCRIPT_PATTERNS = [(code, regex.compile(rf"\p{{scx={code}}}")) for code in NAME_SCRIPTS]
_INHERITED = regex.compile(r"\p{sc=Inherited}")


def user_name_rule(settings: ServerSettings = _DEFAULT_SETTINGS) -> str:
    """What a user name may be, as the errors (and the README) say it."""
    return (
        f"user name must be 1 to {settings.max_user_name} characters and at most "
        f"{settings.max_user_name_bytes} bytes (UTF-8, after NFKC normalisation) of letters "
        "and digits of one script, with '_', '.' and '-'; accents and other combining marks "
        f"only on a letter (at most {settings.max_user_name_marks}); Japanese may mix kanji, "
        "hiragana and katakana, Korean hangul and hanja"
    )


@functools.lru_cache(maxsize=4096)
def _scripts(char: str) -> frozenset[str]:
    """The name scripts ``char`` belongs to (its Script_Extensions among NAME_SCRIPTS)."""
    return frozenset(code for code, pattern in _SCRIPT_PATTERNS if pattern.match(char))


def _shown(char: str) -> str:
    # Never the character itself: it may be one a terminal obeys.
    return f"U+{ord(char):04X} {unicodedata.name(char, '')}".rstrip()


def _name_problem(name: str, settings: ServerSettings) -> str | None:
    """Why ``name`` (NFKC already) breaks the rule, or None."""
    if not 1 <= len(name) <= settings.max_user_name:
        return f"it has {len(name)} characters"
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > settings.max_user_name_bytes:
        return f"it has {size} bytes"
    marks = -1  # combining marks on the letter before; -1: no letter to put one on
    resolved: set[str] | None = None  # scripts every character so far allows
    seen = ""  # a character that narrowed ``resolved``, for the message
    zero: int | None = None  # the digit system: the code point of its zero
    for char in name:
        category = unicodedata.category(char)
        if ord(char) in _INVISIBLE:
            return f"{_shown(char)} shows nothing"
        if char in _NAME_PUNCTUATION:
            marks = -1
            continue
        if category[0] == "M" and category != "Me":
            if marks < 0 or marks >= settings.max_user_name_marks:
                where = "on no letter" if marks < 0 else "one mark too many on a letter"
                return f"{_shown(char)} is {where}"
            marks += 1
        elif category[0] == "L":
            marks = 0
        elif category == "Nd":
            marks = -1
            digit_zero = ord(char) - unicodedata.decimal(char)
            if zero is not None and digit_zero != zero:
                return f"{_shown(char)} is of another digit system"
            zero = digit_zero
        else:
            return f"{_shown(char)} is not a letter, digit, mark, '_', '.' or '-'"
        scripts = _scripts(char)
        if not scripts:
            # Marks that go with any script (accents) and ASCII digits fit every name.
            if (category[0] == "M" and _INHERITED.match(char)) or "0" <= char <= "9":
                continue
            return f"{_shown(char)} is of a script not allowed in names; allowed: {_SCRIPT_NAMES}"
        allowed = set().union(*(_AUGMENTED.get(code, {code}) for code in scripts))
        if resolved is not None and not resolved & allowed:
            return f"{_shown(char)} is of another script than {_shown(seen)}"
        resolved = allowed if resolved is None else resolved & allowed
        seen = char
    return None


def check_user_name(name: str, settings: ServerSettings = _DEFAULT_SETTINGS) -> str:
    """``name`` as stored (NFKC), or :class:`StoreError` saying the rule it breaks.

    The one rule for user names, wherever one is made or logged in with: after NFKC,
    1 to ``max_user_name`` characters and ``max_user_name_bytes`` bytes of UTF-8; letters
    (and digits other than ASCII) of one of NAME_SCRIPTS, so no Cyrillic a (U+0430) hides in a
    Latin name; combining marks only on a letter, at most ``max_user_name_marks``; digits
    of one system; '_', '.', '-'; nothing invisible. Control, format (bidi, zero-width),
    space and symbol characters are refused.
    """
    normal = unicodedata.normalize("NFKC", name)
    problem = _name_problem(normal, settings)
    if problem is not None:
        raise StoreError(f"{user_name_rule(settings)} ({problem})")
    return normal


def clash_warning(names: list[str]) -> str:
    """What to say about names that differ only in case (oldest first), from before user
    names ignored case: they stay separate accounts until one is removed."""
    first, others = names[0], names[1:]
    return (
        f"user names {', '.join(names)} differ only in case (made before user names "
        f"ignored case): they are separate accounts; {', '.join(others)} "
        f"{'logs' if len(others) == 1 else 'log'} in only as spelled, any other spelling "
        f"is {first}. Remove one (bangor user remove NAME) to make them one name"
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
        if unreachable(exc):
            raise StoreUnavailableError(f"database unreachable: {short_reason(exc)}") from None
        raise StoreError(f"database error: {short_reason(exc)}") from None


# SQLSTATE classes of a database that is not there: 08 connection exception, 57P
# operator intervention (admin shutdown, crash shutdown, cannot connect now).
_UNREACHABLE_STATES = ("08", "57P")


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached (rather than that a statement
    failed): a refused or lost connection, a server shutting down or starting up."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError | DisconnectionError):
            return True
        if isinstance(cause, DBAPIError) and cause.connection_invalidated:
            return True
        state = getattr(cause, "sqlstate", None)
        if isinstance(state, str) and state.startswith(_UNREACHABLE_STATES):
            return True
        if type(cause).__name__ in ("ConnectionDoesNotExistError", "InterfaceError") and (
            type(cause).__module__.startswith("asyncpg")
        ):
            return True
        cause = getattr(cause, "orig", None) or cause.__cause__ or cause.__context__
    return False


def schema_head() -> str:
    """The newest migration's revision, from the file names (``NNNN_what.py``, named after
    their revision), so opening an up-to-date store need not import Alembic (11 MiB of RSS
    and 0.2 s with mako and pygments; tests/server/test_migrations.py checks the two agree)."""
    versions = (MIGRATIONS_DIR / "versions").glob("[0-9]*_*.py")
    return max(path.name.partition("_")[0] for path in versions)


def stored_revision(connection: Connection) -> str | None:
    """The database's Alembic revision; None when it has none (a new database) or more."""
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    rows = connection.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    return str(rows[0][0]) if len(rows) == 1 else None


def _alembic_config(connection: Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    command.upgrade(_alembic_config(connection), revision)


async def migrate(connection: AsyncConnection, revision: str = "head") -> None:
    """Run the Alembic migrations on ``connection`` up to ``revision``."""
    await connection.run_sync(_upgrade, revision)


class Store:
    """The account and room store over one async engine."""

    def __init__(self, engine: AsyncEngine, settings: ServerSettings = _DEFAULT_SETTINGS) -> None:
        self.engine = engine
        # For transactions that write: BEGIN IMMEDIATE on SQLite (see sqlite.on_begin).
        self._writer = engine.execution_options(**{sqlite.WRITE: True})
        self.settings = settings
        # Every Argon2 hash of this store runs here: a few at once, a bounded queue.
        self.hashes = HashPool(settings.hash_workers, settings.hash_queue, settings.hash_per_source)
        # Failed logins for names with no account, so they are throttled exactly like
        # real ones and a lockout does not reveal that an account exists.
        self._unknown = UnknownLogins(settings)
        self._dummy_hash: str | None = None
        # Open mode: names each source address has made since the store opened. Bounded
        # by open_max_users, since every entry made at least one of them.
        self._open_names: dict[str, int] = {}

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
                sqlite.check_path(engine.url.database, shown)
            except StoreError:
                await engine.dispose()
                raise
            event.listen(engine.sync_engine, "connect", sqlite.on_connect)
            event.listen(engine.sync_engine, "begin", sqlite.on_begin)
        try:
            async with engine.connect() as connection:
                current = await connection.run_sync(stored_revision)
            if current != schema_head():  # Alembic only when there is something to do
                async with engine.begin() as connection:
                    await migrate(connection)
        except Exception as exc:
            # Unreachable, or (Alembic's CommandError) migrated by a newer Bangor.
            await engine.dispose()
            log.debug("cannot open database %s", shown, exc_info=True)
            raise StoreError(f"cannot open database {shown}: {short_reason(exc)}") from None
        log.debug("opened database %s", shown)
        return cls(engine, settings)

    async def close(self) -> None:
        """Close every pooled connection and the hashing threads."""
        self.hashes.close()
        await self.engine.dispose()

    async def prepare_logins(self) -> None:
        """Make the hash unknown names are checked against, before logins arrive."""
        await self._dummy()

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self.hashes.run("", passwords.new_dummy_hash)
        return self._dummy_hash

    # -- users ---------------------------------------------------------------

    async def add_user(self, name: str, password: str) -> int:
        """Create an account and return its id; the name is stored as given (NFKC), and
        one that differs only in case from an existing one is taken."""
        name = check_user_name(name, self.settings)
        password_hash = await self.hashes.run("", passwords.hash_password, password)
        async with _db_errors():
            try:
                async with self._writer.begin() as conn:
                    result = await conn.execute(
                        users.insert().values(
                            name=name,
                            name_key=user_key(name),
                            password_hash=password_hash,
                            created_at=time.time(),
                        )
                    )
            except IntegrityError:
                await self._taken(name)
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    async def _taken(self, name: str) -> NoReturn:
        """Refuse ``name``: it, or a name that differs only in case, exists already."""
        found = await self._account(name)
        if found is None or found.name == name:
            raise AlreadyExistsError(f"user {name} exists already") from None
        raise AlreadyExistsError(
            f"user name {name} is taken: user {found.name} exists already (user names ignore case)"
        ) from None

    async def _account(self, name: str) -> Account | None:
        async with _db_errors(), self.engine.connect() as conn:
            row = (await conn.execute(_find_account(name))).first()
        return None if row is None else Account(int(row.id), row.name)

    async def _user_id(self, name: str) -> int | None:
        found = await self._account(name)
        return None if found is None else found.id

    async def open_user(self, name: str, source: str = "") -> int:
        """The id of ``name`` for a server in open mode, made on first use.

        Open mode has no passwords; the row exists so rooms have an owner (and the
        per-user room limit holds). It gets no password (nothing is hashed), so the name
        cannot log in should the server later run with accounts, until given one with
        ``bangor user passwd``. New names are capped per source address
        (``open_max_new_names_per_address``) and in all (``open_max_users``):
        :class:`LimitError`.
        """
        return (await self.open_account(name, source)).id

    async def open_account(self, name: str, source: str = "") -> Account:
        """:meth:`open_user`, with the name as stored (the first spelling used)."""
        name = check_user_name(name, self.settings)
        found = await self._account(name)
        if found is not None:
            return found
        made = self._open_names.get(source, 0)
        limit = self.settings.open_max_new_names_per_address
        if made >= limit:
            raise LimitError(f"too many new names from your address (the limit is {limit})")
        self._open_names[source] = made + 1  # taken before awaiting, so parallel logins see it
        try:
            user_id = await self._insert_open_user(name)
        except BaseException:
            self._give_back_open_name(source)
            raise
        if user_id is None:  # made by a parallel login a moment ago
            self._give_back_open_name(source)
            found = await self._account(name)
            if found is None:
                raise StoreError(f"cannot make open-mode user {name}")
            return found
        return Account(user_id, name)

    def _give_back_open_name(self, source: str) -> None:
        left = self._open_names.get(source, 0) - 1
        if left > 0:
            self._open_names[source] = left
        else:
            self._open_names.pop(source, None)

    async def _insert_open_user(self, name: str) -> int | None:
        """Insert a user without a password under ``open_max_users``; None if it exists."""
        limit = self.settings.open_max_users
        async with _db_errors():
            try:
                async with self._writer.begin() as conn:
                    await sqlite.lock_for_count(conn, users)
                    count = (
                        await conn.execute(sa.select(sa.func.count()).select_from(users))
                    ).scalar_one()
                    if count >= limit:
                        raise LimitError(f"this server has too many users (the limit is {limit})")
                    result = await conn.execute(
                        users.insert().values(
                            name=name,
                            name_key=user_key(name),
                            password_hash=passwords.DISABLED_HASH,
                            created_at=time.time(),
                        )
                    )
            except IntegrityError:
                return None
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    async def remove_user(self, name: str) -> str:
        """Delete the account ``name`` logs in to and (by cascade) the rooms it owns;
        return its name as stored."""
        async with _db_errors(), self._writer.begin() as conn:
            row = (await conn.execute(_find_account(name))).first()
            if row is None:
                raise NotFoundError(f"no such user {name}")
            await conn.execute(users.delete().where(users.c.id == row.id))
            if conn.dialect.name == "postgresql":
                # Delivered at commit to every server on this database (server/notify.py),
                # which ends the account's sessions.
                await conn.execute(sa.select(sa.func.pg_notify(ACCOUNTS_CHANNEL, row.name)))
        return str(row.name)

    async def set_password(self, name: str, password: str) -> str:
        """Replace a user's password; also lifts any login lock. Returns the name as stored."""
        password_hash = await self.hashes.run("", passwords.hash_password, password)
        async with _db_errors(), self._writer.begin() as conn:
            row = (await conn.execute(_find_account(name))).first()
            if row is None:
                raise NotFoundError(f"no such user {name}")
            await conn.execute(
                users.update()
                .where(users.c.id == row.id)
                .values(password_hash=password_hash, failed_logins=0, locked_until=0.0)
            )
        return str(row.name)

    async def list_users(self) -> list[str]:
        """All user names, sorted."""
        async with _db_errors(), self.engine.connect() as conn:
            result = await conn.execute(sa.select(users.c.name).order_by(users.c.name))
            return [row.name for row in result]

    async def name_clashes(self) -> list[list[str]]:
        """Names that differ only in case, kept apart since revision 0004 (each group
        oldest first). A name whose clash is gone (the others removed) gets its key here,
        so it logs in in any case again."""
        async with _db_errors(), self.engine.connect() as conn:
            loose = (
                await conn.execute(
                    sa.select(users.c.id, users.c.name)
                    .where(users.c.name_key.is_(None))
                    .order_by(users.c.id)
                )
            ).all()
        if not loose:  # the usual case: one cheap read
            return []
        async with _db_errors(), self._writer.begin() as conn:
            keys = {user_key(row.name) for row in loose}
            holders = (
                await conn.execute(
                    sa.select(users.c.id, users.c.name, users.c.name_key).where(
                        users.c.name_key.in_(sorted(keys))
                    )
                )
            ).all()
            groups: dict[str, list[tuple[int, str]]] = {
                row.name_key: [(int(row.id), row.name)] for row in holders
            }
            loose = (  # again, inside the transaction that may write
                await conn.execute(
                    sa.select(users.c.id, users.c.name)
                    .where(users.c.name_key.is_(None))
                    .order_by(users.c.id)
                )
            ).all()
            for row in loose:
                key = user_key(row.name)
                if key not in groups:
                    await conn.execute(
                        users.update().where(users.c.id == row.id).values(name_key=key)
                    )
                    log.warning("user name %s stands alone now: it ignores case again", row.name)
                groups.setdefault(key, []).append((int(row.id), row.name))
        return [[name for _, name in sorted(group)] for group in groups.values() if len(group) > 1]

    async def live_accounts(self, accounts: set[Account]) -> set[Account]:
        """Those of ``accounts`` that still exist (id and name), in one query."""
        if not accounts:
            return set()
        async with _db_errors(), self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(users.c.id, users.c.name).where(
                    users.c.id.in_(sorted({account.id for account in accounts}))
                )
            )
            return {Account(int(row.id), row.name) for row in rows} & accounts

    async def authenticate(self, name: str, password: str, now: float, source: str = "") -> int:
        """:meth:`log_in`, returning the user id alone."""
        return (await self.log_in(name, password, now, source)).id

    async def log_in(self, name: str, password: str, now: float, source: str = "") -> Account:
        """Check a login from ``source`` (an address) and return the account.

        ``name`` is any spelling of the account's name (case, NFKC): see
        :func:`check_user_name`, whose message a name that breaks the rule gets (no
        account can have it, so refusing it at once tells nothing).

        Cheapest first, nothing hashed until everything else passed: a locked name
        raises :class:`ThrottledError` (the password is not looked at); no place in the
        hashing pool raises :class:`BusyError` (nothing counted); then the failure is
        counted *before* the hash, in one atomic update that only succeeds while the
        name is not locked (so parallel guesses cannot all pass the lock check; at most
        ``login_free_failures`` + 1 are checked per lock), and given back if the password
        is right. Unknown names and wrong passwords raise :class:`AuthError` with one
        message, after the same work.
        """
        try:
            name = check_user_name(name, self.settings)
        except StoreError as exc:
            raise AuthError(str(exc)) from None
        async with _db_errors(), self.engine.connect() as conn:
            row = (
                await conn.execute(
                    _find_account(
                        name,
                        users.c.id,
                        users.c.name,
                        users.c.password_hash,
                        users.c.locked_until,
                    )
                )
            ).first()
        # No transaction is held while hashing: SQLite writers would wait on it.
        if row is None:
            await self._fail_unknown(user_key(name), password, now, source)
        user_id = int(row.id)
        check_lock(float(row.locked_until), now)
        stored = row.password_hash
        if passwords.is_disabled(stored):  # an open-mode name: no password can match
            stored = await self._dummy()
        with self.hashes.reserve(source) as ticket:
            counted = await self._count_failure(user_id, now)
            ok = await ticket.run(passwords.verify_password, stored, password)
        if not ok:
            delay = backoff(counted, self.settings)
            locked = f"; locked for {delay:g} s" if delay else ""
            log.info(
                "login failed for %s from %s (%d in a row%s)",
                row.name,
                source or "?",
                counted,
                locked,
            )
            raise AuthError("wrong user name or password")
        await self._give_back_failure(user_id, counted, password, row.password_hash, source)
        return Account(user_id, row.name)

    async def _fail_unknown(self, name: str, password: str, now: float, source: str) -> NoReturn:
        """Spend a real check's work on a name without an account, then refuse it."""
        self._unknown.check(name, now)
        dummy = await self._dummy()
        with self.hashes.reserve(source) as ticket:
            self._unknown.count_failure(name, now)
            await ticket.run(passwords.verify_password, dummy, password)
        log.info("login failed for unknown name %s from %s", shown_name(name), source or "?")
        raise AuthError("wrong user name or password")

    async def _count_failure(self, user_id: int, now: float) -> int:
        """Count a failed login before its password is checked; return the new count.

        One UPDATE that also sets the lock the new count earns, and only while the
        account is not locked; a parallel login that locked it first makes this one
        :class:`ThrottledError`.
        """
        settings = self.settings
        new = users.c.failed_logins + 1
        lock = sa.case(
            (new <= settings.login_free_failures, users.c.locked_until),
            *((new == failures, now + delay) for failures, delay in lock_steps(settings)),
            else_=now + settings.login_backoff_max,
        )
        async with _db_errors(), self._writer.begin() as conn:
            counted = (
                await conn.execute(
                    users.update()
                    .where(users.c.id == user_id, users.c.locked_until <= now)
                    .values(failed_logins=new, locked_until=lock)
                    .returning(users.c.failed_logins)
                )
            ).scalar_one_or_none()
            if counted is not None:
                return int(counted)
            locked_until = (
                await conn.execute(sa.select(users.c.locked_until).where(users.c.id == user_id))
            ).scalar_one_or_none()
        if locked_until is not None:
            check_lock(float(locked_until), now)
        raise AuthError("wrong user name or password")  # removed meanwhile

    async def _give_back_failure(
        self, user_id: int, counted: int, password: str, stored: str, source: str
    ) -> None:
        """The password was right: take back the failure counted for this login.

        With no failure counted since (the usual case) the count and any lock reset, as
        a correct password always did; otherwise only this login's own count is taken
        back, and the failures (and lock) of parallel logins stay.
        """
        mine = users.c.failed_logins == counted
        values: dict[str, Any] = {
            "failed_logins": sa.case(
                (mine, 0), (users.c.failed_logins > 0, users.c.failed_logins - 1), else_=0
            ),
            "locked_until": sa.case((mine, 0.0), else_=users.c.locked_until),
        }
        if passwords.needs_rehash(stored):
            with contextlib.suppress(BusyError):  # if busy, rehashed at a calmer login
                values["password_hash"] = await self.hashes.run(
                    source, passwords.hash_password, password
                )
        async with _db_errors(), self._writer.begin() as conn:
            await conn.execute(users.update().where(users.c.id == user_id).values(**values))

    # -- rooms ---------------------------------------------------------------

    async def create_room(
        self,
        owner_id: int,
        name: str,
        max_rooms: int,
        max_bitrate: int | None = None,
        *,
        max_total: int | None = None,
    ) -> Room:
        """Create a room owned by ``owner_id`` with a fresh random id.

        ``max_bitrate``: the Opus bit/s each member may send at most (None: no cap).
        ``max_rooms``: rooms one owner may have; ``max_total``: rooms in all (None: no
        cap). Both hold under concurrency: :class:`LimitError`.
        """
        check_room_name(name, self.settings.max_room_name)
        check_max_bitrate(max_bitrate)
        async with _db_errors():
            try:
                async with self._writer.begin() as conn:
                    if max_total is not None:
                        await sqlite.lock_for_count(conn, rooms)
                        total = (
                            await conn.execute(sa.select(sa.func.count()).select_from(rooms))
                        ).scalar_one()
                        if total >= max_total:
                            raise LimitError(
                                f"this server has too many rooms (the limit is {max_total})"
                            )
                    # Locking the owner's row serializes their room creations
                    # (PostgreSQL; BEGIN IMMEDIATE does on SQLite), so the limit holds
                    # under concurrency.
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
            rooms.c.token_hash,
        ).select_from(rooms.join(users, rooms.c.owner_id == users.c.id))

    @staticmethod
    def _room(row: sa.Row[Any]) -> Room:
        token_hash = None if row.token_hash is None else bytes(row.token_hash)
        return Room(row.id, row.name, row.owner_id, row.owner_name, row.max_bitrate, token_hash)

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

    async def set_room_token(self, room_id: str, token_hash: bytes) -> None:
        """Replace the room's join-token hash; :class:`NotFoundError` if the room is gone."""
        async with _db_errors(), self._writer.begin() as conn:
            result = await conn.execute(
                rooms.update().where(rooms.c.id == room_id).values(token_hash=token_hash)
            )
            if result.rowcount == 0:
                raise NotFoundError("no such room")

    async def ban(self, room_id: str, user: str) -> int:
        """Ban the account ``user`` from the room (again is no error); its id.

        :class:`NotFoundError` if there is no such account or room.
        """
        async with _db_errors(), self._writer.begin() as conn:
            user_id = (await conn.execute(_find_account(user, users.c.id))).scalar_one_or_none()
            if user_id is None:
                raise NotFoundError(f"no account named {user}")
            found = (await conn.execute(sa.select(rooms.c.id).where(rooms.c.id == room_id))).first()
            if found is None:
                raise NotFoundError("no such room")
            already = (
                await conn.execute(
                    sa.select(room_bans.c.user_id).where(
                        room_bans.c.room_id == room_id, room_bans.c.user_id == user_id
                    )
                )
            ).first()
            if already is None:
                await conn.execute(
                    room_bans.insert().values(
                        room_id=room_id, user_id=user_id, created_at=time.time()
                    )
                )
        return int(user_id)

    async def is_banned(self, room_id: str, user_id: int) -> bool:
        async with _db_errors(), self.engine.connect() as conn:
            found = (
                await conn.execute(
                    sa.select(room_bans.c.user_id).where(
                        room_bans.c.room_id == room_id, room_bans.c.user_id == user_id
                    )
                )
            ).first()
        return found is not None

    async def ban_counts(self) -> dict[str, int]:
        """Banned accounts per room id (rooms without bans left out)."""
        query = sa.select(room_bans.c.room_id, sa.func.count()).group_by(room_bans.c.room_id)
        async with _db_errors(), self.engine.connect() as conn:
            return {row[0]: int(row[1]) for row in await conn.execute(query)}

    async def delete_room(self, room_id: str) -> None:
        """Delete a room; :class:`NotFoundError` if there is none with this id."""
        async with _db_errors(), self._writer.begin() as conn:
            result = await conn.execute(rooms.delete().where(rooms.c.id == room_id))
            if result.rowcount == 0:
                raise NotFoundError("no such room")
