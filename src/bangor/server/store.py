"""Accounts and rooms in SQL, over SQLite or PostgreSQL (:mod:`bangor.server.database`).

SQLite (WAL) in the data directory is the default; PostgreSQL is used through
asyncpg when given a URL. A new database gets the newest tables
(:mod:`bangor.server.tables`); one an older Bangor made is upgraded by Alembic
(:mod:`bangor.server.upgrade`, imported only then). Nothing here is on the
per-packet path.

Password hashes never leave this module in a log line or an exception message:
database errors are reduced to the driver's own short message, never the
statement's parameters.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pathlib
import secrets
import time
import unicodedata
from dataclasses import dataclass
from typing import NoReturn

import regex  # type: ignore[import-untyped]

from bangor.errors import (
    AccountNotFoundError,
    AlreadyExistsError,
    AuthError,
    BusyError,
    LimitError,
    NotFoundError,
    StoreError,
)
from bangor.server import passwords, sqlite, tables
from bangor.server.database import (
    POSTGRESQL_SCHEMES,
    SQLITE_SCHEMES,
    ConflictError,
    Connection,
    Database,
    Row,
    redact_url,
    short_reason,
)
from bangor.server.hashing import HashPool
from bangor.server.lockout import UnknownLogins, backoff, check_lock, lock_steps, shown_name
from bangor.server.tables import ROOM_ID_BYTES
from bangor.settings import MAX_BITRATE, MIN_BITRATE, ServerSettings
from bangor.text import user_key

log = logging.getLogger(__name__)

DB_FILE_NAME = "bangor.db"
ACCOUNTS_CHANNEL = "bangor_accounts_removed"  # PostgreSQL NOTIFY: a removed account's name
_DEFAULT_SETTINGS = ServerSettings()


_INSERT_USER = (
    "INSERT INTO users (name, name_key, password_hash, created_at) "
    "VALUES ($1, $2, $3, $4) RETURNING id"
)
_ROOMS = (
    "SELECT rooms.id, rooms.name, rooms.owner_id, users.name AS owner_name, "
    "rooms.max_bitrate, rooms.token_hash FROM rooms JOIN users ON rooms.owner_id = users.id"
)
# Ids in one IN (...): far below SQLite's 32766 variables.
_IN_CHUNK = 500


def _marks(count: int) -> str:
    """``$1, ..., $count``: the placeholders of an IN list."""
    return ", ".join(f"${i}" for i in range(1, count + 1))


async def _upgrade(url: str) -> None:
    from bangor.server import upgrade  # Alembic and SQLAlchemy: only now (34 MiB)

    log.info("upgrading the database schema to revision %s", tables.HEAD)
    await upgrade.upgrade(url)


@dataclass(frozen=True)
class Account:
    """An account as a login finds it: its id and its name as stored."""

    id: int
    name: str


async def _find_account(conn: Connection, name: str, columns: str = "id, name") -> Row | None:
    """``columns`` of the account ``name`` logs in to: the one with its exact spelling
    among names that clashed before 0004 (no key), else the one with its key."""
    normal = unicodedata.normalize("NFKC", name)
    return await conn.fetchrow(
        f"SELECT {columns} FROM users "
        "WHERE name_key = $1 OR (name_key IS NULL AND name = $2) "
        # false first: the exact spelling wins
        "ORDER BY name_key IS NOT NULL LIMIT 1",
        user_key(normal),
        normal,
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
    """Return the database URL for ``--db URL`` or the data directory.

    ``postgresql://`` / ``postgres://`` become ``postgresql+asyncpg://`` and
    ``sqlite://`` becomes ``sqlite+aiosqlite://`` (the names of the drivers used, as
    SQLAlchemy spells them); those pass unchanged. Without a URL, the SQLite file in
    ``data_dir`` is used (the directory is created private, 0700, if missing).
    """
    if db is not None:
        db = db.strip()
        scheme, sep, rest = db.partition("://")
        scheme = scheme.lower()
        if sep and scheme in POSTGRESQL_SCHEMES:
            return f"postgresql+asyncpg://{rest}"
        if sep and scheme in SQLITE_SCHEMES:
            return f"sqlite+aiosqlite://{rest}"
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


class Store:
    """The account and room store over one :class:`Database`."""

    def __init__(self, db: Database, settings: ServerSettings = _DEFAULT_SETTINGS) -> None:
        self.db = db
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
        """Connect, bring the schema to the newest revision and return the store.

        ``url`` may also be a plain ``postgresql://`` or ``sqlite://`` URL.
        """
        url = database_url(None, url)
        db = await Database.open(url, settings.db_pool_size)
        try:
            revision = await tables.create_if_new(db)
            if revision != tables.HEAD:  # Alembic only when there is something to do
                await _upgrade(url)
        except Exception as exc:
            await db.close()
            log.debug("cannot open database %s", db.shown, exc_info=True)
            raise StoreError(f"cannot open database {db.shown}: {short_reason(exc)}") from None
        log.debug("opened database %s", db.shown)
        return cls(db, settings)

    async def close(self) -> None:
        """Close every pooled connection and the hashing threads."""
        self.hashes.close()
        await self.db.close()

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
        try:
            async with self.db.write() as conn:
                user_id = await conn.fetchval(
                    _INSERT_USER, name, user_key(name), password_hash, time.time()
                )
            return int(user_id)
        except ConflictError:
            await self._taken(name)

    async def _taken(self, name: str) -> NoReturn:
        """Refuse ``name``: it, or a name that differs only in case, exists already."""
        found = await self._account(name)
        if found is None or found.name == name:
            raise AlreadyExistsError(f"user {name} exists already") from None
        raise AlreadyExistsError(
            f"user name {name} is taken: user {found.name} exists already (user names ignore case)"
        ) from None

    async def _account(self, name: str) -> Account | None:
        async with self.db.read() as conn:
            row = await _find_account(conn, name)
        return None if row is None else Account(int(row["id"]), row["name"])

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
        try:
            async with self.db.write() as conn:
                await sqlite.lock_for_count(conn, "users")
                if await conn.fetchval("SELECT count(*) FROM users") >= limit:
                    raise LimitError(f"this server has too many users (the limit is {limit})")
                return int(
                    await conn.fetchval(
                        _INSERT_USER, name, user_key(name), passwords.DISABLED_HASH, time.time()
                    )
                )
        except ConflictError:
            return None

    async def remove_user(self, name: str) -> str:
        """Delete the account ``name`` logs in to and (by cascade) the rooms it owns;
        return its name as stored."""
        async with self.db.write() as conn:
            row = await _find_account(conn, name)
            if row is None:
                raise NotFoundError(f"no such user {name}")
            await conn.execute("DELETE FROM users WHERE id = $1", row["id"])
            if conn.dialect == "postgresql":
                # Delivered at commit to every server on this database (server/notify.py),
                # which ends the account's sessions.
                await conn.execute("SELECT pg_notify($1, $2)", ACCOUNTS_CHANNEL, row["name"])
        return str(row["name"])

    async def set_password(self, name: str, password: str) -> str:
        """Replace a user's password; also lifts any login lock. Returns the name as stored."""
        password_hash = await self.hashes.run("", passwords.hash_password, password)
        async with self.db.write() as conn:
            row = await _find_account(conn, name)
            if row is None:
                raise NotFoundError(f"no such user {name}")
            await conn.execute(
                "UPDATE users SET password_hash = $1, failed_logins = 0, locked_until = 0.0 "
                "WHERE id = $2",
                password_hash,
                row["id"],
            )
        return str(row["name"])

    async def list_users(self) -> list[str]:
        """All user names, sorted."""
        async with self.db.read() as conn:
            return [row[0] for row in await conn.fetch("SELECT name FROM users ORDER BY name")]

    async def name_clashes(self) -> list[list[str]]:
        """Names that differ only in case, kept apart since revision 0004 (each group
        oldest first). A name whose clash is gone (the others removed) gets its key here,
        so it logs in in any case again."""
        loose_query = "SELECT id, name FROM users WHERE name_key IS NULL ORDER BY id"
        async with self.db.read() as conn:
            loose = await conn.fetch(loose_query)
        if not loose:  # the usual case: one cheap read
            return []
        async with self.db.write() as conn:
            keys = sorted({user_key(row["name"]) for row in loose})
            holders = await conn.fetch(
                f"SELECT id, name, name_key FROM users WHERE name_key IN ({_marks(len(keys))})",
                *keys,
            )
            groups: dict[str, list[tuple[int, str]]] = {
                row["name_key"]: [(int(row["id"]), row["name"])] for row in holders
            }
            # Again, inside the transaction that may write.
            for row in await conn.fetch(loose_query):
                key = user_key(row["name"])
                if key not in groups:
                    await conn.execute(
                        "UPDATE users SET name_key = $1 WHERE id = $2", key, row["id"]
                    )
                    log.warning("user name %s stands alone now: it ignores case again", row["name"])
                groups.setdefault(key, []).append((int(row["id"]), row["name"]))
        return [[name for _, name in sorted(group)] for group in groups.values() if len(group) > 1]

    async def live_accounts(self, accounts: set[Account]) -> set[Account]:
        """Those of ``accounts`` that still exist (id and name), in one query."""
        if not accounts:
            return set()
        ids = sorted({account.id for account in accounts})
        found: set[Account] = set()
        async with self.db.read() as conn:
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]
                rows = await conn.fetch(
                    f"SELECT id, name FROM users WHERE id IN ({_marks(len(chunk))})", *chunk
                )
                found.update(Account(int(row["id"]), row["name"]) for row in rows)
        return found & accounts

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
        async with self.db.read() as conn:
            row = await _find_account(conn, name, "id, name, password_hash, locked_until")
        # No transaction is held while hashing: SQLite writers would wait on it.
        if row is None:
            await self._fail_unknown(user_key(name), password, now, source)
        user_id = int(row["id"])
        check_lock(float(row["locked_until"]), now)
        stored = row["password_hash"]
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
                row["name"],
                source or "?",
                counted,
                locked,
            )
            raise AuthError("wrong user name or password")
        await self._give_back_failure(user_id, counted, password, row["password_hash"], source)
        return Account(user_id, row["name"])

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
        # CASE failed_logins + 1 WHEN ... : the lock the new count earns, if any.
        args: list[object] = [user_id, now, settings.login_free_failures]
        steps = []
        for failures, delay in lock_steps(settings):
            args += [failures, now + delay]
            steps.append(f"WHEN failed_logins + 1 = ${len(args) - 1} THEN ${len(args)}")
        args.append(now + settings.login_backoff_max)
        async with self.db.write() as conn:
            counted = await conn.fetchval(
                "UPDATE users SET failed_logins = failed_logins + 1, locked_until = CASE "
                "WHEN failed_logins + 1 <= $3 THEN locked_until "
                f"{' '.join(steps)} ELSE ${len(args)} END "
                "WHERE id = $1 AND locked_until <= $2 RETURNING failed_logins",
                *args,
            )
            if counted is not None:
                return int(counted)
            locked_until = await conn.fetchval(
                "SELECT locked_until FROM users WHERE id = $1", user_id
            )
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
        password_hash = stored
        if passwords.needs_rehash(stored):
            with contextlib.suppress(BusyError):  # if busy, rehashed at a calmer login
                password_hash = await self.hashes.run(source, passwords.hash_password, password)
        async with self.db.write() as conn:
            await conn.execute(
                "UPDATE users SET "
                "locked_until = CASE WHEN failed_logins = $2 THEN 0.0 ELSE locked_until END, "
                "failed_logins = CASE WHEN failed_logins = $2 THEN 0 "
                "WHEN failed_logins > 0 THEN failed_logins - 1 ELSE 0 END, "
                # Only the hash this login checked: a password changed meanwhile stays.
                "password_hash = CASE WHEN password_hash = $3 THEN $4 ELSE password_hash END "
                "WHERE id = $1",
                user_id,
                counted,
                stored,
                password_hash,
            )

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
        try:
            async with self.db.write() as conn:
                if max_total is not None:
                    await sqlite.lock_for_count(conn, "rooms")
                    if await conn.fetchval("SELECT count(*) FROM rooms") >= max_total:
                        raise LimitError(
                            f"this server has too many rooms (the limit is {max_total})"
                        )
                # Locking the owner's row serializes their room creations (PostgreSQL;
                # BEGIN IMMEDIATE does on SQLite), so the limit holds under concurrency.
                lock = " FOR UPDATE" if conn.dialect == "postgresql" else ""
                owner_name = await conn.fetchval(
                    f"SELECT name FROM users WHERE id = $1{lock}", owner_id
                )
                if owner_name is None:
                    raise NotFoundError("no such user")
                count = await conn.fetchval(
                    "SELECT count(*) FROM rooms WHERE owner_id = $1", owner_id
                )
                if count >= max_rooms:
                    raise LimitError(f"user already owns {max_rooms} rooms (the limit)")
                taken = await conn.fetchrow(
                    "SELECT id FROM rooms WHERE owner_id = $1 AND name = $2", owner_id, name
                )
                if taken is not None:
                    raise AlreadyExistsError(f"you already have a room named {name}")
                room_id = secrets.token_hex(ROOM_ID_BYTES)
                await conn.execute(
                    "INSERT INTO rooms (id, name, owner_id, created_at, max_bitrate) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    room_id,
                    name,
                    owner_id,
                    time.time(),
                    max_bitrate,
                )
        except ConflictError:
            # Lost a race with a concurrent create of the same name.
            raise AlreadyExistsError(f"you already have a room named {name}") from None
        return Room(room_id, name, owner_id, owner_name, max_bitrate)

    @staticmethod
    def _room(row: Row) -> Room:
        token_hash = None if row["token_hash"] is None else bytes(row["token_hash"])
        return Room(
            row["id"],
            row["name"],
            row["owner_id"],
            row["owner_name"],
            row["max_bitrate"],
            token_hash,
        )

    async def get_room(self, room_id: str) -> Room:
        """The room with this id, or :class:`NotFoundError`."""
        async with self.db.read() as conn:
            row = await conn.fetchrow(f"{_ROOMS} WHERE rooms.id = $1", room_id)
        if row is None:
            raise NotFoundError("no such room")
        return self._room(row)

    async def list_rooms(self, owner_id: int | None = None) -> list[Room]:
        """All rooms, or those of one owner, sorted by owner name then room name."""
        order = "ORDER BY users.name, rooms.name, rooms.id"
        async with self.db.read() as conn:
            if owner_id is None:
                rows = await conn.fetch(f"{_ROOMS} {order}")
            else:
                rows = await conn.fetch(f"{_ROOMS} WHERE rooms.owner_id = $1 {order}", owner_id)
        return [self._room(row) for row in rows]

    async def set_room_token(self, room_id: str, token_hash: bytes) -> None:
        """Replace the room's join-token hash; :class:`NotFoundError` if the room is gone."""
        async with self.db.write() as conn:
            changed = await conn.execute(
                "UPDATE rooms SET token_hash = $1 WHERE id = $2", token_hash, room_id
            )
        if changed == 0:
            raise NotFoundError("no such room")

    async def ban(self, room_id: str, user: str) -> int:
        """Ban the account ``user`` from the room (again is no error); its id.

        :class:`AccountNotFoundError` if there is no such account, :class:`NotFoundError`
        if there is no such room.
        """
        async with self.db.write() as conn:
            row = await _find_account(conn, user, "id")
            if row is None:
                raise AccountNotFoundError(f"no account named {user}")
            if await conn.fetchrow("SELECT id FROM rooms WHERE id = $1", room_id) is None:
                raise NotFoundError("no such room")
            await conn.execute(
                "INSERT INTO room_bans (room_id, user_id, created_at) VALUES ($1, $2, $3) "
                "ON CONFLICT DO NOTHING",
                room_id,
                row["id"],
                time.time(),
            )
        return int(row["id"])

    async def unban(self, room_id: str, user: str) -> str:
        """Lift the ban of the account ``user`` from the room; its name as stored.

        :class:`AccountNotFoundError` if there is no such account or it is not banned.
        """
        async with self.db.write() as conn:
            row = await _find_account(conn, user)
            if row is None:
                raise AccountNotFoundError(f"no account named {user}")
            lifted = await conn.execute(
                "DELETE FROM room_bans WHERE room_id = $1 AND user_id = $2", room_id, row["id"]
            )
        if lifted == 0:
            raise AccountNotFoundError(f"{row['name']} is not banned from this room")
        return str(row["name"])

    async def bans(self, room_id: str, limit: int) -> tuple[list[str], int]:
        """The names of the accounts banned from the room, sorted, at most ``limit``; and
        how many are banned in all."""
        async with self.db.read() as conn:
            rows = await conn.fetch(
                "SELECT users.name FROM room_bans JOIN users ON room_bans.user_id = users.id "
                "WHERE room_bans.room_id = $1 ORDER BY users.name LIMIT $2",
                room_id,
                limit,
            )
            total = await conn.fetchval(
                "SELECT count(*) FROM room_bans WHERE room_id = $1", room_id
            )
        return [str(row[0]) for row in rows], int(total)

    async def is_banned(self, room_id: str, user_id: int) -> bool:
        async with self.db.read() as conn:
            found = await conn.fetchrow(
                "SELECT user_id FROM room_bans WHERE room_id = $1 AND user_id = $2",
                room_id,
                user_id,
            )
        return found is not None

    async def ban_counts(self) -> dict[str, int]:
        """Banned accounts per room id (rooms without bans left out)."""
        async with self.db.read() as conn:
            rows = await conn.fetch("SELECT room_id, count(*) FROM room_bans GROUP BY room_id")
        return {row[0]: int(row[1]) for row in rows}

    async def delete_room(self, room_id: str) -> None:
        """Delete a room; :class:`NotFoundError` if there is none with this id."""
        async with self.db.write() as conn:
            deleted = await conn.execute("DELETE FROM rooms WHERE id = $1", room_id)
        if deleted == 0:
            raise NotFoundError("no such room")
