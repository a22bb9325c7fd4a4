"""MediaSessions over an in-memory network (the server's relay and STUN responder, and
direct links): a hand-set clock, no sockets, no sleeps."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bangor.media import events as me
from bangor.media.session import MediaSession
from bangor.server.relay import Relay
from bangor.settings import FRAME_SAMPLES, ClientSettings
from bangor.wire import e2ee, stun
from bangor.wire.direct import PathChanged
from bangor.wire.e2ee import CandidatesReceived, E2EEEvent, RoomCrypto
from bangor.wire.media import HopOpener, HopSealer, PacketType, derive_media_keys
from bangor.wire.noise import generate_static_key
from bangor.wire.voice import VoiceFrame, pack_relayed
from tests.media.net import KEYS, SERVER, Net, lan, lone_session, nat, open_header

RELAYED = ClientSettings(vad=False, relay_only=True)


def rms(frames: list[np.ndarray]) -> float:
    return float(np.sqrt(np.mean(np.concatenate(frames).astype(np.float64) ** 2)))


def relayed_voice(net: Net) -> int:
    """Voice datagrams the relay forwarded so far."""
    return net.relay.stats.forwarded - net.relay.stats.keepalives


def test_voice_flows_through_the_relay() -> None:
    net = Net()
    alice = net.join(1, "tone:450", RELAYED)
    bob = net.join(2, "silence", RELAYED)
    net.run(2.0)
    assert rms(net.members[2].played[-20:]) > 5000  # alice's tone, at 0.3 full scale
    assert rms(net.members[1].played) < 10  # bob's silence, through Opus
    a, b = alice.stats(net.now), bob.stats(net.now)
    assert a.sent == 100 and b.received == 100 and b.undecryptable == 0
    assert a.direct_sent == 0 and b.direct_received == 0
    assert [s.session_id for s in b.senders] == [1] and b.senders[0].speaking
    assert b.paths == (me.PathStats(1, False, None),)
    assert net.events(2, me.RelayPathUp) == [me.RelayPathUp()]
    [verified] = net.events(2, e2ee.MemberVerified)
    assert verified == e2ee.MemberVerified(1, "user1", alice.crypto.identity_public)
    assert not net.events(2, PathChanged)  # relay only: no candidates, no probes


def test_stun_then_candidates_then_probes_then_direct_voice() -> None:
    net = Net()
    net.join(1, "tone:450")
    bob = net.join(2)
    # The server told each its address; each offered it to the other, with its LAN one.
    assert bob.srflx == nat(2)
    assert bob.candidates() == [("host", *lan(2)), ("srflx", *nat(2))]
    net.run(1.0)
    [up] = net.events(2, PathChanged)
    assert up.session_id == 1 and up.path == "direct" and up.address is not None
    before = relayed_voice(net)
    net.run(1.0)
    assert relayed_voice(net) == before  # every member is reached directly
    b = bob.stats(net.now)
    assert b.direct_received >= 50 and b.paths[0].direct and b.paths[0].rtt is not None
    assert rms(net.members[2].played[-20:]) > 5000


def test_a_direct_path_that_dies_falls_back_to_the_relay_without_a_gap() -> None:
    net = Net()
    alice = net.join(1, "tone:450")
    net.join(2)
    net.run(1.0)
    assert alice.direct.direct()
    net.drop = lambda src, dst: SERVER not in (src, dst)  # members lose each other
    net.run(2.0)
    down = [e for e in net.events(1, PathChanged) if e.path == "relay"]  # type: ignore[attr-defined]
    assert down == [PathChanged(2, "relay", None, None)]
    assert not alice.direct.direct()
    assert rms(net.members[2].played[-20:]) > 5000  # the relay carries alice's voice now
    assert alice.stats(net.now).paths == (me.PathStats(2, False, None),)


def test_loss_on_a_direct_link_raises_redundancy_on_that_path() -> None:
    net = Net()
    settings = ClientSettings(vad=False, loss_hold=3.0)
    alice = net.join(1, "tone:450", settings)
    net.join(2, "silence", settings)
    net.run(1.0)
    assert alice.direct.direct()
    rng = np.random.default_rng(2)
    net.drop = lambda src, dst: (
        SERVER not in (src, dst) and dst[0].endswith(".2") and (rng.random() < 0.15)
    )
    net.run(3.0)
    assert alice.direct.direct()  # a lossy path is still a path
    assert alice.sender.plan.depth == 2
    stream = net.members[2].session.streams.streams[1]
    assert stream.jitter.stats().recovered > 0 and 0.05 < stream.meter.total().loss < 0.2


def test_three_members_one_direct_one_by_relay() -> None:
    net = Net()
    alice = net.join(1, "tone:450")
    net.join(2)
    carol = net.join(3, "silence", RELAYED)  # offers no direct path
    net.run(1.0)
    assert set(alice.direct.direct()) == {2}
    sent = len(net.wire)
    assert sent == 0
    net.run(1.0)
    # Alice's frames go straight to bob and, excepting bob, through the relay to carol.
    assert rms(net.members[2].played[-20:]) > 5000
    assert rms(net.members[3].played[-20:]) > 5000
    c = carol.stats(net.now)
    assert c.received >= 90 and c.direct_received == 0
    assert net.members[2].session.stats(net.now).received == c.received  # none twice


def test_frames_held_for_a_missing_key_are_released_in_order() -> None:
    net = Net()
    bob = net.join(2, "silence", RELAYED)
    net.hold_peer = True  # alice's handshake and key wait in the control channel
    net.join(1, "tone:450", RELAYED)
    net.run(0.5)
    assert not bob.streams.streams  # nothing opened yet: held
    net.release_peer()
    stream = bob.streams.streams[1]
    jitter = stream.jitter.stats()
    # A new stream keeps only its prebuffer of the held frames, the newest ones.
    assert jitter.received == ClientSettings().jitter_target_ms // 20
    net.run(1.0)
    jitter = stream.jitter.stats()
    assert jitter.lost == 0 and jitter.late == 0 and jitter.played > 40
    assert bob.stats(net.now).undecryptable == 0


def test_loss_to_a_listener_raises_the_senders_redundancy() -> None:
    net = Net()
    settings = ClientSettings(vad=False, relay_only=True, loss_hold=3.0)
    alice = net.join(1, "tone:450", settings)
    net.join(2, "silence", settings)
    rng = np.random.default_rng(1)
    # 15 % of what the relay sends bob is lost (keepalive answers too: harmless).
    net.drop = lambda src, dst: dst == nat(2) and rng.random() < 0.15
    net.run(3.0)
    assert alice.sender.plan.depth == 2
    a = alice.stats(net.now)
    assert a.redundancy == 2 and a.reported_loss > 0.05
    bob = net.members[2].session
    stream = bob.streams.streams[1]
    assert stream.jitter.stats().recovered > 0
    net.drop = lambda src, dst: False
    net.run(6.0)  # the loss is over: after the hold, no more copies
    assert alice.sender.plan.depth == 0


def test_keepalives_measure_the_round_trip_to_the_server() -> None:
    session = lone_session()
    session.start([], 10.0)
    [(keepalive, to), (request, _)] = session.datagrams_to_send()
    assert to == SERVER and open_header(keepalive) is PacketType.KEEPALIVE
    assert stun.is_stun(request)
    assert session.get_timer() == 10.0 + 0.5  # the STUN retry comes first
    _, stamp = HopOpener(KEYS.client_to_server, 7).open(keepalive)
    answer = HopSealer(KEYS.server_to_client, 7).seal(PacketType.KEEPALIVE_ACK, stamp)
    session.receive_datagram(answer, SERVER, 10.04)
    stats = session.stats(10.04)
    assert stats.rtt == pytest.approx(0.04) and stats.relay_up
    assert session.next_event() == me.RelayPathUp()
    session.receive_datagram(answer, SERVER, 10.05)  # a replay: dropped, counted
    assert session.stats(10.05).dropped == 1 and session.next_event() is None
    # The next keepalive is due one interval on.
    for t in (10.5, 11.0, 11.5, 12.0):
        session.handle_timer(t)
    types = [open_header(d) for d, _ in session.datagrams_to_send() if not stun.is_stun(d)]
    assert types == [PacketType.KEEPALIVE]


def test_stun_answers_from_elsewhere_are_ignored_and_bad_ones_dropped() -> None:
    session = lone_session()
    session.start([], 0.0)
    [_, (request, _)] = session.datagrams_to_send()
    txid = stun.parse(request).transaction_id
    session.receive_datagram(stun.binding_success(txid, nat(7)), ("198.51.100.1", 7600), 0.1)
    assert session.srflx is None  # only the server says where we are
    session.receive_datagram(stun.binding_success(bytes(12), nat(7)), SERVER, 0.1)
    assert session.srflx is None and session.stats(0.1).dropped == 1
    session.receive_datagram(stun.binding_success(txid, nat(7)), SERVER, 0.2)
    assert session.srflx == nat(7)
    # Now found, it asks only now and then.
    session.handle_timer(0.5)
    assert session.get_timer() is not None and session.get_timer() >= 0.5  # type: ignore[operator]


def test_hostile_datagrams_are_counted_as_dropped() -> None:
    session = lone_session()
    session.start([(9, "mallory")], 0.0)
    session.datagrams_to_send()
    relay = HopSealer(KEYS.server_to_client, 7)
    good = relay.seal(PacketType.VOICE, pack_relayed(9, b"not sframe"))
    hostile = [
        b"",
        b"\xc1",
        bytes(64),
        HopSealer(bytes(32), 7).seal(PacketType.VOICE, b"x"),  # wrong key
        HopSealer(bytes(32), 9).seal(PacketType.PROBE, b"x"),  # a member without a key
        relay.seal(PacketType.VOICE, b"\x00"),  # too short to name a sender
    ]
    for data in hostile:
        session.receive_datagram(data, ("198.51.100.9", 1), 1.0)
    stats = session.stats(1.0)
    assert stats.dropped == len(hostile) and stats.received == 0
    session.receive_datagram(good, SERVER, 1.0)  # opens, but not end to end
    stats = session.stats(1.0)
    assert stats.received == 1 and stats.undecryptable == 1
    # Neither answered anything nor made a stream.
    assert session.datagrams_to_send() == [] and not session.streams.streams


def test_relayed_types_other_than_voice_are_ignored() -> None:
    session = lone_session()
    relay = HopSealer(KEYS.server_to_client, 7)
    session.receive_datagram(relay.seal(PacketType.KEEPALIVE_ACK, b"short"), SERVER, 1.0)
    session.receive_datagram(relay.seal(PacketType.PROBE, b"x"), SERVER, 1.0)
    stats = session.stats(1.0)
    assert stats.dropped == 0 and stats.rtt is None and not stats.relay_up


def test_mute_deafen_volume_and_push_to_talk() -> None:
    net = Net()
    alice = net.join(1, "tone:450", RELAYED)
    bob = net.join(2, "silence", RELAYED)
    net.run(1.0)
    full = rms(net.members[2].played[-20:])
    assert full > 5000
    bob.volumes[1] = 0.5
    net.run(0.4)
    assert rms(net.members[2].played[-10:]) == pytest.approx(full / 2, rel=0.05)
    bob.deafened = True
    net.run(0.4)
    assert rms(net.members[2].played[-20:]) == 0.0
    assert rms([bob.recording()]) > 1000  # a recording still has the call
    bob.deafened = False
    sent = alice.stats(net.now).sent
    alice.muted = True
    net.run(0.4)
    assert alice.stats(net.now).sent == sent and not alice.transmitting
    alice.muted = False
    alice.settings = alice.sender.settings = ClientSettings(vad=False, push_to_talk=True)
    net.run(0.4)
    assert alice.stats(net.now).sent == sent
    alice.talking = True
    net.run(0.4)
    assert alice.stats(net.now).sent == sent + 20
    # Our own voice is in the recording while it goes out.
    assert rms([alice.recording()]) > 5000


def test_a_member_who_leaves_is_forgotten() -> None:
    net = Net()
    net.join(1, "tone:450")
    bob = net.join(2)
    net.run(1.0)
    bob.volumes[1] = 0.5
    net.leave(1)
    assert 1 not in bob.members and not bob.streams.streams and not bob.volumes
    assert not bob.direct.is_peer(1) and bob.stats(net.now).paths == ()


def test_chat_and_its_gaps() -> None:
    net = Net()
    alice = net.join(1, "silence", RELAYED)
    bob = net.join(2, "silence", RELAYED)
    bob.receive_chat(1, alice.seal_chat("hello"), net.now)
    alice.seal_chat("withheld by the server")
    bob.receive_chat(1, alice.seal_chat("again"), net.now)
    net.settle()
    chats = net.events(2, e2ee.ChatOpened)
    assert chats == [e2ee.ChatOpened(1, "hello"), e2ee.ChatOpened(1, "again")]
    assert net.events(2, e2ee.ChatGap) == [e2ee.ChatGap(1, 1)]
    bob.receive_chat(1, b"garbage", net.now)
    net.settle()
    [problem] = net.events(2, e2ee.PeerProblem)
    assert problem.session_id == 1  # type: ignore[attr-defined]
    bob.finish(net.now)  # nothing held back: nothing more
    assert bob.next_event() is None


def test_a_member_without_the_room_secret_is_rejected() -> None:
    net = Net()
    net.join(1, "silence", RELAYED)
    bob = net.join(2, "silence", RELAYED)
    # Mallory's pair messages come from a crypto with another secret.
    mallory = RoomCrypto(
        room_id=bytes(range(16)),
        secret=b"\x01" * 32,
        session_id=9,
        user="mallory",
        nick="m",
        identity_private=generate_static_key(),
    )
    bob.member_joined(9, "mallory", net.now)
    mallory.start([(2, "user2")], net.now)
    for _, data in mallory.messages_to_send():
        bob.receive_peer(9, data, net.now)
    net.settle()
    for to, data in bob.peer_messages_to_send():
        if to == 9:
            mallory.peer_received(2, data, net.now)
    for _, data in mallory.messages_to_send():
        bob.receive_peer(9, data, net.now)
    net.step(ClientSettings().peer_verify_timeout + 1)
    assert [e.user for e in net.events(2, e2ee.MemberRejected)] == ["mallory"]  # type: ignore[attr-defined]


class InjectingCrypto(RoomCrypto):
    """A RoomCrypto that also reports events a test puts in (what a peer cannot send)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.injected: list[E2EEEvent] = []

    def next_event(self) -> E2EEEvent | None:
        return self.injected.pop(0) if self.injected else super().next_event()


def test_a_direct_offer_that_does_not_fit_is_refused() -> None:
    crypto = InjectingCrypto(
        room_id=bytes(16),
        secret=bytes(32),
        session_id=7,
        user="solo",
        nick="solo",
        identity_private=generate_static_key(),
    )
    session = MediaSession(7, KEYS, ClientSettings(), crypto, SERVER)
    session.start([(9, "mallory")], 0.0)
    crypto.injected.append(CandidatesReceived(9, b"short", (("host", "10.0.0.9", 1),)))
    crypto.injected.append(CandidatesReceived(8, bytes(32), ()))  # not a member: ignored
    session.handle_timer(0.0)
    assert session.next_event() == me.DirectPathRefused(9, "direct path key of the wrong size")
    assert session.next_event() is None
    assert session.candidates() == []  # no interfaces given, no STUN answer yet


def test_a_max_bitrate_caps_the_plan() -> None:
    session = lone_session()
    session.set_max_bitrate(12_000, 0.0)
    assert session.stats(0.0).bitrate == 12_000


def test_each_frame_goes_direct_where_it_can_and_the_relay_skips_those() -> None:
    net = Net()
    alice = net.join(1, "tone:450")
    net.join(2)
    net.join(3, "silence", RELAYED)
    net.run(1.0)
    alice.tick(np.full(FRAME_SAMPLES, 1000, dtype=np.int16), net.now)
    out = alice.datagrams_to_send()
    to_server = [d for d, addr in out if addr == SERVER]
    direct = [addr for d, addr in out if addr != SERVER]
    assert len(to_server) == 1 and direct == [alice.direct.direct()[2]]
    assert alice.stats(net.now).direct_sent > 0


def test_forged_probe_answers_never_send_our_voice_to_an_unprobed_address() -> None:
    """Issue 12, finding 4, through the session: every datagram it sends is collected."""
    from bangor.wire.direct import Candidate
    from tests.wire.test_direct import VICTIM, forged_answers

    session = lone_session(ClientSettings(vad=False))
    now = 0.0
    session.start([(21, "mallory")], now)
    mallory_key, mallory_addr = bytes(range(32)), ("198.51.100.21", 4021)
    session.direct.set_remote(21, mallory_key, [Candidate("srflx", *mallory_addr)], now)
    opener = HopOpener(session.direct.local_key(21), 7)
    sealer = HopSealer(mallory_key, 21)
    tone = np.full(FRAME_SAMPLES, 3000, dtype=np.int16)
    sent: list[tuple[bytes, tuple[str, int]]] = []
    for _ in range(150):  # 3 s of 20 ms ticks
        now += 0.02
        session.handle_timer(now)
        session.tick(tone, now)
        out = session.datagrams_to_send()
        sent += out
        for probe, addr in out:
            if addr != SERVER and probe[1] == PacketType.PROBE:
                for answer, src in forged_answers(probe, opener, sealer, addr, own=False):
                    session.receive_datagram(answer, src, now)
    assert [addr for _, addr in sent if addr == VICTIM] == []
    stats = session.stats(now)
    assert session.direct.direct() == {} and stats.direct_sent == 0
    assert stats.sent > 100 and stats.dropped >= 100  # voice went by the relay


def test_voice_frames_are_well_formed_plaintext_under_the_seal() -> None:
    net = Net()
    net.join(1, "tone:450", RELAYED)
    bob = net.join(2, "silence", RELAYED)
    net.run(0.2)
    # What bob's crypto opened parsed as voice frames numbered from 0.
    stream = bob.streams.streams[1]
    assert stream.jitter.stats().received == 10
    assert VoiceFrame(0, b"x").seq == 0


def test_a_restarted_relay_with_new_hop_keys_carries_voice_again() -> None:
    """The server restarted and gave both their session ids back with new media secrets:
    new hop keys, and the end-to-end state (keys, channels) goes on untouched."""
    net = Net()
    alice = net.join(1, "tone:450", RELAYED)
    bob = net.join(2, "silence", RELAYED)
    net.run(1.0)
    sender_key = alice.crypto.sender_key
    net.relay = Relay()  # the new process knows nobody
    net.run(0.5)
    heard = bob.stats(net.now).received
    net.run(0.5)
    assert bob.stats(net.now).received == heard  # nothing through a relay that lost us
    for sid, session in ((1, alice), (2, bob)):
        keys = derive_media_keys(bytes([sid + 100]) * 32)
        net.relay.add_session(sid, keys)
        net.relay.set_room(sid, "room")
        session.rekey_hop(keys, net.now)
    net.settle()
    net.run(1.0)
    assert bob.stats(net.now).received >= heard + 45
    assert bob.stats(net.now).undecryptable == 0
    assert alice.crypto.sender_key is sender_key  # no rekey end to end
    assert len(net.events(1, me.RelayPathUp)) == 2  # the relay came up again
    assert rms(net.members[2].played[-20:]) > 5000


def test_greeting_a_member_met_after_a_restart_verifies_both() -> None:
    """Back in a restarted server's room, a member we did not know saw us join: we open
    the pair channel to it, as a joiner does."""
    net = Net()
    alice = net.join(1, "silence", RELAYED)
    away = net.members.pop(1)
    carol = net.join(3, "silence", RELAYED)  # carol knows nobody
    net.members[1] = away
    carol.member_joined(1, "user1", net.now)  # the server told carol we joined
    alice.greet([(3, "user3")], net.now)
    net.settle()
    net.run(0.2)
    assert alice.members == {3: "user3"}
    assert [e.session_id for e in net.events(1, e2ee.MemberVerified)] == [3]  # type: ignore[attr-defined]
    assert [e.session_id for e in net.events(3, e2ee.MemberVerified)] == [1]  # type: ignore[attr-defined]


def test_the_capture_chain_runs_between_microphone_and_gate() -> None:
    net = Net()
    alice = net.join(1, "tone:450", RELAYED)
    bob = net.join(2, "tone:900", RELAYED)
    assert alice.processing == me.Processing(False, False, False)
    assert alice.stats(net.now).input_level == -100.0  # nothing captured yet
    played: list[np.ndarray] = []
    original = alice.chain.far_end

    def far_end(pcm: np.ndarray) -> None:
        played.append(pcm.copy())
        original(pcm)

    alice.chain.far_end = far_end  # type: ignore[method-assign]
    net.run(1.0)
    stats = alice.stats(net.now)
    assert stats.input_level == pytest.approx(-13.5, abs=0.5)  # the tone, 0.3 full scale
    assert rms(played[-10:]) > 5000  # what alice plays (bob's tone) is the reference
    on = alice.set_processing(echo_cancellation=True, agc=True)
    assert on == me.Processing(False, True, True) == alice.stats(net.now).processing
    assert alice.set_processing(noise_suppression=True).noise_suppression
    net.run(0.5)
    assert alice.chain.voice_probability is not None
    alice.deafened = True
    net.run(0.2)
    assert rms(played[-5:]) == 0.0  # deafened: we play silence, so the reference is silence
    assert alice.set_processing(
        noise_suppression=False, echo_cancellation=False, agc=False
    ) == me.Processing(False, False, False)
    assert bob.stats(net.now).processing == me.Processing(False, False, False)
