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


def test_user_add_refuses_a_name_taken_in_another_case(db_url: str) -> None:
    """Issue 17 (6): `bangor user add Alice` made a second account next to `alice`."""
    _run("add", "alice", db_url)
    with pytest.raises(AlreadyExistsError, match=r"^user name Alice is taken: user alice"):
        run_user_command("add", "Alice", db_url, lambda prompt: "pw", io.StringIO())
    assert _run("add", "zo\u00eb", db_url) == "added user zo\u00eb\n"
    # Any spelling reaches the account; what is printed is the name as stored.
    assert _run("passwd", "ALICE", db_url, "new") == "password changed for alice\n"
    assert _login(db_url, "Alice", "new") > 0
    assert _run("remove", "ZO\u00cb", db_url) == "removed user zo\u00eb\n"
    assert _run("list", None, db_url) == "alice\n"


def test_user_list_reports_names_that_differ_only_in_case(db_url: str) -> None:
    """Made before names ignored case (revision 0004): listed, each its own account."""

    async def two_alices() -> None:
        store = await Store.open(db_url)
        try:
            async with store.db.write() as conn:
                await conn.execute("INSERT INTO users (name, password_hash) VALUES ('Alice', 'x')")
        finally:
            await store.close()

    _run("add", "alice", db_url)
    asyncio.run(two_alices())  # as 0004 leaves a clash: no key
    out, err = io.StringIO(), io.StringIO()
    assert run_user_command("list", None, db_url, _never, out, err) == 0
    assert out.getvalue() == "Alice\nalice\n"  # stdout stays one name a line
    assert err.getvalue() == (
        "bangor: warning: user names alice, Alice differ only in case (made before user names "
        "ignored case): they are separate accounts; Alice logs in only as spelled, any other "
        "spelling is alice. Remove one (bangor user remove NAME) to make them one name\n"
    )
    assert _run("remove", "alice", db_url) == "removed user alice\n"
    err = io.StringIO()
    run_user_command("list", None, db_url, _never, io.StringIO(), err)
    assert err.getvalue() == ""
    # Alone now, Alice has the name in any case again.
    with pytest.raises(AlreadyExistsError, match="user name ALICE is taken: user Alice"):
        _run("add", "ALICE", db_url)


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
