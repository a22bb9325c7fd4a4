"""Tests for bangor.wire.noise: cacophony vectors, in-memory pairs, tampering."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from noise.connection import Keypair, NoiseConnection

from bangor.errors import HandshakeError, LocalProtocolError, RemoteProtocolError
from bangor.wire.framing import LENGTH_PREFIX, encode_frame
from bangor.wire.noise import (
    MAX_PLAINTEXT,
    PROLOGUE,
    PROTOCOL_NAME,
    HandshakeComplete,
    MessageReceived,
    NoiseEvent,
    NoiseSession,
    fingerprint,
    format_fingerprint,
    generate_static_key,
    public_key,
)

VECTORS = json.loads((Path(__file__).parent.parent / "data" / "noise_vectors.json").read_text())


def vector(name: str) -> dict[str, Any]:
    (v,) = [v for v in VECTORS["vectors"] if v["protocol_name"] == name]
    found: dict[str, Any] = v
    return found


class VectorSession(NoiseSession):
    """Sends the vector's handshake payloads and records the ones received."""

    def __init__(self, *args: Any, payloads: list[bytes], **kwargs: Any) -> None:
        self.to_send = list(payloads)
        self.received: list[bytes] = []
        super().__init__(*args, **kwargs)

    def _handshake_payload(self) -> bytes:
        return self.to_send.pop(0)

    def _check_handshake_payload(self, payload: bytes) -> None:
        self.received.append(payload)


def unframe(data: bytes) -> bytes:
    assert int.from_bytes(data[:LENGTH_PREFIX], "big") == len(data) - LENGTH_PREFIX
    return data[LENGTH_PREFIX:]


def test_vectors_file_names_its_source() -> None:
    assert "cacophony" in VECTORS["source"]
    assert vector(PROTOCOL_NAME.decode())["handshake_hash"]


def test_xx_vector_through_noise_session() -> None:
    v = vector("Noise_XX_25519_ChaChaPoly_BLAKE2s")
    msgs = [(bytes.fromhex(m["payload"]), bytes.fromhex(m["ciphertext"])) for m in v["messages"]]
    init = VectorSession(
        True,
        bytes.fromhex(v["init_static"]),
        prologue=bytes.fromhex(v["init_prologue"]),
        ephemeral_private=bytes.fromhex(v["init_ephemeral"]),
        payloads=[msgs[0][0], msgs[2][0]],
    )
    resp = VectorSession(
        False,
        bytes.fromhex(v["resp_static"]),
        prologue=bytes.fromhex(v["resp_prologue"]),
        ephemeral_private=bytes.fromhex(v["resp_ephemeral"]),
        payloads=[msgs[1][0]],
    )
    init.initiate()
    m1 = init.data_to_send()
    assert unframe(m1) == msgs[0][1]
    assert feed(resp, m1) == []
    m2 = resp.data_to_send()
    assert unframe(m2) == msgs[1][1]
    (done_i,) = feed(init, m2)
    m3 = init.data_to_send()
    assert unframe(m3) == msgs[2][1]
    (done_r,) = feed(resp, m3)
    assert resp.received == [msgs[0][0], msgs[2][0]]
    assert init.received == [msgs[1][0]]

    h = bytes.fromhex(v["handshake_hash"])
    assert done_i == HandshakeComplete(public_key(bytes.fromhex(v["resp_static"])), h)
    assert done_r == HandshakeComplete(public_key(bytes.fromhex(v["init_static"])), h)
    assert init.handshake_hash == resp.handshake_hash == h

    # Transport messages alternate, responder first.
    for i, (payload, ciphertext) in enumerate(msgs[3:]):
        sender, receiver = (resp, init) if i % 2 == 0 else (init, resp)
        sender.send(payload)
        wire = sender.data_to_send()
        assert unframe(wire) == ciphertext
        assert feed(receiver, wire) == [MessageReceived(payload)]


def test_xxpsk3_vector_with_noiseprotocol() -> None:
    # Bangor's member channels use XXpsk3; prove the library matches the vector.
    v = vector("Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s")
    conns = []
    for side in ("init", "resp"):
        c = NoiseConnection.from_name(v["protocol_name"].encode())
        c.set_as_initiator() if side == "init" else c.set_as_responder()
        c.set_prologue(bytes.fromhex(v[f"{side}_prologue"]))
        c.set_psks(psks=[bytes.fromhex(p) for p in v[f"{side}_psks"]])
        c.set_keypair_from_private_bytes(Keypair.STATIC, bytes.fromhex(v[f"{side}_static"]))
        c.set_keypair_from_private_bytes(Keypair.EPHEMERAL, bytes.fromhex(v[f"{side}_ephemeral"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c.start_handshake()
        conns.append(c)
    init, resp = conns
    for i, m in enumerate(v["messages"]):
        payload, ciphertext = bytes.fromhex(m["payload"]), bytes.fromhex(m["ciphertext"])
        sender, receiver = (init, resp) if i % 2 == 0 else (resp, init)
        if i < 3:
            assert bytes(sender.write_message(payload)) == ciphertext
            assert bytes(receiver.read_message(ciphertext)) == payload
        else:
            assert sender.encrypt(payload) == ciphertext
            assert receiver.decrypt(ciphertext) == payload
    h = bytes.fromhex(v["handshake_hash"])
    assert init.get_handshake_hash() == resp.get_handshake_hash() == h


def feed(session: NoiseSession, data: bytes) -> list[NoiseEvent]:
    """Feed ``data`` and take every event it completed."""
    session.receive_data(data, 0.0)
    events: list[NoiseEvent] = []
    while (event := session.next_event()) is not None:
        events.append(event)
    return events


def transfer(src: NoiseSession, dst: NoiseSession, chunk: int = 1) -> list[Any]:
    data = src.data_to_send()
    events: list[Any] = []
    for i in range(0, len(data), chunk):
        events += feed(dst, data[i : i + chunk])
    return events


def make_pair() -> tuple[NoiseSession, NoiseSession, bytes, bytes]:
    ki, kr = generate_static_key(), generate_static_key()
    return NoiseSession(True, ki), NoiseSession(False, kr), ki, kr


def handshake(init: NoiseSession, resp: NoiseSession) -> None:
    init.initiate()
    assert transfer(init, resp) == []
    assert len(transfer(resp, init)) == 1
    assert len(transfer(init, resp)) == 1


def test_pair_handshake_and_messages_in_one_byte_chunks() -> None:
    init, resp, ki, kr = make_pair()
    assert not init.handshake_complete and init.remote_static is None
    init.initiate()
    assert transfer(init, resp) == []
    (ev_i,) = transfer(resp, init)
    (ev_r,) = transfer(init, resp)
    assert ev_i.remote_static == public_key(kr) == init.remote_static
    assert ev_r.remote_static == public_key(ki) == resp.remote_static
    assert ev_i.handshake_hash == ev_r.handshake_hash == init.handshake_hash
    assert len(ev_i.handshake_hash) == 32
    for n in range(3):
        init.send(b"ping %d" % n)
        resp.send(b"pong %d" % n)
    init.send(b"x" * MAX_PLAINTEXT)
    assert transfer(init, resp) == [MessageReceived(b"ping %d" % n) for n in range(3)] + [
        MessageReceived(b"x" * MAX_PLAINTEXT)
    ]
    assert transfer(resp, init, chunk=7) == [MessageReceived(b"pong %d" % n) for n in range(3)]
    assert init.data_to_send() == b""


def test_handshake_and_first_message_in_one_chunk() -> None:
    init, resp, _, _ = make_pair()
    init.initiate()
    transfer(init, resp)
    transfer(resp, init)
    init.send(b"hello")
    events = feed(resp, init.data_to_send())
    assert isinstance(events[0], HandshakeComplete)
    assert events[1:] == [MessageReceived(b"hello")]


def test_prologue_mismatch_fails() -> None:
    init = NoiseSession(True, generate_static_key(), prologue=b"bangor/2 other")
    resp = NoiseSession(False, generate_static_key())
    init.initiate()
    transfer(init, resp)
    with pytest.raises(HandshakeError):
        transfer(resp, init)


def test_tampered_message_1_fails_at_initiator() -> None:
    # Any 32 bytes are an X25519 key, so a bent ephemeral shows up one message later.
    init, resp, _, _ = make_pair()
    init.initiate()
    data = bytearray(init.data_to_send())
    data[LENGTH_PREFIX] ^= 0x01
    feed(resp, bytes(data))
    with pytest.raises(HandshakeError):
        transfer(resp, init)


@pytest.mark.parametrize("message", [2, 3])
def test_every_byte_of_handshake_message_is_protected(message: int) -> None:
    ki, kr, ei, er = (generate_static_key() for _ in range(4))

    def fresh() -> tuple[NoiseSession, NoiseSession]:
        # Fixed ephemerals make every run produce the same bytes up to `message`.
        return (
            NoiseSession(True, ki, ephemeral_private=ei),
            NoiseSession(False, kr, ephemeral_private=er),
        )

    clean_init, clean_resp = fresh()
    clean_init.initiate()
    wire = [clean_init.data_to_send()]
    feed(clean_resp, wire[0])
    wire.append(clean_resp.data_to_send())
    feed(clean_init, wire[1])
    wire.append(clean_init.data_to_send())
    target = wire[message - 1]
    for pos in range(LENGTH_PREFIX, len(target)):
        init, resp = fresh()
        init.initiate()
        init.data_to_send()
        receiver = init if message == 2 else resp
        if message == 3:
            feed(resp, wire[0])
            resp.data_to_send()
        damaged = bytearray(target)
        damaged[pos] ^= 0x01
        with pytest.raises(HandshakeError) as info:
            feed(receiver, bytes(damaged))
        assert str(info.value) == "noise handshake failed (bad message or wrong key)"
        assert not receiver.handshake_complete
        with pytest.raises(LocalProtocolError):
            feed(receiver, b"\0")


def test_truncated_handshake_message() -> None:
    init, resp, _, _ = make_pair()
    init.initiate()
    data = init.data_to_send()
    with pytest.raises(HandshakeError):
        feed(resp, encode_frame(unframe(data)[:-1]))


def test_tampered_transport_message() -> None:
    init, resp, _, _ = make_pair()
    handshake(init, resp)
    init.send(b"secret")
    data = bytearray(init.data_to_send())
    data[5] ^= 0x80
    with pytest.raises(RemoteProtocolError, match="failed authentication") as info:
        feed(resp, bytes(data))
    assert not isinstance(info.value, HandshakeError)


def test_replayed_transport_message() -> None:
    init, resp, _, _ = make_pair()
    handshake(init, resp)
    init.send(b"once")
    data = init.data_to_send()
    assert feed(resp, data) == [MessageReceived(b"once")]
    with pytest.raises(RemoteProtocolError):
        feed(resp, data)


def test_misuse_is_local_error() -> None:
    init, resp, _, _ = make_pair()
    with pytest.raises(LocalProtocolError):
        init.send(b"too early")
    with pytest.raises(LocalProtocolError):
        resp.initiate()
    with pytest.raises(LocalProtocolError):
        feed(init, b"\0\1x")
    init.initiate()
    with pytest.raises(LocalProtocolError):
        init.initiate()
    handshake_rest(init, resp)
    with pytest.raises(LocalProtocolError):
        init.send(b"x" * (MAX_PLAINTEXT + 1))
    with pytest.raises(LocalProtocolError):
        NoiseSession(True, b"short")


def handshake_rest(init: NoiseSession, resp: NoiseSession) -> None:
    transfer(init, resp)
    transfer(resp, init)
    transfer(init, resp)


def test_non_empty_handshake_payload_rejected() -> None:
    init = VectorSession(True, generate_static_key(), payloads=[b"hi"])
    resp = NoiseSession(False, generate_static_key())
    init.initiate()
    with pytest.raises(HandshakeError, match="unexpected payload"):
        transfer(init, resp)


def test_keys_and_fingerprints() -> None:
    k = generate_static_key()
    assert len(k) == 32 and k != generate_static_key()
    pub = public_key(k)
    assert len(pub) == 32
    fp = fingerprint(pub)
    assert len(fp) == 16
    assert format_fingerprint(bytes.fromhex("ab12cd34")) == "ab12:cd34"
    text = format_fingerprint(fp)
    assert len(text.split(":")) == 8 and text == text.lower()
    assert text.replace(":", "") == fp.hex()


def test_prologue_binds_name() -> None:
    assert PROLOGUE == b"bangor/1 Noise_XX_25519_ChaChaPoly_BLAKE2s"


def test_events_before_a_bad_frame_stay_queued() -> None:
    init, resp, _, _ = make_pair()
    handshake(init, resp)
    init.send(b"good")
    good = init.data_to_send()
    with pytest.raises(RemoteProtocolError, match="failed authentication"):
        resp.receive_data(good + encode_frame(b"\x00" * 40), 0.0)
    assert resp.next_event() == MessageReceived(b"good")
    assert resp.next_event() is None
