"""STUN Binding: our codec, the responder's limits, and agreement with aioice's STUN code."""

from __future__ import annotations

import struct

import pytest
from aioice import stun as aioice_stun
from hypothesis import given
from hypothesis import strategies as st

from bangor.errors import PacketError
from bangor.wire import stun
from bangor.wire.media import MAGIC

TXID = bytes(range(12))


def responder(rate: float = 100.0, burst: int = 10, sources: int = 8) -> stun.BindingResponder:
    return stun.BindingResponder(rate, burst, sources)


def aioice_request(software: str = "") -> tuple[bytes, bytes]:
    """A Binding request made by aioice (not our code); returns it and its transaction id."""
    message = aioice_stun.Message(
        message_method=aioice_stun.Method.BINDING, message_class=aioice_stun.Class.REQUEST
    )
    if software:
        message.attributes["SOFTWARE"] = software
    return bytes(message), message.transaction_id


def test_our_request_is_padded_to_answer_any_family_at_once() -> None:
    request = stun.binding_request(TXID)
    assert len(request) == stun.REQUEST_SIZE
    assert len(stun.binding_success(TXID, ("2001:db8::1", 1))) <= len(request)
    parsed = aioice_stun.parse_message(request)
    assert parsed.message_method == aioice_stun.Method.BINDING
    assert parsed.message_class == aioice_stun.Class.REQUEST
    assert parsed.transaction_id == TXID


@pytest.mark.parametrize("addr", [("203.0.113.7", 40000), ("2001:db8::42", 1), ("0.0.0.0", 65535)])
def test_answers_decode_the_same_in_aioice_and_ours(addr: tuple[str, int]) -> None:
    answer = stun.binding_success(TXID, addr)
    parsed = aioice_stun.parse_message(answer)
    assert parsed.message_class == aioice_stun.Class.RESPONSE
    assert parsed.transaction_id == TXID
    assert parsed.attributes["XOR-MAPPED-ADDRESS"] == addr
    assert stun.parse_binding_success(answer, TXID) == addr


def test_we_read_an_aioice_made_answer() -> None:
    message = aioice_stun.Message(
        message_method=aioice_stun.Method.BINDING,
        message_class=aioice_stun.Class.RESPONSE,
        transaction_id=TXID,
    )
    message.attributes["XOR-MAPPED-ADDRESS"] = ("198.51.100.9", 3478)
    message.attributes["SOFTWARE"] = "someone else"
    message.add_fingerprint()
    assert stun.parse_binding_success(bytes(message), TXID) == ("198.51.100.9", 3478)


def test_answer_to_another_transaction_or_of_another_type_is_refused() -> None:
    answer = stun.binding_success(TXID, ("192.0.2.1", 5))
    with pytest.raises(PacketError, match="another transaction"):
        stun.parse_binding_success(answer, bytes(12))
    with pytest.raises(PacketError, match="not a Binding success"):
        stun.parse_binding_success(stun.binding_request(TXID), TXID)


def test_every_truncation_is_a_clean_error() -> None:
    answer = stun.binding_success(TXID, ("192.0.2.1", 5))
    for size in range(len(answer)):
        with pytest.raises(PacketError):
            stun.parse_binding_success(answer[:size], TXID)


@given(st.binary(max_size=80))
def test_junk_never_raises_anything_but_packet_error(data: bytes) -> None:
    with pytest.raises(PacketError):
        stun.parse_binding_success(data, TXID)
    assert responder().datagram_received(data, ("192.0.2.1", 5), 0.0) is None or (
        stun.is_stun(data)
    )


XOR_MAPPED, SOFTWARE = 0x0020, 0x8022  # attribute types (RFC 8489 18.3)


def message(attributes: bytes = b"", cookie: int = 0x2112A442) -> bytes:
    """A Binding success laid out by hand (RFC 8489 5), independent of our encoder."""
    return struct.pack(">HHI", 0x0101, len(attributes), cookie) + TXID + attributes


def attribute(attr_type: int, value: bytes, declared: int | None = None) -> bytes:
    size = len(value) if declared is None else declared
    return struct.pack(">HH", attr_type, size) + value + bytes(-len(value) % 4)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (message(attribute(SOFTWARE, bytes(stun.MAX_MESSAGE))), "STUN message too long"),
        (message(cookie=0x2112A443), "without the magic cookie"),
        (message(attribute(SOFTWARE, bytes(4), declared=8)), "truncated STUN attribute"),
        (message(attribute(SOFTWARE, b"someone")), "without XOR-MAPPED-ADDRESS"),
        (message(attribute(XOR_MAPPED, b"\x00\x01")), "without XOR-MAPPED-ADDRESS"),
        (message(attribute(XOR_MAPPED, b"\x00\x03\x00\x01" + bytes(4))), "bad XOR-MAPPED"),
        (message(attribute(XOR_MAPPED, b"\x00\x01\x00\x01" + bytes(16))), "bad XOR-MAPPED"),
    ],
)
def test_malformed_answers_are_refused(data: bytes, error: str) -> None:
    with pytest.raises(PacketError, match=error):
        stun.parse_binding_success(data, TXID)


@pytest.mark.parametrize("size", [0, 11, 13])
def test_a_transaction_id_is_12_bytes(size: int) -> None:
    with pytest.raises(ValueError, match="12 bytes"):
        stun.binding_request(bytes(size))


def test_media_and_stun_are_told_apart_by_the_first_byte() -> None:
    assert stun.is_stun(stun.binding_request(TXID))
    assert not stun.is_stun(bytes([MAGIC]) + stun.binding_request(TXID)[1:])


def test_a_padded_request_is_answered_at_once_with_no_more_bytes() -> None:
    r = responder()
    source = ("192.0.2.1", 5000)
    request = stun.binding_request(TXID)
    answer = r.datagram_received(request, source, 0.0)
    assert answer is not None and len(answer) <= len(request)
    assert stun.parse_binding_success(answer, TXID) == source


def test_a_bare_request_is_answered_on_its_retransmission_never_amplified() -> None:
    """Stock clients send 20 bytes; the answer is 32: the second try pays for it."""
    r = responder()
    request, _ = aioice_request()
    assert len(request) == 20
    source = ("192.0.2.1", 5000)
    sent = received = 0
    answers = []
    for i in range(10):
        received += len(request)
        answer = r.datagram_received(request, source, float(i))
        if answer is not None:
            sent += len(answer)
            answers.append((i, answer))
        assert sent <= received  # at no point more out than in
    assert (r.stats.received, r.stats.received_bytes) == (10, received)  # for --metrics
    assert (r.stats.answered, r.stats.answered_bytes) == (len(answers), sent)
    assert answers[0][0] == 1  # the first retransmission is answered
    assert len(answers) == received // 32  # every byte of credit is used, no more
    assert aioice_stun.parse_message(answers[0][1]).attributes["XOR-MAPPED-ADDRESS"] == source


def test_a_request_with_software_is_large_enough_at_once() -> None:
    request, _ = aioice_request("aioice test client")
    answer = responder().datagram_received(request, ("192.0.2.1", 5), 0.0)
    assert answer is not None and len(answer) <= len(request)


def test_answers_are_rate_limited_overall() -> None:
    r = responder(rate=10, burst=5)
    request = stun.binding_request(TXID)
    answered = [
        r.datagram_received(request, ("192.0.2.1", port), 0.0) is not None for port in range(20)
    ]
    assert sum(answered) == 5
    assert r.stats.rate_limited == 15
    # A second later, ten more tokens (capped at the burst).
    later = [
        r.datagram_received(request, ("192.0.2.2", port), 1.0) is not None for port in range(20)
    ]
    assert sum(later) == 5


def test_credit_table_is_bounded() -> None:
    r = responder(sources=8)
    request, _ = aioice_request()
    for port in range(100):
        r.datagram_received(request, ("192.0.2.1", port), 0.0)
    assert len(r._credit) == 8


def test_non_requests_get_no_answer() -> None:
    r = responder()
    answer = stun.binding_success(TXID, ("192.0.2.1", 5))
    assert r.datagram_received(answer + bytes(40), ("192.0.2.1", 5), 0.0) is None
    assert r.datagram_received(answer, ("192.0.2.1", 5), 0.0) is None
    assert r.stats.malformed == 2
