"""Direct paths, sans-I/O: two members over an in-memory network with a hand-set clock."""

from __future__ import annotations

import contextlib
import secrets
import struct
from dataclasses import dataclass, field

import pytest

from bangor.errors import PacketError
from bangor.wire import direct
from bangor.wire.direct import Candidate, DirectPaths, DirectSettings, PathChanged
from bangor.wire.media import HopOpener, HopSealer, PacketType
from tests.sansio import drain

A_ID, B_ID = 0x0A, 0x0B
A_ADDR, B_ADDR = ("203.0.113.1", 4000), ("198.51.100.2", 5000)
SETTINGS = DirectSettings()
TXID_SIZE = 12  # bytes of a probe's transaction id (PROTOCOL.md 10.3)


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
    [event] = drain(net.a)
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
    assert net.a.get_timer() is None  # alice has nothing to check without bob's offer
    assert drain(net.b) == [] and drain(net.a) == []


def test_a_dead_path_falls_back_within_a_second_and_comes_back() -> None:
    net = pair()
    net.step(1.0)
    drain(net.a)
    net.cut = True
    cut_at = net.now
    while not drain(net.a):
        net.step(net.now + 0.01)
        assert net.now - cut_at < 1.0, "no fallback within a second"
    assert net.a.direct() == {}
    net.cut = False
    net.step(net.now + 0.3)  # checks run at full pace again after a fallback
    assert drain(net.a) == [PathChanged(B_ID, "direct", B_ADDR, pytest.approx(0.02, abs=0.011))]


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


def test_answers_count_only_for_a_probe_still_outstanding() -> None:
    """An answer is taken once, in time, and never for a probe we did not send."""
    a = DirectPaths(A_ID, SETTINGS)
    b_key = secrets.token_bytes(32)
    a.set_remote(B_ID, b_key, [Candidate("srflx", *B_ADDR)], 0.0)
    bob = HopSealer(b_key, B_ID)
    opener = HopOpener(a.local_key(B_ID), A_ID)
    a.handle_timer(10.0)
    [(probe, dst)] = a.datagrams_to_send()
    assert dst == B_ADDR
    _, payload = opener.open(probe)
    with pytest.raises(PacketError, match="malformed"):
        a.datagram_received(bob.seal(PacketType.PROBE_ACK, payload[:26]), B_ADDR, 10.01)
    stranger = payload[:26] + bytes(TXID_SIZE)
    with pytest.raises(PacketError, match="no recent probe"):
        a.datagram_received(bob.seal(PacketType.PROBE_ACK, stranger), B_ADDR, 10.01)
    late = 10.0 + SETTINGS.probe_timeout + 0.01
    with pytest.raises(PacketError, match="no recent probe"):
        a.datagram_received(bob.seal(PacketType.PROBE_ACK, payload), B_ADDR, late)
    assert a.direct() == {} and drain(a) == []
    # The same answer in time does choose the path (so the refusals above could fail) ...
    assert a.datagram_received(bob.seal(PacketType.PROBE_ACK, payload), B_ADDR, 10.5) is None
    assert drain(a) == [PathChanged(B_ID, "direct", B_ADDR, pytest.approx(0.5))]
    # ... once: a second answer to the same probe is to no probe of ours.
    with pytest.raises(PacketError, match="no recent probe"):
        a.datagram_received(bob.seal(PacketType.PROBE_ACK, payload), B_ADDR, 10.6)


def test_outstanding_probes_are_bounded_and_expire() -> None:
    net = pair()
    net.cut = True
    for until in (1.0, SETTINGS.check_fast_for, SETTINGS.check_fast_for + 10):
        net.step(until)
        probes = net.a._peers[B_ID].probes
        assert 0 < len(probes) <= SETTINGS.max_outstanding_probes
        # Expired ones go at the next round of checks.
        oldest = SETTINGS.probe_timeout + SETTINGS.retry_interval
        assert all(net.now - sent <= oldest for _, sent in probes.values())
    small = DirectSettings(max_outstanding_probes=3)
    a = DirectPaths(A_ID, small)
    a.local_key(B_ID)
    a.set_remote(B_ID, secrets.token_bytes(32), [Candidate("srflx", *B_ADDR)], 0.0)
    for i in range(10):
        a.handle_timer(i * small.check_interval)
    assert len(a._peers[B_ID].probes) == 3


# A malicious member has every key it needs to seal any answer it likes; all it does not
# control is where our probes go and the random id in each.
VICTIM = ("192.0.2.99", 9999)  # nobody offered it as a candidate: we never probe it


def mapped(addr: tuple[str, int]) -> bytes:
    return bytes(10) + b"\xff\xff" + bytes(int(part) for part in addr[0].split("."))


def forged_answers(
    probe: bytes, opener: HopOpener, sealer: HopSealer, probed: tuple[str, int], *, own: bool
) -> list[tuple[bytes, tuple[str, int]]]:
    """What a malicious member sends for one of our probes: answers that name VICTIM, the
    true answer from VICTIM, answers to probes never sent; ``own``: also a forged answer
    from the address the probe went to (where it really is)."""
    _, payload = opener.open(probe)
    head, txid = payload[:26], payload[26:]
    sent, _, _ = struct.unpack("!d16sH", head)
    victim = struct.pack("!d16sH", sent, mapped(VICTIM), VICTIM[1])
    answers = [
        (victim + txid, VICTIM),
        (payload, VICTIM),
        (victim + secrets.token_bytes(TXID_SIZE), VICTIM),
        (victim + secrets.token_bytes(TXID_SIZE), probed),
    ]
    if own:
        answers.append((victim + txid, probed))
    return [(sealer.seal(PacketType.PROBE_ACK, data), src) for data, src in answers]


@pytest.mark.parametrize("answers_from_its_address", [False, True])
def test_a_member_cannot_aim_our_voice_at_an_address_we_never_probed(
    answers_from_its_address: bool,
) -> None:
    """Finding 4 of issue 12: forged answers once sent our voice wherever they named."""
    a = DirectPaths(A_ID, SETTINGS)
    m_key = secrets.token_bytes(32)
    a.set_remote(B_ID, m_key, [Candidate("srflx", *B_ADDR)], 0.0)
    opener, sealer = HopOpener(a.local_key(B_ID), A_ID), HopSealer(m_key, B_ID)
    sent_to: set[tuple[str, int]] = set()
    events: list[PathChanged] = []
    for tick in range(300):  # 3 s: the fast checks, then consent on a direct path
        now = tick * 0.01
        a.handle_timer(now)
        for probe, dst in a.datagrams_to_send():
            sent_to.add(dst)
            for answer, src in forged_answers(
                probe, opener, sealer, dst, own=answers_from_its_address
            ):
                with contextlib.suppress(PacketError):
                    a.datagram_received(answer, src, now + 0.005)
        events += drain(a)
        if tick % 2 == 0:  # a voice frame every 20 ms goes to each direct path
            sent_to.update(a.direct().values())
    assert VICTIM not in sent_to
    assert all(event.address != VICTIM for event in events)
    if answers_from_its_address:
        # Answered from where the probe went: that address, from our own record, is proven.
        assert a.direct() == {B_ID: B_ADDR}
        assert [event.address for event in events] == [B_ADDR]
    else:
        assert a.direct() == {} and events == []


def test_probe_payload_bytes_match_the_protocol_document(monkeypatch: pytest.MonkeyPatch) -> None:
    """PROTOCOL.md 10.3's worked bytes, and an older responder's echo still works."""
    a = DirectPaths(A_ID, SETTINGS)
    b_key = secrets.token_bytes(32)
    a.set_remote(B_ID, b_key, [Candidate("srflx", *B_ADDR)], 0.0)
    opener = HopOpener(a.local_key(B_ID), A_ID)
    monkeypatch.setattr(direct.secrets, "token_bytes", lambda n: bytes(range(n)))
    a.handle_timer(12.5)
    [(probe, _)] = a.datagrams_to_send()
    _, payload = opener.open(probe)
    assert len(payload) == direct.PROBE_SIZE == 26 + TXID_SIZE
    documented = """
        40 29 00 00 00 00 00 00
        00 00 00 00 00 00 00 00 00 00 ff ff c6 33 64 02
        13 88
        00 01 02 03 04 05 06 07 08 09 0a 0b
    """
    assert payload == bytes.fromhex(documented)
    echo = HopSealer(b_key, B_ID).seal(PacketType.PROBE_ACK, payload)  # what any responder does
    assert a.datagram_received(echo, B_ADDR, 12.52) is None
    assert a.direct() == {B_ID: B_ADDR}


def test_an_older_members_short_probe_is_still_answered() -> None:
    """A client from before the transaction id probes with 26 bytes: echoed whole."""
    net = pair()
    old = HopSealer(net.a.local_key(B_ID), A_ID)  # alice's key for her packets to bob
    short = struct.pack("!d16sH", 3.0, mapped(B_ADDR), B_ADDR[1])
    assert net.b.datagram_received(old.seal(PacketType.PROBE, short), A_ADDR, 0.0) is None
    [(answer, dst)] = net.b.datagrams_to_send()
    _, echoed = HopOpener(net.b.local_key(A_ID), B_ID).open(answer)
    assert (echoed, dst) == (short, A_ADDR)
