"""Tests for the Alembic migrations of the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine

from bangor.server.schema import metadata
from bangor.server.store import MIGRATIONS_DIR, Store, migrate


def _head() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


async def _version(store: Store) -> str:
    async with store.engine.connect() as conn:
        return str(
            (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar_one()
        )


async def test_upgrade_keeps_data(db_url: str) -> None:
    # A database left at the first revision, holding a user and a room.
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            await migrate(conn, "0001")
            await conn.execute(
                sa.text(
                    "INSERT INTO users (name, password_hash, created_at) VALUES ('old', 'x', 1.0)"
                )
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO rooms (id, name, owner_id, created_at) "
                    "SELECT '00112233aabbccdd', 'den', id, 2.0 FROM users"
                )
            )
    finally:
        await engine.dispose()
    store = await Store.open(db_url)
    try:
        assert await _version(store) == _head()
        assert await store.list_users() == ["old"]
        room = await store.get_room("00112233aabbccdd")
        assert (room.name, room.owner_name) == ("den", "old")
    finally:
        await store.close()
    # Opening again is a no-op that keeps everything.
    store = await Store.open(db_url)
    try:
        assert await _version(store) == _head()
        assert await store.list_users() == ["old"]
    finally:
        await store.close()


async def test_migrations_match_schema(db_url: str) -> None:
    store = await Store.open(db_url)
    try:
        async with store.engine.connect() as conn:
            diffs = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
    finally:
        await store.close()
    assert diffs == []
