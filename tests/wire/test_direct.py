"""Direct paths, sans-I/O: two members over an in-memory network with a hand-set clock."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pytest

from bangor.errors import PacketError
from bangor.wire.direct import Candidate, DirectPaths, DirectSettings, PathChanged
from bangor.wire.media import HopSealer, PacketType

A_ID, B_ID = 0x0A, 0x0B
A_ADDR, B_ADDR = ("203.0.113.1", 4000), ("198.51.100.2", 5000)
SETTINGS = DirectSettings()


@dataclass
class Net:
    """Delivers what each side sends, after ``delay``, unless the link is cut."""

    a: DirectPaths
    b: DirectPaths
    now: float = 0.0
    delay: float = 0.01
    cut: bool = False
    # Datagrams some source sent to an address nobody has (or dropped by the cut).
    lost: list[tuple[bytes, tuple[str, int]]] = field(default_factory=list)
    received: dict[int, list[bytes]] = field(default_factory=dict)
    _queue: list[tuple[float, bytes, tuple[str, int], tuple[str, int]]] = field(
        default_factory=list
    )

    def step(self, until: float) -> None:
        """Run both sides' timers and deliveries until ``until``, 10 ms at a time."""
        while self.now < until:
            self.now = round(self.now + 0.01, 6)
            for side, src in ((self.a, A_ADDR), (self.b, B_ADDR)):
                side.handle_timer(self.now)
                self._collect(side, src)
            due = [q for q in self._queue if q[0] <= self.now]
            self._queue = [q for q in self._queue if q[0] > self.now]
            for _, data, src, dst in due:
                target = {A_ADDR: (self.a, A_ADDR), B_ADDR: (self.b, B_ADDR)}.get(dst)
                if target is None or self.cut:
                    self.lost.append((data, dst))
                    continue
                voice = target[0].datagram_received(data, src, self.now)
                if voice is not None:
                    self.received.setdefault(voice[0], []).append(voice[1])
                self._collect(target[0], target[1])

    def _collect(self, side: DirectPaths, src: tuple[str, int]) -> None:
        for data, dst in side.datagrams_to_send():
            self._queue.append((self.now + self.delay, data, src, dst))


def pair(*, a_offers: bool = True, b_offers: bool = True) -> Net:
    """alice and bob exchange keys and candidates as the pair channel would carry them."""
    a, b = DirectPaths(A_ID, SETTINGS), DirectPaths(B_ID, SETTINGS)
    # Each offers a host address nobody can reach, and the one that works.
    a_cands = [Candidate("host", "192.168.1.2", 4000), Candidate("srflx", *A_ADDR)]
    b_cands = [Candidate("host", "192.168.1.2", 5000), Candidate("srflx", *B_ADDR)]
    if a_offers:
        b.set_remote(A_ID, a.local_key(B_ID), a_cands, 0.0)
    if b_offers:
        a.set_remote(B_ID, b.local_key(A_ID), b_cands, 0.0)
    return Net(a, b)


def test_both_sides_find_the_working_address_and_measure_the_round_trip() -> None:
    net = pair()
    net.step(0.2)
    assert net.a.direct() == {B_ID: B_ADDR}
    assert net.b.direct() == {A_ID: A_ADDR}
    [event] = net.a.events()
    assert event.path == "direct" and event.address == B_ADDR
    assert event.rtt == pytest.approx(2 * net.delay, abs=0.011)
    # Probes to the unreachable host candidates went nowhere.
    assert {dst for _, dst in net.lost} == {("192.168.1.2", 4000), ("192.168.1.2", 5000)}


def test_voice_sealed_for_a_direct_peer_opens_there_only() -> None:
    net = pair()
    net.step(0.2)
    packet = net.a.seal(B_ID, PacketType.VOICE, b"sframe bytes")
    assert net.b.datagram_received(packet, A_ADDR, net.now) == (A_ID, b"sframe bytes")
    with pytest.raises(PacketError, match="replayed"):
        net.b.datagram_received(packet, A_ADDR, net.now)
    with pytest.raises(PacketError):  # alice's packets are not for alice
        net.a.datagram_received(packet, B_ADDR, net.now)


def test_forged_packets_are_refused_and_never_answered() -> None:
    net = pair()
    forger = HopSealer(bytes(32), A_ID)  # right session id, wrong key
    probe = forger.seal(PacketType.PROBE, bytes(26))
    with pytest.raises(PacketError, match="authentication"):
        net.b.datagram_received(probe, ("192.0.2.66", 1), 0.0)
    assert net.b.datagrams_to_send() == []
    stranger = HopSealer(bytes(32), 0x99).seal(PacketType.PROBE, bytes(26))
    with pytest.raises(PacketError, match="without a key"):
        net.b.datagram_received(stranger, ("192.0.2.66", 1), 0.0)


def test_a_relay_only_member_answers_nothing_and_no_path_forms() -> None:
    """bob made no key for alice (relay only): her probes get no answer, his get none sent."""
    net = pair(b_offers=False)
    net.b.set_remote(A_ID, net.a.local_key(B_ID), [Candidate("srflx", *A_ADDR)], 0.0)
    net.step(2.0)
    assert net.a.direct() == {} and net.b.direct() == {}
    assert net.a.next_timer() is None  # alice has nothing to check without bob's offer
    assert net.b.events() == [] and net.a.events() == []


def test_a_dead_path_falls_back_within_a_second_and_comes_back() -> None:
    net = pair()
    net.step(1.0)
    net.a.events()
    net.cut = True
    cut_at = net.now
    while not net.a.events():
        net.step(net.now + 0.01)
        assert net.now - cut_at < 1.0, "no fallback within a second"
    assert net.a.direct() == {}
    net.cut = False
    net.step(net.now + 0.3)  # checks run at full pace again after a fallback
    assert net.a.events() == [PathChanged(B_ID, "direct", B_ADDR, pytest.approx(0.02, abs=0.011))]


def test_checks_slow_down_when_nothing_answers() -> None:
    net = pair()
    net.cut = True
    net.step(SETTINGS.check_fast_for)
    fast = len(net.lost)
    net.step(SETTINGS.check_fast_for + 10)
    slow = len(net.lost) - fast
    assert fast >= 2 * 40  # two candidates each side, ten rounds a second
    assert slow <= 4 * (10 / SETTINGS.retry_interval + 1)


def test_an_unknown_source_becomes_a_peer_reflexive_candidate() -> None:
    """bob offers only a wrong address; alice learns the real one from his probes."""
    a, b = DirectPaths(A_ID, SETTINGS), DirectPaths(B_ID, SETTINGS)
    b.set_remote(A_ID, a.local_key(B_ID), [Candidate("srflx", *A_ADDR)], 0.0)
    a.set_remote(B_ID, b.local_key(A_ID), [Candidate("host", "10.9.9.9", 9)], 0.0)
    net = Net(a, b)
    net.step(0.5)
    assert a.direct() == {B_ID: B_ADDR}


def test_an_answer_from_long_ago_or_malformed_is_ignored() -> None:
    net = pair()  # no step yet: bob has sent nothing, so his counters start at 0 here
    sealer = HopSealer(net.b.local_key(A_ID), B_ID)
    # A well-formed answer to a probe "sent" 20 s before it arrives: not ours, lately.
    mapped = bytes(10) + b"\xff\xff" + bytes((198, 51, 100, 2))
    payload = struct.pack("!d16sH", 10.0, mapped, B_ADDR[1])
    with pytest.raises(PacketError, match="malformed"):
        net.a.datagram_received(sealer.seal(PacketType.PROBE_ACK, b"short"), B_ADDR, 30.0)
    assert net.a.datagram_received(sealer.seal(PacketType.PROBE_ACK, payload), B_ADDR, 30.0) is None
    assert net.a.direct() == {}
    # The same answer in time does choose the path (so the test above could fail).
    assert net.a.datagram_received(sealer.seal(PacketType.PROBE_ACK, payload), B_ADDR, 10.5) is None
    assert net.a.direct() == {B_ID: B_ADDR}
