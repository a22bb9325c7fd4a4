"""Control-channel messages: typed msgspec Structs, msgpack-encoded inside Noise.

Every message is a Struct tagged by the short string in field ``t``. Decoding is
strict: an unknown tag, a missing field, a wrong type or an over-long string raises
:class:`~bangor.errors.DecodeError`, and the session is closed with
``CloseCode.PROTOCOL``. Which side may send which message is fixed by the two
unions below, so a client cannot send a server message and vice versa.
"""

from __future__ import annotations

from typing import Annotated, get_args

import msgspec

from bangor.errors import DecodeError
from bangor.settings import (
    MAX_BITRATE,
    MAX_NAME,
    MAX_PEER_MESSAGE,
    MAX_ROOM_NAME,
    MAX_SEALED_CHAT,
)
from bangor.wire.media import MEDIA_SECRET_SIZE

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ROOM_NAME)]
Nick = Annotated[str, msgspec.Meta(max_length=MAX_NAME)]
Password = Annotated[str, msgspec.Meta(max_length=1024)]
RoomId = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{16}$")]
SealedChat = Annotated[bytes, msgspec.Meta(min_length=1, max_length=MAX_SEALED_CHAT)]
PeerData = Annotated[bytes, msgspec.Meta(min_length=1, max_length=MAX_PEER_MESSAGE)]
MediaSecret = Annotated[
    bytes, msgspec.Meta(min_length=MEDIA_SECRET_SIZE, max_length=MEDIA_SECRET_SIZE)
]
# A session's claim to its id after a server restart (see Welcome.resume); the server
# alone reads it.
RESUME_TICKET_SIZE = 28
ResumeTicket = Annotated[bytes, msgspec.Meta(max_length=RESUME_TICKET_SIZE)]
U32 = Annotated[int, msgspec.Meta(ge=0, lt=2**32)]
U63 = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]  # msgspec bounds must fit int64
# Seconds a refused client should wait before trying again (0: no hint); an hour at most,
# so a hostile server cannot park a client for ever.
MAX_RETRY_AFTER = 3600.0
RetryAfter = Annotated[float, msgspec.Meta(ge=0, le=MAX_RETRY_AFTER)]
# MOVED's "HOST:PORT" of the cluster node that serves the room (a DNS name is at most 253).
MAX_LOCATION = 262
Location = Annotated[str, msgspec.Meta(max_length=MAX_LOCATION)]

# A room's join token (PROTOCOL.md 3.15): derived one-way from the room secret, so a
# server that checks it still never learns the secret. Empty: the sender has none (a
# client from before tokens; such rooms take any joiner until their owner rotates).
JOIN_TOKEN_SIZE = 32
JoinToken = Annotated[bytes, msgspec.Meta(max_length=JOIN_TOKEN_SIZE)]
NewJoinToken = Annotated[
    bytes, msgspec.Meta(min_length=JOIN_TOKEN_SIZE, max_length=JOIN_TOKEN_SIZE)
]
# At most this many rooms in a room list (a user owns at most max_rooms_per_user).
MAX_LISTED_ROOMS = 1000
# Banned accounts one `bans` answer names (the rest are counted): 500 names of at most
# 64 bytes keep the answer well inside a frame.
MAX_LISTED_BANS = 500

# A room's bitrate cap travels as 0 (no cap) or a bitrate Opus accepts; the decoder can
# only bound it, so the server refuses 1..MIN_BITRATE - 1 itself.
BitrateCap = Annotated[int, msgspec.Meta(ge=0, le=MAX_BITRATE)]


class Member(msgspec.Struct, frozen=True):
    """A member of a room as the others see it."""

    session_id: U32
    user: str
    nick: str


# --- client to server -------------------------------------------------------------


class Hello(msgspec.Struct, frozen=True, tag="hello", tag_field="t"):
    """First message after the handshake: protocol version and login."""

    version: int
    user: Annotated[str, msgspec.Meta(max_length=MAX_NAME)]
    password: Password
    nick: Nick = ""
    # Added after version 1: the ``resume`` ticket of a session this client had before
    # the server restarted ("" none). Older servers skip unknown fields.
    resume: ResumeTicket = b""


class CreateRoom(msgspec.Struct, frozen=True, tag="create", tag_field="t"):
    name: Name
    max_bitrate: BitrateCap = 0  # Opus bit/s every member sends at most; 0: no cap


class JoinRoom(msgspec.Struct, frozen=True, tag="join", tag_field="t"):
    room_id: RoomId
    token: JoinToken = b""  # from the invite's room secret (3.15)


# Room management (3.15): the owner's requests. The server checks ownership.


class ListRooms(msgspec.Struct, frozen=True, tag="list", tag_field="t"):
    """The rooms the logged-in account owns."""


class RotateRoom(msgspec.Struct, frozen=True, tag="rotate", tag_field="t"):
    """Replace the room's join token: joins with the old invite are refused from now on."""

    room_id: RoomId
    token: NewJoinToken


class DeleteRoom(msgspec.Struct, frozen=True, tag="delete", tag_field="t"):
    room_id: RoomId


class KickMember(msgspec.Struct, frozen=True, tag="kick", tag_field="t"):
    """Remove a member from the room: the session ``session_id`` (0: none), and with
    ``ban`` every session of its account, or of the account ``user``, now and later."""

    room_id: RoomId
    session_id: U32 = 0
    user: Annotated[str, msgspec.Meta(max_length=MAX_NAME)] = ""
    ban: bool = False


class UnbanMember(msgspec.Struct, frozen=True, tag="unban", tag_field="t"):
    """Let the account ``user``, which a kick with ``ban`` shut out, join the room again."""

    room_id: RoomId
    user: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]


class ListBans(msgspec.Struct, frozen=True, tag="list_bans", tag_field="t"):
    """The accounts banned from a room (its owner only)."""

    room_id: RoomId


class LeaveRoom(msgspec.Struct, frozen=True, tag="leave", tag_field="t"):
    pass


class SendChat(msgspec.Struct, frozen=True, tag="say", tag_field="t"):
    """A chat message for the room, sealed end to end (the server cannot read it)."""

    data: SealedChat


class PeerSend(msgspec.Struct, frozen=True, tag="peer", tag_field="t"):
    """An opaque end-to-end message for one member of the same room."""

    to: U32
    data: PeerData


class Ping(msgspec.Struct, frozen=True, tag="ping", tag_field="t"):
    nonce: U63


class Bye(msgspec.Struct, frozen=True, tag="bye", tag_field="t"):
    pass


# --- server to client -------------------------------------------------------------


class Welcome(msgspec.Struct, frozen=True, tag="welcome", tag_field="t"):
    """Login accepted; ``session_id`` goes in every media header of this session."""

    session_id: U32
    user: str
    server_version: str
    media_secret: MediaSecret  # hop keys for UDP; random per session
    # Added after version 1 (older clients skip it): a ticket to show in a later Hello
    # should this server restart, to get ``session_id`` back ("" none).
    resume: ResumeTicket = b""


class RoomCreated(msgspec.Struct, frozen=True, tag="created", tag_field="t"):
    room_id: RoomId
    name: str


class RoomJoined(msgspec.Struct, frozen=True, tag="joined", tag_field="t"):
    room_id: RoomId
    name: str
    you: Member
    members: list[Member]  # the others already present
    max_bitrate: BitrateCap = 0  # the room's cap on each member's Opus bit/s; 0: none


class RoomLeft(msgspec.Struct, frozen=True, tag="left", tag_field="t"):
    room_id: RoomId


class RoomInfo(msgspec.Struct, frozen=True):
    room_id: RoomId
    name: str
    owner: str
    members: U32  # in the room now, on this server


class RoomList(msgspec.Struct, frozen=True, tag="rooms", tag_field="t"):
    rooms: Annotated[list[RoomInfo], msgspec.Meta(max_length=MAX_LISTED_ROOMS)]


class RoomRotated(msgspec.Struct, frozen=True, tag="rotated", tag_field="t"):
    room_id: RoomId


class RoomDeleted(msgspec.Struct, frozen=True, tag="deleted", tag_field="t"):
    room_id: RoomId


class MemberKicked(msgspec.Struct, frozen=True, tag="kicked", tag_field="t"):
    """The answer to a kick: who was removed (``session_id`` 0: nobody was in the room)."""

    room_id: RoomId
    session_id: U32
    user: str
    banned: bool


class MemberUnbanned(msgspec.Struct, frozen=True, tag="unbanned", tag_field="t"):
    """The answer to an unban: the account's name as stored."""

    room_id: RoomId
    user: str


class BanList(msgspec.Struct, frozen=True, tag="bans", tag_field="t"):
    """The answer to ``list_bans``: banned accounts by name (sorted), and how many more
    there are than fit."""

    room_id: RoomId
    users: Annotated[list[str], msgspec.Meta(max_length=MAX_LISTED_BANS)]
    more: U32 = 0


class TokenChanged(msgspec.Struct, frozen=True, tag="token", tag_field="t"):
    """Pushed to the members of a room when its owner rotated it: the new join token.

    A member takes the new room secret a member sent it (pair message ``secret``) only
    if it derives this token, so only a rotation the server took changes anyone's secret.
    """

    token: NewJoinToken


class MemberJoined(msgspec.Struct, frozen=True, tag="member_joined", tag_field="t"):
    member: Member


class MemberLeft(msgspec.Struct, frozen=True, tag="member_left", tag_field="t"):
    session_id: U32


class Chat(msgspec.Struct, frozen=True, tag="chat", tag_field="t"):
    """A member's sealed chat message, forwarded as it came."""

    sender: U32
    data: SealedChat


class PeerReceived(msgspec.Struct, frozen=True, tag="peer_from", tag_field="t"):
    """An opaque end-to-end message from another member of the room."""

    sender: U32
    data: PeerData


class Pong(msgspec.Struct, frozen=True, tag="pong", tag_field="t"):
    nonce: U63


class Error(msgspec.Struct, frozen=True, tag="error", tag_field="t"):
    """A refusal; ``fatal`` errors are followed by the server closing the session."""

    code: int
    message: str
    fatal: bool = False
    ref: str = ""  # tag of the request this refuses ("" if none)
    # Added after version 1 was first written down; a default keeps older peers decoding.
    retry_after: RetryAfter = 0.0  # BUSY and THROTTLED: seconds to wait before trying again
    # SHUTDOWN: > 0, the server is restarting (come back within about that many seconds,
    # at a random moment); 0, it is going away.
    # MOVED: "HOST:PORT" of the node that serves the room (3.14). Written only when set,
    # so every other error's bytes are what they were before clusters.
    location: Location | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        if self.location == "":  # no location, however given: never written
            msgspec.structs.force_setattr(self, "location", msgspec.UNSET)

    @property
    def moved_to(self) -> str:
        """``location``, or "" when the error carries none."""
        return self.location if isinstance(self.location, str) else ""


ClientMessage = (
    Hello
    | CreateRoom
    | JoinRoom
    | LeaveRoom
    | SendChat
    | PeerSend
    | Ping
    | Bye
    | ListRooms
    | RotateRoom
    | DeleteRoom
    | KickMember
    | UnbanMember
    | ListBans
)
ServerMessage = (
    Welcome
    | RoomCreated
    | RoomJoined
    | RoomLeft
    | RoomList
    | RoomRotated
    | RoomDeleted
    | MemberKicked
    | MemberUnbanned
    | BanList
    | TokenChanged
    | MemberJoined
    | MemberLeft
    | Chat
    | PeerReceived
    | Pong
    | Error
)

# Requests about rooms, each answered or refused by tag: the ones a client tracks after
# its hello (wire/session.py), and the server meters and counts (server/app.py, metrics).
ROOM_REQUESTS: tuple[type[ClientMessage], ...] = (
    CreateRoom,
    JoinRoom,
    LeaveRoom,
    ListRooms,
    RotateRoom,
    DeleteRoom,
    KickMember,
    UnbanMember,
    ListBans,
)

# The same unions as tuples of types, for isinstance.
CLIENT_MESSAGE_TYPES: tuple[type[ClientMessage], ...] = get_args(ClientMessage)
SERVER_MESSAGE_TYPES: tuple[type[ServerMessage], ...] = get_args(ServerMessage)

NESTED_TOO_DEEPLY = "malformed control message: nested too deeply"

_encoder = msgspec.msgpack.Encoder()
_client_decoder: msgspec.msgpack.Decoder[ClientMessage] = msgspec.msgpack.Decoder(ClientMessage)
_server_decoder: msgspec.msgpack.Decoder[ServerMessage] = msgspec.msgpack.Decoder(ServerMessage)


def tag(message_type: type[msgspec.Struct]) -> str:
    """The ``t`` value of a message type (what ``Error.ref`` names)."""
    value = message_type.__struct_config__.tag
    assert isinstance(value, str)
    return value


def encode(message: ClientMessage | ServerMessage) -> bytes:
    return _encoder.encode(message)


def decode_client_message(data: bytes) -> ClientMessage:
    """Decode what a client sent; raises DecodeError with a short reason."""
    try:
        return _client_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"malformed control message: {exc}") from None
    except RecursionError:
        # msgspec skips unknown fields recursively: a frame of nested arrays gets here.
        raise DecodeError(NESTED_TOO_DEEPLY) from None


def decode_server_message(data: bytes) -> ServerMessage:
    """Decode what a server sent; raises DecodeError with a short reason."""
    try:
        return _server_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"malformed control message: {exc}") from None
    except RecursionError:
        raise DecodeError(NESTED_TOO_DEEPLY) from None
