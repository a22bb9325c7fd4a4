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
_MASKS = struct.Struct("!BB")  # spread redundancy: planned and carried distances
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
_SPREAD = 0x10  # info bit 4: two masks say which earlier ticks the copies are of
_RESERVED = 0xE0
# Farthest tick a spread copy may be of (a mask bit each): 160 ms back at 20 ms.
MAX_SPREAD = 8


def _mask(distances: tuple[int, ...]) -> int:
    return sum(1 << (d - 1) for d in distances)


def _distances(mask: int) -> tuple[int, ...]:
    """Nearest first."""
    return tuple(i + 1 for i in range(MAX_SPREAD) if mask >> i & 1)


@dataclass(frozen=True, slots=True)
class VoiceFrame:
    """One Opus frame with the sender's counters and, under loss, copies of earlier ones.

    ``seq`` counts the sender's capture ticks (sent or not, so a pause is a gap);
    ``packet`` counts the packets it sent (uint16), so a listener can tell loss from
    silence. ``redundant`` holds copies of earlier frames, oldest first; ``depth`` is
    how many the sender adds when it can (a talk spurt's first packets have fewer
    earlier frames to repeat).

    Consecutive (``plan`` empty, the original format): the copies are of ticks
    ``seq - len(redundant)`` .. ``seq - 1`` and the sender repeats the ``depth`` ticks
    before each packet. Spread (against bursts of loss, which take out neighbours
    together): ``plan`` holds the distances back (1..``MAX_SPREAD``, nearest first) of
    the ticks the sender repeats, ``depth == len(plan)``, and ``distances`` those of
    the copies in this packet, in the order of ``redundant`` (farthest first). The
    listener waits ``reach`` frames (the farthest distance) for a copy of a lost frame.

    Wire: seq u32 | packet u16 | info u8 (bits 0-1 count, 2-3 depth, 4 spread, 5-7
    zero) | if spread: plan u8, carried u8 (bit i: tick ``seq - 1 - i``) | count x
    length u16 | redundant frames | primary frame. Receivers from before bit 4 reject a
    spread frame whole (unknown flags), never misplace its copies; a sender spreads
    only to listeners that said they read it (``wire.e2ee.ReceptionReport.burst_tenths``).
    """

    seq: int
    opus: bytes
    packet: int = 0
    redundant: tuple[bytes, ...] = ()
    depth: int = 0
    distances: tuple[int, ...] = ()
    plan: tuple[int, ...] = ()

    @property
    def reach(self) -> int:
        """How many ticks after a frame the last copy of it comes."""
        return self.plan[-1] if self.plan else self.depth

    def copies(self) -> list[tuple[int, bytes]]:
        """(seq, frame) of each copy this packet carries, oldest first."""
        count = len(self.redundant)
        distances = self.distances or tuple(range(count, 0, -1))
        return [
            ((self.seq - d) % SEQ_MODULO, r) for d, r in zip(distances, self.redundant, strict=True)
        ]

    def serialize(self) -> bytes:
        count = len(self.redundant)
        if count > MAX_REDUNDANT or not 0 <= self.depth <= MAX_REDUNDANT:
            raise ValueError(f"at most {MAX_REDUNDANT} redundant frames")
        info = count | self.depth << _DEPTH_SHIFT
        masks = b""
        if self.plan or self.distances:
            plan, carried = self.plan, self.distances
            if plan != _distances(_mask(plan)) or len(plan) != self.depth:
                raise ValueError(f"plan: rising distances 1..{MAX_SPREAD}, as many as depth")
            if carried != _distances(_mask(carried))[::-1] or len(carried) != count:
                raise ValueError("distances: one per copy, falling")
            if _mask(carried) & ~_mask(plan):
                raise ValueError("a copy outside the plan")
            info |= _SPREAD
            masks = _MASKS.pack(_mask(plan), _mask(carried))
        head = _HEAD.pack(self.seq % SEQ_MODULO, self.packet % PACKET_MODULO, info) + masks
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
        depth = info >> _DEPTH_SHIFT & 0x03
        start = _HEAD.size
        plan: tuple[int, ...] = ()
        distances: tuple[int, ...] = ()
        if info & _SPREAD:
            start += _MASKS.size
            if len(data) <= start:
                raise PacketError("voice frame too short")
            plan_mask, carried = _MASKS.unpack_from(data, _HEAD.size)
            plan, distances = _distances(plan_mask), _distances(carried)[::-1]
            if len(plan) != depth or len(distances) != count or carried & ~plan_mask:
                raise PacketError("voice frame spread masks do not match its counts")
        pos = start + count * _LEN.size
        if len(data) <= pos:
            raise PacketError("voice frame too short for its redundancy")
        redundant = []
        for i in range(count):
            (length,) = _LEN.unpack_from(data, start + i * _LEN.size)
            if length == 0 or pos + length >= len(data):
                raise PacketError("voice frame redundancy lengths do not fit")
            redundant.append(bytes(data[pos : pos + length]))
            pos += length
        return cls(seq, bytes(data[pos:]), packet, tuple(redundant), depth, distances, plan)


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
