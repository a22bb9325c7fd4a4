"""Tests for bangor.wire.framing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bangor.errors import FramingError, LocalProtocolError
from bangor.wire.framing import LENGTH_PREFIX, MAX_FRAME_SIZE, FrameDecoder, encode_frame


def test_encode_frame_layout() -> None:
    assert encode_frame(b"abc") == b"\x00\x03abc"
    assert encode_frame(b"x" * 258)[:2] == b"\x01\x02"


def test_encode_frame_max_and_over() -> None:
    assert len(encode_frame(b"\0" * MAX_FRAME_SIZE)) == MAX_FRAME_SIZE + LENGTH_PREFIX
    with pytest.raises(LocalProtocolError):
        encode_frame(b"\0" * (MAX_FRAME_SIZE + 1))


def test_decoder_whole_and_partial() -> None:
    dec = FrameDecoder()
    stream = encode_frame(b"hello") + encode_frame(b"world")
    assert dec.feed(stream[:3]) == []
    assert dec.buffered == 3
    assert dec.feed(stream[3:9]) == [b"hello"]
    assert dec.feed(stream[9:]) == [b"world"]
    assert dec.buffered == 0


def test_empty_frame_rejected_and_decoder_stays_broken() -> None:
    dec = FrameDecoder()
    with pytest.raises(FramingError, match="empty frame"):
        dec.feed(encode_frame(b"ok") + b"\x00\x00")
    with pytest.raises(FramingError):
        dec.feed(encode_frame(b"ok"))


def test_buffer_is_bounded_by_one_frame() -> None:
    dec = FrameDecoder()
    big = encode_frame(b"\xaa" * MAX_FRAME_SIZE)
    assert dec.feed(big[:-1]) == []
    assert dec.buffered == LENGTH_PREFIX + MAX_FRAME_SIZE - 1
    frames = dec.feed(big[-1:] + big)
    assert frames == [b"\xaa" * MAX_FRAME_SIZE] * 2
    assert dec.buffered == 0


@given(
    st.lists(st.binary(min_size=1, max_size=600), max_size=8),
    st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=20),
)
def test_round_trip_any_chunking(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    dec = FrameDecoder()
    got: list[bytes] = []
    pos, i = 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        got += dec.feed(stream[pos : pos + step])
        assert dec.buffered <= LENGTH_PREFIX + MAX_FRAME_SIZE
        pos += step
        i += 1
    assert got == payloads
    assert dec.buffered == 0


@given(st.binary(min_size=1, max_size=300))
def test_every_truncation_keeps_waiting(payload: bytes) -> None:
    frame = encode_frame(payload)
    for n in range(len(frame)):
        dec = FrameDecoder()
        assert dec.feed(frame[:n]) == []
        assert dec.buffered == n
        assert dec.feed(frame[n:]) == [payload]
