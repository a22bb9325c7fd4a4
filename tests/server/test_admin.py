"""Tests for bangor.server.admin, the `bangor user` command."""

from __future__ import annotations

import asyncio
import io
import pathlib

import pytest

from bangor.errors import AlreadyExistsError, BangorError, NotFoundError, StoreError
from bangor.server.admin import run_user_command
from bangor.server.store import Store, database_url


def _never(prompt: str) -> str:
    raise AssertionError("no password should be asked")


def _run(action: str, name: str | None, url: str, password: str = "pw") -> str:
    out = io.StringIO()
    assert run_user_command(action, name, url, lambda prompt: password, out) == 0
    return out.getvalue()


def _login(url: str, name: str, password: str) -> int:
    async def go() -> int:
        store = await Store.open(url)
        try:
            return await store.authenticate(name, password, 0.0)
        finally:
            await store.close()

    return asyncio.run(go())


def test_add_list_passwd_remove(db_url: str) -> None:
    assert _run("list", None, db_url) == ""
    prompts: list[str] = []

    def read(prompt: str) -> str:
        prompts.append(prompt)
        return "first"

    out = io.StringIO()
    assert run_user_command("add", "bob", db_url, read, out) == 0
    assert out.getvalue() == "added user bob\n"
    assert prompts == ["Password for bob: "]
    assert _run("add", "alice", db_url) == "added user alice\n"
    assert _run("list", None, db_url) == "alice\nbob\n"
    assert _login(db_url, "bob", "first") > 0
    assert _run("passwd", "bob", db_url, "second") == "password changed for bob\n"
    assert _login(db_url, "bob", "second") > 0
    assert _run("remove", "bob", db_url) == "removed user bob\n"
    assert _run("list", None, db_url) == "alice\n"


def test_errors(tmp_path: pathlib.Path) -> None:
    url = database_url(tmp_path, None)
    _run("add", "alice", url)
    with pytest.raises(AlreadyExistsError, match=r"^user alice exists already$"):
        _run("add", "alice", url)
    with pytest.raises(NotFoundError, match=r"^no such user bob$"):
        run_user_command("remove", "bob", url, _never, io.StringIO())
    with pytest.raises(NotFoundError, match=r"^no such user bob$"):
        _run("passwd", "bob", url)
    # Bad input is refused before a password is asked for.
    with pytest.raises(StoreError, match=r"^user name must be"):
        run_user_command("add", "bad name", url, _never, io.StringIO())
    with pytest.raises(StoreError, match=r"needs a user name"):
        run_user_command("remove", None, url, _never, io.StringIO())
    with pytest.raises(BangorError, match=r"unknown user action 'rename'"):
        run_user_command("rename", "alice", url, _never, io.StringIO())
    with pytest.raises(StoreError, match=r"^password must be 1 to 1024 characters$"):
        _run("add", "carol", url, password="")
    assert _run("list", None, url) == "alice\n"


def test_bad_database(tmp_path: pathlib.Path) -> None:
    with pytest.raises(StoreError, match=r"^unsupported database URL"):
        run_user_command("list", None, "mysql://h/db", _never, io.StringIO())
    with pytest.raises(StoreError, match=r"^cannot open database") as info:
        run_user_command(
            "list", None, "postgresql://u:s3cret@127.0.0.1:1/db", _never, io.StringIO()
        )
    assert "s3cret" not in str(info.value)
    with pytest.raises(StoreError, match=r"^cannot open database"):
        run_user_command("list", None, f"sqlite:///{tmp_path}/no/dir.db", _never, io.StringIO())


@pytest.mark.postgres
def test_plain_postgresql_url(pg_url: str) -> None:
    # The CLI may pass the URL as the user typed it.
    plain = pg_url.replace("postgresql+asyncpg://", "postgresql://")
    _run("add", "pgadmin", plain)
    assert "pgadmin\n" in _run("list", None, plain)
    _run("remove", "pgadmin", plain)
