"""The sans-I/O relay with WebTransport members: a WebAddress is learned like a UDP
address, and a packet over a member's datagram limit is dropped for that member only."""

from __future__ import annotations

from bangor.server.relay import NO_LIMIT, Relay, WebAddress
from bangor.wire.media import HEADER_SIZE, TAG_SIZE, PacketType
from bangor.wire.voice import unpack_relayed
from tests.server.test_relay import NOW, Peer

UDP = ("10.0.0.1", 1000)
WEB = WebAddress(connection=7, stream_id=0, max_datagram=100)
OTHER_WEB = WebAddress(connection=8, stream_id=0, max_datagram=1200)
FITS = 100 - HEADER_SIZE - TAG_SIZE - 4  # the sender's id rides in front of the payload


def room() -> tuple[Relay, Peer, Peer, Peer]:
    relay = Relay()
    a, b, c = Peer(relay, 1), Peer(relay, 2), Peer(relay, 3)
    for peer, addr in ((a, UDP), (b, WEB), (c, OTHER_WEB)):
        relay.set_room(peer.session_id, "room")
        relay.datagram_received(peer.keepalive(), addr, NOW)
    assert [dest for _, dest in relay.datagrams_to_send()] == [UDP, WEB, OTHER_WEB]
    return relay, a, b, c


def test_a_web_address_is_learned_and_used_like_a_udp_one() -> None:
    relay, a, b, c = room()
    assert relay.address_of(b.session_id) == WEB
    relay.datagram_received(a.voice(b"x" * FITS), UDP, NOW)
    out = relay.datagrams_to_send()
    assert sorted((dest for _, dest in out), key=repr) == sorted([WEB, OTHER_WEB], key=repr)
    for packet, dest in out:
        peer = b if dest == WEB else c
        _, payload = peer.opener.open(packet)
        assert unpack_relayed(payload) == (a.session_id, b"x" * FITS)
        if dest == WEB:
            assert len(packet) == WEB.max_datagram
    assert relay.stats.dropped_too_big == 0


def test_a_packet_over_a_members_limit_is_dropped_for_that_member_only() -> None:
    relay, a, b, _ = room()
    relay.datagram_received(a.voice(b"x" * (FITS + 1)), UDP, NOW)
    assert [dest for _, dest in relay.datagrams_to_send()] == [OTHER_WEB]
    assert relay.stats.dropped_too_big == 1
    relay.datagram_received(b.voice(b"y" * 500), WEB, NOW)  # the web member may send more
    assert [dest for _, dest in relay.datagrams_to_send()] == [UDP, OTHER_WEB]
    assert relay.stats.dropped_too_big == 1


def test_roaming_from_web_to_udp_lifts_the_limit() -> None:
    relay, a, b, _ = room()
    relay.datagram_received(b.keepalive(), ("10.0.0.9", 9), NOW)
    relay.datagrams_to_send()
    relay.datagram_received(a.voice(b"x" * (FITS + 1)), UDP, NOW)
    assert ("10.0.0.9", 9) in [dest for _, dest in relay.datagrams_to_send()]
    assert relay.stats.dropped_too_big == 0


def test_a_keepalive_answer_over_the_limit_is_dropped() -> None:
    relay, _, b, _ = room()
    big = b.sealer.seal(PacketType.KEEPALIVE, bytes(FITS + 5))  # answer: 14 + FITS+5 + 16
    relay.datagram_received(big, WEB, NOW)
    assert relay.datagrams_to_send() == []
    assert relay.stats.dropped_too_big == 1
    assert NO_LIMIT > 1400
