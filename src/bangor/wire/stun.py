"""STUN Binding (RFC 8489, formerly 5389): what a client needs to learn its public address.

The server answers Binding requests on its media port (a STUN message's first byte is
below 0x40, a media datagram's is 0xC1, so the two share one socket). The answer carries
only XOR-MAPPED-ADDRESS: the source address the request came from, as the server saw it,
which is the client's server-reflexive candidate.

Amplification: a request's source address is not authenticated, so an attacker could
spoof a victim's address. :class:`BindingResponder` therefore sends a source no more bytes
than it has received from it (a per-address byte credit), and answers at a bounded rate
overall. A request at least as large as the answer (ours pad to ``REQUEST_SIZE``) is
answered at once; a bare 20-byte request from a stock client is answered when its
retransmission has brought the credit up to the answer's size.

Sans-I/O: bytes, the source address and ``now`` in, bytes out.
"""

from __future__ import annotations

import ipaddress
import secrets
import struct
from collections import OrderedDict
from dataclasses import dataclass

from bangor.errors import PacketError
from bangor.wire.ratelimit import TokenBucket

MAGIC_COOKIE = 0x2112A442
HEADER_SIZE = 20
TRANSACTION_ID_SIZE = 12
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
ATTR_XOR_MAPPED_ADDRESS = 0x0020
ATTR_PADDING = 0x0026  # RFC 5780; carries nothing, makes a request as large as its answer
FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02
# Our requests are padded to this size: at least the largest answer (IPv6: 20 + 24 bytes).
REQUEST_SIZE = 48
MAX_MESSAGE = 548  # RFC 8489 7.1: what a request may be without path MTU knowledge

_HEADER = struct.Struct(">HHI12s")
_ATTR = struct.Struct(">HH")
_COOKIE = struct.pack(">I", MAGIC_COOKIE)

Address = tuple[str, int]


def is_stun(data: bytes) -> bool:
    """Whether a datagram looks like STUN (first two bits zero, magic cookie) rather than media."""
    return len(data) >= HEADER_SIZE and data[0] < 0x40 and data[4:8] == _COOKIE


@dataclass(frozen=True)
class StunMessage:
    """A parsed STUN message header and its attributes (type -> value, first one wins)."""

    type: int
    transaction_id: bytes
    attributes: dict[int, bytes]


def parse(data: bytes) -> StunMessage:
    """Parse a STUN message; raises PacketError on anything malformed."""
    if len(data) < HEADER_SIZE:
        raise PacketError("STUN message too short")
    if len(data) > MAX_MESSAGE:
        raise PacketError("STUN message too long")
    msg_type, length, cookie, txid = _HEADER.unpack_from(data)
    if msg_type & 0xC000:
        raise PacketError("not a STUN message (top bits set)")
    if cookie != MAGIC_COOKIE:
        raise PacketError("STUN message without the magic cookie")
    if length != len(data) - HEADER_SIZE or length % 4:
        raise PacketError("STUN length field does not match the message")
    attributes: dict[int, bytes] = {}
    offset = HEADER_SIZE
    while offset < len(data):
        if offset + _ATTR.size > len(data):
            raise PacketError("truncated STUN attribute header")
        attr_type, attr_len = _ATTR.unpack_from(data, offset)
        start = offset + _ATTR.size
        end = start + attr_len
        if end > len(data):
            raise PacketError("truncated STUN attribute")
        attributes.setdefault(attr_type, data[start:end])
        offset = end + (-attr_len % 4)
    return StunMessage(msg_type, txid, attributes)


def _attribute(attr_type: int, value: bytes) -> bytes:
    return _ATTR.pack(attr_type, len(value)) + value + bytes(-len(value) % 4)


def _message(msg_type: int, txid: bytes, attributes: bytes) -> bytes:
    return _HEADER.pack(msg_type, len(attributes), MAGIC_COOKIE, txid) + attributes


def new_transaction_id() -> bytes:
    return secrets.token_bytes(TRANSACTION_ID_SIZE)


def binding_request(txid: bytes) -> bytes:
    """A Binding request padded to ``REQUEST_SIZE``, so it is answered at once."""
    if len(txid) != TRANSACTION_ID_SIZE:
        raise ValueError("a STUN transaction id is 12 bytes")
    pad = REQUEST_SIZE - HEADER_SIZE - _ATTR.size
    return _message(BINDING_REQUEST, txid, _attribute(ATTR_PADDING, bytes(pad)))


def xor_address(addr: Address, txid: bytes) -> bytes:
    """The XOR-MAPPED-ADDRESS value for ``addr`` (RFC 8489 14.2)."""
    ip = ipaddress.ip_address(addr[0])
    port = addr[1] ^ (MAGIC_COOKIE >> 16)
    key = _COOKIE + txid
    packed = bytes(a ^ b for a, b in zip(ip.packed, key, strict=False))
    family = FAMILY_IPV4 if ip.version == 4 else FAMILY_IPV6
    return struct.pack(">BBH", 0, family, port) + packed


def binding_success(txid: bytes, addr: Address) -> bytes:
    return _message(
        BINDING_SUCCESS, txid, _attribute(ATTR_XOR_MAPPED_ADDRESS, xor_address(addr, txid))
    )


def parse_binding_success(data: bytes, txid: bytes) -> Address:
    """The mapped address in a Binding success answer to our request ``txid``.

    Raises PacketError for anything else (another transaction, an error answer, junk).
    """
    message = parse(data)
    if message.type != BINDING_SUCCESS:
        raise PacketError(f"STUN message type {message.type:#06x} is not a Binding success")
    if message.transaction_id != txid:
        raise PacketError("STUN answer to another transaction")
    value = message.attributes.get(ATTR_XOR_MAPPED_ADDRESS)
    if value is None or len(value) < 4:
        raise PacketError("STUN answer without XOR-MAPPED-ADDRESS")
    _, family, xport = struct.unpack_from(">BBH", value)
    size = {FAMILY_IPV4: 4, FAMILY_IPV6: 16}.get(family)
    if size is None or len(value) != 4 + size:
        raise PacketError("bad XOR-MAPPED-ADDRESS")
    key = _COOKIE + txid
    packed = bytes(a ^ b for a, b in zip(value[4:], key, strict=False))
    return str(ipaddress.ip_address(packed)), xport ^ (MAGIC_COOKIE >> 16)


@dataclass
class ResponderStats:
    received: int = 0
    received_bytes: int = 0
    answered: int = 0
    answered_bytes: int = 0
    malformed: int = 0
    no_credit: int = 0  # held back: the source has not sent as many bytes as the answer has
    rate_limited: int = 0


class BindingResponder:
    """Answers Binding requests: never more bytes to a source than it sent, at a bounded rate."""

    def __init__(self, rate: float, burst: int, max_sources: int) -> None:
        self.max_sources = max_sources
        self.stats = ResponderStats()
        # Full at first; times are the caller's clock, so the start is its zero.
        self._bucket = TokenBucket(rate, burst, 0.0)
        # Source address -> bytes received from it and not yet answered (oldest first).
        self._credit: OrderedDict[Address, int] = OrderedDict()

    def datagram_received(self, data: bytes, addr: Address, now: float) -> bytes | None:
        """The answer to send back to ``addr``, or None."""
        self.stats.received += 1
        self.stats.received_bytes += len(data)
        try:
            message = parse(data)
        except PacketError:
            self.stats.malformed += 1
            return None
        if message.type != BINDING_REQUEST:
            self.stats.malformed += 1  # indications and answers need no reply
            return None
        credit = self._credit.pop(addr, 0) + len(data)
        answer = binding_success(message.transaction_id, addr)
        if credit < len(answer):
            self._remember(addr, credit)
            self.stats.no_credit += 1
            return None
        if not self._bucket.take(now):
            self._remember(addr, credit)
            self.stats.rate_limited += 1
            return None
        if credit > len(answer):
            self._remember(addr, credit - len(answer))
        self.stats.answered += 1
        self.stats.answered_bytes += len(answer)
        return answer

    def _remember(self, addr: Address, credit: int) -> None:
        self._credit[addr] = min(credit, MAX_MESSAGE)
        while len(self._credit) > self.max_sources:
            self._credit.popitem(last=False)
