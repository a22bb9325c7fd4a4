"""The client's control session: TCP + Noise, requests and pushed events.

Requests (hello, create, join, leave) are answered in order by the server, so each
waits on a FIFO of futures; everything the server pushes (members, chat, errors not
tied to a request) lands in ``events``. A ping every ``ping_interval`` doubles as the
dead-server detector: no answer for ``dead_after`` seconds ends the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from dataclasses import dataclass, field

from bangor.errors import (
    AuthError,
    BadNameError,
    BangorError,
    BusyError,
    CloseCode,
    ConnectError,
    DroppedError,
    KeyPinError,
    PasswordRequiredError,
    ProtocolError,
    RefusedError,
    ThrottledError,
)
from bangor.settings import PROTOCOL_VERSION, ClientSettings
from bangor.wire import control as msg
from bangor.wire.noise import (
    HandshakeComplete,
    MessageReceived,
    NoiseSession,
    fingerprint,
    format_fingerprint,
    generate_static_key,
)

READ_SIZE = 65536
_REPLIES = (msg.Welcome, msg.RoomCreated, msg.RoomJoined, msg.RoomLeft)
_HELLO = msg.tag(msg.Hello)


def refusal(error: msg.Error) -> BangorError:
    """Turn a server Error into the exception the CLI maps to an exit code."""
    if error.code == CloseCode.AUTH_FAILED:
        return AuthError(error.message)
    if error.code == CloseCode.PASSWORD_REQUIRED:
        return PasswordRequiredError(error.message)
    if error.code == CloseCode.THROTTLED and error.ref == _HELLO:
        # A locked login; a refused join or chat is a RefusedError, the call goes on.
        return ThrottledError(error.message, error.retry_after)
    if error.code == CloseCode.BUSY:
        return BusyError(error.message, error.retry_after)
    if error.code == CloseCode.NOT_ALLOWED and error.ref == _HELLO:
        # All a hello carries besides the version and password is the names.
        return BadNameError(f"the server refused the name: {error.message}")
    # The server is going away or gave up on us: like losing the connection (exit 5).
    if error.code == CloseCode.SHUTDOWN:
        return ConnectError("the server is shutting down")
    if error.code == CloseCode.TIMEOUT:
        return ConnectError("the server closed the session: timed out")
    return RefusedError(error.code, error.message)


@dataclass
class ControlClient:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    noise: NoiseSession
    settings: ClientSettings
    server_fingerprint: bytes = b""
    handshake_hash: bytes = b""
    events: asyncio.Queue[msg.ServerMessage | BangorError] = field(default_factory=asyncio.Queue)
    # Requests awaiting their answer, oldest first, with the tag each was sent as.
    _pending: deque[tuple[str, asyncio.Future[msg.ServerMessage]]] = field(default_factory=deque)
    _reader_task: asyncio.Task[None] | None = None
    _ping_task: asyncio.Task[None] | None = None
    _last_heard: float = 0.0
    _nonce: itertools.count[int] = field(default_factory=itertools.count)
    closed: BangorError | None = None
    logged_in: bool = False
    welcome: msg.Welcome | None = None  # session id and media secret, once logged in
    rtt: float | None = None
    _ping_sent: dict[int, float] = field(default_factory=dict)

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        settings: ClientSettings | None = None,
    ) -> ControlClient:
        """Connect and finish the Noise handshake; the caller checks the fingerprint."""
        settings = settings or ClientSettings()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), settings.connect_timeout
            )
        except TimeoutError:
            raise ConnectError(f"cannot reach server {host}:{port}: timed out") from None
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise ConnectError(f"cannot reach server {host}:{port}: {reason.lower()}") from None
        # A throwaway static key: the server needs none from us (passwords log us in),
        # and the device identity key is kept for members, never shown to the server.
        noise = NoiseSession(initiator=True, static_private=generate_static_key())
        client = cls(reader, writer, noise, settings)
        try:
            await asyncio.wait_for(client._handshake(), settings.connect_timeout)
        except TimeoutError:
            writer.close()
            raise ConnectError(f"server {host}:{port} did not complete the handshake") from None
        except ProtocolError as exc:
            writer.close()
            raise ConnectError(f"handshake with {host}:{port} failed: {exc}") from None
        except (ConnectionError, OSError) as exc:
            writer.close()
            raise DroppedError(f"handshake with {host}:{port} failed: {exc}") from None
        return client

    async def _handshake(self) -> None:
        self.noise.initiate()
        self.writer.write(self.noise.data_to_send())
        while True:
            data = await self.reader.read(READ_SIZE)
            if not data:
                raise DroppedError("server closed the connection during the handshake")
            self.noise.receive_data(data, asyncio.get_running_loop().time())
            self.writer.write(self.noise.data_to_send())
            while (event := self.noise.next_event()) is not None:
                if isinstance(event, HandshakeComplete):
                    self.server_fingerprint = fingerprint(event.remote_static)
                    self.handshake_hash = event.handshake_hash
                    return

    def verify_fingerprint(self, expected: bytes) -> None:
        if self.server_fingerprint != expected:
            self.writer.close()
            raise KeyPinError(
                "WARNING: the server's key does not match the invite code "
                f"(expected {format_fingerprint(expected)}, got "
                f"{format_fingerprint(self.server_fingerprint)}). Someone may be "
                "intercepting the connection; not joining."
            )

    def start(self) -> None:
        """Start reading and pinging (after the fingerprint was checked)."""
        loop = asyncio.get_running_loop()
        self._last_heard = loop.time()
        self._reader_task = loop.create_task(self._read_loop())

    def _send(self, message: msg.ClientMessage) -> None:
        if self.closed is not None:
            raise self.closed
        self.noise.send(msg.encode(message))
        self.writer.write(self.noise.data_to_send())

    async def request(self, message: msg.ClientMessage) -> msg.ServerMessage:
        future: asyncio.Future[msg.ServerMessage] = asyncio.get_running_loop().create_future()
        self._pending.append((msg.tag(type(message)), future))
        self._send(message)
        return await future

    async def login(self, user: str, password: str, nick: str) -> msg.Welcome:
        reply = await self.request(msg.Hello(PROTOCOL_VERSION, user, password, nick))
        assert isinstance(reply, msg.Welcome)
        self.welcome = reply
        self.logged_in = True
        self._ping_task = asyncio.get_running_loop().create_task(self._ping_loop())
        return reply

    async def create_room(self, name: str, max_bitrate: int = 0) -> msg.RoomCreated:
        """``max_bitrate``: the room's cap on each member's Opus bit/s (0: none)."""
        reply = await self.request(msg.CreateRoom(name, max_bitrate))
        assert isinstance(reply, msg.RoomCreated)
        return reply

    async def join_room(self, room_id: str) -> msg.RoomJoined:
        reply = await self.request(msg.JoinRoom(room_id))
        assert isinstance(reply, msg.RoomJoined)
        return reply

    def send_chat(self, sealed: bytes) -> None:
        self._send(msg.SendChat(sealed))

    def send_peer(self, to: int, data: bytes) -> None:
        self._send(msg.PeerSend(to, data))

    async def leave(self) -> None:
        """Leave the room and say goodbye; never raises."""
        with contextlib.suppress(BangorError, ConnectionError, OSError):
            if self.closed is None and self.logged_in:
                self._send(msg.LeaveRoom())
                self._send(msg.Bye())
                await asyncio.wait_for(self.writer.drain(), 1.0)
        await self.close()

    async def close(self) -> None:
        for task in (self._ping_task, self._reader_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)

    def _fail(self, error: BangorError) -> None:
        if self.closed is not None:
            return
        self.closed = error
        while self._pending:
            _, future = self._pending.popleft()
            if not future.done():
                future.set_exception(error)
        self.events.put_nowait(error)

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await self.reader.read(READ_SIZE)
                if not data:
                    self._fail(self._lost("server closed the connection"))
                    return
                self._last_heard = loop.time()
                self.noise.receive_data(data, loop.time())
                while (event := self.noise.next_event()) is not None:
                    if isinstance(event, MessageReceived):
                        self._dispatch(msg.decode_server_message(event.payload), loop.time())
        except ProtocolError as exc:
            self._fail(ConnectError(f"server sent garbage: {exc}"))
        except (ConnectionError, OSError) as exc:
            self._fail(self._lost(f"lost the connection to the server: {exc}"))

    def _lost(self, message: str) -> ConnectError:
        # Before welcome the server may have shed us under load: worth another try.
        return ConnectError(message) if self.logged_in else DroppedError(message)

    def _dispatch(self, message: msg.ServerMessage, now: float) -> None:
        if isinstance(message, msg.Pong):
            sent = self._ping_sent.pop(message.nonce, None)
            if sent is not None:
                self.rtt = now - sent
            return
        if isinstance(message, msg.Error):
            error = refusal(message)
            if message.fatal:
                self._fail(error)
            elif self._pending and self._pending[0][0] == message.ref:
                _, future = self._pending.popleft()
                if not future.done():
                    future.set_exception(error)
            else:
                self.events.put_nowait(error)  # e.g. a refused chat line
            return
        if isinstance(message, _REPLIES) and self._pending:
            _, future = self._pending.popleft()
            if not future.done():
                future.set_result(message)
            return
        self.events.put_nowait(message)

    async def _ping_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self.closed is None:
            await asyncio.sleep(self.settings.ping_interval)
            if loop.time() - self._last_heard > self.settings.dead_after:
                self._fail(ConnectError("the server stopped answering"))
                self.writer.close()
                return
            nonce = next(self._nonce)
            self._ping_sent = {nonce: loop.time()}  # only the latest matters
            try:
                self._send(msg.Ping(nonce))
            except (BangorError, ConnectionError, OSError):
                return
