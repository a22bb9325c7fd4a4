"""Tests for bangor.wire.media."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given
from hypothesis import strategies as st

from bangor.errors import LocalProtocolError, PacketError
from bangor.wire.media import (
    HEADER_SIZE,
    MAGIC,
    MAX_DATAGRAM,
    MAX_PAYLOAD,
    TAG_SIZE,
    HopOpener,
    HopSealer,
    MediaHeader,
    MediaKeys,
    PacketType,
    derive_media_keys,
    peek_session_id,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SID = 0xDEADBEEF


def pair(window: int = 2048) -> tuple[HopSealer, HopOpener]:
    return HopSealer(KEY, SID), HopOpener(KEY, SID, window)


def test_constants() -> None:
    assert MAGIC == 0xC1
    assert HEADER_SIZE == 14
    assert TAG_SIZE == 16
    assert MAX_DATAGRAM == 1400
    assert [int(t) for t in PacketType] == [1, 2, 3, 4, 5, 6]


def test_known_layout_and_nonce() -> None:
    sealer = HopSealer(KEY, SID)
    sealer.seal(PacketType.VOICE, b"a")
    packet = sealer.seal(PacketType.KEEPALIVE, b"payload")
    header = bytes([0xC1, 2]) + SID.to_bytes(4, "big") + (1).to_bytes(8, "big")
    assert packet[:HEADER_SIZE] == header
    nonce = bytes(4) + (1).to_bytes(8, "big")
    assert packet[HEADER_SIZE:] == ChaCha20Poly1305(KEY).encrypt(nonce, b"payload", header)
    assert len(packet) == HEADER_SIZE + len(b"payload") + TAG_SIZE


def test_header_round_trip_and_errors() -> None:
    h = MediaHeader(PacketType.KEEPALIVE_ACK, 7, 2**64 - 1)
    raw = h.serialize()
    assert len(raw) == HEADER_SIZE
    assert MediaHeader.parse(raw) == h
    assert MediaHeader.parse(raw + b"tail") == h
    with pytest.raises(PacketError, match="too short"):
        MediaHeader.parse(raw[:-1])
    with pytest.raises(PacketError, match="magic"):
        MediaHeader.parse(b"\xc2" + raw[1:])
    for bad_type in (0, 7, 255):
        with pytest.raises(PacketError, match="unknown packet type"):
            MediaHeader.parse(raw[:1] + bytes([bad_type]) + raw[2:])
    with pytest.raises(LocalProtocolError):
        MediaHeader(PacketType.VOICE, 2**32, 0).serialize()


def test_stun_first_byte_never_magic() -> None:
    # STUN messages start with two zero bits: first byte < 0x40.
    stun = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12) + bytes(16)
    with pytest.raises(PacketError, match="magic"):
        peek_session_id(stun)


def test_peek_session_id() -> None:
    sealer = HopSealer(KEY, 12345)
    assert peek_session_id(sealer.seal(PacketType.VOICE, b"")) == 12345
    with pytest.raises(PacketError):
        peek_session_id(b"\xc1" * (HEADER_SIZE + TAG_SIZE - 1))


def test_derive_media_keys() -> None:
    keys = derive_media_keys(b"h" * 32)
    assert isinstance(keys, MediaKeys)
    assert len(keys.client_to_server) == len(keys.server_to_client) == 32
    assert keys.client_to_server != keys.server_to_client
    assert keys == derive_media_keys(b"h" * 32)
    assert keys != derive_media_keys(b"i" * 32)
    assert "h" not in repr(keys) and keys.client_to_server.hex() not in repr(keys)
    for size in (0, 31, 33):
        with pytest.raises(LocalProtocolError, match="media secret must be 32 bytes"):
            derive_media_keys(b"h" * size)


@given(
    st.lists(
        st.tuples(st.sampled_from(list(PacketType)), st.binary(max_size=MAX_PAYLOAD)),
        min_size=1,
        max_size=10,
    ),
    st.integers(min_value=0, max_value=2**64 - 12),
)
def test_round_trip(packets: list[tuple[PacketType, bytes]], start: int) -> None:
    sealer, opener = pair()
    sealer._counter = start
    for i, (ptype, payload) in enumerate(packets):
        header, got = opener.open(sealer.seal(ptype, payload))
        assert got == payload
        assert header == MediaHeader(ptype, SID, start + i)
    assert sealer.counter == start + len(packets)
    assert opener.highest == start + len(packets) - 1


def test_payload_limits() -> None:
    sealer, opener = pair()
    packet = sealer.seal(PacketType.VOICE, b"\0" * MAX_PAYLOAD)
    assert len(packet) == MAX_DATAGRAM
    assert opener.open(packet)[1] == b"\0" * MAX_PAYLOAD
    with pytest.raises(LocalProtocolError):
        sealer.seal(PacketType.VOICE, b"\0" * (MAX_PAYLOAD + 1))
    with pytest.raises(PacketError, match="too long"):
        opener.open(packet + b"\0")


def test_counter_exhaustion() -> None:
    sealer, opener = pair()
    sealer._counter = 2**64 - 2
    last = sealer.seal(PacketType.VOICE, b"x")
    assert opener.open(last)[0].counter == 2**64 - 2
    with pytest.raises(LocalProtocolError, match="exhausted"):
        sealer.seal(PacketType.VOICE, b"x")


def test_bad_key_or_session_id_rejected_at_construction() -> None:
    with pytest.raises(LocalProtocolError):
        HopSealer(b"short", SID)
    with pytest.raises(LocalProtocolError):
        HopOpener(KEY, -1)


def test_every_truncation_rejected() -> None:
    sealer, _ = pair()
    packet = sealer.seal(PacketType.VOICE, b"some voice payload")
    for n in range(len(packet)):
        _, opener = pair()
        with pytest.raises(PacketError):
            opener.open(packet[:n])
        assert opener.highest == -1


def test_every_bit_flip_rejected_and_window_untouched() -> None:
    sealer, _ = pair()
    packet = sealer.seal(PacketType.VOICE, b"voice!")
    for bit in range(len(packet) * 8):
        damaged = bytearray(packet)
        damaged[bit // 8] ^= 1 << (bit % 8)
        _, opener = pair()
        with pytest.raises(PacketError):
            opener.open(bytes(damaged))
        assert opener.highest == -1
        assert opener.open(packet)[1] == b"voice!"


def test_wrong_key_and_wrong_session() -> None:
    packet = HopSealer(KEY, SID).seal(PacketType.VOICE, b"x")
    with pytest.raises(PacketError, match="authentication failed"):
        HopOpener(OTHER_KEY, SID).open(packet)
    with pytest.raises(PacketError, match="wrong session id"):
        HopOpener(KEY, SID + 1).open(packet)


def test_replay_rejected() -> None:
    sealer, opener = pair()
    packet = sealer.seal(PacketType.VOICE, b"x")
    opener.open(packet)
    with pytest.raises(PacketError, match="replayed"):
        opener.open(packet)


def test_forged_packet_does_not_move_window() -> None:
    sealer, opener = pair(window=64)
    first = sealer.seal(PacketType.VOICE, b"a")
    # A forger sends a far-future counter with garbage ciphertext.
    forged = MediaHeader(PacketType.VOICE, SID, 10**9).serialize() + bytes(20)
    with pytest.raises(PacketError, match="authentication failed"):
        opener.open(forged)
    assert opener.highest == -1
    assert opener.open(first)[1] == b"a"


def test_out_of_order_within_window_and_too_old() -> None:
    sealer, opener = pair(window=16)
    packets = [sealer.seal(PacketType.VOICE, bytes([i])) for i in range(40)]
    for i in (5, 3, 4, 0, 1, 2):
        assert opener.open(packets[i])[1] == bytes([i])
    opener.open(packets[39])
    assert opener.open(packets[24])[1] == bytes([24])  # 39 - 24 < 16: still inside
    with pytest.raises(PacketError, match="replayed"):
        opener.open(packets[23])  # too old counts as replayed


def test_header_is_authenticated_type_swap() -> None:
    sealer, opener = pair()
    packet = bytearray(sealer.seal(PacketType.VOICE, b"x"))
    packet[1] = PacketType.KEEPALIVE
    with pytest.raises(PacketError, match="authentication failed"):
        opener.open(bytes(packet))


def test_header_struct_matches_spec() -> None:
    raw = MediaHeader(PacketType.VOICE, 1, 2).serialize()
    assert struct.unpack(">BBIQ", raw) == (0xC1, 1, 1, 2)
