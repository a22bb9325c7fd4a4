"""The control session's state machine (sans-I/O), for the client and the server role.

A :class:`ControlSession` is one end of a control channel (PROTOCOL.md 2 and 3): the
:class:`~bangor.wire.noise.NoiseSession` underneath and the messages of
:mod:`bangor.wire.control` on top. Bytes go in through :meth:`~ControlSession.receive_data`
(and :meth:`~ControlSession.receive_eof`), bytes to write come from
:meth:`~ControlSession.data_to_send`, what happened from :meth:`~ControlSession.next_event`,
and timers through :meth:`~ControlSession.get_timer` / :meth:`~ControlSession.handle_timer`.

The session owns the :class:`State`, the table of which message each side may send in
each state (:data:`CLIENT_SENDS`, :data:`SERVER_SENDS`, :data:`REPLIES`), ping and pong,
the server's idle timeout, the client's dead-server detection and RTT, and the matching
of replies to the client's requests. Anything out of place is an error that names the
message and the state: :class:`~bangor.errors.RemoteProtocolError` for what the peer
sent (a server session then queues a fatal ``error``, as PROTOCOL.md 3.8 says), and
:class:`~bangor.errors.LocalProtocolError` for what this side tried to send. The shells
(``server/app.py``, ``client/control.py``) do the I/O and, on the server, the work
behind each request (store, login, rooms), answering through :meth:`~ControlSession.send`.

Received messages are decoded one at a time, as :meth:`~ControlSession.next_event` reaches
them, so each is judged in the state its predecessors left: a server answers a request
before it takes the next (PROTOCOL.md 3.5), and a client's view follows the answers in
the order they were sent.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import NoReturn

import msgspec

from bangor.errors import (
    CloseCode,
    DecodeError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from bangor.settings import PROTOCOL_VERSION, ClientSettings, ServerSettings
from bangor.wire import control as msg
from bangor.wire.noise import HandshakeComplete, MessageReceived, NoiseSession


class Role(Enum):
    CLIENT = "client"
    SERVER = "server"


class State(Enum):
    """Where a control session is; both ends pass through the same states in step."""

    HANDSHAKE = "handshake"  # the Noise handshake is under way
    HELLO = "hello"  # handshake done; the client's hello and the server's welcome are due
    LOGGED_IN = "logged in"  # welcome sent (received); in no room
    IN_ROOM = "in room"  # joined sent (received); left until left
    CLOSING = "closing"  # over: write what data_to_send() holds (a last error or bye), close
    CLOSED = "closed"  # over, nothing to write: the connection is gone or to be dropped


ENDED = frozenset({State.CLOSING, State.CLOSED})


class Rule(Enum):
    """What a server session does with a message the table allows."""

    ANSWER = "answer"  # an event; the shell answers it before the next message is judged
    DELIVER = "deliver"  # an event; no answer is owed (the shell may refuse a ``say``)
    SESSION = "session"  # the session handles it: ``ping`` (pong) and ``bye`` (the end)
    IGNORE = "ignore"  # nothing happens: ``leave`` outside a room


class EndReason(Enum):
    """Why a session ended by itself (a local ``fail``, ``close`` or ``bye`` is not reported)."""

    BYE = "bye"  # the client said bye
    ERROR = "error"  # a fatal error: received from the server, or sent at a bad version
    TIMEOUT = "timeout"  # server: no bytes for idle_timeout; client: none for dead_after
    EOF = "eof"  # the peer closed the connection


_LOGGED_IN: dict[type[msg.ClientMessage], Rule] = {
    msg.Ping: Rule.SESSION,
    msg.CreateRoom: Rule.ANSWER,
    msg.JoinRoom: Rule.ANSWER,
    msg.LeaveRoom: Rule.IGNORE,
    msg.SendChat: Rule.DELIVER,  # the shell meters it, then refuses it outside a room
    msg.PeerSend: Rule.DELIVER,  # the shell meters it, then drops it outside a room
    msg.Bye: Rule.SESSION,
    msg.ListRooms: Rule.ANSWER,
    msg.RotateRoom: Rule.ANSWER,
    msg.DeleteRoom: Rule.ANSWER,
    msg.KickMember: Rule.ANSWER,
    msg.UnbanMember: Rule.ANSWER,
    msg.ListBans: Rule.ANSWER,
}
# What a client may send in each state, and what the server does with it (PROTOCOL.md
# 3.5). A state that is not a key (HANDSHAKE, CLOSING, CLOSED) carries no message.
CLIENT_SENDS: Mapping[State, Mapping[type[msg.ClientMessage], Rule]] = MappingProxyType(
    {
        State.HELLO: MappingProxyType({msg.Hello: Rule.ANSWER}),
        State.LOGGED_IN: MappingProxyType(_LOGGED_IN),
        State.IN_ROOM: MappingProxyType({**_LOGGED_IN, msg.LeaveRoom: Rule.ANSWER}),
    }
)
_ANSWERS: frozenset[type[msg.ServerMessage]] = frozenset(
    {
        msg.RoomCreated,
        msg.RoomJoined,
        msg.Pong,
        msg.Error,
        msg.RoomList,
        msg.RoomRotated,
        msg.RoomDeleted,
        msg.MemberKicked,
        msg.MemberUnbanned,
        msg.BanList,
    }
)
# What a server may send in each state; the client holds it to the same table. Pushes
# only reach members of a room, and the client's state follows the server's answers in
# order, so both ends agree on the state every message is sent in.
SERVER_SENDS: Mapping[State, frozenset[type[msg.ServerMessage]]] = MappingProxyType(
    {
        State.HELLO: frozenset({msg.Welcome, msg.Error}),
        State.LOGGED_IN: _ANSWERS,
        State.IN_ROOM: _ANSWERS
        | {
            msg.RoomLeft,
            msg.MemberJoined,
            msg.MemberLeft,
            msg.Chat,
            msg.PeerReceived,
            msg.TokenChanged,
        },
    }
)
# The request each reply answers, and the state it leads to (None: the state stays).
REPLIES: Mapping[type[msg.ServerMessage], tuple[type[msg.ClientMessage], State | None]] = (
    MappingProxyType(
        {
            msg.Welcome: (msg.Hello, State.LOGGED_IN),
            msg.RoomCreated: (msg.CreateRoom, None),
            msg.RoomJoined: (msg.JoinRoom, State.IN_ROOM),
            msg.RoomLeft: (msg.LeaveRoom, State.LOGGED_IN),
            msg.Pong: (msg.Ping, None),
            msg.RoomList: (msg.ListRooms, None),
            msg.RoomRotated: (msg.RotateRoom, None),
            msg.RoomDeleted: (msg.DeleteRoom, None),
            msg.MemberKicked: (msg.KickMember, None),
            msg.MemberUnbanned: (msg.UnbanMember, None),
            msg.BanList: (msg.ListBans, None),
        }
    )
)
# Requests a client keeps until answered; the ``ref`` of a refusal names one of these.
_TRACKED: Mapping[str, type[msg.ClientMessage]] = MappingProxyType(
    {msg.tag(t): t for t in (msg.Hello, *msg.ROOM_REQUESTS)}
)
# A ``leave`` outside a room gets no answer: the next answer to a later request shows it
# was taken without one. (A ``say`` is answered only when refused, and a refusal cannot
# tell which of several in flight it refuses, so says are not tracked at all.)
_MAY_GO_UNANSWERED = (msg.LeaveRoom,)
# Refusals a server sends without an answer being due: a ``say`` over the rate or
# outside a room.
_UNTRACKED_REFUSALS = frozenset({msg.tag(msg.SendChat)})
HELLO = msg.tag(msg.Hello)


@dataclass(frozen=True, eq=False)
class Request:
    """A request a client session sent; hashable by identity, for the shell's tables."""

    id: int
    message: msg.ClientMessage

    @property
    def tag(self) -> str:
        return msg.tag(type(self.message))


@dataclass(frozen=True)
class SessionEvent:
    """Base of what a :class:`ControlSession` reports."""


@dataclass(frozen=True)
class HandshakeDone(SessionEvent):
    """The Noise handshake finished; the peer proved it holds ``remote_static``."""

    remote_static: bytes
    handshake_hash: bytes  # unique per session but not secret: never a source of keys


@dataclass(frozen=True)
class RequestReceived(SessionEvent):
    """Server: a client message for the shell (``hello``, ``create``, ``join``, ``leave``
    in a room, ``say``, ``peer``). Its :class:`Rule` says whether an answer is owed."""

    message: msg.ClientMessage


@dataclass(frozen=True)
class RequestDone(SessionEvent):
    """Client: ``request`` was answered with ``reply``, or taken without an answer (None:
    a ``leave`` outside a room)."""

    request: Request
    reply: msg.ServerMessage | None


@dataclass(frozen=True)
class RequestFailed(SessionEvent):
    """Client: ``request`` was refused with a non-fatal ``error``; the session goes on."""

    request: Request
    error: msg.Error


@dataclass(frozen=True)
class Refused(SessionEvent):
    """Client: a non-fatal ``error`` that answers no pending request (a refused ``say``)."""

    error: msg.Error


@dataclass(frozen=True)
class Pushed(SessionEvent):
    """Client: a message the server pushed (a member came or went, chat, a peer message)."""

    message: msg.ServerMessage


@dataclass(frozen=True)
class SessionEnded(SessionEvent):
    """The session ended by itself; ``unanswered``: the client's requests left pending."""

    reason: EndReason
    error: msg.Error | None = None  # the fatal error that ended it, if any
    unanswered: tuple[Request, ...] = ()


class ControlSession:
    """One end of a control session: ``role`` says which.

    A client session starts the handshake at once (its first bytes wait in
    :meth:`data_to_send`), sends requests (:meth:`hello`, :meth:`create_room`,
    :meth:`join_room`, :meth:`leave_room`, each returning a :class:`Request` that a
    :class:`RequestDone` or :class:`RequestFailed` settles; :meth:`send_chat`,
    :meth:`send_peer`, :meth:`bye`), and pings every ``ping_interval`` after welcome.
    A server session answers pings itself, delivers every other request as a
    :class:`RequestReceived`, and ends an idle session after ``idle_timeout``.
    """

    def __init__(
        self,
        role: Role,
        static_private: bytes,
        *,
        ping_interval: float = ClientSettings.ping_interval,
        dead_after: float = ClientSettings.dead_after,
        idle_timeout: float = ServerSettings.idle_timeout,
    ) -> None:
        self.role = role
        self._state = State.HANDSHAKE
        self._noise = NoiseSession(initiator=role is Role.CLIENT, static_private=static_private)
        self._events: deque[SessionEvent] = deque()
        # Decrypted payloads (None: the peer closed) with their arrival time, judged one at
        # a time by next_event.
        self._inbox: deque[tuple[bytes | None, float]] = deque()
        self._last_heard = 0.0
        self._ping_interval = ping_interval
        self._dead_after = dead_after
        self._idle_timeout = idle_timeout
        # Client: requests and pings awaiting their answer, oldest first (a ping with the
        # time it went: its pong gives the RTT).
        self._pending: deque[tuple[Request, float]] = deque()
        self._ids = itertools.count()
        self._nonces = itertools.count()
        self._next_ping: float | None = None
        self.rtt: float | None = None  # client: the control channel's last measured RTT
        # Server: the request the shell must answer before the next message is judged.
        self._due: type[msg.ClientMessage] | None = None
        if role is Role.CLIENT:
            self._noise.initiate()

    # -- state -------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def handshake_messages_read(self) -> int:
        """Whole Noise handshake messages read from the peer (a server's admission uses it)."""
        return self._noise.handshake_messages_read

    @property
    def noise(self) -> NoiseSession:
        """The Noise layer underneath (tests send through it what the session would refuse)."""
        return self._noise

    # -- input -------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes from the connection. Raises what the Noise layer raises on a bad
        frame (HandshakeError, FramingError, RemoteProtocolError); the session is then
        CLOSED, with nothing sent (no Noise channel can carry it). Ignored once ended."""
        if self._state in ENDED:
            return
        self._last_heard = now
        try:
            self._noise.receive_data(data, now)
        except ProtocolError:
            self._end(State.CLOSED)
            raise
        while (event := self._noise.next_event()) is not None:
            if isinstance(event, HandshakeComplete):
                self._state = State.HELLO
                self._events.append(HandshakeDone(event.remote_static, event.handshake_hash))
            else:
                assert isinstance(event, MessageReceived)
                self._inbox.append((event.payload, now))

    def receive_eof(self, now: float) -> None:
        """The peer closed the connection, after the bytes fed so far."""
        if self._state in ENDED:
            self._state = State.CLOSED
        else:
            self._inbox.append((None, now))

    def handle_timer(self, now: float) -> None:
        """Run what :meth:`get_timer` asked for, if it is due at ``now``."""
        when = self.get_timer()
        if when is None or now < when:
            return
        if self.role is Role.SERVER:
            error = self._fatal(CloseCode.TIMEOUT, "session timed out")
            self._events.append(SessionEnded(EndReason.TIMEOUT, error))
            return
        if now - self._last_heard > self._dead_after:
            unanswered = self._end(State.CLOSED)
            self._events.append(SessionEnded(EndReason.TIMEOUT, None, unanswered))
            return
        ping = msg.Ping(next(self._nonces))
        self._write(ping)
        self._pending.append((Request(next(self._ids), ping), now))
        self._next_ping = now + self._ping_interval

    # -- output ------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Bytes to write to the connection; clears the queue."""
        return self._noise.data_to_send()

    def next_event(self) -> SessionEvent | None:
        """The next event, or None. Judges the received messages one at a time; raises
        RemoteProtocolError for one that is malformed or out of place (the session is
        then over: a server has queued a fatal ``error``), and LocalProtocolError when a
        server shell asks for the next message before answering the last request. The
        end of the connection ends the session when reached, answer due or not."""
        while not self._events and self._inbox:
            payload, now = self._inbox[0]
            if self._due is not None and payload is not None:
                raise LocalProtocolError(f"answer the {msg.tag(self._due)} before the next message")
            self._inbox.popleft()
            if payload is None:
                unanswered = self._end(State.CLOSED)
                self._events.append(SessionEnded(EndReason.EOF, None, unanswered))
            elif self.role is Role.SERVER:
                self._server_received(payload)
            else:
                self._client_received(payload, now)
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` has something to do: the client's next ping (and
        dead-server check), the server's idle timeout; None before login and after the end."""
        if self._state is not State.LOGGED_IN and self._state is not State.IN_ROOM:
            return None
        if self.role is Role.CLIENT:
            return self._next_ping
        return self._last_heard + self._idle_timeout

    # -- sending -----------------------------------------------------------------------

    def send(self, message: msg.ClientMessage | msg.ServerMessage) -> Request | None:
        """Send ``message`` if the table allows it in this state (else LocalProtocolError).

        Client: returns the :class:`Request` that an answer will settle (``hello``,
        ``create``, ``join``, ``leave``), None for the rest (``say``, ``peer``, ``bye``).
        Raises LocalProtocolError once the session ended.

        Server: a reply must answer the request delivered last (or a refusal name it
        in ``ref``); pushes go to sessions in a room. Once the session ended everything
        is dropped: pushes come from other members' sessions, at any moment.
        """
        if self.role is Role.CLIENT:
            return self._client_send(message)
        self._server_send(message)
        return None

    # client requests

    def hello(self, user: str, password: str, nick: str = "") -> Request:
        return self._request(msg.Hello(PROTOCOL_VERSION, user, password, nick))

    def create_room(self, name: str, max_bitrate: int = 0) -> Request:
        return self._request(msg.CreateRoom(name, max_bitrate))

    def join_room(self, room_id: str, token: bytes = b"") -> Request:
        return self._request(msg.JoinRoom(room_id, token))

    def leave_room(self) -> Request:
        return self._request(msg.LeaveRoom())

    def send_chat(self, sealed: bytes) -> None:
        self.send(msg.SendChat(sealed))

    def send_peer(self, to: int, data: bytes) -> None:
        self.send(msg.PeerSend(to, data))

    def bye(self) -> None:
        """Say goodbye: the session is CLOSING; write the bytes, then close."""
        self.send(msg.Bye())

    # server answers

    def refuse(self, code: CloseCode, message: str, ref: str) -> None:
        """Server: refuse the request tagged ``ref`` with a non-fatal error."""
        self.send(msg.Error(int(code), message, ref=ref))

    def fail(
        self,
        code: CloseCode,
        message: str,
        ref: str = "",
        retry_after: float = 0.0,
        location: str = "",
    ) -> None:
        """Server: end the session with a fatal error (none before the handshake is done:
        there is no channel to carry it). Does nothing once the session ended."""
        self._require(Role.SERVER, "fail")
        self._fatal(code, message, ref, retry_after, location)

    def close(self) -> None:
        """End the session without a word; the shell drops the connection."""
        self._end(State.CLOSED)

    # -- internals: the client role ------------------------------------------------------

    def _request(self, message: msg.ClientMessage) -> Request:
        request = self.send(message)
        assert request is not None  # every message _request is given is tracked
        return request

    def _client_send(self, message: msg.ClientMessage | msg.ServerMessage) -> Request | None:
        name = type(message).__name__
        if self._state in ENDED:
            raise LocalProtocolError(f"cannot send {name}: the session is {self._state.value}")
        if type(message) not in CLIENT_SENDS.get(self._state, {}) or not isinstance(
            message, msg.CLIENT_MESSAGE_TYPES
        ):
            raise LocalProtocolError(f"cannot send {name} in state {self._state.name}")
        if isinstance(message, msg.Ping):
            raise LocalProtocolError("the session sends its own pings")
        if isinstance(message, msg.Hello) and self._pending:
            raise LocalProtocolError("hello was sent already")
        self._write(message)
        if isinstance(message, msg.Bye):
            self._end(State.CLOSING)
            return None
        if msg.tag(type(message)) not in _TRACKED:
            return None
        request = Request(next(self._ids), message)
        self._pending.append((request, 0.0))  # a request's time is not needed
        return request

    def _client_received(self, payload: bytes, now: float) -> None:
        try:
            message = msg.decode_server_message(payload)
        except DecodeError:
            self._end(State.CLOSED)
            raise
        name = type(message).__name__
        if type(message) not in SERVER_SENDS.get(self._state, frozenset()):
            self._client_violation(f"unexpected {name} in state {self._state.name}")
        if isinstance(message, msg.Error):
            self._error_received(message)
            return
        reply = REPLIES.get(type(message))
        if reply is None:
            self._events.append(Pushed(message))
            return
        request_type, next_state = reply
        nonce = message.nonce if isinstance(message, msg.Pong) else None
        found = self._answered(request_type, nonce)
        if found is None:
            self._client_violation(
                f"unexpected {name} in state {self._state.name}: it answers no pending request"
            )
        request, sent_at = found
        if next_state is not None:
            self._state = next_state
        if isinstance(message, msg.Pong):
            self.rtt = now - sent_at
            return
        if isinstance(message, msg.Welcome):
            self._next_ping = now + self._ping_interval
        self._events.append(RequestDone(request, message))

    def _error_received(self, error: msg.Error) -> None:
        if error.fatal:
            unanswered = self._end(State.CLOSED)
            self._events.append(SessionEnded(EndReason.ERROR, error, unanswered))
            return
        request_type = _TRACKED.get(error.ref)
        found = None if request_type is None else self._answered(request_type, None)
        if found is None:
            self._events.append(Refused(error))
        else:
            self._events.append(RequestFailed(found[0], error))

    def _answered(
        self, request_type: type[msg.ClientMessage], nonce: int | None
    ) -> tuple[Request, float] | None:
        """Take the pending request an answer of ``request_type`` is for: the oldest of
        that type (for a pong, with that nonce). The server answers in order, so only
        requests that may go unanswered can come before it; they are settled as taken
        without an answer. None (and nothing taken) when no request fits."""
        position = None
        for index, (request, _) in enumerate(self._pending):
            message = request.message
            if isinstance(message, request_type) and (
                nonce is None or (isinstance(message, msg.Ping) and message.nonce == nonce)
            ):
                position = index
                break
            if not isinstance(message, _MAY_GO_UNANSWERED):
                break
        if position is None:
            return None
        for _ in range(position):
            skipped, _sent = self._pending.popleft()
            self._events.append(RequestDone(skipped, None))
        return self._pending.popleft()

    def _client_violation(self, text: str) -> NoReturn:
        self._end(State.CLOSED)
        raise RemoteProtocolError(text)

    # -- internals: the server role ------------------------------------------------------

    def _server_received(self, payload: bytes) -> None:
        try:
            message = msg.decode_client_message(payload)
        except DecodeError as exc:
            self._server_violation(exc)
        rule = CLIENT_SENDS.get(self._state, {}).get(type(message))
        if rule is None:
            self._server_violation(RemoteProtocolError(self._unexpected(message)))
        if rule is Rule.IGNORE:
            return
        if isinstance(message, msg.Ping):
            self._write(msg.Pong(message.nonce))
            return
        if isinstance(message, msg.Bye):
            self._end(State.CLOSED)
            self._events.append(SessionEnded(EndReason.BYE))
            return
        if isinstance(message, msg.Hello) and message.version != PROTOCOL_VERSION:
            error = self._fatal(
                CloseCode.UNSUPPORTED_VERSION,
                f"protocol version {message.version} is not supported (server speaks "
                f"{PROTOCOL_VERSION})",
                ref=HELLO,
            )
            self._events.append(SessionEnded(EndReason.ERROR, error))
            return
        if rule is Rule.ANSWER:
            self._due = type(message)
        self._events.append(RequestReceived(message))

    def _unexpected(self, message: msg.ClientMessage) -> str:
        # The words of PROTOCOL.md 3.5 (they travel in the fatal error): before login only
        # hello may come, after it anything but hello.
        if self._state is State.HELLO:
            return f"expected hello, got {type(message).__name__}"
        return "hello sent twice"

    def _server_violation(self, error: ProtocolError) -> NoReturn:
        self._fatal(error.code, str(error))
        raise error

    def _server_send(self, message: msg.ClientMessage | msg.ServerMessage) -> None:
        if self._state in ENDED:
            return
        name = type(message).__name__
        if type(message) not in SERVER_SENDS.get(self._state, frozenset()) or not isinstance(
            message, msg.SERVER_MESSAGE_TYPES
        ):
            raise LocalProtocolError(f"cannot send {name} in state {self._state.name}")
        if isinstance(message, msg.Pong):
            raise LocalProtocolError("the session answers pings itself")
        if isinstance(message, msg.Error):
            if message.fatal:
                self._fatal(
                    message.code,
                    message.message,
                    message.ref,
                    message.retry_after,
                    message.moved_to,
                )
                return
            due = None if self._due is None else msg.tag(self._due)
            if message.ref != due and (due is not None or message.ref not in _UNTRACKED_REFUSALS):
                raise LocalProtocolError(
                    f"a refusal of {message.ref!r} answers nothing in state {self._state.name}"
                )
            self._due = None
        elif type(message) in REPLIES:
            request_type, next_state = REPLIES[type(message)]
            if self._due is not request_type:
                raise LocalProtocolError(
                    f"{name} answers no {msg.tag(request_type)} in state {self._state.name}"
                )
            self._due = None
            if next_state is not None:
                self._state = next_state
        self._write(message)

    def _fatal(
        self, code: int, text: str, ref: str = "", retry_after: float = 0.0, location: str = ""
    ) -> msg.Error | None:
        """End with a fatal error when the channel can carry one; the error sent, if any."""
        if self._state in ENDED:
            return None
        if self._state is State.HANDSHAKE:
            self._end(State.CLOSED)
            return None
        error = msg.Error(
            int(code),
            text,
            fatal=True,
            ref=ref,
            retry_after=retry_after,
            location=location or msgspec.UNSET,
        )
        self._write(error)
        self._end(State.CLOSING)
        return error

    # -- internals: both roles -----------------------------------------------------------

    def _require(self, role: Role, what: str) -> None:
        if self.role is not role:
            raise LocalProtocolError(f"{what} is for a {role.value} session")

    def _write(self, message: msg.ClientMessage | msg.ServerMessage) -> None:
        self._noise.send(msg.encode(message))

    def _end(self, state: State) -> tuple[Request, ...]:
        """Move to ``state`` (CLOSING or CLOSED); the client requests left unanswered."""
        unanswered = tuple(r for r, _ in self._pending if not isinstance(r.message, msg.Ping))
        self._state = state
        self._inbox.clear()
        self._pending.clear()
        self._due = None
        self._next_ping = None
        return unanswered
