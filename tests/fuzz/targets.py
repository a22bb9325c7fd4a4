"""Fuzz targets: every parser of untrusted bytes, with the one error each may raise.

Each :class:`Target` takes arbitrary bytes and feeds them to one parser (or to the
sans-I/O object that parses them: the relay, the STUN responder, a pair channel, a
member's end-to-end state). The contract checked is the project's: bad input raises
the documented error type (or is dropped and counted) and nothing else escapes; some
targets also check a property (the relay never answers what it could not
authenticate). ``seeds`` are valid inputs the fuzzers mutate, so they reach past the
first length check.

Used by ``tests/fuzz/test_fuzz.py`` (hypothesis, briefly, in CI) and by
``tests/fuzz/run.py`` (atheris, coverage-guided, for as long as you like).
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import msgspec

from bangor.audio.codec import packet_samples
from bangor.errors import (
    AudioError,
    DecodeError,
    FramingError,
    HandshakeError,
    InviteError,
    PacketError,
    PeerError,
    RemoteProtocolError,
)
from bangor.media.session import MediaSession
from bangor.server.relay import Relay
from bangor.settings import ClientSettings
from bangor.wire import control as msg
from bangor.wire import invite as inv
from bangor.wire import stun
from bangor.wire.direct import Candidate, DirectPaths
from bangor.wire.e2ee import RoomCrypto
from bangor.wire.framing import FrameDecoder, encode_frame
from bangor.wire.media import (
    HopOpener,
    HopSealer,
    MediaHeader,
    PacketType,
    derive_media_keys,
    peek_session_id,
)
from bangor.wire.noise import NoiseSession
from bangor.wire.session import ControlSession, Role, State
from bangor.wire.sframe import SFrameContext, SFrameHeader
from bangor.wire.voice import VoiceFrame, pack_except, pack_relayed, unpack_except, unpack_relayed
from tests.sansio import drain

ADDR = ("192.0.2.7", 40000)
NOW = 1000.0
ROOM_ID = bytes(range(8))
ROOM_SECRET = bytes(range(32))
ALICE, BOB = 0x0A11CE00, 0x0B0B0000
MEDIA_SECRET = bytes(range(100, 132))
KEY = bytes(range(32))
SFRAME_BASE = bytes(range(16))


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    allowed: tuple[type[BaseException], ...]
    seeds: Callable[[], list[bytes]]


def check(target: Target, data: bytes) -> None:
    """Run one input; anything but the target's documented errors is a finding."""
    with contextlib.suppress(target.allowed):
        target.run(data)


# --- the control channel -------------------------------------------------------------


def _framing(data: bytes) -> None:
    # The same bytes in one piece and split in two must give the same frames.
    whole: list[bytes] | str
    try:
        whole = FrameDecoder().feed(data)
    except FramingError:
        whole = "error"
    split = len(data) // 3
    decoder = FrameDecoder()
    parts: list[bytes] | str
    try:
        parts = decoder.feed(data[:split]) + decoder.feed(data[split:])
    except FramingError:
        parts = "error"
    assert whole == parts, "framing depends on how the stream is cut"
    if whole == "error":
        raise FramingError("malformed")


def _framing_seeds() -> list[bytes]:
    return [encode_frame(b"x" * n) for n in (1, 2, 300)] + [encode_frame(b"a") + b"\x00"]


@cache
def _server_key() -> bytes:
    return bytes(range(1, 33))


def _noise_responder(data: bytes) -> None:
    NoiseSession(initiator=False, static_private=_server_key()).receive_data(data, NOW)


def _client() -> NoiseSession:
    # A fixed ephemeral key, so a seed answer made for one client opens in the next.
    return NoiseSession(
        initiator=True, static_private=bytes(range(2, 34)), ephemeral_private=bytes(range(3, 35))
    )


def _noise_initiator(data: bytes) -> None:
    session = _client()
    session.initiate()
    session.receive_data(data, NOW)


def _noise_seeds() -> list[bytes]:
    client = _client()
    client.initiate()
    first = client.data_to_send()
    server = NoiseSession(
        initiator=False, static_private=_server_key(), ephemeral_private=bytes(range(4, 36))
    )
    server.receive_data(first, NOW)
    return [first, server.data_to_send()]


def _client_message(data: bytes) -> None:
    msg.decode_client_message(data)


def _server_message(data: bytes) -> None:
    msg.decode_server_message(data)


def _client_seeds() -> list[bytes]:
    messages: list[msg.ClientMessage] = [
        msg.Hello(1, "alice", "secret", "Alice"),
        msg.CreateRoom("friends", 24000),
        msg.JoinRoom("0123456789abcdef"),
        msg.LeaveRoom(),
        msg.SendChat(b"sealed"),
        msg.PeerSend(7, b"\x01pair"),
        msg.Ping(3),
        msg.Bye(),
    ]
    return [msg.encode(m) for m in messages]


def _server_seeds() -> list[bytes]:
    member = msg.Member(5, "bob", "Bob")
    messages: list[msg.ServerMessage] = [
        msg.Welcome(5, "bob", "0.1.0", MEDIA_SECRET),
        msg.RoomCreated("0123456789abcdef", "friends"),
        msg.RoomJoined("0123456789abcdef", "friends", member, [member], 0),
        msg.RoomLeft("0123456789abcdef"),
        msg.MemberJoined(member),
        msg.MemberLeft(5),
        msg.Chat(5, b"sealed"),
        msg.PeerReceived(5, b"\x01pair"),
        msg.Pong(3),
        msg.Error(3, "wrong user name or password", True, "hello"),
    ]
    return [msg.encode(m) for m in messages]


def _carry(sender: ControlSession, receiver: ControlSession) -> None:
    data = sender.data_to_send()
    if data:
        receiver.receive_data(data, NOW)


def _session_pair() -> tuple[ControlSession, ControlSession]:
    """A client and a server session over memory, logged in and in a room."""
    client = ControlSession(Role.CLIENT, bytes(range(2, 34)))
    server = ControlSession(Role.SERVER, _server_key())
    for sender, receiver in ((client, server), (server, client), (client, server)):
        _carry(sender, receiver)
    for request, reply in (
        (lambda: client.hello("alice", "secret", "Alice"), msg.Welcome(5, "alice", "0", KEY)),
        (
            lambda: client.join_room("0123456789abcdef"),
            msg.RoomJoined("0123456789abcdef", "r", msg.Member(5, "alice", "Alice"), []),
        ),
    ):
        request()
        _carry(client, server)
        while server.next_event() is not None:
            pass
        server.send(reply)
        _carry(server, client)
        while client.next_event() is not None:
            pass
    assert client.state is server.state is State.IN_ROOM
    return client, server


def _session(data: bytes, role: Role) -> None:
    """Any message from a hostile peer: a RemoteProtocolError that ends the session, or
    nothing but events."""
    client, server = _session_pair()
    peer, ours = (client, server) if role is Role.SERVER else (server, client)
    peer.noise.send(data)
    ours.receive_data(peer.data_to_send(), NOW)
    try:
        while ours.next_event() is not None:
            pass
    except RemoteProtocolError:
        # A server has a fatal error to write; a client just drops the connection.
        assert ours.state is (State.CLOSING if role is Role.SERVER else State.CLOSED)
        raise


# --- media: hop packets, the relay, voice payloads, direct paths -----------------------


def _hop_open(data: bytes) -> None:
    peek_session_id(data)
    MediaHeader.parse(data)
    HopOpener(derive_media_keys(MEDIA_SECRET).client_to_server, ALICE).open(data)


def _hop_seeds() -> list[bytes]:
    sealer = HopSealer(derive_media_keys(MEDIA_SECRET).client_to_server, ALICE)
    return [
        sealer.seal(PacketType.VOICE, b"\x00" * 40),
        sealer.seal(PacketType.KEEPALIVE, b"ka"),
        sealer.seal(PacketType.VOICE_EXCEPT, pack_except([BOB], b"voice")),
    ]


def _relay(data: bytes) -> None:
    relay = Relay()
    relay.add_session(ALICE, derive_media_keys(MEDIA_SECRET))
    relay.add_session(BOB, derive_media_keys(bytes(32)))
    relay.set_room(ALICE, "room")
    relay.set_room(BOB, "room")
    # Bob's address is known, so a forged packet that passed would be forwarded to him.
    bob = HopSealer(derive_media_keys(bytes(32)).client_to_server, BOB)
    relay.datagram_received(bob.seal(PacketType.KEEPALIVE, b""), ("192.0.2.8", 1), NOW)
    relay.datagrams_to_send()
    relay.datagram_received(data, ADDR, NOW)
    sent = relay.datagrams_to_send()
    if sent:
        # Only a packet sealed with Alice's key may make the relay send anything.
        HopOpener(derive_media_keys(MEDIA_SECRET).client_to_server, ALICE).open(data)


def _voice(data: bytes) -> None:
    errors = 0
    for parse in (VoiceFrame.parse, unpack_relayed, unpack_except):
        try:
            parse(data)
        except PacketError:
            errors += 1
    if errors:
        raise PacketError("malformed")


def _voice_seeds() -> list[bytes]:
    frames = [
        VoiceFrame(7, b"\xf8opus", 3),
        VoiceFrame(9, b"\xf8opus", 5, (b"\xf8a", b"\xf8bb"), 2),
    ]
    return [f.serialize() for f in frames] + [pack_except([1, 2], b"v")]


def _opus_toc(data: bytes) -> None:
    samples = packet_samples(data)
    assert 0 < samples <= 5760


def _direct(data: bytes) -> None:
    ours = DirectPaths(ALICE)
    ours.local_key(BOB)
    ours.set_remote(BOB, KEY, [Candidate("host", *ADDR)], NOW)
    ours.datagram_received(data, ADDR, NOW)
    for packet, addr in ours.datagrams_to_send():
        assert addr == ADDR, "a direct packet answered to an address it did not come from"
        assert packet


def _direct_seeds() -> list[bytes]:
    theirs = HopSealer(KEY, BOB)
    # send time, address probed, port, transaction id (PROTOCOL.md 10.3)
    probe = struct.pack("!d16sH12s", NOW - 0.01, bytes(10) + b"\xff\xff" + bytes(4), 1, bytes(12))
    return [
        theirs.seal(PacketType.PROBE, probe),
        theirs.seal(PacketType.PROBE_ACK, probe),
        theirs.seal(PacketType.VOICE, b"voice"),
    ]


# --- the client's media session: whatever reaches its socket ----------------------------

_MEDIA_KEYS = derive_media_keys(MEDIA_SECRET)
_SERVER = ("192.0.2.1", 7600)


def _media_session(data: bytes) -> None:
    """A datagram from the server's address and the same from a stranger: never raises."""
    crypto = RoomCrypto(
        room_id=ROOM_ID,
        secret=ROOM_SECRET,
        session_id=ALICE,
        user="alice",
        nick="alice",
        identity_private=_server_key(),
    )
    session = MediaSession(ALICE, _MEDIA_KEYS, ClientSettings(), crypto, _SERVER)
    session.start([(BOB, "bob")], NOW)
    session.receive_datagram(data, _SERVER, NOW)
    session.receive_datagram(data, ADDR, NOW)
    session.tick(None, NOW)
    for _, addr in session.datagrams_to_send():
        assert addr == _SERVER, "the media session answered a stranger"


def _media_session_seeds() -> list[bytes]:
    relay = HopSealer(_MEDIA_KEYS.server_to_client, ALICE)
    return [
        relay.seal(PacketType.VOICE, pack_relayed(BOB, b"sframe frame")),
        relay.seal(PacketType.KEEPALIVE_ACK, bytes(8)),
        stun.binding_success(bytes(12), ADDR),
    ]


# --- STUN ------------------------------------------------------------------------------


def _stun(data: bytes) -> None:
    responder = stun.BindingResponder(rate=100.0, burst=10, max_sources=4)
    answer = responder.datagram_received(data, ADDR, NOW)
    if answer is not None:
        assert len(answer) <= len(data), "a STUN answer larger than the request"
    stun.parse_binding_success(data, bytes(12))


def _stun_seeds() -> list[bytes]:
    txid = bytes(12)
    return [
        stun.binding_request(txid),
        stun.binding_success(txid, ADDR),
        stun.binding_success(txid, ("2001:db8::1", 5)),
        stun.binding_request(txid) + bytes(28),
    ]


# --- end to end: SFrame, pair channels, member payloads --------------------------------


def _sframe(data: bytes) -> None:
    SFrameHeader.parse(data)
    context = SFrameContext()
    context.add_receive_key(3, SFRAME_BASE)
    context.decrypt(b"meta", data)


def _sframe_seeds() -> list[bytes]:
    context = SFrameContext()
    context.add_send_key(3, SFRAME_BASE)
    return [context.encrypt(3, b"meta", b"hello"), SFrameHeader(3, 2**40).serialize() + b"x"]


def _crypto(session_id: int, user: str, identity: int) -> RoomCrypto:
    return RoomCrypto(
        room_id=ROOM_ID,
        secret=ROOM_SECRET,
        session_id=session_id,
        user=user,
        nick=user,
        identity_private=bytes([identity]) * 32,
        settings=ClientSettings(),
    )


def _pair(alice: RoomCrypto, bob: RoomCrypto) -> None:
    """Run the pair handshake between two members (alice joined after bob)."""
    bob.member_joined(ALICE, "alice", NOW)
    alice.start([(BOB, "bob")], NOW)
    for _ in range(4):
        for to, data in alice.messages_to_send():
            assert to == BOB
            bob.peer_received(ALICE, data, NOW)
        for to, data in bob.messages_to_send():
            assert to == ALICE
            alice.peer_received(BOB, data, NOW)
    assert alice.verified(BOB) and bob.verified(ALICE)


def _peer_message(data: bytes) -> None:
    """Raw bytes from a member as the server relays them (handshake or sealed)."""
    bob = _crypto(BOB, "bob", 2)
    bob.member_joined(ALICE, "alice", NOW)
    bob.peer_received(ALICE, data, NOW)
    bob.open_chat(ALICE, data, NOW)
    with contextlib.suppress(PacketError):
        bob.open_voice(ALICE, data, NOW)
    drain(bob)


def _peer_seeds() -> list[bytes]:
    alice = _crypto(ALICE, "alice", 1)
    alice.start([(BOB, "bob")], NOW)
    return [data for _, data in alice.messages_to_send()] + [alice.seal_chat("hi")]


def _member_payload_raw(data: bytes) -> None:
    alice, bob = _crypto(ALICE, "alice", 1), _crypto(BOB, "bob", 2)
    _pair(alice, bob)
    channel = alice._members[BOB].channel
    assert channel is not None
    channel.send(data)
    for sealed in channel.messages_to_send():
        bob.peer_received(ALICE, sealed, NOW)
    for event in drain(bob):
        assert event.session_id == ALICE


def _member_payload_seeds() -> list[bytes]:
    encoder = msgspec.msgpack.Encoder()
    return [
        encoder.encode({"t": "key", "generation": 1, "step": 0, "base_key": bytes(16)}),
        encoder.encode({"t": "rr", "loss_permille": 20}),
        encoder.encode({"t": "cand", "key": bytes(32), "candidates": [["host", "10.0.0.1", 5]]}),
    ]


# --- invites ------------------------------------------------------------------------


def _invite_text(data: bytes) -> None:
    inv.Invite.parse(data.decode("utf-8", "replace"))


def _invite_body(data: bytes) -> None:
    # With a valid checksum around arbitrary bytes, so the layout checks are reached.
    code = inv._b32encode(data + inv._checksum(data))
    inv.Invite.parse(inv.INVITE_PREFIX + code)


def _invite_seeds() -> list[bytes]:
    invite = inv.Invite("example.org", 7600, ROOM_ID, ROOM_SECRET[:16], bytes(16))
    return [invite.encode().encode(), invite.to_bytes()[: -inv.CHECKSUM_SIZE]]


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("framing", _framing, (FramingError,), _framing_seeds),
        Target("noise_responder", _noise_responder, (RemoteProtocolError,), _noise_seeds),
        Target("noise_initiator", _noise_initiator, (RemoteProtocolError,), _noise_seeds),
        Target("client_message", _client_message, (DecodeError,), _client_seeds),
        Target("server_message", _server_message, (DecodeError,), _server_seeds),
        Target(
            "server_session",
            lambda data: _session(data, Role.SERVER),
            (RemoteProtocolError,),
            _client_seeds,
        ),
        Target(
            "client_session",
            lambda data: _session(data, Role.CLIENT),
            (RemoteProtocolError,),
            _server_seeds,
        ),
        Target("hop_packet", _hop_open, (PacketError,), _hop_seeds),
        Target("relay", _relay, (PacketError,), _hop_seeds),
        Target("voice_frame", _voice, (PacketError,), _voice_seeds),
        Target("opus_toc", _opus_toc, (AudioError,), lambda: [b"\xf8\xff", b"\x03\x05"]),
        Target("direct_packet", _direct, (PacketError,), _direct_seeds),
        Target("stun", _stun, (PacketError,), _stun_seeds),
        Target("media_session", _media_session, (), _media_session_seeds),
        Target("sframe", _sframe, (PacketError,), _sframe_seeds),
        Target("peer_message", _peer_message, (), _peer_seeds),
        Target("member_payload", _member_payload_raw, (), _member_payload_seeds),
        Target("invite_text", _invite_text, (InviteError,), _invite_seeds),
        Target("invite_body", _invite_body, (InviteError,), _invite_seeds),
    )
}
# HandshakeError and FramingError are RemoteProtocolErrors; named for the reader.
assert issubclass(HandshakeError, RemoteProtocolError)
assert issubclass(PeerError, RemoteProtocolError)
