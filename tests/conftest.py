"""Fixtures shared across the suite: real PostgreSQL databases, per-backend URLs.

Tests that need PostgreSQL fail (not skip) when it is unreachable, unless
BANGOR_SKIP_POSTGRES=1: a missing database must not pass silently in CI.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import secrets
import sys
from collections.abc import Iterator

import asyncpg  # type: ignore[import-untyped]
import pytest

from bangor.server.store import database_url

PG_HOST = os.environ.get("BANGOR_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BANGOR_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("BANGOR_TEST_PG_USER", "postgres")


async def _pg_admin(sql: str, database: str = "postgres") -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=database)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test module, dropped afterwards."""
    if os.environ.get("BANGOR_SKIP_POSTGRES") == "1":
        pytest.skip("BANGOR_SKIP_POSTGRES=1")
    name = f"bangor_test_{secrets.token_hex(6)}"
    # No skip on failure: a missing PostgreSQL must show up as a failing test.
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
)
def db_url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    """An empty database (no tables) on each backend."""
    if request.param == "sqlite":
        return database_url(tmp_path / "data", None)
    url: str = request.getfixturevalue("pg_url")
    # The module shares one database: start every test from no schema at all.
    database = url.rsplit("/", 1)[1]
    # Every table, whatever migrations have added: a new one must not leak between tests.
    asyncio.run(_pg_admin("DROP SCHEMA public CASCADE; CREATE SCHEMA public", database))
    return url


# The run's exit status, for pytest_unconfigure below.
_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without Python's atexit teardown once livekit's native runtime is loaded.

    WebRTC's audio processing (livekit, tests/audio/test_capture.py) runs on a tokio
    runtime that livekit disposes at exit; once, after a full run whose results were all
    in, a worker thread panicked there ("panic in a function that cannot unwind") and the
    process aborted (exit 134), which would fail CI on a green run. The results and
    reports are written by now; nothing else is left to do.
    """
    if "livekit.rtc" in sys.modules and _exit_status:
        if "coverage" in sys.modules:  # `coverage run` (tests/coverage_gate.py) saves at exit
            import coverage

            current = coverage.Coverage.current()
            if current is not None:
                current.stop()
                current.save()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[-1])
