"""Alembic, for a database an older Bangor made: imported only when one must be upgraded.

Alembic runs on SQLAlchemy (with Mako and Pygments, about 34 MiB and 0.4 s to import), so
neither is loaded by a server whose database is new (:mod:`bangor.server.tables` makes
it) or up to date. A server that did upgrade keeps them until it restarts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bangor.server import sqlite
from bangor.server.database import parse_url
from bangor.server.tables import MIGRATIONS_DIR

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection


def alembic_url(url: str) -> str:
    """The SQLAlchemy URL of a database URL Bangor takes."""
    dialect, where = parse_url(url)
    if dialect == "sqlite":
        return f"sqlite+aiosqlite:///{where}"
    return "postgresql+asyncpg://" + where.partition("://")[2]


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    # As the store's own connections (database.py): BEGIN is issued by _on_begin, foreign
    # keys on, WAL, the busy timeout.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in sqlite.PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _on_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _config(connection: Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    command.upgrade(_config(connection), revision)


def _downgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    command.downgrade(_config(connection), revision)


async def migrate(connection: AsyncConnection, revision: str = "head") -> None:
    """Run the Alembic migrations on ``connection`` up to ``revision``."""
    await connection.run_sync(_upgrade, revision)


async def downgrade(connection: AsyncConnection, revision: str) -> None:
    """Run the Alembic migrations on ``connection`` down to ``revision``."""
    await connection.run_sync(_downgrade, revision)


async def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` on a connection of its own."""
    from sqlalchemy import event, pool
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(alembic_url(url), poolclass=pool.NullPool)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _on_connect)
        event.listen(engine.sync_engine, "begin", _on_begin)
    try:
        async with engine.begin() as connection:
            await migrate(connection, revision)
    finally:
        await engine.dispose()
