"""UDP media packets and hop crypto between one client and the server (sans-I/O).

Layout of a datagram::

    0      1      2..5         6..13        14..
    magic  type   session id   counter      ChaCha20-Poly1305(payload) + 16-byte tag
    (the 14-byte header is the AEAD's associated data)

``MAGIC`` is 0xC0 | version; a STUN message's first byte is always below 0x40, so
STUN and media can share one UDP port. The nonce is 4 zero bytes followed by the
big-endian counter; each direction has its own key so the two never share a nonce.
The payload is opaque here (an SFrame ciphertext): only the hop is protected.

:class:`HopSealer` and :class:`HopOpener` run for every packet on the relay, so
they keep their struct and AEAD objects prebuilt and do as little as they can.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bangor.errors import LocalProtocolError, PacketError, ReplayError
from bangor.wire.replay import REPLAY_WINDOW, ReplayWindow

MEDIA_VERSION = 1
MAGIC = 0xC0 | MEDIA_VERSION  # 0xC1
HEADER_SIZE = 14
TAG_SIZE = 16
HOP_KEY_SIZE = 32  # ChaCha20-Poly1305
MAX_DATAGRAM = 1400  # stays under common path MTUs without fragmentation
MAX_PAYLOAD = MAX_DATAGRAM - HEADER_SIZE - TAG_SIZE
MAX_SESSION_ID = 2**32 - 1
# The sealer stops one short of 2**64 - 1 so a counter can never wrap or repeat.
MAX_COUNTER = 2**64 - 2

MEDIA_SECRET_SIZE = 32
MEDIA_KDF_SALT = b"bangor media v1"
MEDIA_KDF_INFO_C2S = b"c2s"
MEDIA_KDF_INFO_S2C = b"s2c"

_HEADER = struct.Struct(">BBIQ")
_SESSION_ID = struct.Struct(">I")
_NONCE_PAD = bytes(4)
_COUNTER_OFFSET = 6  # header[6:14] is the counter, reused as the nonce tail


class PacketType(IntEnum):
    """What a media datagram carries."""

    VOICE = 1
    KEEPALIVE = 2
    KEEPALIVE_ACK = 3
    # Client to server: voice for every other member except those listed (they get it
    # directly); the payload starts with ``wire.voice.pack_except``'s list.
    VOICE_EXCEPT = 4
    # Member to member, on a direct path (``wire.direct``).
    PROBE = 5
    PROBE_ACK = 6


# Dict lookup is much cheaper than calling the enum on the hot path.
_TYPES: dict[int, PacketType] = {t.value: t for t in PacketType}


@dataclass(frozen=True, slots=True)
class MediaHeader:
    """The authenticated cleartext header of a media datagram."""

    type: PacketType
    session_id: int
    counter: int

    def serialize(self) -> bytes:
        try:
            return _HEADER.pack(MAGIC, self.type, self.session_id, self.counter)
        except struct.error:
            raise LocalProtocolError("media header field out of range") from None

    @classmethod
    def parse(cls, data: bytes) -> MediaHeader:
        """Parse the header at the start of ``data`` (the rest is ignored)."""
        if len(data) < HEADER_SIZE:
            raise PacketError("datagram too short")
        magic, ptype, session_id, counter = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise PacketError("bad magic byte")
        packet_type = _TYPES.get(ptype)
        if packet_type is None:
            raise PacketError(f"unknown packet type {ptype}")
        return cls(packet_type, session_id, counter)


def peek_session_id(data: bytes) -> int:
    """Session id of a media datagram, checked only for size and magic (for routing)."""
    if len(data) < HEADER_SIZE + TAG_SIZE:
        raise PacketError("datagram too short")
    if data[0] != MAGIC:
        raise PacketError("bad magic byte")
    session_id: int = _SESSION_ID.unpack_from(data, 2)[0]
    return session_id


@dataclass(frozen=True)
class MediaKeys:
    """One key per direction, derived from the media secret the server sent in ``welcome``."""

    client_to_server: bytes
    server_to_client: bytes

    def __repr__(self) -> str:
        return "MediaKeys(<secret>)"  # never log keys


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=HOP_KEY_SIZE, salt=MEDIA_KDF_SALT, info=info
    ).derive(secret)


def derive_media_keys(media_secret: bytes) -> MediaKeys:
    """HKDF-SHA256 the session's media secret into the two hop keys.

    The secret is random per session and travels inside the Noise transport
    (``welcome``). It must not be the Noise handshake hash: that hash is computed
    from public transcript bytes, so anyone who saw the handshake could derive it.
    """
    if len(media_secret) != MEDIA_SECRET_SIZE:
        raise LocalProtocolError(f"media secret must be {MEDIA_SECRET_SIZE} bytes")
    return MediaKeys(
        client_to_server=_hkdf(media_secret, MEDIA_KDF_INFO_C2S),
        server_to_client=_hkdf(media_secret, MEDIA_KDF_INFO_S2C),
    )


def _aead(key: bytes) -> ChaCha20Poly1305:
    if len(key) != HOP_KEY_SIZE:
        raise LocalProtocolError(f"media key must be {HOP_KEY_SIZE} bytes")
    return ChaCha20Poly1305(key)


def _check_session_id(session_id: int) -> None:
    if not 0 <= session_id <= MAX_SESSION_ID:
        raise LocalProtocolError("session id out of range")


class HopSealer:
    """Encrypts outgoing media datagrams of one direction of one session."""

    __slots__ = ("_aead", "_counter", "_session_id")

    def __init__(self, key: bytes, session_id: int) -> None:
        _check_session_id(session_id)
        self._aead = _aead(key)
        self._session_id = session_id
        self._counter = 0

    @property
    def counter(self) -> int:
        """The counter the next sealed packet will carry."""
        return self._counter

    def seal(self, ptype: PacketType, payload: bytes) -> bytes:
        counter = self._counter
        if counter > MAX_COUNTER:
            raise LocalProtocolError("media counter exhausted; rekey the session")
        if len(payload) > MAX_PAYLOAD:
            raise LocalProtocolError(f"media payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
        header = _HEADER.pack(MAGIC, ptype, self._session_id, counter)
        self._counter = counter + 1
        nonce = _NONCE_PAD + header[_COUNTER_OFFSET:]
        return header + self._aead.encrypt(nonce, payload, header)


class HopOpener:
    """Authenticates, decrypts and replay-checks incoming datagrams of one session."""

    __slots__ = ("_aead", "_session_id", "_window")

    def __init__(self, key: bytes, session_id: int, window_size: int = REPLAY_WINDOW) -> None:
        _check_session_id(session_id)
        self._aead = _aead(key)
        self._session_id = session_id
        self._window = ReplayWindow(window_size)

    @property
    def highest(self) -> int:
        """Highest counter accepted so far (-1 before the first packet)."""
        return self._window.highest

    def open(self, data: bytes) -> tuple[MediaHeader, bytes]:
        size = len(data)
        if size < HEADER_SIZE + TAG_SIZE:
            raise PacketError("datagram too short")
        if size > MAX_DATAGRAM:
            raise PacketError("datagram too long")
        header = MediaHeader.parse(data)
        if header.session_id != self._session_id:
            raise PacketError("wrong session id")
        nonce = _NONCE_PAD + data[_COUNTER_OFFSET:HEADER_SIZE]
        try:
            payload = self._aead.decrypt(nonce, data[HEADER_SIZE:], data[:HEADER_SIZE])
        except InvalidTag:
            raise PacketError("authentication failed") from None
        # Only now, with the tag verified, may the counter touch the window.
        if not self._window.accept(header.counter):
            raise ReplayError("replayed")
        return header, payload
