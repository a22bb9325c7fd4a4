"""Accounts changed by `bangor user` while a real server and real clients run."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    ServerProcess,
    run_bangor,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """A real server on SQLite (the data directory) or on PostgreSQL (a plain URL)."""
    url = None
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url").replace("postgresql+asyncpg://", "postgresql://")
    srv = start_server(tmp_path, db_url=url)
    yield srv
    stop_server(srv)
    assert not any("Traceback" in line for line in srv.stderr.rest(timeout=5))


def test_a_removed_account_leaves_the_call_and_the_call_goes_on(
    any_server: ServerProcess,
) -> None:
    """Issue 17 (21): `bangor user remove erin` (another process) during a call left erin
    in it with no word. Now her client is told and exits 3; frank sees her leave and
    stays until his own end. SQLite: the server's periodic check (5 s by default);
    PostgreSQL: at once, by NOTIFY."""
    server = any_server
    for name in ("erin", "frank"):
        server.add_user(name)
    invite = server.create_room("frank")
    frank = server.join(invite, "frank", "--input", "silence", "--output", "null")
    frank.event("joined")
    erin = server.join(invite, "Erin", "--input", "tone", "--output", "null")
    joined = erin.event("joined")
    assert joined["you"]["user"] == "erin"  # type: ignore[index]  # logged in as Erin
    frank.event("member_verified")

    removed = run_bangor(["user", "remove", "ERIN", *server.store_args()], check=True)
    assert removed.stdout == "removed user erin\n"

    assert erin.wait(timeout=20) == 3, erin.stderr.seen
    assert erin.stderr.seen == ["error: your account was removed"]
    assert erin.events()[-1] == {"event": "error", "code": 3, "message": "your account was removed"}
    left = frank.event("member_left", timeout=5)
    assert left["member"]["user"] == "erin"  # type: ignore[index]
    assert frank.proc.poll() is None  # the call goes on
    server.stderr.wait_for(lambda line: "account erin removed: ended 1 session(s)" in line)
    frank.proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean leave
    assert frank.wait() == 0, frank.stderr.seen
    assert frank.events()[-1]["event"] == "left"
    listed = run_bangor(["user", "list", *server.store_args()], check=True)
    assert listed.stdout == "frank\n"
