"""Control messages: round trips, strict decoding, direction checks."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bangor.errors import DecodeError
from bangor.settings import MAX_CHAT_TEXT
from bangor.wire import control as msg

CLIENT_MESSAGES: list[msg.ClientMessage] = [
    msg.Hello(1, "alice", "pw", "Al"),
    msg.CreateRoom("friends"),
    msg.JoinRoom("0123456789abcdef"),
    msg.LeaveRoom(),
    msg.SendChat("hi"),
    msg.Ping(2**63 - 1),
    msg.Bye(),
]
SERVER_MESSAGES: list[msg.ServerMessage] = [
    msg.Welcome(7, "alice", "0.1.0"),
    msg.RoomCreated("0123456789abcdef", "friends"),
    msg.RoomJoined(
        "0123456789abcdef", "friends", msg.Member(1, "a", "A"), [msg.Member(2, "b", "B")]
    ),
    msg.RoomLeft("0123456789abcdef"),
    msg.MemberJoined(msg.Member(2, "b", "B")),
    msg.MemberLeft(2),
    msg.Chat(2, "B", "hello"),
    msg.Pong(3),
    msg.Error(3, "wrong user name or password", fatal=True),
]


@pytest.mark.parametrize("message", CLIENT_MESSAGES)
def test_client_round_trip(message: msg.ClientMessage) -> None:
    assert msg.decode_client_message(msg.encode(message)) == message


@pytest.mark.parametrize("message", SERVER_MESSAGES)
def test_server_round_trip(message: msg.ServerMessage) -> None:
    assert msg.decode_server_message(msg.encode(message)) == message


@pytest.mark.parametrize("message", SERVER_MESSAGES)
def test_server_message_from_client_rejected(message: msg.ServerMessage) -> None:
    with pytest.raises(DecodeError, match="malformed control message"):
        msg.decode_client_message(msg.encode(message))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xc1",
        msgspec.msgpack.encode({"t": "nope"}),
        msgspec.msgpack.encode({"t": "join", "room_id": "not-hex"}),
        msgspec.msgpack.encode({"t": "say", "text": ""}),
        msgspec.msgpack.encode({"t": "say", "text": "x" * (MAX_CHAT_TEXT + 1)}),
        msgspec.msgpack.encode({"t": "ping", "nonce": -1}),
        msgspec.msgpack.encode({"t": "hello", "version": 1, "user": "a"}),
        msgspec.msgpack.encode([1, 2, 3]),
    ],
)
def test_malformed_rejected(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        msg.decode_client_message(raw)


@given(st.binary(max_size=200))
def test_garbage_never_escapes_as_other_errors(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        msg.decode_client_message(raw)


@given(st.text(min_size=1, max_size=MAX_CHAT_TEXT))
def test_chat_text_round_trip(text: str) -> None:
    assert msg.decode_client_message(msg.encode(msg.SendChat(text))) == msg.SendChat(text)
