"""The client's control session: an asyncio shell over ``wire.session.ControlSession``.

The session (client role) does the protocol: the handshake, which message may go when,
matching each answer to its request, pings every ``ping_interval`` and the dead-server
check (no byte for ``dead_after`` seconds). This shell feeds it what the socket reads,
writes what it has to send, arms its timer, and turns its events into results: each
request's future is resolved from its RequestDone or RequestFailed, and everything the
server pushes (members, chat, refusals not tied to a request) lands in ``events``.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from bangor.address import format_address, parse_address
from bangor.errors import (
    AuthError,
    BadNameError,
    BangorError,
    BusyError,
    CloseCode,
    ConnectError,
    DroppedError,
    KeyPinError,
    LocalProtocolError,
    MovedError,
    PasswordRequiredError,
    ProtocolError,
    RefusedError,
    RemoteProtocolError,
    ServerGoneError,
    ThrottledError,
)
from bangor.settings import PROTOCOL_VERSION, ClientSettings
from bangor.wire import control as msg
from bangor.wire.noise import NoiseSession, fingerprint, format_fingerprint, generate_static_key
from bangor.wire.session import (
    ControlSession,
    EndReason,
    HandshakeDone,
    Pushed,
    Refused,
    Request,
    RequestDone,
    RequestFailed,
    Role,
    SessionEnded,
    SessionEvent,
)

READ_SIZE = 65536
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
        if error.retry_after > 0:
            return ServerGoneError("the server is restarting", error.retry_after)
        return ServerGoneError("the server is shutting down")
    if error.code == CloseCode.TIMEOUT:
        return ConnectError("the server closed the session: timed out")
    if error.code == CloseCode.MOVED:
        return moved(error.moved_to)
    return RefusedError(error.code, error.message)


def moved(location: str) -> BangorError:
    """MOVED names the node to go to as HOST:PORT ([v6]:PORT); a bad one is the server's
    fault, reported as such."""
    try:
        host, port = parse_address(location)
    except ValueError:
        return RemoteProtocolError(f"the server sent us to a bad address {location!r}")
    return MovedError(f"the room is served by {format_address(host, port)}", host, port)


@dataclass
class ControlClient:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    session: ControlSession
    settings: ClientSettings
    server_fingerprint: bytes = b""
    handshake_hash: bytes = b""
    events: asyncio.Queue[msg.ServerMessage | BangorError] = field(default_factory=asyncio.Queue)
    closed: BangorError | None = None
    welcome: msg.Welcome | None = None  # session id and media secret, once logged in
    address: tuple[str, int] = ("", 0)  # the host and port we connected to
    # The futures of requests awaited through request(), by the session's handle.
    _futures: dict[Request, asyncio.Future[msg.ServerMessage | None]] = field(default_factory=dict)
    _reader_task: asyncio.Task[None] | None = None
    _timer: asyncio.TimerHandle | None = None
    _timer_when: float | None = None

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
            raise ConnectError(
                f"cannot reach server {format_address(host, port)}: timed out"
            ) from None
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise ConnectError(
                f"cannot reach server {format_address(host, port)}: {reason.lower()}"
            ) from None
        # A throwaway static key: the server needs none from us (passwords log us in),
        # and the device identity key is kept for members, never shown to the server.
        session = ControlSession(
            Role.CLIENT,
            generate_static_key(),
            ping_interval=settings.ping_interval,
            dead_after=settings.dead_after,
        )
        client = cls(reader, writer, session, settings, address=(host, port))
        try:
            await asyncio.wait_for(client._handshake(), settings.connect_timeout)
        except TimeoutError:
            writer.close()
            raise ConnectError(
                f"server {format_address(host, port)} did not complete the handshake"
            ) from None
        except ProtocolError as exc:
            writer.close()
            raise ConnectError(
                f"handshake with {format_address(host, port)} failed: {exc}"
            ) from None
        except (ConnectionError, OSError) as exc:
            writer.close()
            raise DroppedError(
                f"handshake with {format_address(host, port)} failed: {exc}"
            ) from None
        return client

    @property
    def noise(self) -> NoiseSession:
        """The Noise layer under the session (tests send through it what the session
        would refuse to)."""
        return self.session.noise

    @property
    def logged_in(self) -> bool:
        return self.welcome is not None

    @property
    def rtt(self) -> float | None:
        """The control channel's round-trip time, from the latest pong."""
        return self.session.rtt

    async def _handshake(self) -> None:
        loop = asyncio.get_running_loop()
        self.writer.write(self.session.data_to_send())
        while True:
            data = await self.reader.read(READ_SIZE)
            if not data:
                raise DroppedError("server closed the connection during the handshake")
            self.session.receive_data(data, loop.time())
            self.writer.write(self.session.data_to_send())
            event = self.session.next_event()
            if isinstance(event, HandshakeDone):
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
        """Start reading (after the fingerprint was checked)."""
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop())

    def _send(self, message: msg.ClientMessage) -> Request | None:
        if self.closed is not None:
            raise self.closed
        request = self.session.send(message)
        self._flush()
        return request

    async def request(self, message: msg.ClientMessage) -> msg.ServerMessage | None:
        """Send ``message`` and wait for its answer (None: a ``leave`` outside a room)."""
        future: asyncio.Future[msg.ServerMessage | None] = (
            asyncio.get_running_loop().create_future()
        )
        request = self._send(message)
        if request is None:
            raise LocalProtocolError(f"{msg.tag(type(message))} gets no answer to wait for")
        self._futures[request] = future
        return await future

    async def login(self, user: str, password: str, nick: str, resume: bytes = b"") -> msg.Welcome:
        """``resume``: the ticket of our session before the server restarted."""
        reply = await self.request(msg.Hello(PROTOCOL_VERSION, user, password, nick, resume))
        assert isinstance(reply, msg.Welcome)
        self.welcome = reply
        return reply

    async def create_room(self, name: str, max_bitrate: int = 0) -> msg.RoomCreated:
        """``max_bitrate``: the room's cap on each member's Opus bit/s (0: none)."""
        reply = await self.request(msg.CreateRoom(name, max_bitrate))
        assert isinstance(reply, msg.RoomCreated)
        return reply

    async def join_room(self, room_id: str, token: bytes = b"") -> msg.RoomJoined:
        reply = await self.request(msg.JoinRoom(room_id, token))
        assert isinstance(reply, msg.RoomJoined)
        return reply

    async def list_rooms(self) -> list[msg.RoomInfo]:
        reply = await self.request(msg.ListRooms())
        assert isinstance(reply, msg.RoomList)
        return reply.rooms

    async def rotate_room(self, room_id: str, token: bytes) -> None:
        reply = await self.request(msg.RotateRoom(room_id, token))
        assert isinstance(reply, msg.RoomRotated)

    async def delete_room(self, room_id: str) -> None:
        reply = await self.request(msg.DeleteRoom(room_id))
        assert isinstance(reply, msg.RoomDeleted)

    async def kick(
        self, room_id: str, *, session_id: int = 0, user: str = "", ban: bool = False
    ) -> msg.MemberKicked:
        reply = await self.request(msg.KickMember(room_id, session_id, user, ban))
        assert isinstance(reply, msg.MemberKicked)
        return reply

    async def list_bans(self, room_id: str) -> msg.BanList:
        reply = await self.request(msg.ListBans(room_id))
        assert isinstance(reply, msg.BanList)
        return reply

    async def unban(self, room_id: str, user: str) -> msg.MemberUnbanned:
        reply = await self.request(msg.UnbanMember(room_id, user))
        assert isinstance(reply, msg.MemberUnbanned)
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
        self._disarm()
        task = self._reader_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)

    # --- driving the session --------------------------------------------------------

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await self.reader.read(READ_SIZE)
                if data:
                    self.session.receive_data(data, loop.time())
                else:
                    self.session.receive_eof(loop.time())
                self._process()
                # At EOF, reads return at once: stop, whether or not the session had ended.
                if not data or self.closed is not None:
                    return
        except ProtocolError as exc:
            self._fail(ConnectError(f"server sent garbage: {exc}"))
        except (ConnectionError, OSError) as exc:
            self._fail(self._lost(f"lost the connection to the server: {exc}"))

    def _process(self) -> None:
        """Act on the session's events, write what it queued, arm its timer."""
        while (event := self.session.next_event()) is not None:
            self._on_event(event)
        self._flush()
        self._arm()

    def _flush(self) -> None:
        data = self.session.data_to_send()
        if data:
            self.writer.write(data)

    def _arm(self) -> None:
        when = None if self.closed is not None else self.session.get_timer()
        if when == self._timer_when:
            return
        self._disarm()
        if when is not None:
            self._timer_when = when
            self._timer = asyncio.get_running_loop().call_at(when, self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_when = None

    def _on_timer(self) -> None:
        # The loop may run a timer a clock tick early; it is due all the same.
        now = max(asyncio.get_running_loop().time(), self._timer_when or 0.0)
        self._timer = self._timer_when = None
        self.session.handle_timer(now)
        with contextlib.suppress(ConnectionError, OSError):
            self._process()

    def _on_event(self, event: SessionEvent) -> None:
        if isinstance(event, RequestDone):
            future = self._futures.pop(event.request, None)
            if future is not None and not future.done():
                future.set_result(event.reply)
        elif isinstance(event, RequestFailed):
            future = self._futures.pop(event.request, None)
            if future is None:
                self.events.put_nowait(refusal(event.error))  # sent without waiting for it
            elif not future.done():
                future.set_exception(refusal(event.error))
        elif isinstance(event, Refused):
            self.events.put_nowait(refusal(event.error))  # e.g. a refused chat line
        elif isinstance(event, Pushed):
            self.events.put_nowait(event.message)
        elif isinstance(event, SessionEnded):
            if event.reason is EndReason.ERROR and event.error is not None:
                self._fail(refusal(event.error))
            elif event.reason is EndReason.TIMEOUT:
                self._fail(ConnectError("the server stopped answering"))
                self.writer.close()
            else:
                self._fail(self._lost("server closed the connection"))

    def _lost(self, message: str) -> ConnectError:
        # Before welcome the server may have shed us under load: worth another try.
        return ConnectError(message) if self.logged_in else DroppedError(message)

    def _fail(self, error: BangorError) -> None:
        """The session is over: every request waiting fails with ``error``, and so does
        the next read of ``events``."""
        if self.closed is not None:
            return
        self.closed = error
        self._disarm()
        for future in self._futures.values():
            if not future.done():
                future.set_exception(error)
        self._futures.clear()
        self.events.put_nowait(error)
