"""The server's control sessions, in process, driven by the real client."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bangor.client.control import ControlClient
from bangor.errors import AuthError, CloseCode, ConnectError, RefusedError
from bangor.server.app import Server, open_server
from bangor.server.store import database_url
from bangor.settings import ServerSettings
from bangor.wire import control as msg
from bangor.wire.framing import encode_frame

PASSWORD = "pw-for-tests"


async def make_server(tmp_path: Path, **limits: int) -> Server:
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


async def login(server: Server, user: str) -> ControlClient:
    client = await ControlClient.connect(*server.address)
    client.start()
    await client.login(user, PASSWORD, user)
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
    alice.send_chat("still here?")  # alice's session is untouched
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
    alice.send_chat("too early")  # refused: not in a room yet
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


async def test_unauthenticated_connections_are_bounded(tmp_path: Path) -> None:
    server = await make_server(tmp_path, max_unauthenticated=1)
    try:
        _, idle_writer = await asyncio.open_connection(*server.address)  # says nothing
        await until(lambda: server.unauthenticated == 1)
        with pytest.raises(ConnectError):
            await login(server, "alice")
        idle_writer.close()
        await idle_writer.wait_closed()
        await until(lambda: server.unauthenticated == 0)
        alice = await login(server, "alice")  # with the idler gone there is room again
        bob_conn = await ControlClient.connect(*server.address)  # counts while logging in
        bob_conn.start()
        await bob_conn.login("bob", PASSWORD, "bob")  # logged-in sessions no longer count
        await alice.leave()
        await bob_conn.leave()
    finally:
        await server.close()
