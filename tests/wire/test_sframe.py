"""Tests for bangor.wire.sframe (RFC 9605 vectors, round trips, tampering, replay)."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bangor.errors import LocalProtocolError, PacketError
from bangor.wire.sframe import (
    AES_128_GCM_SHA256_128,
    CIPHER_SUITES,
    GENERATION_BITS,
    KEY_LABEL,
    MAX_HEADER_SIZE,
    RATCHET_STEP_BITS,
    SALT_LABEL,
    SENDER_INDEX_BITS,
    SFrameContext,
    SFrameHeader,
    SFrameKey,
    derive_key_salt,
    make_kid,
    ratchet,
    split_kid,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "data" / "sframe_vectors.json").read_text()
)
HEADER_VECTORS: list[dict[str, Any]] = VECTORS["header"]
SUITE4_VECTORS: list[dict[str, Any]] = [
    v for v in VECTORS["sframe"] if v["cipher_suite"] == AES_128_GCM_SHA256_128.suite_id
]
U64 = st.integers(min_value=0, max_value=2**64 - 1)
KEY = bytes(range(16))
TAG = AES_128_GCM_SHA256_128.tag_size


def pair(kid: int = 7, key: bytes = KEY) -> tuple[SFrameContext, SFrameContext]:
    sender, receiver = SFrameContext(), SFrameContext()
    sender.add_send_key(kid, key)
    receiver.add_receive_key(kid, key)
    return sender, receiver


def hv_id(v: dict[str, Any]) -> str:
    return f"kid{v['kid']}-ctr{v['ctr']}"


# --- header -----------------------------------------------------------------------


def test_vectors_loaded() -> None:
    assert "RFC 9605" in VECTORS["source"]
    assert len(HEADER_VECTORS) == 289
    assert len(SUITE4_VECTORS) == 1


@pytest.mark.parametrize("vec", HEADER_VECTORS, ids=hv_id)
def test_header_vector(vec: dict[str, Any]) -> None:
    encoded = bytes.fromhex(vec["encoded"])
    header = SFrameHeader(vec["kid"], vec["ctr"])
    assert header.serialize() == encoded
    assert SFrameHeader.parse(encoded) == (header, len(encoded))
    assert SFrameHeader.parse(encoded + b"\xaa\x55") == (header, len(encoded))
    assert SFrameKey(vec["kid"], KEY).header(vec["ctr"]) == encoded
    for n in range(len(encoded)):
        with pytest.raises(PacketError, match="truncated"):
            SFrameHeader.parse(encoded[:n])


@given(kid=U64, ctr=U64)
def test_header_round_trip(kid: int, ctr: int) -> None:
    encoded = SFrameHeader(kid, ctr).serialize()
    assert len(encoded) <= MAX_HEADER_SIZE
    assert SFrameHeader.parse(encoded) == (SFrameHeader(kid, ctr), len(encoded))


@pytest.mark.parametrize(
    "encoded",
    ["8005", "8000ff", "0805", "0900ff", "f0000000000000000001"],
    ids=["kid-inline-value", "kid-leading-zero", "ctr-inline-value", "ctr-leading-zero", "long"],
)
def test_header_non_minimal_rejected(encoded: str) -> None:
    with pytest.raises(PacketError, match="minimally"):
        SFrameHeader.parse(bytes.fromhex(encoded))


@pytest.mark.parametrize(("kid", "ctr"), [(-1, 0), (0, -1), (2**64, 0), (0, 2**64)])
def test_header_out_of_range(kid: int, ctr: int) -> None:
    with pytest.raises(LocalProtocolError):
        SFrameHeader(kid, ctr)


# --- RFC 9605 encryption vectors (suite 0x0004) --------------------------------------


@pytest.mark.parametrize("vec", SUITE4_VECTORS, ids=hv_id)
def test_encryption_vector(vec: dict[str, Any]) -> None:
    kid, ctr = vec["kid"], vec["ctr"]
    base_key = bytes.fromhex(vec["base_key"])
    metadata = bytes.fromhex(vec["metadata"])
    plaintext = bytes.fromhex(vec["pt"])
    frame = bytes.fromhex(vec["ct"])
    context = kid.to_bytes(8, "big") + (4).to_bytes(2, "big")

    assert KEY_LABEL + context == bytes.fromhex(vec["sframe_key_label"])
    assert SALT_LABEL + context == bytes.fromhex(vec["sframe_salt_label"])
    secret = hmac.new(b"", base_key, hashlib.sha256).digest()  # HKDF-Extract("", base_key)
    assert secret == bytes.fromhex(vec["sframe_secret"])

    key, salt = derive_key_salt(base_key, kid)
    assert key == bytes.fromhex(vec["sframe_key"])
    assert salt == bytes.fromhex(vec["sframe_salt"])

    sk = SFrameKey(kid, base_key)
    assert sk.nonce(ctr) == bytes.fromhex(vec["nonce"])
    assert SFrameHeader(kid, ctr).serialize() + metadata == bytes.fromhex(vec["aad"])
    assert sk.seal(ctr, metadata, plaintext) == frame
    assert len(frame) == len(SFrameHeader(kid, ctr).serialize()) + len(plaintext) + TAG

    receiver = SFrameContext()
    receiver.add_receive_key(kid, base_key)
    assert receiver.decrypt(metadata, frame) == (kid, plaintext)


def test_suite_registry() -> None:
    assert CIPHER_SUITES == {0x0004: AES_128_GCM_SHA256_128}
    assert AES_128_GCM_SHA256_128.tag_size == 16


# --- round trips ----------------------------------------------------------------------


@given(kid=U64, metadata=st.binary(max_size=64), plaintext=st.binary(max_size=1500))
def test_context_round_trip(kid: int, metadata: bytes, plaintext: bytes) -> None:
    sender, receiver = pair(kid)
    for expected_ctr in range(3):
        frame = sender.encrypt(kid, metadata, plaintext)
        header, size = SFrameHeader.parse(frame)
        assert header == SFrameHeader(kid, expected_ctr)
        assert len(frame) == size + len(plaintext) + TAG
        assert receiver.decrypt(metadata, frame) == (kid, plaintext)


@given(kid=U64, ctr=U64, metadata=st.binary(max_size=64), plaintext=st.binary(max_size=300))
def test_key_round_trip_any_ctr(kid: int, ctr: int, metadata: bytes, plaintext: bytes) -> None:
    frame = SFrameKey(kid, KEY).seal(ctr, metadata, plaintext)
    assert SFrameHeader.parse(frame)[0] == SFrameHeader(kid, ctr)
    receiver = SFrameContext()
    receiver.add_receive_key(kid, KEY)
    assert receiver.decrypt(metadata, frame) == (kid, plaintext)


def test_out_of_order_accepted() -> None:
    sender, receiver = pair()
    frames = [sender.encrypt(7, b"m", bytes([i])) for i in range(5)]
    for i in (3, 0, 4, 1, 2):
        assert receiver.decrypt(b"m", frames[i]) == (7, bytes([i]))


# --- tampering --------------------------------------------------------------------------

META = b"room 7 / speaker 3"
PAYLOAD = bytes(range(80))


def sample_frame() -> tuple[SFrameContext, bytes]:
    kid = make_kid(3, 2, 1)
    sender, receiver = pair(kid)
    for _ in range(300):  # a multi-byte CTR, so the header has every part
        frame = sender.encrypt(kid, META, PAYLOAD)
    return receiver, frame


def test_every_truncation_rejected() -> None:
    receiver, frame = sample_frame()
    for n in range(len(frame)):
        with pytest.raises(PacketError):
            receiver.decrypt(META, frame[:n])
    assert receiver.decrypt(META, frame)[1] == PAYLOAD


def test_truncation_messages() -> None:
    receiver, frame = sample_frame()
    _, size = SFrameHeader.parse(frame)
    with pytest.raises(PacketError, match="empty"):
        receiver.decrypt(META, b"")
    with pytest.raises(PacketError, match="truncated SFrame header"):
        receiver.decrypt(META, frame[: size - 1])
    with pytest.raises(PacketError, match="shorter than the tag"):
        receiver.decrypt(META, frame[: size + TAG - 1])


def test_every_bit_flip_rejected() -> None:
    receiver, frame = sample_frame()
    for i in range(len(frame) * 8):
        forged = bytearray(frame)
        forged[i // 8] ^= 1 << (i % 8)
        with pytest.raises(PacketError):
            receiver.decrypt(META, bytes(forged))
    assert receiver.decrypt(META, frame)[1] == PAYLOAD


def test_metadata_bit_flip_rejected() -> None:
    receiver, frame = sample_frame()
    for i in range(len(META) * 8):
        meta = bytearray(META)
        meta[i // 8] ^= 1 << (i % 8)
        with pytest.raises(PacketError, match="authentication failed"):
            receiver.decrypt(bytes(meta), frame)
    with pytest.raises(PacketError, match="authentication failed"):
        receiver.decrypt(META + b"\x00", frame)
    assert receiver.decrypt(META, frame)[1] == PAYLOAD


def test_wrong_key_rejected() -> None:
    sender, _ = pair(5)
    receiver = SFrameContext()
    receiver.add_receive_key(5, bytes(16))
    with pytest.raises(PacketError, match="SFrame authentication failed"):
        receiver.decrypt(b"", sender.encrypt(5, b"", b"hi"))


# --- replay and key management ------------------------------------------------------------


def test_replay_rejected() -> None:
    sender, receiver = pair()
    frame = sender.encrypt(7, b"", b"voice")
    assert receiver.decrypt(b"", frame) == (7, b"voice")
    with pytest.raises(PacketError, match="replayed"):
        receiver.decrypt(b"", frame)


def test_forgery_does_not_move_replay_window() -> None:
    sender, receiver = pair()
    forged = SFrameKey(7, bytes(16)).seal(10**6, b"", b"x")  # right KID, wrong key
    with pytest.raises(PacketError, match="authentication failed"):
        receiver.decrypt(b"", forged)
    assert receiver.decrypt(b"", sender.encrypt(7, b"", b"ok")) == (7, b"ok")


def test_replay_windows_are_per_kid() -> None:
    a, receiver = pair(1)
    b = SFrameContext()
    b.add_send_key(2, bytes(range(1, 17)))
    receiver.add_receive_key(2, bytes(range(1, 17)))
    assert receiver.decrypt(b"", a.encrypt(1, b"", b"a")) == (1, b"a")  # CTR 0 for KID 1
    assert receiver.decrypt(b"", b.encrypt(2, b"", b"b")) == (2, b"b")  # CTR 0 for KID 2


def test_unknown_kid_rejected() -> None:
    _, receiver = pair(7)
    other = SFrameContext()
    other.add_send_key(8, KEY)
    with pytest.raises(PacketError, match="unknown SFrame key id"):
        receiver.decrypt(b"", other.encrypt(8, b"", b"x"))


def test_removed_key_rejected() -> None:
    sender, receiver = pair(7)
    frame = sender.encrypt(7, b"", b"x")
    receiver.remove_receive_key(7)
    with pytest.raises(PacketError, match="unknown SFrame key id"):
        receiver.decrypt(b"", frame)
    with pytest.raises(LocalProtocolError):
        receiver.remove_receive_key(7)


def test_receive_key_readd() -> None:
    sender, receiver = pair(7)
    frame = sender.encrypt(7, b"", b"x")
    receiver.decrypt(b"", frame)
    receiver.add_receive_key(7, KEY)  # same key: no-op, window kept
    with pytest.raises(PacketError, match="replayed"):
        receiver.decrypt(b"", frame)
    with pytest.raises(LocalProtocolError):
        receiver.add_receive_key(7, bytes(16))


def test_send_key_misuse() -> None:
    ctx = SFrameContext()
    with pytest.raises(LocalProtocolError):
        ctx.encrypt(1, b"", b"x")
    ctx.add_send_key(1, KEY)
    with pytest.raises(LocalProtocolError, match="nonce reuse"):
        ctx.add_send_key(1, KEY)
    ctx.remove_send_key(1)
    with pytest.raises(LocalProtocolError):
        ctx.encrypt(1, b"", b"x")
    with pytest.raises(LocalProtocolError, match="nonce reuse"):
        ctx.add_send_key(1, KEY)
    with pytest.raises(LocalProtocolError):
        ctx.remove_send_key(1)
    with pytest.raises(LocalProtocolError):
        ctx.add_send_key(2, b"short")
    with pytest.raises(LocalProtocolError):
        ctx.add_send_key(2**64, KEY)


def test_send_ctr_exhaustion() -> None:
    ctx = SFrameContext(send_limit=3)
    ctx.add_send_key(1, KEY)
    ctrs = [SFrameHeader.parse(ctx.encrypt(1, b"", b"x"))[0].ctr for _ in range(3)]
    assert ctrs == [0, 1, 2]
    with pytest.raises(LocalProtocolError, match="exhausted"):
        ctx.encrypt(1, b"", b"x")
    with pytest.raises(LocalProtocolError):
        SFrameContext(send_limit=0)


# --- KID layout and ratchet ------------------------------------------------------------------


def test_kid_layout_constants() -> None:
    assert SENDER_INDEX_BITS + GENERATION_BITS + RATCHET_STEP_BITS == 64
    assert make_kid(0, 0, 0) == 0
    assert make_kid(1, 2, 3) == 0x010203
    assert split_kid(2**64 - 1) == (2**SENDER_INDEX_BITS - 1, 255, 255)


@given(
    sender=st.integers(0, 2**SENDER_INDEX_BITS - 1),
    generation=st.integers(0, 2**GENERATION_BITS - 1),
    step=st.integers(0, 2**RATCHET_STEP_BITS - 1),
)
def test_kid_round_trip(sender: int, generation: int, step: int) -> None:
    kid = make_kid(sender, generation, step)
    assert 0 <= kid < 2**64
    assert split_kid(kid) == (sender, generation, step)


@pytest.mark.parametrize(
    "args", [(-1, 0, 0), (2**SENDER_INDEX_BITS, 0, 0), (0, 256, 0), (0, -1, 0), (0, 0, 256)]
)
def test_make_kid_out_of_range(args: tuple[int, int, int]) -> None:
    with pytest.raises(LocalProtocolError):
        make_kid(*args)


def test_split_kid_out_of_range() -> None:
    with pytest.raises(LocalProtocolError):
        split_kid(2**64)


def test_ratchet() -> None:
    k1 = ratchet(KEY)
    assert k1 == ratchet(KEY)
    assert k1 != KEY
    assert len(k1) == AES_128_GCM_SHA256_128.hash_size
    k2 = ratchet(k1)
    assert len({KEY, k1, k2}) == 3
    # RFC 9605 section 5.1: HKDF-Expand(HKDF-Extract("", key), "SFrame 1.0 Ratchet", Nh);
    # one block of HKDF-Expand is HMAC(prk, info || 0x01).
    prk = hmac.new(b"", KEY, hashlib.sha256).digest()
    assert k1 == hmac.new(prk, b"SFrame 1.0 Ratchet\x01", hashlib.sha256).digest()


def test_ratcheted_key_differs_on_wire() -> None:
    kid0, kid1 = make_kid(1, 0, 0), make_kid(1, 0, 1)
    sender = SFrameContext()
    sender.add_send_key(kid1, ratchet(KEY))
    joiner = SFrameContext()  # joined after the ratchet: has only the new key
    joiner.add_receive_key(kid1, ratchet(KEY))
    old = SFrameKey(kid0, KEY).seal(0, b"", b"before join")
    with pytest.raises(PacketError, match="unknown"):
        joiner.decrypt(b"", old)
    assert joiner.decrypt(b"", sender.encrypt(kid1, b"", b"after")) == (kid1, b"after")
