"""The whole join flow with the accounts and rooms in the real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import ServerProcess, run_bangor, start_server, stop_server
from tests.integration.test_call import assert_same_speech, speech_call

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


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
