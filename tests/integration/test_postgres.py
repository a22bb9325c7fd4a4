"""The whole join flow with the accounts and rooms in the real PostgreSQL server."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.conftest import (
    PASSWORD,
    ServerProcess,
    run_bangor,
    start_bangor,
    start_server,
    stop_server,
)
from tests.integration.test_call import assert_same_speech, speech_call

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

# The suite's PostgreSQL (tests/conftest.py: 127.0.0.1:5432), as Debian's tools name it.
PG_VERSION, PG_CLUSTER = "15", "main"


@pytest.fixture
def pg_server(pg_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    # What a user types: a plain postgresql:// URL.
    srv = start_server(tmp_path, db_url=pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    yield srv
    stop_server(srv)


def test_call_with_postgres_store(pg_server: ServerProcess, tmp_path: Path) -> None:
    reference, recorded, _ = speech_call(pg_server, tmp_path)
    assert_same_speech(reference, recorded)
    listed = run_bangor(["user", "list", *pg_server.store_args()], check=True)
    assert listed.stdout.split() == ["alice", "bob"]


@contextmanager
def postgres_stopped() -> Iterator[Callable[[], None]]:
    """Stop the real PostgreSQL; the callable starts it again (and so does leaving, always)."""
    cluster = ["pg_ctlcluster", PG_VERSION, PG_CLUSTER]
    subprocess.run([*cluster, "stop", "-m", "fast"], check=True, capture_output=True)
    started = False

    def start() -> None:
        nonlocal started
        if not started:
            subprocess.run([*cluster, "start"], check=True, capture_output=True)
            started = True

    try:
        yield start
    finally:
        start()


def test_database_outage_is_waited_out(pg_server: ServerProcess, tmp_path: Path) -> None:
    """A login while PostgreSQL is down gets a retryable answer ("accounts unavailable,
    try again"), which the client waits out; the server logs the database as unreachable."""
    pg_server.add_user("dana")  # the module shares its database: a name of its own
    pg_server.create_room("dana", "before")
    with postgres_stopped() as start_postgres:
        creating = start_bangor(
            ["room", "create", "during", "--server", pg_server.address, "--user", "dana"],
            tmp_path / "homes" / "dana",
            password=PASSWORD,
        )
        # The server saw the database gone and said so; then the database comes back.
        pg_server.stderr.wait_for(lambda line: "accounts database unreachable" in line)
        start_postgres()
        assert creating.wait(timeout=30) == 0, creating.stderr.seen
    assert len(creating.stdout.seen) == 1  # the invite
    lines = pg_server.stderr.seen
    assert not any("internal error" in line or "Traceback" in line for line in lines), lines
