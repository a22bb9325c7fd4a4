"""The control session's state machine: every state x every message in both roles, then
a client and a server session over an in-memory pipe with a hand-set clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest

from bangor.errors import (
    CloseCode,
    DecodeError,
    HandshakeError,
    LocalProtocolError,
    RemoteProtocolError,
)
from bangor.settings import PROTOCOL_VERSION
from bangor.wire import control as msg
from bangor.wire.framing import encode_frame
from bangor.wire.noise import MessageReceived, generate_static_key, public_key
from bangor.wire.session import (
    ControlSession,
    EndReason,
    HandshakeDone,
    Pushed,
    Refused,
    Request,
    RequestDone,
    RequestFailed,
    RequestReceived,
    Role,
    SessionEnded,
    SessionEvent,
    State,
)

NOW = 1000.0
SERVER_KEY = bytes(range(1, 33))
ROOM = "0123456789abcdef"
OTHER_ROOM = "fedcba9876543210"
ALICE = msg.Member(0xA1, "alice", "Al")
BOB = msg.Member(0xB0, "bob", "bob")
WELCOME = msg.Welcome(ALICE.session_id, "alice", "0.1.0", bytes(32))
CREATED = msg.RoomCreated(ROOM, "r")
JOINED = msg.RoomJoined(ROOM, "r", ALICE, [BOB])
LEFT = msg.RoomLeft(ROOM)

CLIENT_MESSAGES: list[msg.ClientMessage] = [
    msg.Hello(PROTOCOL_VERSION, "alice", "pw", "Al"),
    msg.CreateRoom("r"),
    msg.JoinRoom(ROOM),
    msg.LeaveRoom(),
    msg.SendChat(b"sealed"),
    msg.PeerSend(BOB.session_id, b"pair message"),
    msg.Ping(0),
    msg.Bye(),
    msg.ListRooms(),
    msg.RotateRoom(ROOM, bytes(32)),
    msg.DeleteRoom(ROOM),
    msg.KickMember(ROOM, BOB.session_id),
    msg.UnbanMember(ROOM, "bob"),
    msg.ListBans(ROOM),
]
SERVER_MESSAGES: list[msg.ServerMessage] = [
    WELCOME,
    CREATED,
    JOINED,
    LEFT,
    msg.MemberJoined(BOB),
    msg.MemberLeft(BOB.session_id),
    msg.Chat(BOB.session_id, b"sealed"),
    msg.PeerReceived(BOB.session_id, b"pair message"),
    msg.Pong(0),
    msg.Error(int(CloseCode.ROOM_NOT_FOUND), "no such room", ref="join"),
    msg.RoomList([msg.RoomInfo(ROOM, "r", "alice", 1)]),
    msg.RoomRotated(ROOM),
    msg.RoomDeleted(ROOM),
    msg.MemberKicked(ROOM, BOB.session_id, "bob", False),
    msg.MemberUnbanned(ROOM, "bob"),
    msg.BanList(ROOM, ["bob"]),
    msg.TokenChanged(bytes(32)),
]

# Which tags each side may send in each state, written out again from PROTOCOL.md 3.3 to
# 3.5 rather than read from the module, so that its table is held to the spec.
_AFTER_LOGIN = {"ping", "create", "join", "leave", "say", "peer", "bye"}
_AFTER_LOGIN |= {"list", "rotate", "delete", "kick", "unban", "list_bans"}  # 3.15: the owner's
CLIENT_MAY_SEND: dict[State, set[str]] = {
    State.HELLO: {"hello"},
    State.LOGGED_IN: _AFTER_LOGIN,
    State.IN_ROOM: _AFTER_LOGIN,
}
_ANSWERS = {"created", "joined", "pong", "error", "rooms", "rotated", "deleted", "kicked"}
_ANSWERS |= {"unbanned", "bans"}
SERVER_MAY_SEND: dict[State, set[str]] = {
    State.HELLO: {"welcome", "error"},
    State.LOGGED_IN: _ANSWERS,
    State.IN_ROOM: _ANSWERS
    | {"left", "member_joined", "member_left", "chat", "peer_from", "token"},
}
PUSHES = {"member_joined", "member_left", "chat", "peer_from", "token"}
MANAGEMENT = {"list", "rotate", "delete", "kick", "unban", "list_bans"}

M = TypeVar("M")


def tag(message: object) -> str:
    return msg.tag(type(message))  # type: ignore[arg-type]


class Link:
    """A client and a server session over an in-memory byte pipe, with a hand-set clock."""

    def __init__(self) -> None:
        self.now = NOW
        self.client = ControlSession(Role.CLIENT, generate_static_key())
        self.server = ControlSession(Role.SERVER, SERVER_KEY)

    def pump(self) -> None:
        """Carry bytes both ways until neither side has any to send."""
        while True:
            up, down = self.client.data_to_send(), self.server.data_to_send()
            if not up and not down:
                return
            if up:
                self.server.receive_data(up, self.now)
            if down:
                self.client.receive_data(down, self.now)

    def request(self, send: Callable[[], Request]) -> Request:
        """The client sends a request; the server takes it (and owes the answer)."""
        request = send()
        self.pump()
        assert events(self.server) == [RequestReceived(request.message)]
        return request

    def answer(self, request: Request, reply: msg.ServerMessage) -> None:
        """The server answers ``request`` with ``reply``; the client takes it."""
        self.server.send(reply)
        self.pump()
        assert events(self.client) == [RequestDone(request, reply)]

    def inject_to_server(self, message: msg.ClientMessage) -> None:
        """A client message past the client's own checks (a hostile or buggy client)."""
        self.client.noise.send(msg.encode(message))
        self.server.receive_data(self.client.data_to_send(), self.now)

    def inject_to_client(self, message: msg.ServerMessage) -> None:
        self.server.noise.send(msg.encode(message))
        self.client.receive_data(self.server.data_to_send(), self.now)


def events(session: ControlSession) -> list[SessionEvent]:
    out: list[SessionEvent] = []
    while (event := session.next_event()) is not None:
        out.append(event)
    return out


def opened(
    sender: ControlSession, receiver: ControlSession, decode: Callable[[bytes], M]
) -> list[M]:
    """What ``sender`` queued, opened by ``receiver``'s Noise layer past its session."""
    receiver.noise.receive_data(sender.data_to_send(), NOW)
    out = []
    while (event := receiver.noise.next_event()) is not None:
        assert isinstance(event, MessageReceived)
        out.append(decode(event.payload))
    return out


def from_server(link: Link) -> list[msg.ServerMessage]:
    return opened(link.server, link.client, msg.decode_server_message)


def from_client(link: Link) -> list[msg.ClientMessage]:
    return opened(link.client, link.server, msg.decode_client_message)


def link_in(state: State, ended: Role | None = None) -> Link:
    """Both sessions in ``state``; for CLOSING and CLOSED only the ``ended`` one is, the
    other is LOGGED_IN."""
    link = Link()
    if state is State.HANDSHAKE:
        return link
    link.pump()
    for session in (link.client, link.server):
        assert [type(e) for e in events(session)] == [HandshakeDone]
        assert session.state is State.HELLO
    if state is State.HELLO:
        return link
    link.answer(link.request(lambda: link.client.hello("alice", "pw", "Al")), WELCOME)
    if state is State.IN_ROOM:
        link.answer(link.request(lambda: link.client.join_room(ROOM)), JOINED)
    if state in (State.CLOSING, State.CLOSED):
        assert ended is not None
        end(link, ended, state)
    assert state in (link.client.state, link.server.state)
    return link


def end(link: Link, role: Role, state: State) -> None:
    session = link.client if role is Role.CLIENT else link.server
    if state is State.CLOSED:
        session.close()
    elif role is Role.CLIENT:
        session.bye()
    else:
        session.fail(CloseCode.SHUTDOWN, "server is shutting down")
    assert session.state is state
    session.data_to_send()  # the last words, not part of what the tests look at


def state_id(state: State) -> str:
    return state.name


# --- every state x every message ------------------------------------------------------


@pytest.mark.parametrize("message", CLIENT_MESSAGES, ids=tag)
@pytest.mark.parametrize("state", list(State), ids=state_id)
def test_what_a_server_does_with_each_client_message_in_each_state(
    state: State, message: msg.ClientMessage
) -> None:
    link = link_in(state, ended=Role.SERVER)
    name = type(message).__name__
    if state is State.HANDSHAKE:
        # No channel yet: whatever comes is read as a handshake message.
        data = msg.encode(message)
        try:
            link.server.receive_data(encode_frame(data), NOW)
        except HandshakeError:
            assert link.server.state is State.CLOSED and link.server.data_to_send() == b""
        else:  # any 32 bytes pass for message 1's ephemeral key: still nothing delivered
            assert len(data) == 32 and link.server.state is State.HANDSHAKE
            assert events(link.server) == []
        return
    link.inject_to_server(message)
    if state in (State.CLOSING, State.CLOSED):
        assert events(link.server) == [] and link.server.data_to_send() == b""
        assert link.server.state is state
        return
    if tag(message) not in CLIENT_MAY_SEND[state]:
        text = "hello sent twice" if tag(message) == "hello" else f"expected hello, got {name}"
        with pytest.raises(RemoteProtocolError) as info:
            events(link.server)
        assert str(info.value) == text
        assert link.server.state is State.CLOSING
        assert from_server(link) == [msg.Error(int(CloseCode.PROTOCOL), text, fatal=True)]
        return
    got = events(link.server)
    sent = from_server(link)
    if isinstance(message, msg.Ping):
        assert got == [] and sent == [msg.Pong(message.nonce)]
    elif isinstance(message, msg.Bye):
        assert got == [SessionEnded(EndReason.BYE)] and sent == []
        assert link.server.state is State.CLOSED
    elif isinstance(message, msg.LeaveRoom) and state is State.LOGGED_IN:
        assert got == [] and sent == []  # outside a room a leave is ignored
    else:
        assert got == [RequestReceived(message)] and sent == []
    if link.server.state is not State.CLOSED:
        assert link.server.state is state  # taking a request changes nothing by itself


@pytest.mark.parametrize("message", CLIENT_MESSAGES, ids=tag)
@pytest.mark.parametrize("state", list(State), ids=state_id)
def test_what_a_client_may_send_in_each_state(state: State, message: msg.ClientMessage) -> None:
    link = link_in(state, ended=Role.CLIENT)
    link.client.data_to_send()  # in HANDSHAKE, Noise message 1
    if tag(message) not in CLIENT_MAY_SEND.get(state, set()):
        with pytest.raises(LocalProtocolError, match=type(message).__name__):
            link.client.send(message)
        assert link.client.data_to_send() == b""
        return
    if isinstance(message, msg.Ping):
        with pytest.raises(LocalProtocolError, match="sends its own pings"):
            link.client.send(message)
        return
    request = link.client.send(message)
    assert from_client(link) == [message]
    tracked = tag(message) in {"hello", "create", "join", "leave"} | MANAGEMENT
    assert (request is not None) is tracked
    if request is not None:
        assert request.message == message and request.tag == tag(message)
    expected = State.CLOSING if isinstance(message, msg.Bye) else state
    assert link.client.state is expected


def due_for(link: Link, state: State, reply: msg.ServerMessage) -> Request | None:
    """Have the client send the request ``reply`` answers, if one fits ``state``."""
    if isinstance(reply, msg.Welcome) and state is State.HELLO:
        return link.request(lambda: link.client.hello("alice", "pw", "Al"))
    if state is State.HELLO:
        return None
    if isinstance(reply, msg.RoomCreated):
        return link.request(lambda: link.client.create_room("r"))
    if isinstance(reply, msg.RoomJoined | msg.Error):
        return link.request(lambda: link.client.join_room(ROOM))
    if isinstance(reply, msg.RoomLeft) and state is State.IN_ROOM:
        return link.request(link.client.leave_room)
    requests: dict[type, msg.ClientMessage] = {
        msg.RoomList: msg.ListRooms(),
        msg.RoomRotated: msg.RotateRoom(ROOM, bytes(32)),
        msg.RoomDeleted: msg.DeleteRoom(ROOM),
        msg.MemberKicked: msg.KickMember(ROOM, BOB.session_id),
        msg.MemberUnbanned: msg.UnbanMember(ROOM, "bob"),
        msg.BanList: msg.ListBans(ROOM),
    }
    request = requests.get(type(reply))
    if request is not None:
        return link.request(lambda: link.client.send(request))
    return None


@pytest.mark.parametrize("message", SERVER_MESSAGES, ids=tag)
@pytest.mark.parametrize("state", list(State), ids=state_id)
def test_what_a_server_may_send_in_each_state(state: State, message: msg.ServerMessage) -> None:
    link = link_in(state, ended=Role.SERVER)
    if state in (State.CLOSING, State.CLOSED):
        link.server.send(message)  # a push racing the end: dropped, no error
        assert link.server.data_to_send() == b"" and link.server.state is state
        return
    name = type(message).__name__
    if tag(message) not in SERVER_MAY_SEND.get(state, set()):
        with pytest.raises(LocalProtocolError, match=f"cannot send {name} in state"):
            link.server.send(message)
        assert link.server.data_to_send() == b""
        return
    if isinstance(message, msg.Pong):
        with pytest.raises(LocalProtocolError, match="answers pings itself"):
            link.server.send(message)
        return
    if tag(message) in PUSHES:
        link.server.send(message)
        link.pump()
        assert events(link.client) == [Pushed(message)]
        return
    # A reply, or a refusal: only of the request taken last.
    with pytest.raises(LocalProtocolError):
        link.server.send(message)
    request = due_for(link, state, message)
    if request is None:
        return  # nothing this state can ask that the message would answer
    link.server.send(message)
    link.pump()
    if isinstance(message, msg.Error):
        assert events(link.client) == [RequestFailed(request, message)]
        assert link.client.state is state and link.server.state is state
        return
    assert events(link.client) == [RequestDone(request, message)]
    after = {"welcome": State.LOGGED_IN, "joined": State.IN_ROOM, "left": State.LOGGED_IN}
    assert link.server.state is link.client.state is after.get(tag(message), state)


@pytest.mark.parametrize("message", SERVER_MESSAGES, ids=tag)
@pytest.mark.parametrize("state", list(State), ids=state_id)
def test_what_a_client_does_with_each_server_message_in_each_state(
    state: State, message: msg.ServerMessage
) -> None:
    link = link_in(state, ended=Role.CLIENT)
    name = type(message).__name__
    if state is State.HANDSHAKE:
        with pytest.raises(HandshakeError):
            link.client.receive_data(encode_frame(msg.encode(message)), NOW)
        assert link.client.state is State.CLOSED
        return
    if state in (State.CLOSING, State.CLOSED):
        link.inject_to_client(message)
        assert events(link.client) == [] and link.client.state is state
        return
    if tag(message) not in SERVER_MAY_SEND[state]:
        link.inject_to_client(message)
        with pytest.raises(RemoteProtocolError) as info:
            events(link.client)
        assert str(info.value) == f"unexpected {name} in state {state.name}"
        assert link.client.state is State.CLOSED
        return
    if tag(message) in PUSHES:
        link.inject_to_client(message)
        assert events(link.client) == [Pushed(message)]
        return
    if isinstance(message, msg.Error):
        link.inject_to_client(message)  # a refusal of a join nobody sent: an event
        assert events(link.client) == [Refused(message)] and link.client.state is state
        return
    # A reply nobody asked for is out of place...
    link.inject_to_client(message)
    with pytest.raises(RemoteProtocolError, match=rf"unexpected {name} .* no pending request"):
        events(link.client)
    assert link.client.state is State.CLOSED


# --- two sessions over a pipe ---------------------------------------------------------


def test_login_create_join_chat_peer_leave_bye() -> None:
    link = link_in(State.HELLO)
    assert link.client.get_timer() is None and link.server.get_timer() is None
    link.answer(link.request(lambda: link.client.hello("alice", "pw", "Al")), WELCOME)
    assert link.client.state is link.server.state is State.LOGGED_IN
    link.answer(link.request(lambda: link.client.create_room("r", 16_000)), CREATED)
    link.answer(link.request(lambda: link.client.join_room(ROOM)), JOINED)
    assert link.client.state is link.server.state is State.IN_ROOM
    link.client.send_chat(b"sealed")
    link.client.send_peer(BOB.session_id, b"pair")
    link.pump()
    assert events(link.server) == [
        RequestReceived(msg.SendChat(b"sealed")),
        RequestReceived(msg.PeerSend(BOB.session_id, b"pair")),
    ]
    link.server.send(msg.Chat(BOB.session_id, b"bob's"))
    link.pump()
    assert events(link.client) == [Pushed(msg.Chat(BOB.session_id, b"bob's"))]
    link.answer(link.request(link.client.leave_room), LEFT)
    assert link.client.state is link.server.state is State.LOGGED_IN
    link.client.bye()
    assert link.client.state is State.CLOSING
    link.pump()
    assert events(link.server) == [SessionEnded(EndReason.BYE)]
    assert link.server.state is State.CLOSED and link.server.get_timer() is None


def test_handshake_reports_keys_and_progress() -> None:
    link = Link()
    assert link.server.handshake_messages_read == 0
    link.server.receive_data(link.client.data_to_send(), NOW)
    assert link.server.handshake_messages_read == 1
    assert link.server.state is State.HANDSHAKE
    link.pump()
    (done_c,) = events(link.client)
    (done_s,) = events(link.server)
    assert isinstance(done_c, HandshakeDone) and isinstance(done_s, HandshakeDone)
    assert done_c.remote_static == public_key(SERVER_KEY)
    assert done_c.handshake_hash == done_s.handshake_hash


def test_ping_pong_measures_the_rtt() -> None:
    link = link_in(State.LOGGED_IN)
    assert link.client.rtt is None
    assert link.client.get_timer() == NOW + 2.0  # ping_interval after welcome
    link.client.handle_timer(NOW + 1.9)  # not yet
    assert link.client.data_to_send() == b""
    link.now = NOW + 2.0
    link.client.handle_timer(link.now)
    link.pump()
    assert events(link.server) == []  # the server answered inside the session
    link.now += 0.035
    link.pump()
    assert events(link.client) == []
    assert link.client.rtt == pytest.approx(0.035)
    assert link.client.get_timer() == NOW + 4.0


def test_a_silent_server_is_found_dead() -> None:
    link = link_in(State.LOGGED_IN)
    create = link.client.create_room("r")
    link.client.data_to_send()  # the server never hears or answers anything again
    while (when := link.client.get_timer()) is not None:
        link.client.handle_timer(when)
        link.client.data_to_send()
        last = when
    assert events(link.client) == [SessionEnded(EndReason.TIMEOUT, None, (create,))]
    assert link.client.state is State.CLOSED
    assert 6.0 < last - NOW <= 8.0  # dead_after 6 s, checked at each 2 s ping


def test_an_answering_server_is_not_found_dead() -> None:
    link = link_in(State.LOGGED_IN)
    for _ in range(10):
        link.now = link.client.get_timer() or 0.0
        link.client.handle_timer(link.now)
        link.pump()
        assert events(link.server) == []
        link.pump()
        assert events(link.client) == []
    assert link.client.state is State.LOGGED_IN


def test_an_idle_client_is_timed_out() -> None:
    link = link_in(State.IN_ROOM)
    assert link.server.get_timer() == NOW + 15.0
    link.server.handle_timer(NOW + 14.9)
    assert link.server.state is State.IN_ROOM
    link.now = NOW + 10.0  # any byte from the client starts the wait again
    link.client.send_chat(b"x")
    link.pump()
    events(link.server)
    assert link.server.get_timer() == NOW + 25.0
    link.server.handle_timer(NOW + 25.0)
    timeout = msg.Error(int(CloseCode.TIMEOUT), "session timed out", fatal=True)
    assert events(link.server) == [SessionEnded(EndReason.TIMEOUT, timeout)]
    assert link.server.state is State.CLOSING and link.server.get_timer() is None
    link.pump()
    assert events(link.client) == [SessionEnded(EndReason.ERROR, timeout)]


def test_refusals_fail_their_request_and_the_rest_are_events() -> None:
    link = link_in(State.LOGGED_IN)
    chat = msg.SendChat(b"too early")
    link.client.send_chat(chat.data)  # refused: not in a room yet
    join = link.client.join_room(ROOM)
    link.pump()
    assert link.server.next_event() == RequestReceived(chat)
    not_in_room = msg.Error(int(CloseCode.NOT_ALLOWED), "join a room before chatting", ref="say")
    link.server.send(not_in_room)
    with pytest.raises(LocalProtocolError, match="'create' answers nothing"):
        link.server.refuse(CloseCode.LIMIT, "no", ref="create")  # nothing asked for it
    assert link.server.next_event() == RequestReceived(msg.JoinRoom(ROOM))
    full = msg.Error(int(CloseCode.ROOM_FULL), "room is full", ref="join")
    with pytest.raises(LocalProtocolError, match="'say' answers nothing"):
        link.server.send(not_in_room)  # the join is due, not this
    link.server.send(full)
    link.pump()
    # The say's refusal does not fail the join, which the next refusal fails.
    assert events(link.client) == [Refused(not_in_room), RequestFailed(join, full)]
    assert link.client.state is link.server.state is State.LOGGED_IN


def test_a_leave_outside_a_room_is_settled_by_the_next_answer() -> None:
    link = link_in(State.LOGGED_IN)
    leave = link.client.leave_room()  # not in a room: the server says nothing
    join = link.request(lambda: link.client.join_room(ROOM))
    link.server.send(JOINED)
    link.pump()
    assert events(link.server) == []  # the leave was ignored
    assert events(link.client) == [RequestDone(leave, None), RequestDone(join, JOINED)]
    leave = link.client.leave_room()  # in the room now: answered
    link.pump()
    assert events(link.server) == [RequestReceived(msg.LeaveRoom())]
    link.answer(leave, LEFT)
    again = link.client.leave_room()  # and outside again; a pong settles it
    link.now = link.client.get_timer() or 0.0
    link.client.handle_timer(link.now)
    link.pump()
    assert events(link.server) == []
    link.pump()
    assert events(link.client) == [RequestDone(again, None)]


def test_answers_out_of_order_are_a_protocol_error() -> None:
    link = link_in(State.LOGGED_IN)
    link.request(lambda: link.client.create_room("r"))
    link.client.join_room(ROOM)
    link.inject_to_client(JOINED)  # the join's answer before the create's
    with pytest.raises(RemoteProtocolError, match=r"unexpected RoomJoined .* no pending request"):
        events(link.client)


def test_a_pong_before_an_older_answer_is_a_protocol_error() -> None:
    link = link_in(State.LOGGED_IN)
    link.client.create_room("r")
    link.client.handle_timer(link.client.get_timer() or 0.0)
    link.inject_to_client(msg.Pong(0))
    with pytest.raises(RemoteProtocolError, match="unexpected Pong"):
        events(link.client)


def test_fatal_errors_end_the_session_with_every_request_unanswered() -> None:
    link = link_in(State.HELLO)
    hello = link.request(lambda: link.client.hello("mallory", "guess", ""))
    link.server.fail(CloseCode.AUTH_FAILED, "wrong user name or password", ref="hello")
    assert link.server.state is State.CLOSING and events(link.server) == []
    link.pump()
    error = msg.Error(int(CloseCode.AUTH_FAILED), "wrong user name or password", True, "hello")
    assert events(link.client) == [SessionEnded(EndReason.ERROR, error, (hello,))]
    assert link.client.state is State.CLOSED
    with pytest.raises(LocalProtocolError, match="the session is closed"):
        link.client.create_room("r")
    link.server.fail(CloseCode.INTERNAL, "again")  # once ended, nothing more goes out
    assert link.server.data_to_send() == b""


def test_a_fatal_error_sent_as_a_message_ends_the_session_too() -> None:
    link = link_in(State.IN_ROOM)
    error = msg.Error(int(CloseCode.THROTTLED), "too many joins for too long", fatal=True)
    link.server.send(error)
    assert link.server.state is State.CLOSING
    link.pump()
    assert events(link.client) == [SessionEnded(EndReason.ERROR, error)]


def test_failing_during_the_handshake_sends_nothing() -> None:
    link = Link()
    link.server.receive_data(link.client.data_to_send(), NOW)
    link.server.data_to_send()
    link.server.fail(CloseCode.TIMEOUT, "session timed out")
    assert link.server.state is State.CLOSED and link.server.data_to_send() == b""


def test_the_server_refuses_an_unsupported_version_itself() -> None:
    link = link_in(State.HELLO)
    link.inject_to_server(msg.Hello(PROTOCOL_VERSION + 1, "alice", "pw"))
    text = f"protocol version {PROTOCOL_VERSION + 1} is not supported (server speaks 1)"
    error = msg.Error(int(CloseCode.UNSUPPORTED_VERSION), text, fatal=True, ref="hello")
    assert events(link.server) == [SessionEnded(EndReason.ERROR, error)]
    assert from_server(link) == [error]


def test_malformed_messages_are_a_fatal_protocol_error() -> None:
    link = link_in(State.LOGGED_IN)
    link.client.noise.send(b"\xc1 not msgpack")
    link.server.receive_data(link.client.data_to_send(), NOW)
    with pytest.raises(DecodeError) as info:
        events(link.server)
    assert str(info.value).startswith("malformed control message: ")
    assert from_server(link) == [msg.Error(int(CloseCode.PROTOCOL), str(info.value), True)]
    link.server.noise.send(b"\xc1")
    link.client.receive_data(link.server.data_to_send(), NOW)
    with pytest.raises(DecodeError):
        events(link.client)
    assert link.client.state is State.CLOSED


def test_the_server_answers_a_request_before_it_takes_the_next() -> None:
    link = link_in(State.LOGGED_IN)
    create = link.client.create_room("r")
    link.client.join_room(ROOM)
    link.pump()
    assert link.server.next_event() == RequestReceived(create.message)
    with pytest.raises(LocalProtocolError, match="answer the create before the next message"):
        link.server.next_event()
    link.server.send(CREATED)
    assert link.server.next_event() == RequestReceived(msg.JoinRoom(ROOM))


def test_the_end_of_the_connection() -> None:
    link = link_in(State.HELLO)
    hello = link.client.hello("alice", "pw")
    link.client.receive_eof(NOW)
    assert events(link.client) == [SessionEnded(EndReason.EOF, None, (hello,))]
    assert link.client.state is State.CLOSED
    link.pump()
    link.server.receive_eof(NOW)  # after the hello: the hello comes first
    assert events(link.server) == [RequestReceived(hello.message), SessionEnded(EndReason.EOF)]
    assert link.server.state is State.CLOSED
    link.server.send(WELCOME)  # an answer after the end goes nowhere
    assert link.server.data_to_send() == b""


def test_the_end_of_a_closing_session() -> None:
    link = link_in(State.LOGGED_IN)
    link.server.fail(CloseCode.SHUTDOWN, "server is shutting down")
    link.server.receive_eof(NOW)
    assert link.server.state is State.CLOSED and events(link.server) == []


def test_a_broken_noise_channel_ends_the_session_without_a_word() -> None:
    link = link_in(State.LOGGED_IN)
    link.client.create_room("r")
    data = bytearray(link.client.data_to_send())
    data[-1] ^= 1
    with pytest.raises(RemoteProtocolError, match="failed authentication"):
        link.server.receive_data(bytes(data), NOW)
    assert link.server.state is State.CLOSED and link.server.data_to_send() == b""
    link.server.receive_data(b"more", NOW)  # ignored once over
    assert events(link.server) == []


def test_each_role_keeps_to_its_own_methods() -> None:
    link = link_in(State.LOGGED_IN)
    with pytest.raises(LocalProtocolError, match="fail is for a server session"):
        link.client.fail(CloseCode.INTERNAL, "no")
    with pytest.raises(LocalProtocolError, match="cannot send CreateRoom"):
        link.server.send(msg.CreateRoom("r"))
    with pytest.raises(LocalProtocolError, match="cannot send Welcome"):
        link.client.send(WELCOME)


def test_hello_goes_once() -> None:
    link = link_in(State.HELLO)
    link.client.hello("alice", "pw")
    with pytest.raises(LocalProtocolError, match="hello was sent already"):
        link.client.hello("alice", "pw")


def test_a_room_switch_stays_in_a_room() -> None:
    link = link_in(State.IN_ROOM)
    other = msg.RoomJoined(OTHER_ROOM, "o", ALICE, [])
    link.answer(link.request(lambda: link.client.join_room(OTHER_ROOM)), other)
    assert link.client.state is link.server.state is State.IN_ROOM
