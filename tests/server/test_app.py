"""The server's control sessions, in process, driven by the real client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import msgspec
import pytest

from bangor.client.control import ControlClient
from bangor.errors import (
    AuthError,
    BadNameError,
    BusyError,
    CloseCode,
    ConnectError,
    RefusedError,
    ServerGoneError,
    StoreUnavailableError,
)
from bangor.server import database
from bangor.server.app import Connection, Server, open_server
from bangor.server.limits import Kind
from bangor.server.store import Store, database_url
from bangor.settings import ServerSettings
from bangor.wire import control as msg
from bangor.wire.framing import encode_frame
from bangor.wire.media import HopSealer, PacketType, derive_media_keys

PASSWORD = "pw-for-tests"


async def make_server(tmp_path: Path, **limits: float | bool) -> Server:
    server = await open_server(
        tmp_path / "data", database_url(tmp_path / "data", None), ServerSettings(**limits)
    )
    for name in ("alice", "bob", "carol"):
        await server.store.add_user(name, PASSWORD)
    await server.start("127.0.0.1", 0)
    return server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = await make_server(tmp_path, max_members_per_room=2)
    yield srv
    await srv.close()


async def login(server: Server, user: str, nick: str | None = None) -> ControlClient:
    client = await ControlClient.connect(*server.address)
    client.start()
    await client.login(user, PASSWORD, user if nick is None else nick)
    return client


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until the in-process server reaches a state (bounded)."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0)


async def next_message(client: ControlClient) -> object:
    return await asyncio.wait_for(client.events.get(), 5)


async def test_bad_frame_after_login_closes_only_that_session(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob = await login(server, "alice"), await login(server, "bob")
    room = await alice.create_room("r")
    await alice.join_room(room.room_id)
    await bob.join_room(room.room_id)
    assert isinstance(await next_message(alice), msg.MemberJoined)
    bob.writer.write(encode_frame(b"\x00" * 40))  # not a valid Noise transport message
    assert isinstance(await next_message(bob), ConnectError)
    assert isinstance(await next_message(alice), msg.MemberLeft)
    alice.send_chat(b"still here?")  # alice's session is untouched
    carol = await login(server, "carol")
    await carol.join_room(room.room_id)
    assert isinstance(await next_message(alice), msg.MemberJoined)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    for client in (alice, carol):
        await client.leave()


async def test_bad_room_name_is_refused_not_fatal(server: Server) -> None:
    alice = await login(server, "alice")
    with pytest.raises(RefusedError) as refused:
        await alice.create_room("bad\x07name")
    assert refused.value.code == CloseCode.NOT_ALLOWED
    assert (await alice.create_room("good")).name == "good"
    await alice.leave()


@pytest.mark.parametrize("cap", [1, 5_999])
async def test_bitrate_cap_below_opus_range_is_refused(server: Server, cap: int) -> None:
    alice = await login(server, "alice")
    with pytest.raises(RefusedError) as refused:
        await alice.create_room("low", cap)
    assert refused.value.code == CloseCode.NOT_ALLOWED
    assert str(refused.value) == (
        f"room bitrate cap must be 6000..510000 bit/s (or none), got {cap}"
    )
    assert await server.store.list_rooms() == []
    # A refusal, not the end of the session.
    assert (await alice.create_room("low", 6_000)).name == "low"
    await alice.leave()


async def test_bitrate_cap_over_opus_range_is_a_protocol_error(server: Server) -> None:
    alice = await login(server, "alice")
    alice._send(msg.CreateRoom("high", 510_001))  # what the decoder bounds: fatal
    closed = await next_message(alice)
    assert isinstance(closed, RefusedError) and closed.code == CloseCode.PROTOCOL
    await alice.close()


async def test_joiners_learn_the_bitrate_cap(server: Server) -> None:
    alice, bob = await login(server, "alice"), await login(server, "bob")
    capped = await alice.create_room("capped", 16_000)
    free = await alice.create_room("free")
    assert (await alice.join_room(capped.room_id)).max_bitrate == 16_000
    assert (await bob.join_room(capped.room_id)).max_bitrate == 16_000
    assert (await bob.join_room(free.room_id)).max_bitrate == 0  # 0: no cap
    assert (await server.store.get_room(free.room_id)).max_bitrate is None
    for client in (alice, bob):
        await client.leave()


async def test_a_nick_is_made_unique_in_the_room_and_joined_says_which(server: Server) -> None:
    """Two sessions that ask for the nick "bob" (open mode: one account for everyone;
    here two devices of alice): the second is "bob2" in that room, as its own `joined`
    and the others' `member_joined` say; alone in another room it is "bob" again."""
    first, second = await login(server, "alice", "bob"), await login(server, "alice", "Bob")
    room = await first.create_room("r")
    other = await first.create_room("other")
    assert (await first.join_room(room.room_id)).you.nick == "bob"
    joined = await second.join_room(room.room_id)
    assert joined.you.nick == "Bob2"
    assert [m.nick for m in joined.members] == ["bob"]
    arrived = await next_message(first)
    assert isinstance(arrived, msg.MemberJoined) and arrived.member.nick == "Bob2"
    assert (await second.join_room(other.room_id)).you.nick == "Bob"
    for client in (first, second):
        await client.leave()


async def test_full_room_refusal_keeps_the_current_room(server: Server) -> None:
    alice, bob, carol = [await login(server, u) for u in ("alice", "bob", "carol")]
    full = await alice.create_room("full")
    await alice.join_room(full.room_id)
    await bob.join_room(full.room_id)
    other = await carol.create_room("other")
    await carol.join_room(other.room_id)
    with pytest.raises(RefusedError, match="room is full"):
        await carol.join_room(full.room_id)
    await bob.join_room(other.room_id)  # carol is still in "other" and sees bob arrive
    joined = await next_message(carol)
    assert isinstance(joined, msg.MemberJoined) and joined.member.user == "bob"
    for client in (alice, bob, carol):
        await client.leave()


async def test_refused_chat_does_not_answer_a_pending_request(server: Server) -> None:
    alice = await login(server, "alice")
    room = await alice.create_room("r")
    alice.send_chat(b"too early")  # refused: not in a room yet
    joined = await alice.join_room(room.room_id)  # the refusal must not land here
    assert joined.room_id == room.room_id
    refusal = await next_message(alice)
    assert isinstance(refusal, RefusedError) and "join a room" in str(refusal)
    await alice.leave()


async def test_wrong_password_and_session_limit(tmp_path: Path) -> None:
    server = await make_server(tmp_path, max_sessions=1)
    try:
        with pytest.raises(AuthError):
            await login(server, "nobody")
        alice = await login(server, "alice")
        with pytest.raises(RefusedError, match="server is full"):
            await login(server, "bob")
        await alice.leave()
    finally:
        await server.close()


async def test_a_full_table_evicts_the_idle_connection_not_the_newcomer(tmp_path: Path) -> None:
    server = await make_server(tmp_path, max_unauthenticated=1)
    try:
        idle_reader, idle_writer = await asyncio.open_connection(*server.address)  # says nothing
        await until(lambda: server.unauthenticated == 1)
        alice = await login(server, "alice")  # the newcomer gets in...
        assert await idle_reader.read() == b""  # ...and the idler was closed for it
        idle_writer.close()
        assert server.unauthenticated == 0  # logged-in sessions no longer count
        bob = await login(server, "bob")
        for client in (alice, bob):
            await client.leave()
    finally:
        await server.close()


async def test_a_connection_that_sends_nothing_is_closed_after_the_first_message_timeout(
    tmp_path: Path,
) -> None:
    server = await make_server(tmp_path, first_message_timeout=0.3, handshake_timeout=30)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        idle_reader, idle_writer = await asyncio.open_connection(*server.address)
        # One byte of the length prefix: no whole first message.
        idle_writer.write(b"\x00")
        alice = await login(server, "alice")  # real clients send theirs at once
        assert await asyncio.wait_for(idle_reader.read(), 10) == b""
        assert 0.3 <= loop.time() - started < 10
        idle_writer.close()
        alice.send_chat(b"x")  # alice's session is untouched: its refusal comes back
        assert isinstance(await next_message(alice), RefusedError)
        await alice.leave()
    finally:
        await server.close()


async def test_eviction_during_the_password_check_registers_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await make_server(tmp_path, max_unauthenticated_per_address=1)
    checking = asyncio.Event()
    answer = asyncio.Event()
    real_login = Connection.login

    async def slow_login(self: Connection, hello: msg.Hello) -> int:
        checking.set()
        await answer.wait()
        return await real_login(self, hello)

    try:
        monkeypatch.setattr(Connection, "login", slow_login)
        first = await ControlClient.connect(*server.address)
        first.start()
        pending = asyncio.ensure_future(first.login("alice", PASSWORD, "alice"))
        await checking.wait()
        monkeypatch.setattr(Connection, "login", real_login)
        bob = await login(server, "bob")  # needs alice's place: she is evicted mid-check
        with pytest.raises(ConnectError):
            await pending
        answer.set()  # the check ends now, right password and all
        await until(lambda: len(server.tasks) == 1)
        assert [c.user for c in server.connections.values()] == ["bob"]
        assert server.unauthenticated == 0
        await first.close()
        await bob.leave()
    finally:
        await server.close()


async def test_stopping_the_server_tells_clients_and_raises_nothing(tmp_path: Path) -> None:
    server = await make_server(tmp_path)
    loop = asyncio.get_running_loop()
    problems: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: problems.append(context))
    try:
        alice = await login(server, "alice")
        half_reader, half_writer = await asyncio.open_connection(*server.address)
        await until(lambda: server.unauthenticated == 1)
        await server.close()
        closed = await next_message(alice)
        assert isinstance(closed, ConnectError) and str(closed) == "the server is shutting down"
        assert await half_reader.read() == b""
        half_writer.close()
        for _ in range(3):  # the streams' done-callbacks run on the next iterations
            await asyncio.sleep(0)
        assert problems == []
        await alice.close()
    finally:
        loop.set_exception_handler(None)


async def test_nothing_a_client_sends_before_login_reaches_the_log_raw(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bangor.server")
    server = await make_server(tmp_path, open=True)
    evil = "x\n\x1b[2K\rbangor.server: forged line\x1b[31m"
    try:
        client = await ControlClient.connect(*server.address)
        client.start()
        client.noise.send(msgspec.msgpack.encode({"t": evil}))  # garbage with a bad tag
        client.writer.write(client.noise.data_to_send())
        closed = await next_message(client)
        assert isinstance(closed, RefusedError) and closed.code == CloseCode.PROTOCOL
        await client.close()
        client = await ControlClient.connect(*server.address)
        client.start()
        with pytest.raises(AuthError):  # an invalid name, even in open mode: logged escaped
            await client.login(evil, PASSWORD, "nick")  # (a bad nick is refused before)
        await client.close()
    finally:
        await server.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "bangor.server"]
    assert any(repr(evil)[1:-1] in m and "protocol error" in m for m in messages), messages
    assert not [m for m in messages if any(c in m for c in "\n\r\x1b")]


async def test_peer_messages_stay_inside_the_room(server: Server) -> None:
    alice, bob, carol = [await login(server, u) for u in ("alice", "bob", "carol")]
    room = await alice.create_room("r")
    other = await carol.create_room("other")
    await alice.join_room(room.room_id)
    joined = await bob.join_room(room.room_id)
    await carol.join_room(other.room_id)
    assert isinstance(await next_message(alice), msg.MemberJoined)
    alice_id = joined.members[0].session_id
    bob_id = joined.you.session_id
    carol_id = next(c.session_id for c in server.connections.values() if c.user == "carol")
    carol.send_peer(alice_id, b"from another room")  # dropped: not in alice's room
    bob.send_peer(bob_id, b"to myself")  # dropped: not relayed back
    bob.send_peer(carol_id, b"to another room")  # dropped
    bob.send_peer(alice_id, b"opaque")
    got = await next_message(alice)
    assert got == msg.PeerReceived(bob_id, b"opaque")
    bob.send_chat(b"sealed chat")
    assert await next_message(alice) == msg.Chat(bob_id, b"sealed chat")
    assert alice.events.empty() and bob.events.empty() and carol.events.empty()
    for client in (alice, bob, carol):
        await client.leave()


async def test_media_keys_do_not_come_from_the_public_handshake_hash(server: Server) -> None:
    """A passive observer can compute the Noise handshake hash; hop keys must not follow."""
    client = await ControlClient.connect(*server.address)
    client.start()
    welcome = await client.login("alice", PASSWORD, "alice")
    addr = ("127.0.0.1", 9)
    for secret, answered in ((client.handshake_hash, False), (welcome.media_secret, True)):
        sealer = HopSealer(derive_media_keys(secret).client_to_server, welcome.session_id)
        server.relay.datagram_received(sealer.seal(PacketType.KEEPALIVE, b"x" * 8), addr, 0.0)
        out = server.relay.datagrams_to_send()
        assert bool(out) is answered
    assert server.relay.stats.dropped_auth == 1
    await client.leave()


@pytest.mark.parametrize("open_mode", [False, True])
async def test_nicknames_and_user_names_that_drive_terminals_never_get_in(
    tmp_path: Path, open_mode: bool
) -> None:
    """Issue 12, finding 5: a nickname is shown on every member's screen."""
    server = await make_server(tmp_path, open=open_mode)
    try:
        alice = await login(server, "alice")
        room = await alice.create_room("r")
        await alice.join_room(room.room_id)
        for nick in ("\x1b[2K\rbob verified: safety number 11111", "bob\u202e", "a\u2028b"):
            client = await ControlClient.connect(*server.address)
            client.start()
            with pytest.raises(BadNameError, match="nickname must not contain control, format"):
                await client.login("bob", PASSWORD, nick)
            await client.close()
        for user in ("bob\x1b[8m", "bob\u200b", "bob\n"):  # names are [A-Za-z0-9_.-] always
            client = await ControlClient.connect(*server.address)
            client.start()
            with pytest.raises(AuthError):
                await client.login(user, PASSWORD, "")
            await client.close()
        # The server went on serving: a fine nickname, in any script, gets in and is shown.
        bob = await login(server, "bob", nick="Zoë 🎧 [bold]")
        await bob.join_room(room.room_id)
        joined = await next_message(alice)
        assert isinstance(joined, msg.MemberJoined) and joined.member.nick == "Zoë 🎧 [bold]"
        for client in (alice, bob):
            await client.leave()
    finally:
        await server.close()


# --- rate limits (server/limits.py): churn and floods from a member ------------------


class Clock:
    """The server's clock for rate limits, set by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def limited_server(tmp_path: Path, **limits: float) -> AsyncIterator[tuple[Server, Clock]]:
    server = await make_server(tmp_path, **limits)  # type: ignore[arg-type]
    clock = Clock()
    server.clock = clock
    try:
        yield server, clock
    finally:
        await server.close()


async def leave_room(client: ControlClient) -> msg.ServerMessage:
    return await client.request(msg.LeaveRoom())


async def alice_then_bob_in_a_room(
    server: Server,
) -> tuple[ControlClient, ControlClient, msg.RoomJoined]:
    """alice joins a new room, then bob; alice has seen bob arrive. Returns alice's
    ``joined``."""
    alice, bob = await login(server, "alice"), await login(server, "bob")
    room = await alice.create_room("r")
    joined = await alice.join_room(room.room_id)
    await bob.join_room(room.room_id)
    assert isinstance(await next_message(alice), msg.MemberJoined)
    return alice, bob, joined


async def test_joins_over_the_rate_are_refused_and_leaving_always_works(tmp_path: Path) -> None:
    async with limited_server(tmp_path, join_burst=2, join_rate=1.0) as (server, clock):
        alice, bob, joined = await alice_then_bob_in_a_room(server)
        await alice.join_room(joined.room_id)  # the same room again: a join all the same
        with pytest.raises(RefusedError) as refused:
            await alice.join_room(joined.room_id)
        assert refused.value.code == CloseCode.THROTTLED
        assert str(refused.value) == "too many joins; wait a moment"
        assert alice.closed is None  # not fatal: the session is still in its room
        assert isinstance(await leave_room(alice), msg.RoomLeft)  # leaving is never limited
        seen = [await next_message(bob) for _ in range(3)]
        assert [type(m) for m in seen] == [msg.MemberLeft, msg.MemberJoined, msg.MemberLeft]
        clock.now += 1.0  # one join a second
        assert (await alice.join_room(joined.room_id)).room_id == joined.room_id
        for client in (alice, bob):
            await client.leave()


async def test_an_account_shares_its_join_budget_over_its_sessions(tmp_path: Path) -> None:
    async with limited_server(tmp_path, join_burst=5, user_join_burst=3) as (server, _):
        first, second, bob = [await login(server, u) for u in ("alice", "alice", "bob")]
        room = await first.create_room("r")
        for client in (first, second, first):
            await client.join_room(room.room_id)
        with pytest.raises(RefusedError, match="too many joins"):
            await second.join_room(room.room_id)
        assert (await bob.join_room(room.room_id)).room_id == room.room_id  # bob has his own
        for client in (first, second, bob):
            await client.leave()


async def test_a_session_that_keeps_joining_is_closed_and_the_room_goes_on(
    tmp_path: Path,
) -> None:
    async with limited_server(tmp_path, join_burst=1, join_rate=0.01) as (server, clock):
        alice, bob, room = await alice_then_bob_in_a_room(server)
        for step in range(5):  # over the rate for 4 s: refused each time, not closed
            clock.now += 1.0 if step else 0.0
            with pytest.raises(RefusedError, match="too many joins; wait"):
                await alice.join_room(room.room_id)
        clock.now += 1.0  # 5 s over the rate without a pause
        with pytest.raises(RefusedError) as closed:
            await alice.join_room(room.room_id)
        assert closed.value.code == CloseCode.THROTTLED
        assert str(closed.value) == "too many joins for too long; session closed"
        assert isinstance(await next_message(alice), RefusedError)  # the session ended
        assert alice.closed is not None
        assert isinstance(await next_message(bob), msg.MemberLeft)
        bob.send_chat(b"still here")  # bob's session is untouched
        carol = await login(server, "carol")
        await carol.join_room(room.room_id)
        assert isinstance(await next_message(bob), msg.MemberJoined)
        for client in (bob, carol):
            await client.leave()
        await alice.close()


async def test_peer_messages_over_the_rate_are_dropped_then_the_flooder_closed(
    tmp_path: Path,
) -> None:
    async with limited_server(tmp_path, peer_burst=3, peer_rate=0.01) as (server, clock):
        alice, bob, joined = await alice_then_bob_in_a_room(server)
        alice_id = joined.you.session_id
        for i in range(10):
            bob.send_peer(alice_id, b"flood %d" % i)
        bob.send_chat(b"marker")  # chat has its own budget: it passes, after the floods
        got = [await next_message(alice) for _ in range(4)]
        bob_id = bob.welcome.session_id if bob.welcome else 0
        assert got[:3] == [msg.PeerReceived(bob_id, b"flood %d" % i) for i in range(3)]
        assert isinstance(got[3], msg.Chat)  # the 7 others were dropped, without a reply
        assert bob.events.empty()
        bob_conn = next(c for c in server.connections.values() if c.user == "bob")
        assert bob_conn.limits is not None and bob_conn.limits.refused[Kind.PEER] == 7
        clock.now += ServerSettings().throttle_close_after  # still flooding 5 s later
        bob.send_peer(alice_id, b"more")
        closed = await next_message(bob)
        assert isinstance(closed, RefusedError) and closed.code == CloseCode.THROTTLED
        assert str(closed) == "too many peer messages for too long; session closed"
        assert isinstance(await next_message(alice), msg.MemberLeft)
        await alice.leave()
        await bob.close()


async def test_chat_over_the_rate_is_refused_and_the_call_goes_on(tmp_path: Path) -> None:
    async with limited_server(tmp_path, chat_burst=2, chat_rate=0.5) as (server, _):
        alice, bob, _ = await alice_then_bob_in_a_room(server)
        for line in (b"one", b"two", b"three"):
            bob.send_chat(line)
        bob_id = bob.welcome.session_id if bob.welcome else 0
        got = [await next_message(alice) for _ in range(2)]
        assert got == [msg.Chat(bob_id, b"one"), msg.Chat(bob_id, b"two")]
        refused = await next_message(bob)
        # A refusal the call survives (a RefusedError event), not a failed login.
        assert isinstance(refused, RefusedError) and refused.code == CloseCode.THROTTLED
        assert str(refused) == "too many chat messages; not sent"
        assert bob.closed is None and alice.events.empty()
        for client in (alice, bob):
            await client.leave()


async def reopen(tmp_path: Path, port: int = 0) -> Server:
    """The same server run again: same data directory, so the same key and accounts."""
    server = await open_server(tmp_path / "data", database_url(tmp_path / "data", None))
    await server.start("127.0.0.1", port)
    return server


async def resume_login(server: Server, user: str, ticket: bytes) -> msg.Welcome:
    client = await ControlClient.connect(*server.address)
    client.start()
    welcome = await client.login(user, PASSWORD, user, ticket)
    await client.leave()
    return welcome


async def test_a_restarted_server_gives_a_session_its_id_back(tmp_path: Path) -> None:
    first = await make_server(tmp_path)
    alice = await login(first, "alice")
    assert alice.welcome is not None
    sid, ticket = alice.welcome.session_id, alice.welcome.resume
    assert len(ticket) == msg.RESUME_TICKET_SIZE
    await alice.leave()
    await until(lambda: sid not in first.connections)
    # The same run saw the session leave (and so did its room): the id is not given back.
    assert (await resume_login(first, "alice", ticket)).session_id != sid
    bob = await login(first, "bob")
    first.restarting = True
    await first.close()
    goodbye = await next_message(bob)
    assert isinstance(goodbye, ServerGoneError) and str(goodbye) == "the server is restarting"
    assert goodbye.restart_in == 0.25  # one client: the shortest window
    second = await reopen(tmp_path)
    try:
        forged = bytearray(ticket)
        forged[-1] ^= 1
        assert (await resume_login(second, "alice", bytes(forged))).session_id != sid
        assert (await resume_login(second, "bob", ticket)).session_id != sid  # alice's, not bob's
        back = await login(second, "alice")  # without the ticket: any id
        await back.leave()
        client = await ControlClient.connect(*second.address)
        client.start()
        welcome = await client.login("alice", PASSWORD, "alice", ticket)
        assert welcome.session_id == sid and welcome.resume != ticket  # this run's ticket
        # Held: a second claim to it gets another id.
        assert (await resume_login(second, "alice", ticket)).session_id != sid
        await client.leave()
    finally:
        await second.close()


async def test_a_going_away_server_says_so(server: Server) -> None:
    alice = await login(server, "alice")
    await server.close()
    goodbye = await next_message(alice)
    assert isinstance(goodbye, ServerGoneError) and goodbye.restart_in is None


async def test_a_login_the_database_cannot_answer_is_busy_and_logged_as_such(
    server: Server, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def away(*args: object) -> int:
        raise StoreUnavailableError("database unreachable: connection refused")

    monkeypatch.setattr(server.store, "log_in", away)
    client = await ControlClient.connect(*server.address)
    client.start()
    with pytest.raises(BusyError) as refused:
        await client.login("alice", PASSWORD, "alice")
    assert str(refused.value) == "accounts unavailable, try again"
    assert refused.value.retry_after == ServerSettings().store_retry_after
    await client.close()
    logged = [r.getMessage() for r in caplog.records]
    assert any(
        "accounts database unreachable (database unreachable: connection refused)" in m
        for m in logged
    ), logged
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- room management (PROTOCOL.md 3.15) ------------------------------------------------


@pytest.fixture
async def roomy(tmp_path: Path) -> AsyncIterator[Server]:
    """Management requests are metered with joins: these tests make many at once."""
    srv = await make_server(tmp_path, join_burst=50, user_join_burst=50)
    yield srv
    await srv.close()


async def test_only_the_owner_manages_a_room_and_tokens_guard_the_door(roomy: Server) -> None:
    server = roomy
    alice, bob = await login(server, "alice"), await login(server, "bob")
    room = (await alice.create_room("friends")).room_id
    token = bytes(range(32))
    await alice.rotate_room(room, token)
    for attempt in (
        bob.rotate_room(room, bytes(32)),
        bob.delete_room(room),
        bob.kick(room, user="alice"),
    ):
        with pytest.raises(RefusedError, match="only the room's owner") as info:
            await attempt
        assert info.value.code == CloseCode.NOT_ALLOWED
    assert [r.name for r in await bob.list_rooms()] == []  # bob owns nothing
    # No token, or another, reads as no such room; the right one opens it.
    for wrong in (b"", bytes(32)):
        with pytest.raises(RefusedError, match="no such room") as info:
            await bob.join_room(room, wrong)
        assert info.value.exit_code == 4
    await bob.join_room(room, token)
    [listed] = await alice.list_rooms()
    assert (listed.name, listed.owner, listed.members) == ("friends", "alice", 1)
    # The owner may not delete the room from inside it, nor kick or ban herself.
    await alice.join_room(room, token)
    with pytest.raises(RefusedError, match="leave the room"):
        await alice.delete_room(room)
    with pytest.raises(RefusedError, match="cannot remove yourself"):
        assert alice.welcome is not None
        await alice.kick(room, session_id=alice.welcome.session_id)
    with pytest.raises(RefusedError, match="own account"):
        await alice.kick(room, user="alice", ban=True)
    for client in (alice, bob):
        await client.leave()


async def test_a_rotation_reaches_every_member_and_a_kick_ends_only_that_session(
    roomy: Server,
) -> None:
    server = roomy
    alice, bob, carol = [await login(server, u) for u in ("alice", "bob", "carol")]
    room = (await alice.create_room("friends")).room_id
    for client in (alice, bob, carol):
        await client.join_room(room)  # no token set yet: anyone may join, as before
    await alice.rotate_room(room, b"t" * 32)
    for client in (alice, bob, carol):  # after the member_joined pushes each had
        while (pushed := await next_message(client)) != msg.TokenChanged(b"t" * 32):
            assert isinstance(pushed, msg.MemberJoined)
    assert bob.welcome is not None and carol.welcome is not None
    kicked = await alice.kick(room, session_id=carol.welcome.session_id, ban=True)
    assert (kicked.user, kicked.banned) == ("carol", True)
    gone = await asyncio.wait_for(carol.events.get(), 5)
    assert isinstance(gone, RefusedError) and gone.code == CloseCode.REMOVED
    assert gone.exit_code == 4
    left = await next_message(bob)
    assert isinstance(left, msg.MemberLeft) and left.session_id == carol.welcome.session_id
    carol_again = await login(server, "carol")
    with pytest.raises(RefusedError, match="banned") as info:
        await carol_again.join_room(room, b"t" * 32)
    assert info.value.code == CloseCode.REMOVED
    # Delete: bob, still in the call, is told; the room is gone.
    outside = await login(server, "alice")
    await outside.delete_room(room)
    while isinstance(removed := await next_message(bob), msg.MemberLeft):
        pass  # alice, removed first
    assert isinstance(removed, RefusedError) and "deleted" in str(removed)
    assert await outside.list_rooms() == []
    for client in (alice, bob, carol, carol_again, outside):
        await client.leave()


async def test_an_owner_lifts_a_ban_and_names_accounts_that_are_not_there(
    roomy: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = roomy
    alice, bob, carol = [await login(server, u) for u in ("alice", "bob", "carol")]
    room = (await alice.create_room("friends")).room_id
    await alice.rotate_room(room, b"t" * 32)
    # Banning an account that does not exist says so (it read "no such room" before).
    with pytest.raises(RefusedError, match=r"^no account named mallory$") as info:
        await alice.kick(room, user="mallory", ban=True)
    assert info.value.code == CloseCode.NOT_ALLOWED
    await alice.kick(room, user="carol", ban=True)
    with pytest.raises(RefusedError, match="banned"):
        await carol.join_room(room, b"t" * 32)
    with pytest.raises(RefusedError, match="only the room's owner"):
        await bob.unban(room, "carol")
    for user, why in (("mallory", "no account named mallory"), ("bob", "bob is not banned")):
        with pytest.raises(RefusedError, match=f"^{why}") as info:
            await alice.unban(room, user)
        assert info.value.code == CloseCode.NOT_ALLOWED
    with pytest.raises(RefusedError, match="no such room"):
        await alice.unban("00" * 8, "carol")
    await alice.kick(room, user="bob", ban=True)
    assert await alice.list_bans(room) == msg.BanList(room, ["bob", "carol"], 0)
    monkeypatch.setattr(msg, "MAX_LISTED_BANS", 1)  # the rest are counted, not named
    assert await alice.list_bans(room) == msg.BanList(room, ["bob"], 1)
    monkeypatch.undo()
    with pytest.raises(RefusedError, match="only the room's owner"):
        await carol.list_bans(room)
    lifted = await alice.unban(room, "CAROL")  # any spelling that logs in to the account
    assert lifted == msg.MemberUnbanned(room, "carol")
    await carol.join_room(room, b"t" * 32)  # with the room's current token
    with pytest.raises(RefusedError, match="carol is not banned"):
        await alice.unban(room, "carol")
    assert await alice.list_bans(room) == msg.BanList(room, ["bob"], 0)
    for client in (alice, bob, carol):
        await client.leave()


async def test_a_login_in_any_case_is_the_account_as_stored(tmp_path: Path) -> None:
    """Issue 17 (6): the server names a session as its account is stored, and counts the
    sessions of one account whatever spelling logged them in."""
    server = await make_server(tmp_path, max_sessions_per_user=2)
    try:
        upper = await login(server, "ALICE", "A")
        assert upper.welcome is not None and upper.welcome.user == "alice"
        room = await upper.create_room("den")
        joined = await upper.join_room(room.room_id)
        assert (joined.you.user, joined.you.nick) == ("alice", "A")
        title = await login(server, "Alice")
        assert title.welcome is not None and title.welcome.user == "alice"
        with pytest.raises(RefusedError, match="too many sessions for this user"):
            await login(server, "alice")
        await title.leave()
        await upper.leave()
    finally:
        await server.close()


async def test_a_user_name_that_breaks_the_rule_is_told_so_before_any_password(
    server: Server,
) -> None:
    client = await ControlClient.connect(*server.address)
    client.start()
    with pytest.raises(AuthError, match=r"^user name must be .*\(U\+0430 CYRILLIC SMALL"):
        await client.login("p\u0430ypal", "", "nick")  # not PASSWORD_REQUIRED
    await client.close()


async def until_ended(client: ControlClient) -> Exception:
    """The error that ends ``client``'s session (other pushes before it are skipped)."""
    while not isinstance(event := await next_message(client), Exception):
        pass
    return event


async def removed_in_a_call(server: Server, remove: Callable[[], Awaitable[str]]) -> None:
    """erin and frank in frank's room; ``remove`` deletes erin as another process would:
    her session ends with "your account was removed", frank sees her leave and stays."""
    await server.store.add_user("erin", PASSWORD)
    await server.store.add_user("frank", PASSWORD)
    erin, frank = await login(server, "erin"), await login(server, "frank")
    room = await frank.create_room("call")
    await frank.join_room(room.room_id)
    await erin.join_room(room.room_id)
    assert isinstance(await next_message(frank), msg.MemberJoined)
    assert await remove() == "erin"
    ended = await until_ended(erin)
    assert isinstance(ended, AuthError) and str(ended) == "your account was removed"
    assert isinstance(await next_message(frank), msg.MemberLeft)
    assert [c.user for c in server.connections.values()] == ["frank"]
    joined = await frank.join_room(room.room_id)  # the call goes on, without erin
    assert joined.members == []
    await frank.leave()


async def test_an_account_removed_by_another_process_is_ended_on_sqlite(tmp_path: Path) -> None:
    """Issue 17 (21): `bangor user remove erin` left erin in the call with no word. SQLite
    has no notifications: the server checks its sessions' accounts periodically."""
    server = await make_server(tmp_path, account_check_interval=0.2)

    async def remove() -> str:
        other = await Store.open(database_url(tmp_path / "data", None))  # as `bangor user`
        try:
            return await other.remove_user("ERIN")
        finally:
            await other.close()

    try:
        await removed_in_a_call(server, remove)
    finally:
        await server.close()


@pytest.mark.postgres
async def test_an_account_removed_is_ended_at_once_on_a_single_postgresql_server(
    tmp_path: Path, pg_url: str
) -> None:
    """Not a cluster, and no periodic check: PostgreSQL's NOTIFY alone ends the session."""
    server = await open_server(tmp_path / "data", pg_url, ServerSettings(account_check_interval=0))
    await server.start("127.0.0.1", 0)

    async def remove() -> str:
        other = await Store.open(pg_url)
        try:
            return await other.remove_user("Erin")
        finally:
            await other.close()

    try:
        assert server.removals is not None
        await removed_in_a_call(server, remove)
    finally:
        await server.close()


async def test_the_account_check_is_one_query_and_keeps_live_accounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await make_server(tmp_path, account_check_interval=0)
    try:
        clients = [await login(server, name) for name in ("alice", "alice", "bob")]
        queries: list[str] = []
        run = database._SqliteConnection._run

        async def spy(
            self: database._SqliteConnection, sql: str, args: Sequence[object]
        ) -> tuple[list[database.Row], int]:
            queries.append(sql)
            return await run(self, sql, args)

        monkeypatch.setattr(database._SqliteConnection, "_run", spy)
        await server.check_accounts()
        selects = [query for query in queries if query.startswith("SELECT")]
        assert len(selects) == 1 and len(server.connections) == 3
        for client in clients:
            await client.leave()
    finally:
        await server.close()
