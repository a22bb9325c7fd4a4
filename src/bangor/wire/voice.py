"""Voice payloads above the hop layer (opaque to the relay).

A client sends ``VoiceFrame`` bytes as the payload of a VOICE media packet. The
relay prefixes the sender's session id when it forwards, so a listener knows whose
stream a frame belongs to. The client seals ``VoiceFrame`` bytes end to end (SFrame,
``wire.e2ee``) before the hop layer, so the relay only ever sees ciphertext.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from bangor.errors import PacketError

_HEAD = struct.Struct("!IHB")  # seq, packet number, info
_LEN = struct.Struct("!H")
_SENDER = struct.Struct("!I")
# The counters' fields wrap: seq (u32; the jitter buffer and the sender count modulo it too)
# and the packet number (u16).
SEQ_MODULO = 2**32
PACKET_MODULO = 2**16
# Frames of an earlier tick one packet may carry again (RFC 2198 style redundancy).
MAX_REDUNDANT = 3
_COUNT_MASK = 0x03  # info bits 0-1: how many redundant frames this packet carries
_DEPTH_SHIFT = 2  # info bits 2-3: the redundancy depth the sender is using now
_RESERVED = 0xF0


@dataclass(frozen=True, slots=True)
class VoiceFrame:
    """One Opus frame with the sender's counters and, under loss, copies of earlier ones.

    ``seq`` counts the sender's capture ticks (sent or not, so a pause is a gap);
    ``packet`` counts the packets it sent (uint16), so a listener can tell loss from
    silence. ``redundant`` holds the frames of ticks ``seq - len(redundant)`` ..
    ``seq - 1``, oldest first; ``depth`` is how many the sender adds when it can (a
    talk spurt's first packets have fewer earlier frames to repeat), which tells the
    listener how long to wait for a copy of a lost frame.

    Wire: seq u32 | packet u16 | info u8 (bits 0-1 count, 2-3 depth, 4-7 zero) |
    count x length u16 | redundant frames | primary frame.
    """

    seq: int
    opus: bytes
    packet: int = 0
    redundant: tuple[bytes, ...] = ()
    depth: int = 0

    def serialize(self) -> bytes:
        count = len(self.redundant)
        if count > MAX_REDUNDANT or not 0 <= self.depth <= MAX_REDUNDANT:
            raise ValueError(f"at most {MAX_REDUNDANT} redundant frames")
        info = count | self.depth << _DEPTH_SHIFT
        head = _HEAD.pack(self.seq % SEQ_MODULO, self.packet % PACKET_MODULO, info)
        lengths = b"".join(_LEN.pack(len(r)) for r in self.redundant)
        return head + lengths + b"".join(self.redundant) + self.opus

    @classmethod
    def parse(cls, data: bytes) -> VoiceFrame:
        if len(data) <= _HEAD.size:
            raise PacketError("voice frame too short")
        seq, packet, info = _HEAD.unpack_from(data)
        if info & _RESERVED:
            raise PacketError("voice frame has unknown flags")
        count = info & _COUNT_MASK
        pos = _HEAD.size + count * _LEN.size
        if len(data) <= pos:
            raise PacketError("voice frame too short for its redundancy")
        redundant = []
        for i in range(count):
            (length,) = _LEN.unpack_from(data, _HEAD.size + i * _LEN.size)
            if length == 0 or pos + length >= len(data):
                raise PacketError("voice frame redundancy lengths do not fit")
            redundant.append(bytes(data[pos : pos + length]))
            pos += length
        return cls(seq, bytes(data[pos:]), packet, tuple(redundant), info >> _DEPTH_SHIFT)


def pack_relayed(sender_id: int, payload: bytes) -> bytes:
    """What the relay sends on: the sender's session id, then the opaque payload."""
    return _SENDER.pack(sender_id) + payload


def unpack_relayed(data: bytes) -> tuple[int, bytes]:
    if len(data) <= _SENDER.size:
        raise PacketError("relayed voice payload too short")
    (sender,) = _SENDER.unpack_from(data)
    return sender, data[_SENDER.size :]


# At most this many members may be left out of one relayed packet (a room's size bounds it).
MAX_EXCEPT = 255


def pack_except(skip: list[int], payload: bytes) -> bytes:
    """A VOICE_EXCEPT payload: how many members to skip, their session ids, the voice."""
    if len(skip) > MAX_EXCEPT:
        raise ValueError(f"at most {MAX_EXCEPT} members can be left out")
    return bytes((len(skip),)) + b"".join(_SENDER.pack(s) for s in skip) + payload


def unpack_except(data: bytes) -> tuple[frozenset[int], bytes]:
    """The members to skip and the voice payload of a VOICE_EXCEPT packet."""
    if not data:
        raise PacketError("empty voice-except payload")
    count = data[0]
    end = 1 + count * _SENDER.size
    if len(data) <= end:
        raise PacketError("voice-except payload too short")
    skip = frozenset(_SENDER.unpack_from(data, 1 + i * _SENDER.size)[0] for i in range(count))
    return skip, data[end:]
