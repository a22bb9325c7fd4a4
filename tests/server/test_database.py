"""The store's SQL layer on both backends: transactions, the pool, errors as Bangor's."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator

import pytest

from bangor.errors import StoreError, StoreUnavailableError
from bangor.server.database import ConflictError, Database, parse_url, redact_url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = await Database.open(db_url, pool_size=2)
    async with database.write() as conn:
        await conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    try:
        yield database
    finally:
        await database.close()


async def _rows(db: Database) -> list[tuple[int, str]]:
    async with db.read() as conn:
        return [(row["k"], row[1]) for row in await conn.fetch("SELECT k, v FROM t ORDER BY k")]


async def test_a_transaction_commits_or_rolls_back_whole(db: Database) -> None:
    async with db.write() as conn:
        assert await conn.execute("INSERT INTO t (k, v) VALUES ($1, $2)", 1, "one") == 1
    with pytest.raises(ValueError):
        async with db.write() as conn:
            await conn.execute("INSERT INTO t (k, v) VALUES ($1, $2)", 2, "two")
            raise ValueError
    assert await _rows(db) == [(1, "one")]
    # A placeholder used twice binds the same value (SQLite's ?1, PostgreSQL's $1).
    async with db.read() as conn:
        assert await conn.fetchval("SELECT count(*) FROM t WHERE k = $1 OR k + 1 = $1 + 1", 1) == 1


async def test_a_cancelled_transaction_is_rolled_back_and_the_pool_goes_on(db: Database) -> None:
    inside = asyncio.Event()

    async def writer() -> None:
        async with db.write() as conn:
            await conn.execute("INSERT INTO t (k, v) VALUES (3, 'three')")
            inside.set()
            await asyncio.Event().wait()  # a client that went away mid-login

    task = asyncio.create_task(writer())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _rows(db) == []
    # Every connection of the pool still works, none left inside that transaction.
    for k in range(4):
        async with db.write() as conn:
            await conn.execute("INSERT INTO t (k, v) VALUES ($1, 'x')", k)
    assert len(await _rows(db)) == 4


async def test_the_pool_holds_at_most_its_size(db: Database) -> None:
    held = asyncio.Event()
    release = asyncio.Event()
    entered = 0

    async def reader() -> None:
        nonlocal entered
        async with db.read() as conn:
            entered += 1
            await conn.fetchval("SELECT 1")
            if entered == 2:
                held.set()
            await release.wait()

    tasks = [asyncio.create_task(reader()) for _ in range(3)]
    await held.wait()
    await asyncio.sleep(0)  # the third has had its chance to enter
    assert entered == 2
    release.set()
    await asyncio.gather(*tasks)
    assert entered == 3


async def test_driver_errors_become_store_errors_without_parameters(db: Database) -> None:
    async with db.write() as conn:
        await conn.execute("INSERT INTO t (k, v) VALUES (1, 'one')")
    with pytest.raises(ConflictError) as conflict:
        async with db.write() as conn:
            await conn.execute("INSERT INTO t (k, v) VALUES ($1, $2)", 1, "HASH-SECRET")
    with pytest.raises(StoreError, match=r"^database error: ") as bad:
        async with db.read() as conn:
            await conn.fetch("SELECT nothing FROM t WHERE v = $1", "HASH-SECRET")
    for caught in (conflict, bad):
        assert "HASH-SECRET" not in str(caught.value)
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
        assert not isinstance(caught.value, StoreUnavailableError)


@pytest.mark.postgres
async def test_a_lost_postgresql_connection_is_replaced(pg_url: str) -> None:
    db = await Database.open(pg_url, pool_size=1)
    try:
        async with db.read() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
        killer = await Database.open(pg_url, pool_size=1)
        try:
            async with killer.read() as conn:
                assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await killer.close()
        # asyncpg's pool replaces a connection it saw close; one it has not seen close yet
        # fails its statement as unreachable (worth a retry), and is replaced after that.
        for attempt in (1, 2):
            try:
                async with db.read() as conn:
                    assert await conn.fetchval("SELECT pg_backend_pid()") != pid
                break
            except StoreUnavailableError as exc:
                assert attempt == 1 and str(exc).startswith("database unreachable: ")
    finally:
        await db.close()


async def test_unreachable_and_closed_databases(tmp_path: pathlib.Path) -> None:
    with pytest.raises(StoreUnavailableError, match=r"^cannot open database .*\*\*\*@") as info:
        await Database.open("postgresql://bob:s3cret@127.0.0.1:1/db")
    assert "s3cret" not in str(info.value)
    db = await Database.open(f"sqlite:///{tmp_path}/x.db")
    await db.close()
    with pytest.raises(StoreError, match="closed"):
        async with db.read():
            pass


def test_urls() -> None:
    assert parse_url("sqlite+aiosqlite:////tmp/x.db") == ("sqlite", "/tmp/x.db")
    assert parse_url("sqlite:///x.db") == ("sqlite", "x.db")
    assert parse_url("sqlite://") == ("sqlite", ":memory:")
    assert parse_url("postgresql+asyncpg://u:p@h/db") == ("postgresql", "postgresql://u:p@h/db")
    assert parse_url("POSTGRES://h/db") == ("postgresql", "postgresql://h/db")
    with pytest.raises(StoreError, match="unsupported database URL 'mysql://u:\\*\\*\\*@h/db'"):
        parse_url("mysql://u:pw@h/db")
    # The password may hold ':' and '/'; asyncpg also takes it as a query parameter.
    assert redact_url("postgresql://bob:a:b/c@h/db") == "postgresql://bob:***@h/db"
    assert (
        redact_url("postgresql://h/db?password=x&ssl=1") == "postgresql://h/db?password=***&ssl=1"
    )
