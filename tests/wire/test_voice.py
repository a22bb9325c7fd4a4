"""Voice frames and the relay's sender prefix."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bangor.errors import PacketError
from bangor.wire.voice import (
    MAX_EXCEPT,
    MAX_REDUNDANT,
    MAX_SPREAD,
    VoiceFrame,
    pack_except,
    pack_relayed,
    unpack_except,
    unpack_relayed,
)


@given(st.integers(0, 2**32 - 1), st.binary(min_size=1, max_size=1200))
def test_voice_frame_round_trip(seq: int, opus: bytes) -> None:
    assert VoiceFrame.parse(VoiceFrame(seq, opus).serialize()) == VoiceFrame(seq, opus)


def test_sequence_wraps() -> None:
    assert VoiceFrame.parse(VoiceFrame(2**32, b"x").serialize()).seq == 0


@pytest.mark.parametrize("length", range(8))
def test_truncated_frame_rejected(length: int) -> None:
    with pytest.raises(PacketError, match="too short"):
        VoiceFrame.parse(bytes(length))


redundancy = st.lists(st.binary(min_size=1, max_size=300), max_size=MAX_REDUNDANT)


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**16 - 1),
    redundancy,
    st.integers(0, MAX_REDUNDANT),
    st.binary(min_size=1, max_size=300),
)
def test_redundant_frames_round_trip(
    seq: int, packet: int, copies: list[bytes], depth: int, opus: bytes
) -> None:
    frame = VoiceFrame(seq, opus, packet, tuple(copies), depth)
    assert VoiceFrame.parse(frame.serialize()) == frame


def test_wire_layout() -> None:
    """seq | packet | info (count, depth) | lengths | copies oldest first | primary."""
    data = VoiceFrame(7, b"PRI", 0x0102, (b"a", b"bc"), 3).serialize()
    assert data == bytes.fromhex("00000007 0102 0e 0001 0002") + b"abcPRI"


@given(redundancy.filter(bool), st.binary(min_size=1, max_size=50), st.data())
def test_every_truncation_of_a_redundant_frame_is_rejected(
    copies: list[bytes], opus: bytes, data: st.DataObject
) -> None:
    wire = VoiceFrame(1, opus, 2, tuple(copies), 2).serialize()
    header_and_copies = len(wire) - len(opus)
    cut = data.draw(st.integers(0, header_and_copies))
    with pytest.raises(PacketError):
        VoiceFrame.parse(wire[:cut])


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (bytes.fromhex("00000001 0000 20") + b"x", "unknown flags"),
        # Spread: the masks must agree with the counts, and copies lie within the plan.
        (bytes.fromhex("00000001 0000 19 80 80 0001") + b"ax", "do not match"),  # plan 1, depth 2
        (bytes.fromhex("00000001 0000 15 01 02 0001") + b"ax", "do not match"),  # outside plan
        (bytes.fromhex("00000001 0000 16 03 01 0001") + b"ax", "do not match"),  # count 2, 1 bit
        (bytes.fromhex("00000001 0000 14 01"), "too short"),
        (bytes.fromhex("00000001 0000 01 0000") + b"xx", "do not fit"),  # zero length
        (bytes.fromhex("00000001 0000 01 0005") + b"xxxxx", "do not fit"),  # no primary left
    ],
)
def test_malformed_redundancy_rejected(wire: bytes, message: str) -> None:
    with pytest.raises(PacketError, match=message):
        VoiceFrame.parse(wire)


spread_plans = st.lists(st.integers(1, MAX_SPREAD), min_size=1, max_size=MAX_REDUNDANT, unique=True)


@given(st.integers(0, 2**32 - 1), spread_plans, st.data(), st.binary(min_size=1, max_size=300))
def test_spread_frames_round_trip_and_place_copies_by_their_real_seq(
    seq: int, plan_list: list[int], data: st.DataObject, opus: bytes
) -> None:
    plan = tuple(sorted(plan_list))
    carried = tuple(sorted(data.draw(st.sets(st.sampled_from(plan))), reverse=True))
    copies = tuple(d.to_bytes(2, "big") for d in carried)  # each copy names its distance
    frame = VoiceFrame(seq, opus, 9, copies, len(plan), carried, plan)
    parsed = VoiceFrame.parse(frame.serialize())
    assert parsed == frame
    assert parsed.reach == plan[-1]
    placed = [((seq - int.from_bytes(c, "big")) % 2**32, c) for c in copies]
    assert parsed.copies() == placed


def test_spread_wire_layout_worked_example() -> None:
    """docs/PROTOCOL.md 6.3: copies of ticks n-8 and n-4; info bit 4 and two masks."""
    frame = VoiceFrame(7, b"PRI", 0x0102, (b"a", b"bc"), 2, (8, 4), (4, 8))
    data = frame.serialize()
    assert data == bytes.fromhex("00000007 0102 1a 88 88 0001 0002") + b"abcPRI"
    assert VoiceFrame.parse(data).copies() == [(7 - 8 + 2**32, b"a"), (3, b"bc")]
    # A talk spurt's second packet: only tick n-1 was sent before it, so no copy yet.
    early = VoiceFrame(1, b"P", 1, (), 2, (), (4, 8)).serialize()
    assert early == bytes.fromhex("00000001 0001 18 88 00") + b"P"
    # Consecutive frames read as before: copies of the ticks just before.
    assert VoiceFrame(7, b"P", 0, (b"a", b"bc"), 3).copies() == [(5, b"a"), (6, b"bc")]
    assert VoiceFrame(7, b"P", 0, (b"a",), 3).reach == 3


@pytest.mark.parametrize(
    ("copies", "distances", "plan", "depth"),
    [
        ((), (), (8, 4), 2),  # plan not rising
        ((), (), (9,), 1),  # beyond MAX_SPREAD
        ((), (), (2, 4), 1),  # depth is not the plan's length
        ((b"a", b"b"), (2, 4), (2, 4), 2),  # copies not farthest first
        ((b"a",), (3,), (2, 4), 2),  # a copy outside the plan
        ((b"a", b"b"), (4,), (2, 4), 2),  # one distance, two copies
    ],
)
def test_inconsistent_spread_is_a_local_error(
    copies: tuple[bytes, ...], distances: tuple[int, ...], plan: tuple[int, ...], depth: int
) -> None:
    with pytest.raises(ValueError):
        VoiceFrame(10, b"x", 0, copies, depth, distances, plan).serialize()


def test_more_copies_than_the_format_holds_is_a_local_error() -> None:
    with pytest.raises(ValueError):
        VoiceFrame(1, b"x", 0, (b"a",) * (MAX_REDUNDANT + 1)).serialize()


@given(st.integers(0, 2**32 - 1), st.binary(min_size=1, max_size=100))
def test_relayed_round_trip(sender: int, payload: bytes) -> None:
    assert unpack_relayed(pack_relayed(sender, payload)) == (sender, payload)


@pytest.mark.parametrize("length", range(5))
def test_truncated_relayed_rejected(length: int) -> None:
    with pytest.raises(PacketError):
        unpack_relayed(bytes(length))


def test_the_worked_example_of_protocol_md() -> None:
    """docs/PROTOCOL.md 8.10 and 5.3: a VoiceFrame sealed with SFrame, then the hop layer."""
    from cryptography.hazmat.primitives import hashes, hmac
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    from bangor.wire.media import HopSealer, PacketType, derive_media_keys
    from bangor.wire.sframe import SFrameKey

    plaintext = VoiceFrame(5, bytes.fromhex("f8fffe")).serialize()
    assert plaintext == bytes.fromhex("00000005 000000 f8fffe")
    extract = hmac.HMAC(bytes(32), hashes.SHA256())
    extract.update(bytes(range(32)))
    voice_key = HKDFExpand(hashes.SHA256(), 32, b"bangor/1 voice").derive(extract.finalize())
    metadata = b"bangor/1 voice " + bytes.fromhex("0123456789abcdef b2175c32")
    frame = SFrameKey(0x0102, voice_key).seal(5, metadata, plaintext)
    assert frame == bytes.fromhex("950102 404cf0f4e569dd27b691 2f3e355f48564bbfde35999c80988a95")
    sealer = HopSealer(derive_media_keys(bytes(range(32))).client_to_server, 0xB2175C32)
    for _ in range(5):
        sealer.seal(PacketType.KEEPALIVE, b"")  # counters 0..4
    datagram = sealer.seal(PacketType.VOICE, frame)
    assert datagram == bytes.fromhex(
        "c101b2175c32 0000000000000005"
        "89a48416a7175dbd629a456a16dbb90a31c4d2021a2b16e4d1eb136400"
        "ae612ecda5af3bb5a080cc98bf486a00"
    )


def test_a_voice_except_leaves_out_at_most_max_except_members() -> None:
    skip = list(range(1, MAX_EXCEPT + 1))
    assert unpack_except(pack_except(skip, b"voice")) == (frozenset(skip), b"voice")
    with pytest.raises(ValueError, match=f"at most {MAX_EXCEPT} members"):
        pack_except([*skip, MAX_EXCEPT + 1], b"voice")
