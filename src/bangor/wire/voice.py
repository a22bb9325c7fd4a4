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

_SEQ = struct.Struct("!I")
_SENDER = struct.Struct("!I")
SEQ_MODULO = 2**32


@dataclass(frozen=True, slots=True)
class VoiceFrame:
    """One 20 ms Opus frame with the sender's frame sequence number."""

    seq: int
    opus: bytes

    def serialize(self) -> bytes:
        return _SEQ.pack(self.seq % SEQ_MODULO) + self.opus

    @classmethod
    def parse(cls, data: bytes) -> VoiceFrame:
        if len(data) <= _SEQ.size:
            raise PacketError("voice frame too short")
        (seq,) = _SEQ.unpack_from(data)
        return cls(seq, bytes(data[_SEQ.size :]))


def pack_relayed(sender_id: int, payload: bytes) -> bytes:
    """What the relay sends on: the sender's session id, then the opaque payload."""
    return _SENDER.pack(sender_id) + payload


def unpack_relayed(data: bytes) -> tuple[int, bytes]:
    if len(data) <= _SENDER.size:
        raise PacketError("relayed voice payload too short")
    (sender,) = _SENDER.unpack_from(data)
    return sender, data[_SENDER.size :]
