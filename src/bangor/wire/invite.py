"""Invite codes: server address, room id, room secret and server key fingerprint.

Binary form::

    version (1) | host length (1) | host (ASCII/IDNA, <= 253) | port (2, BE)
    | room id (8) | room secret (16) | server fingerprint (16)
    | checksum (4) = BLAKE2s-256(b"bangor invite" + everything before it)[:4]

Text form: ``bangor:`` then lowercase Crockford base32 (no padding) in groups of
five joined by ``-``. Parsing forgives case, whitespace, dashes, a missing
prefix and the Crockford look-alikes (o -> 0, i/l -> 1), since people type these.
The checksum catches typos; it is not a MAC (the fingerprint pins the server).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import struct
from dataclasses import dataclass

from bangor.errors import InviteError
from bangor.wire.noise import FINGERPRINT_SIZE  # the server key's, which the invite pins

INVITE_VERSION = 1
INVITE_PREFIX = "bangor:"
ROOM_ID_SIZE = 8
SECRET_SIZE = 16
CHECKSUM_SIZE = 4
CHECKSUM_CONTEXT = b"bangor invite"
MAX_HOST = 253  # longest DNS name
GROUP_SIZE = 5
# version + host length + port + room id + secret + fingerprint + checksum
FIXED_SIZE = 1 + 1 + 2 + ROOM_ID_SIZE + SECRET_SIZE + FINGERPRINT_SIZE + CHECKSUM_SIZE
MIN_SIZE = FIXED_SIZE + 1

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford: no i, l, o, u
_DECODE = {c: i for i, c in enumerate(ALPHABET)} | {"o": 0, "i": 1, "l": 1}
_IGNORED = re.compile(r"[\s\-]+")
_HOST_CHARS = re.compile(r"[A-Za-z0-9._-]+")
_TAIL = struct.Struct(">H")

_MSG_EMPTY = "invite code is empty"
_MSG_CHARS = "invite code has invalid characters"
_MSG_CHECKSUM = "invite code checksum does not match (mistyped or tampered)"
_MSG_TRUNCATED = "invite code is truncated"
_MSG_NOT_INVITE = "not a Bangor invite code (one starts with 'bangor:0')"
_MSG_MALFORMED = "invite code is malformed"
_MSG_PORT = "invite code has a bad port"
_MSG_HOST = "invite code has a bad host"


def normalize_host(host: str) -> str:
    """Canonical ASCII form: IP literals compressed, names lowercase IDNA (punycode)."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise InviteError(_MSG_HOST) from None
    if not ascii_host or len(ascii_host) > MAX_HOST or not _HOST_CHARS.fullmatch(ascii_host):
        raise InviteError(_MSG_HOST)
    return ascii_host


def _checksum(body: bytes) -> bytes:
    return hashlib.blake2s(CHECKSUM_CONTEXT + body).digest()[:CHECKSUM_SIZE]


def _b32encode(data: bytes) -> str:
    bits = len(data) * 8
    pad = -bits % 5
    value = int.from_bytes(data, "big") << pad
    chars = (bits + pad) // 5
    return "".join(ALPHABET[(value >> (5 * (chars - 1 - i))) & 31] for i in range(chars))


def _b32decode(text: str) -> tuple[bytes, bool]:
    """Decode; also report whether the text was canonical (zero padding, no spare char)."""
    value = 0
    for ch in text:
        value = (value << 5) | _DECODE[ch]
    bits = len(text) * 5
    extra = bits % 8
    data = (value >> extra).to_bytes(bits // 8, "big")
    return data, extra < 5 and value & ((1 << extra) - 1) == 0


def _clean(text: str) -> tuple[str, bool]:
    """The code's characters, and whether they came after the ``bangor:`` prefix."""
    code = _IGNORED.sub("", text).lower()
    if code.startswith(INVITE_PREFIX):
        return code[len(INVITE_PREFIX) :], True
    if code.startswith(INVITE_PREFIX[:-1]):
        # A valid code always starts with "0" (version 1), never "b": no ambiguity.
        return code[len(INVITE_PREFIX) - 1 :], True
    return code, False


def _looks_like_invite(code: str, prefixed: bool) -> bool:
    """Whether a code that does not parse was meant as an invite (then it was cut short
    or mistyped) rather than something else pasted or typed (``hello``, a URL). Every
    invite's first character is "0": its version byte is below 32."""
    return prefixed or _DECODE.get(code[0]) == 0


@dataclass(frozen=True)
class Invite:
    """Everything a client needs to join a room, and nothing the server may learn."""

    host: str
    port: int
    room_id: bytes
    secret: bytes  # the room secret: never sent to the server
    fingerprint: bytes  # of the server's static key

    def __post_init__(self) -> None:
        object.__setattr__(self, "host", normalize_host(self.host))
        if not 1 <= self.port <= 65535:
            raise InviteError(_MSG_PORT)
        if len(self.room_id) != ROOM_ID_SIZE:
            raise InviteError(f"invite room id must be {ROOM_ID_SIZE} bytes")
        if len(self.secret) != SECRET_SIZE:
            raise InviteError(f"invite room secret must be {SECRET_SIZE} bytes")
        if len(self.fingerprint) != FINGERPRINT_SIZE:
            raise InviteError(f"invite fingerprint must be {FINGERPRINT_SIZE} bytes")

    def __repr__(self) -> str:
        # The secret grants entry to the room: keep it out of logs.
        return (
            f"Invite(host={self.host!r}, port={self.port}, room_id={self.room_id.hex()}, "
            f"fingerprint={self.fingerprint.hex()})"
        )

    def to_bytes(self) -> bytes:
        host = self.host.encode("ascii")
        body = (
            bytes((INVITE_VERSION, len(host)))
            + host
            + _TAIL.pack(self.port)
            + self.room_id
            + self.secret
            + self.fingerprint
        )
        return body + _checksum(body)

    def encode(self) -> str:
        code = _b32encode(self.to_bytes())
        groups = [code[i : i + GROUP_SIZE] for i in range(0, len(code), GROUP_SIZE)]
        return INVITE_PREFIX + "-".join(groups)

    @classmethod
    def parse(cls, text: str) -> Invite:
        code, prefixed = _clean(text)
        if not code:
            raise InviteError(_MSG_EMPTY)
        if any(ch not in _DECODE for ch in code):
            raise InviteError(_MSG_CHARS if _looks_like_invite(code, prefixed) else _MSG_NOT_INVITE)
        data, clean_pad = _b32decode(code)
        if len(data) < 2:
            raise InviteError(
                _MSG_TRUNCATED if _looks_like_invite(code, prefixed) else _MSG_NOT_INVITE
            )
        body, check = data[:-CHECKSUM_SIZE], data[-CHECKSUM_SIZE:]
        declared = FIXED_SIZE + data[1]
        if not clean_pad or _checksum(body) != check:
            if not _looks_like_invite(code, prefixed):
                raise InviteError(_MSG_NOT_INVITE)
            # Tell a cut-off code from a mistyped one by the length it claims.
            if len(data) < max(MIN_SIZE, declared):
                raise InviteError(_MSG_TRUNCATED)
            raise InviteError(_MSG_CHECKSUM)
        # Checked before the layout: a newer version may lay things out differently.
        if data[0] != INVITE_VERSION:
            raise InviteError(f"unsupported invite version {data[0]}")
        if len(data) != declared or data[1] == 0:
            raise InviteError(_MSG_MALFORMED)
        pos = 2 + data[1]
        try:
            host = data[2:pos].decode("ascii")
        except UnicodeDecodeError:
            raise InviteError(_MSG_HOST) from None
        (port,) = _TAIL.unpack_from(data, pos)
        pos += _TAIL.size
        room_id = data[pos : pos + ROOM_ID_SIZE]
        pos += ROOM_ID_SIZE
        secret = data[pos : pos + SECRET_SIZE]
        pos += SECRET_SIZE
        fp = data[pos : pos + FINGERPRINT_SIZE]
        return cls(host, port, room_id, secret, fp)
