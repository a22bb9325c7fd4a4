"""Tests for the Alembic migrations of the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from bangor.errors import AlreadyExistsError, StoreError
from bangor.server import passwords, tables
from bangor.server import upgrade as upgrade_module
from bangor.server.schema import metadata
from bangor.server.store import Store
from bangor.server.tables import MIGRATIONS_DIR
from bangor.server.upgrade import alembic_url, downgrade, migrate


def _head() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


async def _version(store: Store) -> str:
    async with store.db.read() as conn:
        return str(await conn.fetchval("SELECT version_num FROM alembic_version"))


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
        assert (room.name, room.owner_name, room.max_bitrate) == ("den", "old", None)
    finally:
        await store.close()
    # Opening again is a no-op that keeps everything.
    store = await Store.open(db_url)
    try:
        assert await _version(store) == _head()
        assert await store.list_users() == ["old"]
    finally:
        await store.close()


async def _room_columns(connection: AsyncConnection) -> list[str]:
    return await connection.run_sync(
        lambda sync: [c["name"] for c in sa.inspect(sync).get_columns("rooms")]
    )


async def _room_caps(connection: AsyncConnection) -> dict[str, int | None]:
    rows = await connection.execute(sa.text("SELECT name, max_bitrate FROM rooms"))
    return {row.name: row.max_bitrate for row in rows}


_INSERT_ROOM = (
    "INSERT INTO rooms (id, name, owner_id, created_at, max_bitrate) "
    "SELECT :id, :name, id, 2.0, :cap FROM users"
)


async def test_0002_room_max_bitrate_up_and_down(db_url: str) -> None:
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            await migrate(conn, "0001")
            await conn.execute(
                sa.text("INSERT INTO users (name, password_hash) VALUES ('old', 'x')")
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO rooms (id, name, owner_id) SELECT '00112233aabbccdd', 'den', id "
                    "FROM users"
                )
            )
            assert "max_bitrate" not in await _room_columns(conn)
        # Up: the column appears, NULL (no cap) for the rooms that were there.
        async with engine.begin() as conn:
            await migrate(conn, "0002")
            assert "max_bitrate" in await _room_columns(conn)
            assert await _room_caps(conn) == {"den": None}
            # Named as schema.py's naming convention names it (autogenerate ignores CHECKs).
            checks = await conn.run_sync(
                lambda sync: [c["name"] for c in sa.inspect(sync).get_check_constraints("rooms")]
            )
            schema_checks = [
                c.name
                for c in metadata.tables["rooms"].constraints
                if isinstance(c, sa.CheckConstraint)
            ]
            assert checks == schema_checks == ["ck_rooms_max_bitrate"]
            await conn.execute(
                sa.text(_INSERT_ROOM), {"id": "0011223344556677", "name": "capped", "cap": 16000}
            )
        # The CHECK constraint came with it, on both backends.
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text(_INSERT_ROOM), {"id": "8899aabbccddeeff", "name": "low", "cap": 5999}
                )
        # Down: the column (and its constraint) go; the rooms stay.
        async with engine.begin() as conn:
            await downgrade(conn, "0001")
            assert "max_bitrate" not in await _room_columns(conn)
            assert (
                await conn.run_sync(lambda sync: sa.inspect(sync).get_check_constraints("rooms"))
                == []
            )
            names = (await conn.execute(sa.text("SELECT name FROM rooms ORDER BY name"))).all()
            assert [row.name for row in names] == ["capped", "den"]
            version = await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            assert version.scalar_one() == "0001"
        # And up again: caps are gone (NULL), the database is at 0002 once more.
        async with engine.begin() as conn:
            await migrate(conn, "0002")
            assert await _room_caps(conn) == {"capped": None, "den": None}
    finally:
        await engine.dispose()


def _shape(sync: Connection) -> dict[str, object]:
    """Every table's columns, keys, constraints and indexes, as the database reports them."""
    inspector = sa.inspect(sync)
    shape: dict[str, object] = {}
    for table in sorted(inspector.get_table_names()):
        columns = [
            (c["name"], str(c["type"]), c["nullable"], c.get("default"))
            for c in inspector.get_columns(table)
        ]
        shape[table] = (
            sorted(columns),
            inspector.get_pk_constraint(table),
            sorted(map(repr, inspector.get_foreign_keys(table))),
            sorted(map(repr, inspector.get_unique_constraints(table))),
            sorted(map(repr, inspector.get_indexes(table))),
            sorted(map(repr, inspector.get_check_constraints(table))),
        )
    return shape


async def _schema(url: str, migrated: bool) -> tuple[dict[str, object], list[object]]:
    """A new database's shape and its differences from schema.py: made by the migrations
    (Alembic from nothing), or as a new store makes it (tables.py)."""
    if migrated:
        await upgrade_module.upgrade(url)
    else:
        await (await Store.open(url)).close()
    engine = create_async_engine(alembic_url(url))
    try:
        async with engine.connect() as conn:
            shape = await conn.run_sync(_shape)
            diffs = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
            await conn.execute(sa.text("DROP TABLE alembic_version"))
            for table in reversed(metadata.sorted_tables):
                await conn.execute(sa.text(f"DROP TABLE {table.name}"))
            await conn.commit()
    finally:
        await engine.dispose()
    return shape, diffs


async def test_a_new_store_has_the_tables_the_migrations_make(db_url: str) -> None:
    migrated, migrated_diffs = await _schema(db_url, migrated=True)
    made, made_diffs = await _schema(db_url, migrated=False)
    assert migrated_diffs == [] and made_diffs == []
    assert set(made) == set(tables.TABLES)
    # Columns with types and defaults, keys, ON DELETE, constraint names, indexes, CHECK.
    assert made == migrated


async def test_0003_cluster_tables_up_and_down(db_url: str) -> None:
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            await migrate(conn, "0003")
            tables = await conn.run_sync(lambda sync: set(sa.inspect(sync).get_table_names()))
            assert {"nodes", "placements"} <= tables
        async with engine.begin() as conn:
            await downgrade(conn, "0002")
            tables = await conn.run_sync(lambda sync: set(sa.inspect(sync).get_table_names()))
            assert not {"nodes", "placements"} & tables
            assert {"users", "rooms"} <= tables
    finally:
        await engine.dispose()


async def test_0004_names_ignore_case_and_clashes_stay_apart(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An older database may hold names that differ only in case: the migration must not
    make them one account. The oldest gets the name in any case, the others keep their
    exact spelling; both are reported until one is removed."""
    hashes = {name: passwords.hash_password(f"pw-{name}") for name in ("Alice", "alice", "ALICE")}
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            await migrate(conn, "0003")
            for name in ("Alice", "bob", "alice", "ALICE"):
                await conn.execute(
                    sa.text("INSERT INTO users (name, password_hash) VALUES (:name, :hash)"),
                    {"name": name, "hash": hashes.get(name, passwords.hash_password("pw-bob"))},
                )
            await conn.execute(
                sa.text(
                    "INSERT INTO rooms (id, name, owner_id) "
                    "SELECT '00112233aabbccdd', 'den', id FROM users WHERE name = 'alice'"
                )
            )
    finally:
        await engine.dispose()
    caplog.set_level(logging.WARNING, logger="bangor")
    store = await Store.open(db_url)
    try:
        assert "user names 'Alice' and 'alice' differ only in case" in caplog.text
        assert await _version(store) == _head()
        assert await store.list_users() == ["ALICE", "Alice", "alice", "bob"]
        assert await store.name_clashes() == [["Alice", "alice", "ALICE"]]
        # Each logs in with its own spelling and password; any other spelling is the oldest.
        for name in ("Alice", "alice", "ALICE"):
            assert (await store.log_in(name, f"pw-{name}", 0.0)).name == name
        assert (await store.log_in("aLiCe", "pw-Alice", 0.0)).name == "Alice"
        assert (await store.log_in("BOB", "pw-bob", 0.0)).name == "bob"
        with pytest.raises(AlreadyExistsError):
            await store.add_user("aLICE", "pw")
        assert (await store.get_room("00112233aabbccdd")).owner_name == "alice"
        # Removing the oldest leaves two: the older of them takes the name over.
        assert await store.remove_user("Alice") == "Alice"
        assert await store.name_clashes() == [["alice", "ALICE"]]
        assert (await store.log_in("aLiCe", "pw-alice", 0.0)).name == "alice"
        assert await store.remove_user("ALICE") == "ALICE"
        assert await store.name_clashes() == []
        assert (await store.log_in("ALICE", "pw-alice", 0.0)).name == "alice"
    finally:
        await store.close()
    # Down and up again: the key goes and comes back, nothing else changes.
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            await downgrade(conn, "0003")
            columns = await conn.run_sync(
                lambda sync: [c["name"] for c in sa.inspect(sync).get_columns("users")]
            )
            assert "name_key" not in columns
            assert (await conn.execute(sa.text("SELECT count(*) FROM rooms"))).scalar_one() == 1
        async with engine.begin() as conn:
            await migrate(conn, "0004")
            keys = await conn.execute(sa.text("SELECT name, name_key FROM users ORDER BY name"))
            assert [tuple(row) for row in keys] == [("alice", "alice"), ("bob", "bob")]
    finally:
        await engine.dispose()


def test_the_head_of_a_new_store_is_alembics() -> None:
    # Store.open compares the database with tables.HEAD to skip Alembic, and a new
    # database is made at HEAD: a new migration must move it.
    assert _head() == tables.HEAD


async def test_a_store_at_the_head_opens_without_alembic(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await (await Store.open(db_url)).close()  # new: made at the head
    calls: list[str] = []
    upgrade = upgrade_module.upgrade

    async def spy(url: str, revision: str = "head") -> None:
        calls.append(revision)
        await upgrade(url, revision)

    monkeypatch.setattr(upgrade_module, "upgrade", spy)
    store = await Store.open(db_url)
    try:
        # Nothing to do, so Alembic is not even imported (tests/server/test_footprint.py).
        assert calls == []
        assert await _version(store) == _head()
    finally:
        await store.close()
    # One revision behind: migrated on open, as ever.
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            await downgrade(conn, "-1")
    finally:
        await engine.dispose()
    store = await Store.open(db_url)
    try:
        assert calls == ["head"]
        assert await _version(store) == _head()
    finally:
        await store.close()


async def test_a_store_from_a_newer_bangor_is_refused(db_url: str) -> None:
    await (await Store.open(db_url)).close()
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        await engine.dispose()
    with pytest.raises(StoreError, match=r"cannot open database.*9999"):
        await Store.open(db_url)
