"""Alembic environment for the Bangor store.

Normally run from :func:`bangor.server.upgrade.upgrade` (when :meth:`Store.open
<bangor.server.store.Store.open>` finds a database an older Bangor made), which passes an
open synchronous connection in ``config.attributes["connection"]`` (from inside
``AsyncConnection.run_sync``). For developers running the ``alembic`` command
(e.g. ``revision --autogenerate``), the URL comes from ``sqlalchemy.url`` or
the ``BANGOR_DB`` environment variable and an async engine is made here.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from bangor.server.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_standalone(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


def _main() -> None:
    if context.is_offline_mode():
        context.configure(
            url=config.get_main_option("sqlalchemy.url") or os.environ.get("BANGOR_DB"),
            target_metadata=metadata,
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("BANGOR_DB")
    if not url:
        raise RuntimeError("set sqlalchemy.url or BANGOR_DB to an async database URL")
    asyncio.run(_run_standalone(url))


_main()
