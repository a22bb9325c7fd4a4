"""The sans-I/O relay: routing, authentication, replay, roaming, no amplification."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bangor.server.relay import Address, Relay
from bangor.wire.media import HopOpener, HopSealer, MediaKeys, PacketType
from bangor.wire.voice import pack_except, unpack_relayed

A, B, C = ("10.0.0.1", 1000), ("10.0.0.2", 2000), ("10.0.0.3", 3000)
NOW = 1000.0


def exchange(relay: Relay, data: bytes, addr: Address) -> list[tuple[bytes, Address]]:
    """Hand ``relay`` one datagram; what it sends back."""
    relay.datagram_received(data, addr, NOW)
    return relay.datagrams_to_send()


class Peer:
    """A client's side of the hop crypto."""

    def __init__(self, relay: Relay, session_id: int) -> None:
        self.keys = MediaKeys(os.urandom(32), os.urandom(32))
        self.session_id = session_id
        relay.add_session(session_id, self.keys)
        self.sealer = HopSealer(self.keys.client_to_server, session_id)
        self.opener = HopOpener(self.keys.server_to_client, session_id)

    def voice(self, payload: bytes) -> bytes:
        return self.sealer.seal(PacketType.VOICE, payload)

    def keepalive(self) -> bytes:
        return self.sealer.seal(PacketType.KEEPALIVE, b"12345678")


@pytest.fixture
def room() -> tuple[Relay, Peer, Peer, Peer]:
    relay = Relay()
    a, b, c = Peer(relay, 1), Peer(relay, 2), Peer(relay, 3)
    for peer, addr in ((a, A), (b, B), (c, C)):
        relay.set_room(peer.session_id, "room")
        assert exchange(relay, peer.keepalive(), addr)  # learn the address
    return relay, a, b, c


def test_voice_is_forwarded_to_the_others_once(room: tuple[Relay, Peer, Peer, Peer]) -> None:
    relay, a, b, c = room
    out = exchange(relay, a.voice(b"opaque frame"), A)
    assert sorted(dest for _, dest in out) == [B, C]
    for packet, dest in out:
        peer = b if dest == B else c
        header, payload = peer.opener.open(packet)
        assert header.type is PacketType.VOICE
        assert unpack_relayed(payload) == (a.session_id, b"opaque frame")
    assert relay.stats.forwarded == 2


def test_datagrams_wait_until_taken(room: tuple[Relay, Peer, Peer, Peer]) -> None:
    relay, a, b, _ = room
    relay.datagram_received(a.voice(b"one"), A, NOW)
    relay.datagram_received(b.keepalive(), B, NOW)
    out = relay.datagrams_to_send()
    assert [dest for _, dest in out] == [B, C, B]  # in the order they were made
    assert b.opener.open(out[2][0])[0].type is PacketType.KEEPALIVE_ACK
    assert relay.datagrams_to_send() == []


def test_other_rooms_do_not_hear(room: tuple[Relay, Peer, Peer, Peer]) -> None:
    relay, a, b, c = room
    relay.set_room(c.session_id, "elsewhere")
    out = exchange(relay, a.voice(b"x"), A)
    assert [dest for _, dest in out] == [B]
    relay.remove_session(b.session_id)
    assert exchange(relay, a.voice(b"y"), A) == []


def test_a_member_between_rooms_hears_nobody_and_nobody_hears_it(
    room: tuple[Relay, Peer, Peer, Peer],
) -> None:
    relay, a, b, c = room
    relay.set_room(a.session_id, None)
    assert exchange(relay, a.voice(b"x"), A) == []
    assert [dest for _, dest in exchange(relay, b.voice(b"y"), B)] == [C]
    relay.set_room(b.session_id, None)
    relay.set_room(c.session_id, None)  # the room is empty now
    relay.set_room(c.session_id, "room")  # and c starts it afresh, alone
    assert exchange(relay, c.voice(b"z"), C) == []
    relay.set_room(a.session_id, "room")
    assert [dest for _, dest in exchange(relay, c.voice(b"w"), C)] == [A]


def test_room_changes_for_unknown_sessions_change_nothing(
    room: tuple[Relay, Peer, Peer, Peer],
) -> None:
    """A session the control side already removed (a race with its leaving) is ignored."""
    relay, a, _, _ = room
    relay.set_room(99, "room")
    relay.remove_session(99)
    assert relay.address_of(99) is None
    assert sorted(dest for _, dest in exchange(relay, a.voice(b"x"), A)) == [B, C]


def test_replayed_packet_dropped(room: tuple[Relay, Peer, Peer, Peer]) -> None:
    relay, a, _, _ = room
    packet = a.voice(b"once")
    assert len(exchange(relay, packet, A)) == 2
    assert exchange(relay, packet, A) == []
    # Told apart from forgeries for the metrics: a replay is authentic, seen before.
    assert (relay.stats.dropped_replay, relay.stats.dropped_auth) == (1, 0)


def test_forged_packet_changes_nothing(room: tuple[Relay, Peer, Peer, Peer]) -> None:
    relay, a, _, _ = room
    packet = bytearray(a.voice(b"real"))
    packet[-1] ^= 1
    evil = ("6.6.6.6", 666)
    assert exchange(relay, bytes(packet), evil) == []
    assert relay.address_of(a.session_id) == A  # a forgery cannot steal the address
    assert (relay.stats.dropped_auth, relay.stats.dropped_replay) == (1, 0)


def test_roaming_follows_authenticated_packets(room: tuple[Relay, Peer, Peer, Peer]) -> None:
    relay, a, b, _ = room
    new_b = ("10.9.9.9", 999)
    exchange(relay, b.keepalive(), new_b)
    out = exchange(relay, a.voice(b"x"), A)
    assert new_b in [dest for _, dest in out]


def test_keepalive_answer_never_larger(room: tuple[Relay, Peer, Peer, Peer]) -> None:
    relay, a, _, _ = room
    request = a.keepalive()
    [(answer, dest)] = exchange(relay, request, A)
    assert dest == A and len(answer) <= len(request)
    header, payload = a.opener.open(answer)
    assert header.type is PacketType.KEEPALIVE_ACK and payload == b"12345678"


def test_oversize_payload_dropped(room: tuple[Relay, Peer, Peer, Peer]) -> None:
    relay, a, _, _ = room
    assert exchange(relay, a.voice(bytes(relay.max_payload + 1)), A) == []
    assert relay.stats.dropped_oversize == 1


def test_unknown_session_dropped() -> None:
    relay = Relay()
    stranger = HopSealer(bytes(32), 99).seal(PacketType.VOICE, b"hi")
    assert exchange(relay, stranger, A) == []
    assert relay.stats.dropped_unknown == 1


def test_server_only_types_from_client_dropped(room: tuple[Relay, Peer, Peer, Peer]) -> None:
    relay, a, _, _ = room
    assert exchange(relay, a.sealer.seal(PacketType.KEEPALIVE_ACK, b"x"), A) == []


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_garbage_never_answered(data: bytes) -> None:
    relay = Relay()
    Peer(relay, 1)
    assert exchange(relay, data, A) == []


def test_voice_except_skips_members_served_directly(
    room: tuple[Relay, Peer, Peer, Peer],
) -> None:
    relay, a, b, c = room
    packet = a.sealer.seal(PacketType.VOICE_EXCEPT, pack_except([b.session_id], b"frame"))
    out = exchange(relay, packet, A)
    assert [dest for _, dest in out] == [C]
    header, payload = c.opener.open(out[0][0])
    assert header.type is PacketType.VOICE  # listeners see ordinary relayed voice
    assert unpack_relayed(payload) == (a.session_id, b"frame")
    everyone = a.sealer.seal(
        PacketType.VOICE_EXCEPT, pack_except([b.session_id, c.session_id], b"frame")
    )
    assert exchange(relay, everyone, A) == []


def test_malformed_voice_except_is_dropped(room: tuple[Relay, Peer, Peer, Peer]) -> None:
    relay, a, _, _ = room
    whole = pack_except([2, 3], b"frame")
    for size in range(len(whole) - len(b"frame") + 1):
        packet = a.sealer.seal(PacketType.VOICE_EXCEPT, whole[:size])
        assert exchange(relay, packet, A) == []
    assert relay.stats.dropped_malformed == len(whole) - len(b"frame") + 1


def test_datagrams_and_bytes_are_counted_by_kind(room: tuple[Relay, Peer, Peer, Peer]) -> None:
    """What serve --metrics reports: in and out, datagrams and bytes, by kind."""
    relay, a, _, _ = room
    before = relay.stats.received, relay.stats.received_bytes  # the fixture's keepalives
    assert before == (3, 3 * len(a.keepalive()))
    assert relay.stats.keepalive_answers == 3
    assert relay.stats.keepalive_answer_bytes == 3 * len(a.keepalive())
    voice = a.voice(b"x" * 50)
    out = exchange(relay, voice, A)
    exchange(relay, b"junk", A)
    stats = relay.stats
    assert (stats.voice, stats.voice_bytes) == (1, len(voice))
    assert (stats.keepalives, stats.keepalive_bytes) == (3, 3 * len(a.keepalive()))
    assert (stats.received, stats.received_bytes) == (5, before[1] + len(voice) + 4)
    assert (stats.forwarded, stats.forwarded_bytes) == (2, sum(len(p) for p, _ in out))


def test_voice_paths_tell_relayed_from_partly_direct_and_quiet(
    room: tuple[Relay, Peer, Peer, Peer],
) -> None:
    """The relay cannot see direct paths; it sees whose voice it carried lately, and to
    how many members the sender said it sends directly (VOICE_EXCEPT)."""
    relay, a, b, c = room
    assert relay.voice_paths(NOW, 5.0) == (0, 0, 3)  # nobody spoke yet
    exchange(relay, a.voice(b"all by relay"), A)
    skip_c = b.sealer.seal(PacketType.VOICE_EXCEPT, pack_except([c.session_id], b"frame"))
    assert [dest for _, dest in exchange(relay, skip_c, B)] == [A]
    assert relay.stats.skipped_direct == 1
    assert relay.voice_paths(NOW, 5.0) == (1, 1, 1)
    assert relay.voice_paths(NOW + 5.0, 5.0) == (1, 1, 1)  # the window includes its edge
    assert relay.voice_paths(NOW + 5.1, 5.0) == (0, 0, 3)  # quiet again
    relay.set_room(a.session_id, None)
    assert relay.voice_paths(NOW, 5.0) == (0, 1, 1)  # members of rooms only
