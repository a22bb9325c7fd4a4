"""Control messages: round trips, strict decoding, direction checks."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bangor import settings
from bangor.errors import CloseCode, DecodeError
from bangor.settings import MAX_NAME, MAX_PEER_MESSAGE, MAX_SEALED_CHAT
from bangor.wire import control as msg
from bangor.wire.pairwise import derive_join_token

CLIENT_MESSAGES: list[msg.ClientMessage] = [
    msg.Hello(1, "alice", "pw", "Al"),
    msg.CreateRoom("friends"),
    msg.CreateRoom("capped", max_bitrate=16_000),
    msg.CreateRoom("widest", max_bitrate=510_000),
    msg.JoinRoom("0123456789abcdef"),
    msg.LeaveRoom(),
    msg.SendChat(b"\x91sealed"),
    msg.PeerSend(2**32 - 1, b"\x01" + bytes(32)),
    msg.Ping(2**63 - 1),
    msg.Bye(),
]
SERVER_MESSAGES: list[msg.ServerMessage] = [
    msg.Welcome(7, "alice", "0.1.0", bytes(range(32))),
    msg.RoomCreated("0123456789abcdef", "friends"),
    msg.RoomJoined(
        "0123456789abcdef", "friends", msg.Member(1, "a", "A"), [msg.Member(2, "b", "B")]
    ),
    msg.RoomJoined("0123456789abcdef", "capped", msg.Member(1, "a", "A"), [], max_bitrate=16_000),
    msg.RoomLeft("0123456789abcdef"),
    msg.MemberJoined(msg.Member(2, "b", "B")),
    msg.MemberLeft(2),
    msg.Chat(2, b"\x91sealed"),
    msg.PeerReceived(2, b"\x04" + bytes(40)),
    msg.Pong(3),
    msg.Error(3, "wrong user name or password", fatal=True),
    msg.Error(13, "server is busy", fatal=True, ref="hello", retry_after=0.5),
]


@pytest.mark.parametrize("message", CLIENT_MESSAGES)
def test_client_round_trip(message: msg.ClientMessage) -> None:
    assert msg.decode_client_message(msg.encode(message)) == message


@pytest.mark.parametrize("message", SERVER_MESSAGES)
def test_server_round_trip(message: msg.ServerMessage) -> None:
    assert msg.decode_server_message(msg.encode(message)) == message


@pytest.mark.parametrize("message", CLIENT_MESSAGES + SERVER_MESSAGES)
def test_tag_is_the_type_field_on_the_wire(message: msg.ClientMessage | msg.ServerMessage) -> None:
    """What an Error's ``ref`` names: the ``t`` each message carries."""
    assert msgspec.msgpack.decode(msg.encode(message))["t"] == msg.tag(type(message))


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
        msgspec.msgpack.encode({"t": "say", "data": b""}),
        msgspec.msgpack.encode({"t": "say", "data": b"x" * (MAX_SEALED_CHAT + 1)}),
        msgspec.msgpack.encode({"t": "say", "text": "plaintext chat is gone"}),
        msgspec.msgpack.encode({"t": "peer", "to": 1, "data": b""}),
        msgspec.msgpack.encode({"t": "peer", "to": 1, "data": b"x" * (MAX_PEER_MESSAGE + 1)}),
        msgspec.msgpack.encode({"t": "peer", "to": -1, "data": b"x"}),
        msgspec.msgpack.encode({"t": "ping", "nonce": -1}),
        msgspec.msgpack.encode({"t": "hello", "version": 1, "user": "a"}),
        msgspec.msgpack.encode([1, 2, 3]),
        msgspec.msgpack.encode({"t": "create", "name": "r", "max_bitrate": -1}),
        msgspec.msgpack.encode({"t": "create", "name": "r", "max_bitrate": 510_001}),
        msgspec.msgpack.encode({"t": "create", "name": "r", "max_bitrate": "16000"}),
        msgspec.msgpack.encode({"t": "create", "name": "r", "max_bitrate": 16000.0}),
        msgspec.msgpack.encode({"t": "create", "name": "r", "max_bitrate": True}),
    ],
)
def test_malformed_rejected(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        msg.decode_client_message(raw)


@given(st.binary(max_size=200))
def test_garbage_never_escapes_as_other_errors(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        msg.decode_client_message(raw)


@given(st.binary(min_size=1, max_size=MAX_SEALED_CHAT))
def test_sealed_chat_round_trip(data: bytes) -> None:
    assert msg.decode_client_message(msg.encode(msg.SendChat(data))) == msg.SendChat(data)


@pytest.mark.parametrize("size", [0, 31, 33])
def test_welcome_media_secret_must_be_32_bytes(size: int) -> None:
    raw = msgspec.msgpack.encode(
        {
            "t": "welcome",
            "session_id": 1,
            "user": "a",
            "server_version": "x",
            "media_secret": bytes(size),
        }
    )
    with pytest.raises(DecodeError):
        msg.decode_server_message(raw)


def test_bitrate_cap_fields_default_to_no_cap() -> None:
    """Peers from before the cap existed omit the field: it reads as 0 (no cap)."""
    old_create = msgspec.msgpack.encode({"t": "create", "name": "r"})
    assert msg.decode_client_message(old_create) == msg.CreateRoom("r", max_bitrate=0)
    old_joined = msgspec.msgpack.encode(
        {
            "t": "joined",
            "room_id": "0123456789abcdef",
            "name": "r",
            "you": {"session_id": 1, "user": "a", "nick": "A"},
            "members": [],
        }
    )
    joined = msg.decode_server_message(old_joined)
    assert isinstance(joined, msg.RoomJoined) and joined.max_bitrate == 0


def test_bitrate_cap_is_the_last_field_and_always_written() -> None:
    """New fields go last, so older decoders (which ignore unknown keys) still work."""
    assert msg.CreateRoom.__struct_fields__[-1] == "max_bitrate"
    assert msg.RoomJoined.__struct_fields__[-1] == "max_bitrate"
    encoded = msgspec.msgpack.decode(msg.encode(msg.CreateRoom("r")))
    assert list(encoded) == ["t", "name", "max_bitrate"] and encoded["max_bitrate"] == 0


@pytest.mark.parametrize("value", [1, 5_999])
def test_bitrate_cap_below_opus_range_decodes(value: int) -> None:
    """The decoder bounds the cap only to 0..510000; the server refuses 1..5999 itself."""
    raw = msgspec.msgpack.encode({"t": "create", "name": "r", "max_bitrate": value})
    assert msg.decode_client_message(raw) == msg.CreateRoom("r", value)
    assert (settings.MIN_BITRATE, settings.MAX_BITRATE) == (6_000, 510_000)


# The worked bytes of docs/PROTOCOL.md 3.1 and 3.7, as printed there: an error as servers
# sent it before `retry_after` existed, the same error now, and a BUSY refusal.
OLD_ROOM_FULL = bytes.fromhex("""
85 a1 74 a5 65 72 72 6f 72 a4 63 6f 64 65 06 a7 6d 65 73 73 61 67 65 ac
72 6f 6f 6d 20 69 73 20 66 75 6c 6c a5 66 61 74 61 6c c2 a3 72 65 66 a4
6a 6f 69 6e
""")
ROOM_FULL = bytes.fromhex("""
86 a1 74 a5 65 72 72 6f 72 a4 63 6f 64 65 06 a7 6d 65 73 73 61 67 65 ac
72 6f 6f 6d 20 69 73 20 66 75 6c 6c a5 66 61 74 61 6c c2 a3 72 65 66 a4
6a 6f 69 6e ab 72 65 74 72 79 5f 61 66 74 65 72 cb 00 00 00 00 00 00 00
00
""")
BUSY = bytes.fromhex("""
86 a1 74 a5 65 72 72 6f 72 a4 63 6f 64 65 0d a7 6d 65 73 73 61 67 65 d9
32 73 65 72 76 65 72 20 69 73 20 62 75 73 79 20 63 68 65 63 6b 69 6e 67
20 6c 6f 67 69 6e 73 3b 20 74 72 79 20 61 67 61 69 6e 20 69 6e 20 30 2e
35 20 73 a5 66 61 74 61 6c c3 a3 72 65 66 a5 68 65 6c 6c 6f ab 72 65 74
72 79 5f 61 66 74 65 72 cb 3f e0 00 00 00 00 00 00
""")


def test_error_without_retry_after_still_decodes() -> None:
    room_full = msg.Error(6, "room is full", ref="join")
    assert (len(OLD_ROOM_FULL), len(ROOM_FULL)) == (52, 73)
    assert msg.decode_server_message(OLD_ROOM_FULL) == room_full  # retry_after 0.0
    assert msg.encode(room_full) == ROOM_FULL
    # An older client ignores the key it does not know.
    assert msgspec.msgpack.decode(ROOM_FULL)["retry_after"] == 0.0


def test_busy_error_worked_bytes() -> None:
    error = msg.Error(
        13,
        "server is busy checking logins; try again in 0.5 s",
        fatal=True,
        ref="hello",
        retry_after=0.5,
    )
    assert msg.encode(error) == BUSY
    assert len(BUSY) == 113


@pytest.mark.parametrize("retry_after", [-1.0, float("nan"), float("inf"), 3600.5, "1"])
def test_retry_after_out_of_range_is_garbage(retry_after: object) -> None:
    raw = msgspec.msgpack.encode(
        {"t": "error", "code": 13, "message": "m", "retry_after": retry_after}
    )
    with pytest.raises(DecodeError):
        msg.decode_server_message(raw)


# docs/PROTOCOL.md 3.13: the example ticket (id 7, epoch 00..07, MAC a0..af).
TICKET = bytes.fromhex("00000007") + bytes(range(8)) + bytes(range(0xA0, 0xB0))
RESTARTING = bytes.fromhex("""
86 a1 74 a5 65 72 72 6f 72 a4 63 6f 64 65 0a a7 6d 65 73 73 61 67 65 b4
73 65 72 76 65 72 20 69 73 20 72 65 73 74 61 72 74 69 6e 67 a5 66 61 74
61 6c c3 a3 72 65 66 a0 ab 72 65 74 72 79 5f 61 66 74 65 72 cb 40 00 00
00 00 00 00 00
""")
WELCOME_WITH_TICKET = bytes.fromhex("""
86 a1 74 a7 77 65 6c 63 6f 6d 65 aa 73 65 73 73 69 6f 6e 5f 69 64 07 a4
75 73 65 72 a5 61 6c 69 63 65 ae 73 65 72 76 65 72 5f 76 65 72 73 69 6f
6e a5 30 2e 31 2e 30 ac 6d 65 64 69 61 5f 73 65 63 72 65 74 c4 20 00 01
02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19
1a 1b 1c 1d 1e 1f a6 72 65 73 75 6d 65 c4 1c 00 00 00 07 00 01 02 03 04
05 06 07 a0 a1 a2 a3 a4 a5 a6 a7 a8 a9 aa ab ac ad ae af
""")
HELLO_WITH_TICKET = bytes.fromhex("""
86 a1 74 a5 68 65 6c 6c 6f a7 76 65 72 73 69 6f 6e 01 a4 75 73 65 72 a5
61 6c 69 63 65 a8 70 61 73 73 77 6f 72 64 a2 70 77 a4 6e 69 63 6b a2 41
6c a6 72 65 73 75 6d 65 c4 1c 00 00 00 07 00 01 02 03 04 05 06 07 a0 a1
a2 a3 a4 a5 a6 a7 a8 a9 aa ab ac ad ae af
""")


def test_resume_and_restart_worked_bytes() -> None:
    assert msg.encode(msg.Error(10, "server is restarting", fatal=True, retry_after=2.0)) == (
        RESTARTING
    )
    welcome = msg.Welcome(7, "alice", "0.1.0", bytes(range(32)), TICKET)
    assert msg.encode(welcome) == WELCOME_WITH_TICKET
    assert msg.decode_server_message(WELCOME_WITH_TICKET) == welcome
    hello = msg.Hello(1, "alice", "pw", "Al", TICKET)
    assert msg.encode(hello) == HELLO_WITH_TICKET
    assert msg.decode_client_message(HELLO_WITH_TICKET) == hello
    assert (len(RESTARTING), len(WELCOME_WITH_TICKET), len(HELLO_WITH_TICKET)) == (77, 139, 86)


def test_resume_fields_are_optional_both_ways() -> None:
    # From an older peer: no resume key; an empty ticket.
    old_welcome = msgspec.msgpack.encode(
        {
            "t": "welcome",
            "session_id": 7,
            "user": "a",
            "server_version": "0",
            "media_secret": bytes(32),
        }
    )
    decoded = msg.decode_server_message(old_welcome)
    assert isinstance(decoded, msg.Welcome) and decoded.resume == b""
    old_hello = msgspec.msgpack.encode({"t": "hello", "version": 1, "user": "a", "password": ""})
    decoded_hello = msg.decode_client_message(old_hello)
    assert isinstance(decoded_hello, msg.Hello) and decoded_hello.resume == b""

    # To an older peer: a decoder without the field skips it.
    class OldWelcome(msgspec.Struct, tag="welcome", tag_field="t"):
        session_id: int
        user: str
        server_version: str
        media_secret: bytes

    assert msgspec.msgpack.decode(WELCOME_WITH_TICKET, type=OldWelcome).session_id == 7


def test_a_ticket_longer_than_28_bytes_is_garbage() -> None:
    raw = msgspec.msgpack.encode(
        {"t": "hello", "version": 1, "user": "a", "password": "", "resume": bytes(29)}
    )
    with pytest.raises(DecodeError):
        msg.decode_client_message(raw)


# docs/PROTOCOL.md 3.14: a cluster node sends a join on to the room's node.
MOVED = bytes.fromhex("""
87 a1 74 a5 65 72 72 6f 72 a4 63 6f 64 65 0e a7 6d 65 73 73 61 67 65 d9
23 74 68 65 20 72 6f 6f 6d 20 69 73 20 73 65 72 76 65 64 20 62 79 20 31
30 2e 30 2e 30 2e 32 3a 37 38 37 38 a5 66 61 74 61 6c c3 a3 72 65 66 a4
6a 6f 69 6e ab 72 65 74 72 79 5f 61 66 74 65 72 cb 00 00 00 00 00 00 00
00 a8 6c 6f 63 61 74 69 6f 6e ad 31 30 2e 30 2e 30 2e 32 3a 37 38 37 38
""")


def test_moved_worked_bytes_and_other_errors_keep_theirs() -> None:
    moved = msg.Error(
        14, "the room is served by 10.0.0.2:7878", True, "join", location="10.0.0.2:7878"
    )
    assert msg.encode(moved) == MOVED and len(MOVED) == 120
    decoded = msg.decode_server_message(MOVED)
    assert isinstance(decoded, msg.Error) and decoded.moved_to == "10.0.0.2:7878"
    # Without a location nothing is written: the bytes of 3.1 and 3.13 are unchanged.
    plain = msg.encode(msg.Error(6, "room is full", ref="join"))
    assert b"location" not in plain and len(plain) == 73
    assert msg.Error(6, "room is full").moved_to == ""


def test_a_location_too_long_is_garbage() -> None:
    data = msgspec.msgpack.encode(
        {"t": "error", "code": 14, "message": "m", "location": "h" * (msg.MAX_LOCATION + 1)}
    )
    with pytest.raises(DecodeError):
        msg.decode_server_message(data)


# docs/PROTOCOL.md 3.15: room management, for room secret 00..0f and room 0123456789abcdef.
ROOM_SECRET = bytes(range(16))
ROOM = "0123456789abcdef"
JOIN_TOKEN = bytes.fromhex("b9bb1999617ef6661dc2d073b1e0d8c6ed25fcfb50bef990ad0b19c5913fc7f3")
JOIN_WITH_TOKEN = bytes.fromhex("""
83 a1 74 a4 6a 6f 69 6e a7 72 6f 6f 6d 5f 69 64 b0 30 31 32 33 34 35 36
37 38 39 61 62 63 64 65 66 a5 74 6f 6b 65 6e c4 20 b9 bb 19 99 61 7e f6
66 1d c2 d0 73 b1 e0 d8 c6 ed 25 fc fb 50 be f9 90 ad 0b 19 c5 91 3f c7
f3
""")
ROTATE = bytes.fromhex("""
83 a1 74 a6 72 6f 74 61 74 65 a7 72 6f 6f 6d 5f 69 64 b0 30 31 32 33 34
35 36 37 38 39 61 62 63 64 65 66 a5 74 6f 6b 65 6e c4 20 b9 bb 19 99 61
7e f6 66 1d c2 d0 73 b1 e0 d8 c6 ed 25 fc fb 50 be f9 90 ad 0b 19 c5 91
3f c7 f3
""")
TOKEN_PUSH = bytes.fromhex("""
82 a1 74 a5 74 6f 6b 65 6e a5 74 6f 6b 65 6e c4 20 b9 bb 19 99 61 7e f6
66 1d c2 d0 73 b1 e0 d8 c6 ed 25 fc fb 50 be f9 90 ad 0b 19 c5 91 3f c7
f3
""")
BAN = bytes.fromhex("""
85 a1 74 a4 6b 69 63 6b a7 72 6f 6f 6d 5f 69 64 b0 30 31 32 33 34 35 36
37 38 39 61 62 63 64 65 66 aa 73 65 73 73 69 6f 6e 5f 69 64 ce a1 a1 a1
a1 a4 75 73 65 72 a0 a3 62 61 6e c3
""")
REMOVED = bytes.fromhex("""
86 a1 74 a5 65 72 72 6f 72 a4 63 6f 64 65 0f a7 6d 65 73 73 61 67 65 d9
22 72 65 6d 6f 76 65 64 20 66 72 6f 6d 20 74 68 65 20 72 6f 6f 6d 20 62
79 20 69 74 73 20 6f 77 6e 65 72 a5 66 61 74 61 6c c3 a3 72 65 66 a0 ab
72 65 74 72 79 5f 61 66 74 65 72 cb 00 00 00 00 00 00 00 00
""")
UNBAN = bytes.fromhex("""
83 a1 74 a5 75 6e 62 61 6e a7 72 6f 6f 6d 5f 69 64 b0 30 31 32 33 34 35
36 37 38 39 61 62 63 64 65 66 a4 75 73 65 72 a3 62 6f 62
""")
UNBANNED = bytes.fromhex("""
83 a1 74 a8 75 6e 62 61 6e 6e 65 64 a7 72 6f 6f 6d 5f 69 64 b0 30 31 32
33 34 35 36 37 38 39 61 62 63 64 65 66 a4 75 73 65 72 a3 62 6f 62
""")
LIST_BANS = bytes.fromhex("""
82 a1 74 a9 6c 69 73 74 5f 62 61 6e 73 a7 72 6f 6f 6d 5f 69 64 b0 30 31
32 33 34 35 36 37 38 39 61 62 63 64 65 66
""")
BANS = bytes.fromhex("""
84 a1 74 a4 62 61 6e 73 a7 72 6f 6f 6d 5f 69 64 b0 30 31 32 33 34 35 36
37 38 39 61 62 63 64 65 66 a5 75 73 65 72 73 92 a3 65 76 65 a7 6d 61 6c
6c 6f 72 79 a4 6d 6f 72 65 00
""")
ROOM_LIST = bytes.fromhex("""
82 a1 74 a5 72 6f 6f 6d 73 a5 72 6f 6f 6d 73 91 84 a7 72 6f 6f 6d 5f 69
64 b0 30 31 32 33 34 35 36 37 38 39 61 62 63 64 65 66 a4 6e 61 6d 65 a6
4c 6f 75 6e 67 65 a5 6f 77 6e 65 72 a5 61 6c 69 63 65 a7 6d 65 6d 62 65
72 73 02
""")


def test_room_management_worked_bytes() -> None:
    assert derive_join_token(ROOM_SECRET, bytes.fromhex(ROOM)) == JOIN_TOKEN
    assert msg.encode(msg.JoinRoom(ROOM, JOIN_TOKEN)) == JOIN_WITH_TOKEN
    assert msg.encode(msg.RotateRoom(ROOM, JOIN_TOKEN)) == ROTATE
    assert msg.encode(msg.TokenChanged(JOIN_TOKEN)) == TOKEN_PUSH
    assert msg.encode(msg.KickMember(ROOM, 0xA1A1A1A1, "", True)) == BAN
    assert msg.encode(msg.UnbanMember(ROOM, "bob")) == UNBAN
    assert msg.decode_client_message(UNBAN) == msg.UnbanMember(ROOM, "bob")
    assert msg.decode_server_message(UNBANNED) == msg.MemberUnbanned(ROOM, "bob")
    assert msg.encode(msg.ListBans(ROOM)) == LIST_BANS
    assert msg.decode_server_message(BANS) == msg.BanList(ROOM, ["eve", "mallory"])
    assert msg.encode(msg.BanList(ROOM, ["eve", "mallory"])) == BANS
    removed = msg.Error(CloseCode.REMOVED, "removed from the room by its owner", True)
    assert msg.encode(removed) == REMOVED
    rooms = msg.RoomList([msg.RoomInfo(ROOM, "Lounge", "alice", 2)])
    assert msg.encode(rooms) == ROOM_LIST
    assert msg.decode_client_message(JOIN_WITH_TOKEN) == msg.JoinRoom(ROOM, JOIN_TOKEN)
    assert msg.decode_server_message(TOKEN_PUSH) == msg.TokenChanged(JOIN_TOKEN)


def test_join_without_a_token_still_decodes_and_tokens_are_bounded() -> None:
    old_join = msg.encode(msg.JoinRoom(ROOM))[: -len(b"\xa5token\xc4\x00")]
    old_join = b"\x82" + old_join[1:]  # a client from before tokens: two keys
    assert msg.decode_client_message(old_join) == msg.JoinRoom(ROOM, b"")
    with pytest.raises(DecodeError):
        msg.decode_client_message(msg.encode(msg.JoinRoom(ROOM, bytes(33))))
    with pytest.raises(DecodeError):  # a rotation must name a whole token
        msg.decode_client_message(msg.encode(msg.RotateRoom(ROOM, bytes(31))))
    with pytest.raises(DecodeError):
        msg.decode_server_message(msg.encode(msg.TokenChanged(b"")))
    for user in ("", "b" * (MAX_NAME + 1)):  # an unban names one account
        with pytest.raises(DecodeError):
            msg.decode_client_message(msg.encode(msg.UnbanMember(ROOM, user)))
    full = msg.BanList(ROOM, ["b"] * msg.MAX_LISTED_BANS, 7)
    assert msg.decode_server_message(msg.encode(full)) == full
    assert len(msg.encode(msg.BanList(ROOM, ["\U0010ffff" * 16] * msg.MAX_LISTED_BANS))) < 65535
    with pytest.raises(DecodeError):
        msg.decode_server_message(msg.encode(msg.BanList(ROOM, ["b"] * (msg.MAX_LISTED_BANS + 1))))
