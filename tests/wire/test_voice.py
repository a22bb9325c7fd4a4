"""Voice frames and the relay's sender prefix."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bangor.errors import PacketError
from bangor.wire.voice import VoiceFrame, pack_relayed, unpack_relayed


@given(st.integers(0, 2**32 - 1), st.binary(min_size=1, max_size=1200))
def test_voice_frame_round_trip(seq: int, opus: bytes) -> None:
    assert VoiceFrame.parse(VoiceFrame(seq, opus).serialize()) == VoiceFrame(seq, opus)


def test_sequence_wraps() -> None:
    assert VoiceFrame.parse(VoiceFrame(2**32, b"x").serialize()).seq == 0


@pytest.mark.parametrize("length", range(5))
def test_truncated_frame_rejected(length: int) -> None:
    with pytest.raises(PacketError, match="too short"):
        VoiceFrame.parse(bytes(length))


@given(st.integers(0, 2**32 - 1), st.binary(min_size=1, max_size=100))
def test_relayed_round_trip(sender: int, payload: bytes) -> None:
    assert unpack_relayed(pack_relayed(sender, payload)) == (sender, payload)


@pytest.mark.parametrize("length", range(5))
def test_truncated_relayed_rejected(length: int) -> None:
    with pytest.raises(PacketError):
        unpack_relayed(bytes(length))
