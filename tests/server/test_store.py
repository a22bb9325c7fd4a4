"""Tests for bangor.server.store over SQLite and PostgreSQL.

The PostgreSQL tests use a fresh, randomly named database per test module on
127.0.0.1:5432 (user postgres, trust auth). They fail when PostgreSQL is
unreachable, unless BANGOR_SKIP_POSTGRES=1. The ``pg_url`` and ``db_url``
fixtures live in tests/conftest.py.
"""

from __future__ import annotations

import pathlib
import re
import stat
from collections.abc import AsyncIterator

import msgspec
import pytest
from argon2 import PasswordHasher, Type

from bangor.errors import (
    AccountNotFoundError,
    AlreadyExistsError,
    AuthError,
    LimitError,
    NotFoundError,
    StoreError,
    ThrottledError,
)
from bangor.server import passwords
from bangor.server.database import ConflictError, redact_url
from bangor.server.store import (
    Account,
    Store,
    check_user_name,
    database_url,
)
from bangor.settings import MAX_NAME, ServerSettings
from bangor.wire import control as msg
from bangor.wire import e2ee


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await Store.open(db_url)
    try:
        yield s
    finally:
        await s.close()


# -- URLs and opening --------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql+asyncpg://u:p@h:5432/db"),
        ("postgres://h/db", "postgresql+asyncpg://h/db"),
        ("postgresql+asyncpg://h/db", "postgresql+asyncpg://h/db"),
        ("sqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_database_url_conversions(given: str, expected: str) -> None:
    assert database_url(None, given) == expected


@pytest.mark.parametrize("bad", ["mysql://u:hunter2@h/db", "/tmp/x.db", "", "http://h"])
def test_database_url_unsupported(bad: str) -> None:
    with pytest.raises(StoreError, match=r"^unsupported database URL") as info:
        database_url(None, bad)
    assert "hunter2" not in str(info.value)


def test_database_url_needs_something() -> None:
    with pytest.raises(StoreError):
        database_url(None, None)


def test_data_dir_created_private(tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "a" / "data"
    url = database_url(data_dir, None)
    assert url == f"sqlite+aiosqlite:///{(data_dir / 'bangor.db').resolve()}"
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


def test_redact_url() -> None:
    assert redact_url("postgresql+asyncpg://bob:s3cret@h:5432/db") == (
        "postgresql+asyncpg://bob:***@h:5432/db"
    )
    assert "s3cret" not in redact_url("postgresql://bob@h/db?password=s3cret&ssl=true")
    assert redact_url("sqlite+aiosqlite:////tmp/x.db") == "sqlite+aiosqlite:////tmp/x.db"
    assert "s3cret" not in redact_url("weird://bob:s3cret@[bad")


async def test_open_unreachable_server_is_store_error() -> None:
    # Port 1 on loopback: nothing listens there.
    with pytest.raises(StoreError, match=r"^cannot open database ") as info:
        await Store.open("postgresql://bob:s3cret@127.0.0.1:1/db")
    assert "s3cret" not in str(info.value)
    assert "***" in str(info.value)


async def test_open_unwritable_sqlite_is_store_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(StoreError, match=r"^cannot open database "):
        await Store.open(f"sqlite:///{tmp_path}/missing/dir/x.db")


@pytest.mark.postgres
async def test_open_missing_pg_database(pg_url: str) -> None:
    url = pg_url.rsplit("/", 1)[0] + "/bangor_no_such_db"
    with pytest.raises(StoreError, match='database "bangor_no_such_db" does not exist'):
        await Store.open(url)


async def test_sqlite_pragmas(tmp_path: pathlib.Path) -> None:
    s = await Store.open(database_url(tmp_path, None))
    try:
        async with s.db.read() as conn:
            assert await conn.fetchval("PRAGMA journal_mode") == "wal"
            assert await conn.fetchval("PRAGMA foreign_keys") == 1
            assert await conn.fetchval("PRAGMA busy_timeout") == 5000
    finally:
        await s.close()


# -- users -------------------------------------------------------------------


async def test_add_list_remove(store: Store) -> None:
    assert await store.list_users() == []
    bob = await store.add_user("bob", "pw-b")
    alice = await store.add_user("alice", "pw-a")
    assert bob != alice
    assert await store.list_users() == ["alice", "bob"]
    await store.remove_user("bob")
    assert await store.list_users() == ["alice"]
    with pytest.raises(NotFoundError, match=r"^no such user bob$"):
        await store.remove_user("bob")


async def test_duplicate_user(store: Store) -> None:
    await store.add_user("alice", "pw")
    with pytest.raises(AlreadyExistsError, match=r"^user alice exists already$"):
        await store.add_user("alice", "other")


@pytest.mark.parametrize("name", ["", "a" * 33, "al ice", "al/ice", "a\n"])
async def test_bad_user_names(store: Store, name: str) -> None:
    with pytest.raises(StoreError, match=r"^user name must be 1 to 32 characters"):
        await store.add_user(name, "pw")


async def test_good_unusual_user_names(store: Store) -> None:
    await store.add_user("A.b-c_9", "pw")
    await store.add_user("x" * 32, "pw")
    assert await store.list_users() == ["A.b-c_9", "x" * 32]


async def test_user_names_ignore_case_and_show_as_stored(store: Store) -> None:
    """Issue 17 (6): `Alice` and `alice` were two accounts."""
    uid = await store.add_user("alice", "pw")
    for spelling in ("alice", "Alice", "ALICE", "\uff21\uff4c\uff49\uff43\uff45"):  # fullwidth
        assert await store.log_in(spelling, "pw", 0.0) == Account(uid, "alice")
    for taken in ("Alice", "ALICE"):
        with pytest.raises(
            AlreadyExistsError,
            match=rf"^user name {taken} is taken: user alice exists already \(user names ignore",
        ):
            await store.add_user(taken, "other")
    assert await store.list_users() == ["alice"]
    # Stored as first given; NFKC and full case folding (ß is ss).
    await store.add_user("Stra\u00dfe", "pw")
    with pytest.raises(AlreadyExistsError, match=r"^user name STRASSE is taken: user Stra\u00dfe"):
        await store.add_user("STRASSE", "pw")
    assert await store.set_password("ALICE", "new") == "alice"
    assert await store.authenticate("aLiCe", "new", 0.0) == uid
    assert await store.remove_user("ALICE") == "alice"
    assert await store.list_users() == ["Stra\u00dfe"]
    # Open mode finds the account by any spelling too.
    assert (await store.open_account("strasse")).name == "Stra\u00dfe"


async def test_failed_logins_of_any_spelling_count_for_one_name(store: Store) -> None:
    """Unknown names too: `Mallory`, `MALLORY`... must not each get free guesses."""
    for spelling in ("mallory", "Mallory", "MALLORY", "mallorY"):
        with pytest.raises(AuthError) as info:
            await store.authenticate(spelling, "guess", 1000.0)
    assert isinstance(info.value, ThrottledError) or "mallory" in store._unknown
    await store.add_user("erin", "pw")
    for spelling in ("erin", "Erin", "ERIN", "eRin"):
        with pytest.raises(AuthError):
            await store.authenticate(spelling, "guess", 1000.0)
    with pytest.raises(ThrottledError):
        await store.authenticate("erin", "pw", 1000.5)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("zo\u00eb", "zo\u00eb"),
        ("zoe\u0308", "zo\u00eb"),  # decomposed (as macOS types it): stored composed
        ("\u0434\u043c\u0438\u0442\u0440\u0438\u0439", None),  # Cyrillic
        ("\u03b5\u03bb\u03ad\u03bd\u03b7", None),  # Greek
        ("\u7530\u4e2d\u305f\u308d\u3046", None),  # Japanese: Han and Hiragana
        ("\uae40\ucca0\uc218", None),  # Hangul
        ("\u0e01\u0e34\u0e48\u0e07", None),  # Thai, two marks on a letter
        ("\u0926\u0947\u0935\u0928\u093e\u0917\u0930\u0940", None),  # Devanagari
        ("\u0663\u0664\u0627", None),  # Arabic letters and digits
        ("\u00e9mile_2.0-x", None),
        ("x" * 32, None),
        ("\u0436" * 32, None),  # 64 bytes
    ],
)
async def test_unicode_user_names(store: Store, given: str, stored: str | None) -> None:
    """Issue 17 (16): `zoë` was refused."""
    stored = stored or given
    assert check_user_name(given) == stored
    uid = await store.add_user(given, "pw")
    assert await store.list_users() == [stored]
    assert await store.authenticate(given, "pw", 0.0) == uid
    assert await store.authenticate(stored.upper(), "pw", 0.0) == uid


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("p\u0430ypal", "U+0430 CYRILLIC SMALL LETTER A is of another script than U+0070"),
        ("\u03a9mega", "U+006D LATIN SMALL LETTER M is of another script than U+03A9"),
        ("\u305f\uae40", "U+AE40 HANGUL SYLLABLE GIM is of another script"),
        ("a\u202eb", "U+202E RIGHT-TO-LEFT OVERRIDE is not a letter, digit, mark"),
        ("a\u200bb", "U+200B ZERO WIDTH SPACE is not a letter"),
        ("a\u200db", "U+200D ZERO WIDTH JOINER is not a letter"),
        ("a\x1b[2J", "U+001B is not a letter"),
        ("\u0301a", "U+0301 COMBINING ACUTE ACCENT is on no letter"),
        ("1\u0301", "U+0301 COMBINING ACUTE ACCENT is on no letter"),
        ("x" + "\u0300\u0301\u0302\u0303", "U+0303 COMBINING TILDE is one mark too many"),
        ("a\u20dd", "U+20DD COMBINING ENCLOSING CIRCLE is not a letter"),
        ("a\u3164b", "U+1160 HANGUL JUNGSEONG FILLER shows nothing"),
        ("a\ufe0f", "U+FE0F VARIATION SELECTOR-16 shows nothing"),
        (
            "\u13a0\u13a1",
            "U+13A0 CHEROKEE LETTER A is of a script not allowed in names; allowed: Arabic,",
        ),
        ("a\u0661", "U+0661 ARABIC-INDIC DIGIT ONE is of another script"),
        ("\u0627\u0661\u06f1", "U+06F1 EXTENDED ARABIC-INDIC DIGIT ONE is of another digit"),
        ("\u4e00" * 22, "it has 66 bytes"),
        ("x" * 33, "it has 33 characters"),
        ("", "it has 0 characters"),
        ("bob\U0001f600", "is not a letter"),
    ],
)
async def test_user_names_that_are_refused_say_what_is_allowed(
    store: Store, name: str, why: str
) -> None:
    with pytest.raises(StoreError) as info:
        await store.add_user(name, "pw")
    message = str(info.value)
    assert message.startswith(
        "user name must be 1 to 32 characters and at most 64 bytes (UTF-8, after NFKC "
        "normalisation) of letters and digits of one script, with '_', '.' and '-'; accents "
        "and other combining marks only on a letter (at most 3); Japanese may mix kanji, "
        "hiragana and katakana, Korean hangul and hanja ("
    ), message
    assert why in message
    assert message.isascii()  # never the name's own characters: they may drive a terminal
    with pytest.raises(AuthError, match=r"^user name must be"):  # a login says the same
        await store.authenticate(name, "pw", 0.0)
    assert await store.list_users() == []


def test_the_longest_user_names_fit_the_wire() -> None:
    """Names travel in hello (at most MAX_NAME characters) and in members' hellos."""
    settings = ServerSettings()
    for name in ("x" * settings.max_user_name, "\u0436" * 32, "\u4e00" * 21):
        name = check_user_name(name, settings)
        hello = msg.Hello(1, name, "pw", name)
        assert msgspec.msgpack.decode(msgspec.msgpack.encode(hello), type=msg.Hello) == hello
        peer = e2ee.PeerHello(name, name)
        assert msgspec.msgpack.decode(msgspec.msgpack.encode(peer), type=e2ee.PeerHello) == peer
    assert settings.max_user_name <= MAX_NAME


async def test_bad_password(store: Store) -> None:
    with pytest.raises(StoreError, match=r"^password must be 1 to 1024 characters$"):
        await store.add_user("alice", "")
    assert await store.list_users() == []


async def test_set_password(store: Store) -> None:
    uid = await store.add_user("alice", "old")
    await store.set_password("alice", "new")
    assert await store.authenticate("alice", "new", 0.0) == uid
    with pytest.raises(AuthError):
        await store.authenticate("alice", "old", 0.0)
    with pytest.raises(NotFoundError, match=r"^no such user bob$"):
        await store.set_password("bob", "x")


async def test_authenticate(store: Store) -> None:
    uid = await store.add_user("alice", "secret")
    assert await store.authenticate("alice", "secret", 0.0) == uid
    with pytest.raises(AuthError) as wrong:
        await store.authenticate("alice", "Secret", 0.0)
    with pytest.raises(AuthError) as unknown:
        await store.authenticate("mallory", "secret", 0.0)
    assert type(wrong.value) is type(unknown.value) is AuthError
    assert str(wrong.value) == str(unknown.value) == "wrong user name or password"


async def test_backoff(store: Store) -> None:
    # Defaults: 3 free failures, then 1 s, 2 s, 4 s ... capped at 300 s.
    uid = await store.add_user("alice", "secret")
    now = 1000.0
    for _ in range(3):
        with pytest.raises(AuthError) as info:
            await store.authenticate("alice", "bad", now)
        assert not isinstance(info.value, ThrottledError)
    with pytest.raises(AuthError) as info:  # 4th failure: locked for 1 s
        await store.authenticate("alice", "bad", now)
    assert not isinstance(info.value, ThrottledError)
    # Locked: even the right password is refused without being checked.
    with pytest.raises(ThrottledError, match=r"^too many failed logins; try again in 1 s$") as th:
        await store.authenticate("alice", "secret", now + 0.25)
    assert th.value.retry_after == pytest.approx(0.75)
    # Lock expired: the 5th failure locks for 2 s.
    now += 1.0
    with pytest.raises(AuthError) as info:
        await store.authenticate("alice", "bad", now)
    assert not isinstance(info.value, ThrottledError)
    with pytest.raises(ThrottledError) as th:
        await store.authenticate("alice", "bad", now)
    assert th.value.retry_after == pytest.approx(2.0)
    assert str(th.value) == "too many failed logins; try again in 2 s"
    # After the lock, the right password works and resets the count.
    now += 2.0
    assert await store.authenticate("alice", "secret", now) == uid
    for _ in range(3):
        with pytest.raises(AuthError) as info:
            await store.authenticate("alice", "bad", now)
        assert not isinstance(info.value, ThrottledError)


async def test_backoff_capped_and_reset_by_passwd(store: Store) -> None:
    strict = Store(
        store.db,
        ServerSettings(login_free_failures=0, login_backoff_base=10.0, login_backoff_max=25.0),
    )
    await strict.add_user("alice", "secret")
    now = 0.0
    retries = []
    for _ in range(4):
        with pytest.raises(AuthError):
            await strict.authenticate("alice", "bad", now)
        with pytest.raises(ThrottledError) as th:
            await strict.authenticate("alice", "bad", now)
        retries.append(th.value.retry_after)
        now += th.value.retry_after
    assert retries == [10.0, 20.0, 25.0, 25.0]
    with pytest.raises(AuthError):
        await strict.authenticate("alice", "bad", now)
    await strict.set_password("alice", "new")  # an admin reset lifts the lock
    assert await strict.authenticate("alice", "new", now) > 0


async def test_huge_failure_count_does_not_overflow(store: Store) -> None:
    await store.add_user("alice", "secret")
    async with store.db.write() as conn:
        await conn.execute("UPDATE users SET failed_logins = 100000")
    with pytest.raises(AuthError):
        await store.authenticate("alice", "bad", 0.0)
    with pytest.raises(ThrottledError) as th:
        await store.authenticate("alice", "bad", 0.0)
    assert th.value.retry_after == 300.0


async def test_unknown_names_are_throttled_like_real_ones(store: Store) -> None:
    """A lockout must not tell an attacker which names have accounts."""
    await store.add_user("alice", "secret")
    outcomes: dict[str, list[str]] = {}
    for name in ("alice", "ghost"):
        outcomes[name] = []
        for now in (0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.0):
            try:
                await store.authenticate(name, "wrong", now)
            except ThrottledError as exc:
                outcomes[name].append(f"throttled {exc.retry_after}")
            except AuthError as exc:
                outcomes[name].append(str(exc))
    assert outcomes["alice"] == outcomes["ghost"]
    assert outcomes["ghost"][4] == "throttled 1.0"


async def test_tracked_unknown_names_are_bounded(store: Store) -> None:
    bounded = Store(store.db, ServerSettings(max_tracked_unknown_logins=2))
    for name in ("a1", "a2", "a3"):
        with pytest.raises(AuthError):
            await bounded.authenticate(name, "x", 0.0)
    assert len(bounded._unknown) == 2 and "a1" not in bounded._unknown  # oldest unlocked


async def test_rehash_on_login(store: Store) -> None:
    uid = await store.add_user("alice", "secret")
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.ID).hash("secret")
    async with store.db.write() as conn:
        await conn.execute("UPDATE users SET password_hash = $1", weak)
    assert await store.authenticate("alice", "secret", 0.0) == uid
    async with store.db.read() as conn:
        stored = await conn.fetchval("SELECT password_hash FROM users")
    assert stored != weak
    assert not passwords.needs_rehash(stored)
    assert await store.authenticate("alice", "secret", 0.0) == uid


async def test_database_errors_do_not_quote_parameters(store: Store) -> None:
    await store.add_user("alice", "pw")
    with pytest.raises(ConflictError) as info:
        async with store.db.write() as conn:
            await conn.execute(
                "INSERT INTO users (name, password_hash) VALUES ($1, $2)", "alice", "HASH-SECRET"
            )
    assert "HASH-SECRET" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


# -- rooms -------------------------------------------------------------------


async def test_rooms(store: Store) -> None:
    alice = await store.add_user("alice", "pw")
    bob = await store.add_user("bob", "pw")
    lobby = await store.create_room(alice, "lobby", 5)
    assert re.fullmatch(r"[0-9a-f]{16}", lobby.id)
    assert (lobby.name, lobby.owner_id, lobby.owner_name) == ("lobby", alice, "alice")
    assert await store.get_room(lobby.id) == lobby
    # Names are per owner.
    bobs = await store.create_room(bob, "lobby", 5)
    attic = await store.create_room(alice, "attic", 5)
    assert await store.list_rooms() == [attic, lobby, bobs]
    assert await store.list_rooms(alice) == [attic, lobby]
    assert await store.list_rooms(bob) == [bobs]
    await store.delete_room(lobby.id)
    with pytest.raises(NotFoundError, match=r"^no such room$"):
        await store.get_room(lobby.id)
    with pytest.raises(NotFoundError, match=r"^no such room$"):
        await store.delete_room(lobby.id)
    assert await store.list_rooms(alice) == [attic]


async def test_room_limit_and_duplicate(store: Store) -> None:
    alice = await store.add_user("alice", "pw")
    await store.create_room(alice, "one", 2)
    with pytest.raises(AlreadyExistsError, match=r"^you already have a room named one$"):
        await store.create_room(alice, "one", 2)
    await store.create_room(alice, "two", 2)
    with pytest.raises(LimitError, match=r"^user already owns 2 rooms \(the limit\)$"):
        await store.create_room(alice, "three", 2)
    assert len(await store.list_rooms(alice)) == 2


async def test_room_bad_input(store: Store) -> None:
    alice = await store.add_user("alice", "pw")
    for name in ["", " lobby", "x" * 65, "a\tb"]:
        with pytest.raises(StoreError, match=r"^room name must"):
            await store.create_room(alice, name, 5)
    with pytest.raises(NotFoundError):
        await store.create_room(alice + 1000, "lobby", 5)
    with pytest.raises(NotFoundError):
        await store.get_room("0123456789abcdef")


async def test_removing_user_deletes_rooms(store: Store) -> None:
    alice = await store.add_user("alice", "pw")
    bob = await store.add_user("bob", "pw")
    room = await store.create_room(alice, "lobby", 5)
    kept = await store.create_room(bob, "lobby", 5)
    await store.remove_user("alice")
    with pytest.raises(NotFoundError):
        await store.get_room(room.id)
    assert await store.list_rooms() == [kept]


async def test_room_bitrate_cap(store: Store) -> None:
    alice = await store.add_user("alice", "pw")
    capped = await store.create_room(alice, "capped", 5, max_bitrate=16_000)
    free = await store.create_room(alice, "free", 5)
    assert capped.max_bitrate == 16_000
    assert free.max_bitrate is None
    assert await store.get_room(capped.id) == capped
    assert (await store.get_room(free.id)).max_bitrate is None
    assert await store.list_rooms(alice) == [capped, free]
    for edge in (6_000, 510_000):
        room = await store.create_room(alice, f"edge {edge}", 5, max_bitrate=edge)
        assert (await store.get_room(room.id)).max_bitrate == edge


@pytest.mark.parametrize("cap", [0, 1, 5_999, 510_001, -16_000])
async def test_room_bad_bitrate_cap(store: Store, cap: int) -> None:
    alice = await store.add_user("alice", "pw")
    with pytest.raises(
        StoreError,
        match=rf"^room bitrate cap must be 6000\.\.510000 bit/s \(or none\), got {cap}$",
    ):
        await store.create_room(alice, "capped", 5, max_bitrate=cap)
    assert await store.list_rooms() == []


async def test_database_refuses_bad_bitrate_cap(store: Store) -> None:
    """The CHECK constraint holds even for writes that bypass the store's own check."""
    alice = await store.add_user("alice", "pw")
    with pytest.raises(ConflictError):
        async with store.db.write() as conn:
            await conn.execute(
                "INSERT INTO rooms (id, name, owner_id, max_bitrate) VALUES ($1, $2, $3, $4)",
                "0123456789abcdef",
                "r",
                alice,
                5_999,
            )
    assert await store.list_rooms() == []


async def test_join_tokens_and_bans_belong_to_their_room(store: Store) -> None:
    alice = await store.add_user("alice", "correct horse battery")
    await store.add_user("eve", "correct horse battery")
    room = await store.create_room(alice, "friends", max_rooms=5)
    other = await store.create_room(alice, "other", max_rooms=5)
    assert room.token_hash is None  # a room has no token until its owner sets one
    await store.set_room_token(room.id, b"h" * 32)
    assert (await store.get_room(room.id)).token_hash == b"h" * 32
    assert (await store.get_room(other.id)).token_hash is None

    eve = await store.ban(room.id, "eve")
    assert await store.ban(room.id, "EVE") == eve  # again is no error; names ignore case
    assert await store.is_banned(room.id, eve)
    assert not await store.is_banned(other.id, eve)
    assert await store.ban_counts() == {room.id: 1}
    with pytest.raises(NotFoundError, match="no account named mallory"):
        await store.ban(room.id, "mallory")
    with pytest.raises(NotFoundError):
        await store.set_room_token("0" * 16, b"h" * 32)
    assert await store.bans(room.id, 10) == (["eve"], 1)
    assert await store.bans(other.id, 10) == ([], 0)
    # Unban: by any spelling, once; the account joins again.
    assert await store.unban(room.id, "Eve") == "eve"
    assert not await store.is_banned(room.id, eve)
    for user, why in (("eve", "eve is not banned"), ("mallory", "no account named mallory")):
        with pytest.raises(AccountNotFoundError, match=why):
            await store.unban(room.id, user)
    await store.ban(room.id, "eve")

    # A deleted room takes its bans with it; so does a removed account.
    await store.ban(other.id, "eve")
    await store.delete_room(room.id)
    assert await store.ban_counts() == {other.id: 1}
    await store.remove_user("eve")
    assert await store.ban_counts() == {}
