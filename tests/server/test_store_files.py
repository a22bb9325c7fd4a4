"""The store on disk: the SQLite files and the data directory are private."""

from __future__ import annotations

import logging
import os
import pathlib
import stat
from collections.abc import Iterator

import pytest

from bangor.errors import StoreError
from bangor.server.app import open_server
from bangor.server.store import Store, database_url


def mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The umask many systems default to: new files readable by everyone."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("open_umask")
async def test_database_and_its_wal_and_shm_are_0600(tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "data"
    store = await Store.open(database_url(data_dir, None))
    try:
        await store.add_user("alice", "pw")  # writes through the WAL
        files = {p.name: mode(p) for p in data_dir.iterdir()}
    finally:
        await store.close()
    assert files == {"bangor.db": 0o600, "bangor.db-wal": 0o600, "bangor.db-shm": 0o600}
    assert mode(data_dir) == 0o700


@pytest.mark.usefixtures("open_umask")
async def test_existing_readable_database_is_made_private(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    url = database_url(data_dir, None)
    store = await Store.open(url)
    await store.add_user("alice", "pw")
    await store.close()
    db = data_dir / "bangor.db"
    db.chmod(0o644)  # as an older Bangor left it
    store = await Store.open(url)
    try:
        assert await store.list_users() == ["alice"]
        assert all(mode(p) == 0o600 for p in data_dir.iterdir())
    finally:
        await store.close()
    assert f"{db} was open to others (mode 0644); made it 0600" in caplog.text


@pytest.mark.usefixtures("open_umask")
def test_existing_data_dir_open_to_others_is_made_private(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    database_url(data_dir, None)
    assert mode(data_dir) == 0o700
    assert "was open to others (mode 0755); made it private (0700)" in caplog.text


@pytest.mark.postgres
@pytest.mark.usefixtures("open_umask")
async def test_server_makes_its_data_dir_private_with_a_database_url(
    tmp_path: pathlib.Path, pg_url: str
) -> None:
    """With --db postgresql://... the data directory still holds server.key."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    server = await open_server(data_dir, pg_url)
    await server.close()
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "server.key") == 0o600


@pytest.mark.parametrize(("dir_mode", "refused"), [(0o777, True), (0o750, False)])
def test_data_dir_that_cannot_be_made_private(
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    dir_mode: int,
    refused: bool,
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(dir_mode)

    def no_chmod(path: object, new_mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", no_chmod)
    caplog.set_level(logging.WARNING)
    if refused:  # others could have put their own key or accounts there
        with pytest.raises(StoreError, match=r"can be written by others \(mode 0777\)"):
            database_url(data_dir, None)
    else:
        database_url(data_dir, None)
        assert "is readable by others (mode 0750)" in caplog.text
