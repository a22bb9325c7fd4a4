"""The store's tables at the newest migration, as SQL: how a new database is made.

A new database gets these tables and Alembic's version row in one transaction, so a
server never imports Alembic and SQLAlchemy (34 MiB and 0.4 s) unless a database made by
an older Bangor must be upgraded (:mod:`bangor.server.upgrade`).
``tests/server/test_migrations.py`` checks that these tables are the ones the migrations
make, on both backends, and that :data:`HEAD` is their newest revision.
"""

from __future__ import annotations

import pathlib

from bangor.server.database import Connection, Database
from bangor.settings import MAX_BITRATE, MIN_BITRATE

ROOM_ID_BYTES = 8  # room ids are 16 lowercase hex characters
MIGRATIONS_DIR = pathlib.Path(__file__).resolve().parent / "migrations"
# Every table of ours: a database with none of them is new.
TABLES = ("alembic_version", "users", "rooms", "room_bans", "nodes", "placements")

# The types that differ; the rest is SQL both understand.
_TYPES = {
    "sqlite": {"serial": "INTEGER", "blob": "BLOB", "false": "0", "timestamp": "DATETIME"},
    "postgresql": {
        "serial": "SERIAL",
        "blob": "BYTEA",
        "false": "false",
        "timestamp": "TIMESTAMP WITH TIME ZONE",
    },
}
_ID = f"VARCHAR({2 * ROOM_ID_BYTES})"
_CREATE = (
    """CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))""",
    """CREATE TABLE users (
    id {serial} NOT NULL,
    name TEXT NOT NULL,
    name_key TEXT,
    password_hash TEXT NOT NULL,
    created_at FLOAT,
    failed_logins INTEGER DEFAULT '0' NOT NULL,
    locked_until FLOAT DEFAULT '0' NOT NULL,
    CONSTRAINT pk_users PRIMARY KEY (id),
    CONSTRAINT uq_users_name UNIQUE (name))""",
    "CREATE UNIQUE INDEX ix_users_name_key ON users (name_key)",
    f"""CREATE TABLE rooms (
    id {_ID} NOT NULL,
    name TEXT NOT NULL,
    owner_id INTEGER NOT NULL,
    created_at FLOAT,
    max_bitrate INTEGER,
    token_hash {{blob}},
    CONSTRAINT pk_rooms PRIMARY KEY (id),
    CONSTRAINT uq_rooms_owner_id_name UNIQUE (owner_id, name),
    CONSTRAINT fk_rooms_owner_id_users FOREIGN KEY (owner_id)
        REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT ck_rooms_max_bitrate
        CHECK (max_bitrate IS NULL OR max_bitrate BETWEEN {MIN_BITRATE} AND {MAX_BITRATE}))""",
    f"""CREATE TABLE room_bans (
    room_id {_ID} NOT NULL,
    user_id INTEGER NOT NULL,
    created_at FLOAT,
    CONSTRAINT pk_room_bans PRIMARY KEY (room_id, user_id),
    CONSTRAINT fk_room_bans_room_id_rooms FOREIGN KEY (room_id)
        REFERENCES rooms (id) ON DELETE CASCADE,
    CONSTRAINT fk_room_bans_user_id_users FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE)""",
    """CREATE TABLE nodes (
    id TEXT NOT NULL,
    load INTEGER DEFAULT '0' NOT NULL,
    draining BOOLEAN DEFAULT {false} NOT NULL,
    heartbeat {timestamp} NOT NULL,
    CONSTRAINT pk_nodes PRIMARY KEY (id))""",
    f"""CREATE TABLE placements (
    room_id {_ID} NOT NULL,
    node_id TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    CONSTRAINT pk_placements PRIMARY KEY (room_id),
    CONSTRAINT fk_placements_room_id_rooms FOREIGN KEY (room_id)
        REFERENCES rooms (id) ON DELETE CASCADE,
    CONSTRAINT fk_placements_node_id_nodes FOREIGN KEY (node_id)
        REFERENCES nodes (id) ON DELETE CASCADE)""",
)
# Two processes making one new PostgreSQL database (a server and `bangor user add`) take
# turns on this advisory lock; on SQLite, BEGIN IMMEDIATE does it.
_PG_CREATE_LOCK = 0x62616E676F72  # "bangor"


# The revision _CREATE is at: a new migration changes both (a test holds them together).
HEAD = "0005"


def create_statements(dialect: str) -> list[str]:
    """The statements that make a new database at :data:`HEAD`."""
    types = _TYPES[dialect]
    return [statement.format(**types) for statement in _CREATE]


async def _ours(conn: Connection) -> set[str]:
    """Which of :data:`TABLES` exist."""
    if conn.dialect == "postgresql":
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_name = ANY($1::text[])",
            list(TABLES),
        )
    else:
        marks = ", ".join(f"${i}" for i in range(1, len(TABLES) + 1))
        rows = await conn.fetch(
            f"SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ({marks})", *TABLES
        )
    return {str(row[0]) for row in rows}


async def _revision(conn: Connection, ours: set[str]) -> str | None:
    """The Alembic revision of a database holding the tables ``ours``; None when it has
    none or more than one."""
    if "alembic_version" not in ours:
        return None
    rows = await conn.fetch("SELECT version_num FROM alembic_version")
    return str(rows[0][0]) if len(rows) == 1 else None


async def create_if_new(database: Database) -> str | None:
    """Make the tables in a database that has none of ours; return the revision it is at
    now (None: neither new nor versioned, for Alembic to judge)."""
    async with database.read() as conn:  # the usual start: no write lock for it
        if ours := await _ours(conn):
            return await _revision(conn, ours)
    async with database.write() as conn:
        if conn.dialect == "postgresql":
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _PG_CREATE_LOCK)
        if ours := await _ours(conn):  # another process made them meanwhile
            return await _revision(conn, ours)
        for statement in create_statements(conn.dialect):
            await conn.execute(statement)
        await conn.execute("INSERT INTO alembic_version (version_num) VALUES ($1)", HEAD)
    return HEAD
