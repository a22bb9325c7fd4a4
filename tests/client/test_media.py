"""MediaEngine pieces that need no sockets: end-to-end opening and released frames."""

from __future__ import annotations

import numpy as np
import pytest

from bangor.audio.codec import OpusEncoder
from bangor.audio.devices import open_sink, open_source
from bangor.client.media import MediaEngine
from bangor.errors import PacketError
from bangor.settings import FRAME_SAMPLES, ClientSettings
from bangor.wire.media import HopSealer, PacketType, derive_media_keys
from bangor.wire.voice import VoiceFrame, pack_relayed

KEYS = derive_media_keys(bytes(32))


class FakeCrypto:
    """Opens frames that start with b"ok:", holds b"hold:", refuses the rest."""

    def seal_voice(self, payload: bytes) -> bytes:
        return b"ok:" + payload

    def open_voice(self, sender: int, frame: bytes, now: float) -> bytes | None:
        if frame.startswith(b"ok:"):
            return frame[3:]
        if frame.startswith(b"hold:"):
            return None
        raise PacketError("no key")


def engine() -> MediaEngine:
    return MediaEngine(
        7, KEYS, open_source("silence"), open_sink("null"), ClientSettings(), FakeCrypto()
    )


def opus_frames(count: int) -> list[bytes]:
    encoder = OpusEncoder(bitrate=40_000)
    tone = (np.sin(np.arange(FRAME_SAMPLES) / 8) * 8000).astype(np.int16)
    return [VoiceFrame(i, encoder.encode(tone)).serialize() for i in range(count)]


def datagram(payload: bytes, sealer: HopSealer) -> bytes:
    """What the relay sends: sender 9's payload, hop-sealed for us."""
    return sealer.seal(PacketType.VOICE, pack_relayed(9, payload))


def test_voice_is_opened_end_to_end_before_the_jitter_buffer() -> None:
    eng = engine()
    sealer = HopSealer(KEYS.server_to_client, 7)
    frames = opus_frames(3)
    eng.datagram_received(datagram(b"ok:" + frames[0], sealer), ("127.0.0.1", 1))
    eng.datagram_received(datagram(b"hold:" + frames[1], sealer), ("127.0.0.1", 1))
    eng.datagram_received(datagram(b"forged" + frames[2], sealer), ("127.0.0.1", 1))
    assert eng.stats.received == 3 and eng.stats.undecryptable == 1
    assert eng.streams[9].jitter.stats().received == 1  # the held one waits for its key


@pytest.mark.parametrize("playing", [False, True])
def test_released_frames_fill_a_new_stream_only_up_to_its_prebuffer(playing: bool) -> None:
    eng = engine()
    frames = opus_frames(12)
    if playing:
        eng.push(9, frames[0])
    eng.push_released(9, frames[1:])
    depth = eng.streams[9].jitter.stats().received
    target = ClientSettings().jitter_target_frames
    assert depth == (12 if playing else target)
