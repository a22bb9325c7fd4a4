"""The client's asyncio shell over its ControlSession, against a server session in memory
(an asyncio.StreamReader fed by hand, a writer that keeps what it is given; no sockets)."""

from __future__ import annotations

import asyncio

import pytest

from bangor.client.control import ControlClient, refusal
from bangor.errors import (
    AuthError,
    CloseCode,
    ConnectError,
    DroppedError,
    ExitCode,
    MovedError,
    RefusedError,
    RemoteProtocolError,
)
from bangor.settings import ClientSettings
from bangor.wire import control as msg
from bangor.wire.noise import generate_static_key
from bangor.wire.session import ControlSession, RequestReceived, Role, State

SERVER_KEY = bytes(range(1, 33))
WELCOME = msg.Welcome(7, "alice", "0.1.0", bytes(32))


class Reader(asyncio.StreamReader):
    """A stream that fails a read after the end was read (at EOF reads return at once:
    a loop that kept reading would never yield)."""

    ended = False

    async def read(self, n: int = -1) -> bytes:
        assert not self.ended, "read again after the end of the stream"
        data = await super().read(n)
        self.ended = not data
        return data


class Writer:
    """What the client writes, kept for the server session."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def take(self) -> bytes:
        out = bytes(self.data)
        self.data.clear()
        return out

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    async def drain(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass


class Wire:
    """A ControlClient and a server ControlSession joined in memory."""

    def __init__(self, settings: ClientSettings | None = None) -> None:
        settings = settings or ClientSettings()
        self.reader = Reader()
        self.writer = Writer()
        session = ControlSession(
            Role.CLIENT,
            generate_static_key(),
            ping_interval=settings.ping_interval,
            dead_after=settings.dead_after,
        )
        self.client = ControlClient(self.reader, self.writer, session, settings)  # type: ignore[arg-type]
        self.server = ControlSession(Role.SERVER, SERVER_KEY)

    def up(self) -> list[msg.ClientMessage]:
        """Carry what the client wrote to the server; the requests it delivered."""
        self.server.receive_data(self.writer.take(), 0.0)
        delivered = []
        while (event := self.server.next_event()) is not None:
            if isinstance(event, RequestReceived):
                delivered.append(event.message)
        return delivered

    def down(self) -> None:
        self.reader.feed_data(self.server.data_to_send())

    async def connect(self) -> None:
        handshake = asyncio.ensure_future(self.client._handshake())
        await asyncio.sleep(0)  # message 1 is written
        self.up()
        self.down()
        await handshake
        self.up()  # message 3
        self.client.start()

    async def login(self) -> msg.Welcome:
        await self.connect()
        login = asyncio.ensure_future(self.client.login("alice", "pw", "alice"))
        await asyncio.sleep(0)
        assert [type(m) for m in self.up()] == [msg.Hello]
        self.server.send(WELCOME)
        self.down()
        return await asyncio.wait_for(login, 5)


async def test_requests_are_resolved_from_the_session_s_events() -> None:
    wire = Wire()
    assert await wire.login() == WELCOME
    assert wire.client.logged_in and wire.client.server_fingerprint
    join = asyncio.ensure_future(wire.client.join_room("0123456789abcdef"))
    await asyncio.sleep(0)
    wire.up()
    refusal = msg.Error(5, "no such room", ref="join")
    wire.server.send(refusal)
    wire.down()
    with pytest.raises(RefusedError, match="no such room"):
        await asyncio.wait_for(join, 5)
    assert wire.client.closed is None  # a refusal, not the end


async def test_a_fatal_error_fails_what_waits_and_ends_the_session() -> None:
    wire = Wire()
    await wire.connect()
    login = asyncio.ensure_future(wire.client.login("alice", "wrong", "alice"))
    await asyncio.sleep(0)
    wire.up()
    wire.server.fail(CloseCode.AUTH_FAILED, "wrong user name or password", ref="hello")
    wire.down()
    with pytest.raises(AuthError):
        await asyncio.wait_for(login, 5)
    assert isinstance(wire.client.closed, AuthError)
    assert isinstance(await asyncio.wait_for(wire.client.events.get(), 5), AuthError)


@pytest.mark.parametrize("logged_in", [False, True])
async def test_the_server_closing_ends_the_session(logged_in: bool) -> None:
    wire = Wire()
    if logged_in:
        await wire.login()
    else:
        await wire.connect()
    wire.reader.feed_eof()
    error = await asyncio.wait_for(wire.client.events.get(), 5)
    # Before welcome the server may have shed us under load: worth another try.
    assert type(error) is (ConnectError if logged_in else DroppedError)
    assert str(error) == "server closed the connection"


async def test_the_read_loop_ends_at_eof_after_our_bye() -> None:
    wire = Wire()
    await wire.login()
    wire.client._send(msg.Bye())  # the session ended here; the server then closes
    assert wire.client.session.state is State.CLOSING
    wire.reader.feed_eof()
    assert wire.client._reader_task is not None
    await asyncio.wait_for(wire.client._reader_task, 5)  # not a loop on empty reads


async def test_a_silent_server_is_found_dead_by_the_timer() -> None:
    wire = Wire(ClientSettings(ping_interval=0.02, dead_after=0.05))
    await wire.login()
    error = await asyncio.wait_for(wire.client.events.get(), 5)
    assert isinstance(error, ConnectError) and str(error) == "the server stopped answering"
    assert wire.writer.closed
    assert [type(m) for m in wire.up()] == []  # pings only (answered inside the session)


@pytest.mark.parametrize(
    ("location", "where"),
    [("10.0.0.2:7878", ("10.0.0.2", 7878)), ("[::1]:7878", ("::1", 7878))],
)
def test_moved_names_the_node_to_go_to(location: str, where: tuple[str, int]) -> None:
    error = refusal(msg.Error(int(CloseCode.MOVED), "moved", True, "join", location=location))
    assert isinstance(error, MovedError) and (error.host, error.port) == where
    assert error.exit_code == ExitCode.UNREACHABLE  # like a server gone: reconnecting helps


@pytest.mark.parametrize("location", ["", "nowhere", ":7878", "host:0", "host:99999", "h:x"])
def test_a_bad_move_is_the_servers_fault(location: str) -> None:
    error = refusal(msg.Error(int(CloseCode.MOVED), "moved", True, "join", location=location))
    assert isinstance(error, RemoteProtocolError) and "bad address" in str(error)
