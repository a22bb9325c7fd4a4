"""SQLite specifics of the store: private files, pragmas, and writers one at a time.

The database holds password hashes, so it is created 0600 (SQLite gives its -wal and
-shm files the same mode) in a 0700 data directory, and files or a directory left open
to others by an older version are made private with a warning. Transactions that
write begin with ``BEGIN IMMEDIATE``, so a count checked against a limit and the
insert that follows run one writer at a time.
"""

from __future__ import annotations

import logging
import os
import pathlib
import stat
from typing import TYPE_CHECKING

from bangor.errors import StoreError
from bangor.platforms import modes_enforced

if TYPE_CHECKING:
    from bangor.server.database import Connection

log = logging.getLogger("bangor.server.store")

SQLITE_BUSY_TIMEOUT_MS = 5_000
DB_FILE_MODE = 0o600
DATA_DIR_MODE = 0o700
_SIDE_FILES = ("-wal", "-shm", "-journal")
# Every connection's: WAL lets the server read while `bangor user` writes; foreign keys
# make ON DELETE CASCADE work; busy_timeout waits for a writer instead of failing.
PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
)


def secure_data_dir(data_dir: pathlib.Path) -> None:
    """Make an existing data directory private (0700), saying so when it was not.

    It holds the server key and the accounts. A directory that others could write to
    and that we cannot make private is refused: its files may not be ours. Not on
    Windows, whose mode bits say nothing (:func:`bangor.platforms.modes_enforced`).
    """
    if not modes_enforced():
        return
    try:
        mode = stat.S_IMODE(data_dir.stat().st_mode)
    except OSError as exc:
        raise StoreError(f"cannot use data directory {data_dir}: {exc.strerror}") from None
    if not mode & 0o077:
        return
    try:
        os.chmod(data_dir, DATA_DIR_MODE)
    except OSError as exc:
        if mode & 0o022:
            raise StoreError(
                f"data directory {data_dir} can be written by others (mode {mode:04o}) and "
                f"cannot be made private: {exc.strerror}; chmod 700 it"
            ) from None
        log.warning(
            "data directory %s is readable by others (mode %04o): %s",
            data_dir,
            mode,
            exc.strerror,
        )
        return
    check = "; check that the files in it are yours" if mode & 0o022 else ""
    log.warning(
        "data directory %s was open to others (mode %04o); made it private (0700)%s",
        data_dir,
        mode,
        check,
    )


def check_path(database: str | None, shown: str) -> None:
    """Fail early and clearly where SQLite could not open the file; make it private.

    The file is created 0600 before SQLite opens it (its -wal and -shm then get the same
    mode), and an existing one open to others is made 0600 with a warning. Failing early
    also works around aiosqlite leaving its worker thread behind (to crash noisily at
    exit) when the connect itself fails.
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
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, DB_FILE_MODE))
    except OSError as exc:
        raise StoreError(f"cannot open database {shown}: {exc.strerror}") from None
    for file in (path, *(path.with_name(path.name + end) for end in _SIDE_FILES)):
        _make_private(file)


def _make_private(file: pathlib.Path) -> None:
    if not modes_enforced():  # Windows: every file "is 0666"; a warning each start
        return
    try:
        mode = stat.S_IMODE(file.stat().st_mode)
        if mode & 0o077:
            os.chmod(file, DB_FILE_MODE)
            log.warning("%s was open to others (mode %04o); made it 0600", file, mode)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot make %s private: %s", file, exc.strerror)


async def lock_for_count(conn: Connection, table: str) -> None:
    """Serialize transactions that count ``table``'s rows against a limit, then insert.

    SQLite: BEGIN IMMEDIATE already did. PostgreSQL: a lock that conflicts with itself
    and with writers of the table, held until the transaction ends.
    """
    if conn.dialect == "postgresql":
        await conn.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
