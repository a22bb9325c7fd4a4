"""Logins under concurrency, on SQLite and PostgreSQL: the lockout holds whatever the
timing, and limits checked against a count hold under parallel writers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bangor.errors import AuthError, LimitError, ThrottledError
from bangor.server import passwords
from bangor.server.store import Store
from bangor.settings import ServerSettings
from tests.server.spies import VerifySpy, until

# Room for every login in the hashing pool, so only the lockout can stop them.
WIDE = ServerSettings(hash_workers=8, hash_queue=100, hash_per_source=100)
FREE = WIDE.login_free_failures


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await Store.open(db_url, WIDE)
    try:
        yield s
    finally:
        await s.close()


@pytest.mark.parametrize("name", ["alice", "ghost"])  # an account, and a name without one
async def test_parallel_wrong_logins_check_at_most_free_plus_one(
    store: Store, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    await store.add_user("alice", "secret")
    await store.prepare_logins()
    verify = VerifySpy(monkeypatch)
    results = await asyncio.gather(
        *(store.authenticate(name, "wrong", 100.0) for _ in range(40)), return_exceptions=True
    )
    assert verify.calls == FREE + 1
    assert sum(type(r) is AuthError for r in results) == FREE + 1
    assert sum(isinstance(r, ThrottledError) for r in results) == 40 - (FREE + 1)


async def test_fifty_wrong_and_then_the_right_one_while_they_are_checked(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid = await store.add_user("alice", "secret")
    with VerifySpy(monkeypatch, held=True) as verify:
        wrong = [
            asyncio.create_task(store.authenticate("alice", f"guess {i}", 100.0)) for i in range(50)
        ]
        # Every guess is either being checked or already refused without a check.
        await until(lambda: verify.calls + sum(t.done() for t in wrong) == 50)
        assert verify.calls == FREE + 1
        # The account is locked by the guesses still being checked: the right password,
        # arriving now, is refused unchecked.
        with pytest.raises(ThrottledError):
            await asyncio.wait_for(store.authenticate("alice", "secret", 100.0), 5)
        verify.release()
        results = await asyncio.gather(*wrong, return_exceptions=True)
        assert all(isinstance(r, AuthError) for r in results)
        assert verify.calls == FREE + 1
    assert await store.authenticate("alice", "secret", 101.0) == uid  # once the lock is over
    async with store.db.read() as conn:
        row = await conn.fetchrow("SELECT failed_logins, locked_until FROM users")
    assert row is not None and (row[0], row[1]) == (0, 0.0)


async def test_a_right_password_gives_back_only_its_own_count(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid = await store.add_user("alice", "secret")
    with VerifySpy(monkeypatch, held=True) as verify:
        right = asyncio.create_task(store.authenticate("alice", "secret", 100.0))
        await until(lambda: verify.calls == 1)
        wrong = asyncio.create_task(store.authenticate("alice", "bad", 100.0))
        await until(lambda: verify.calls == 2)
        verify.release()
        assert await right == uid
        with pytest.raises(AuthError):
            await wrong
    async with store.db.read() as conn:
        failures = await conn.fetchval("SELECT failed_logins FROM users")
    assert failures == 1  # the parallel wrong guess still counts


async def test_junk_names_cannot_flush_the_lock_of_a_name_without_account(store: Store) -> None:
    bounded = Store(store.db, ServerSettings(max_tracked_unknown_logins=3))
    try:
        for _ in range(FREE + 1):
            with pytest.raises(AuthError):
                await bounded.authenticate("ghost", "guess", 0.0)
        for i in range(5):
            with pytest.raises(AuthError):
                await bounded.authenticate(f"junk{i}", "guess", 0.1)
        with pytest.raises(ThrottledError):
            await bounded.authenticate("ghost", "guess", 0.5)
    finally:
        bounded.hashes.close()


# -- limits checked against a count ---------------------------------------------------


async def test_room_limit_holds_under_parallel_creates(store: Store) -> None:
    alice = await store.add_user("alice", "pw")
    results = await asyncio.gather(
        *(store.create_room(alice, f"room {i}", 20) for i in range(40)), return_exceptions=True
    )
    assert sum(isinstance(r, LimitError) for r in results) == 20
    assert len(await store.list_rooms(alice)) == 20


async def test_total_room_cap_holds_across_owners(store: Store) -> None:
    owners = [await store.open_user(f"user{i}") for i in range(4)]
    results = await asyncio.gather(
        *(store.create_room(owners[i % 4], f"room {i}", 20, max_total=10) for i in range(40)),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, LimitError)]
    assert len(refused) == 30
    assert str(refused[0]) == "this server has too many rooms (the limit is 10)"
    assert len(await store.list_rooms()) == 10


async def test_open_mode_names_capped_per_address_and_in_all(store: Store) -> None:
    capped = Store(store.db, ServerSettings(open_max_new_names_per_address=3, open_max_users=5))
    results = await asyncio.gather(
        *(capped.open_user(f"a{i}", "10.0.0.1") for i in range(10)), return_exceptions=True
    )
    made = [r for r in results if isinstance(r, int)]
    assert len(made) == 3
    assert str(next(r for r in results if isinstance(r, LimitError))) == (
        "too many new names from your address (the limit is 3)"
    )
    # Names that exist cost nothing and are not refused.
    assert await capped.open_user("a0", "10.0.0.1") in made
    results = await asyncio.gather(
        *(capped.open_user(f"b{i}", f"10.0.1.{i}") for i in range(10)), return_exceptions=True
    )
    assert sum(isinstance(r, int) for r in results) == 2
    assert str(next(r for r in results if isinstance(r, LimitError))) == (
        "this server has too many users (the limit is 5)"
    )
    assert len(await capped.list_users()) == 5
    capped.hashes.close()


async def test_open_mode_names_have_no_password(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashes: list[str] = []
    real_hash = passwords.hash_password

    def counting_hash(password: str) -> str:
        hashes.append(password)
        return real_hash(password)

    monkeypatch.setattr(passwords, "hash_password", counting_hash)
    uid = await store.open_user("visitor", "10.0.0.1")
    assert hashes == []  # making an open-mode name costs no Argon2 hash
    for guess in ("", "!no password", passwords.DISABLED_HASH, "anything"):
        with pytest.raises(AuthError):
            await store.authenticate("visitor", guess or "x", 0.0)
    await store.set_password("visitor", "now one")
    assert await store.authenticate("visitor", "now one", 0.0) == uid
