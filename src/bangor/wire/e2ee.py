"""End-to-end encryption of one member in one room, sans-I/O.

``RoomCrypto`` ties the pieces together:

- a :class:`~bangor.wire.pairwise.PairChannel` with every other member, relayed by
  the server as opaque ``peer`` messages and authenticated by the room secret
  (Noise XXpsk3), which proves each member's device identity key;
- our own SFrame sender key (:class:`~bangor.wire.senderkeys.Outbound`), sent to
  each member over its pair channel once that member is verified;
- one :class:`~bangor.wire.senderkeys.Inbound` per other member, fed by the keys
  it sends us.

Membership changes drive the key schedule (DESIGN.md "End-to-end"): before a newcomer
gets our key, our key ratchets one step forward, so it gets only the new step; when
someone who had our key leaves, we make a fresh key (next generation) and send it to
everyone left. A member that cannot prove the room secret never gets a key and its
frames are never opened: nobody hears it and it hears nobody.

Churn must not cut the call (docs/SECURITY.md, "Churn and floods from members"): a
member that leaves without ever having had our key costs no rotation, rotations come at
most once per ``rotation_min_interval`` (a newcomer waiting for one gets the fresh key),
and problems with one member's messages are reported a few at a time, then counted.

Who starts a pair handshake: the newcomer, towards every member listed in its
``joined`` reply. If both sides start anyway (a server that reorders), the lower
session id keeps the initiator role.

Inputs are server messages and ``now``; outputs are pair messages to relay
(:meth:`RoomCrypto.messages_to_send`), events (:meth:`RoomCrypto.next_event`) and the
next timer (:meth:`RoomCrypto.get_timer`, then :meth:`RoomCrypto.handle_timer`).
"""

from __future__ import annotations

import hmac
import math
import secrets
import struct
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, TypeVar

import msgspec

from bangor.errors import LocalProtocolError, PacketError, PeerAuthError, PeerError
from bangor.settings import MAX_CHAT_TEXT, ClientSettings
from bangor.wire.invite import SECRET_SIZE
from bangor.wire.noise import public_key
from bangor.wire.pairwise import (
    MessageKind,
    PairChannel,
    PeerMessage,
    PeerVerified,
    derive_join_token,
    derive_room_psk,
    pair_prologue,
)
from bangor.wire.ratelimit import ReportLimiter
from bangor.wire.senderkeys import (
    BASE_KEY_SIZE,
    GENERATION_LIMIT,
    MAX_STEP,
    PURPOSE_CHAT,
    PURPOSE_VOICE,
    Inbound,
    Outbound,
    SenderKey,
    fresh_sender_key,
)

VOICE_LABEL = b"bangor/1 voice "
CHAT_LABEL = b"bangor/1 chat "
_SESSION = struct.Struct(">I")
# Accounts whose problem reports are counted; a room has at most a few dozen members, so
# only a server inventing names fills this (the oldest count is then reported at once).
MAX_REPORT_SOURCES = 64

U32 = Annotated[int, msgspec.Meta(ge=0, lt=GENERATION_LIMIT)]
Step = Annotated[int, msgspec.Meta(ge=0, le=MAX_STEP)]
BaseKey = Annotated[bytes, msgspec.Meta(min_length=BASE_KEY_SIZE, max_length=BASE_KEY_SIZE)]
ShortText = Annotated[str, msgspec.Meta(max_length=64)]
MAX_BURST_TENTHS = 65535  # a reported mean burst is capped at 6553.5 packets
ChatText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CHAT_TEXT)]
ChatSeq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
DirectKey = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
RoomSecret = Annotated[bytes, msgspec.Meta(min_length=SECRET_SIZE, max_length=SECRET_SIZE)]


# --- what members say to each other (inside pair channels and sealed chat) ----


class PeerHello(msgspec.Struct, frozen=True):
    """Handshake payload: who this member says it is (checked against the server)."""

    user: ShortText
    nick: ShortText


class KeyMessage(msgspec.Struct, frozen=True, tag="key", tag_field="t"):
    """The sender's current SFrame base key."""

    generation: U32
    step: Step
    base_key: BaseKey


class ChatBody(msgspec.Struct, frozen=True):
    """Plaintext of a sealed chat message; ``seq`` counts the sender's messages."""

    seq: ChatSeq
    text: ChatText


class ReceptionReport(msgspec.Struct, frozen=True, tag="rr", tag_field="t"):
    """How a listener receives our voice: loss in per mille over its last interval.

    ``burst_tenths``: the mean run of packets lost in a row, in tenths of a packet (0:
    no loss judged). A listener that sends it also reads spread voice frames
    (``wire.voice``); peers from before it leave it out (None), and they skip it as an
    unknown field. Sent inside the pair channel, so the server learns nothing about
    call quality.
    """

    loss_permille: Annotated[int, msgspec.Meta(ge=0, le=1000)]
    burst_tenths: Annotated[int, msgspec.Meta(ge=0, le=MAX_BURST_TENTHS)] | None = None


class CandidatesMessage(msgspec.Struct, frozen=True, tag="cand", tag_field="t"):
    """Where the sender may be reached directly, and the key its direct packets use.

    Inside the pair channel, so only this member learns them (``wire.direct``).
    """

    key: DirectKey
    candidates: Annotated[list[tuple[ShortText, ShortText, Port]], msgspec.Meta(max_length=16)]


class SecretMessage(msgspec.Struct, frozen=True, tag="secret", tag_field="t"):
    """The room's next secret, from a member rotating the room (its owner).

    Held until the server announces the join token it derives (control message
    ``token``): only then does it replace the secret, so a member cannot move the others
    to a secret of its own, and a rotation the server refused changes nothing.
    """

    secret: RoomSecret


PeerPayload = KeyMessage | ReceptionReport | CandidatesMessage | SecretMessage

_encoder = msgspec.msgpack.Encoder()
_hello_decoder = msgspec.msgpack.Decoder(PeerHello)
_payload_decoder: msgspec.msgpack.Decoder[PeerPayload] = msgspec.msgpack.Decoder(PeerPayload)
_chat_decoder = msgspec.msgpack.Decoder(ChatBody)


T = TypeVar("T")


def _decode(decoder: msgspec.msgpack.Decoder[T], data: bytes, what: str) -> T:
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise PeerError(f"malformed {what}: {exc}") from None
    except RecursionError:
        # msgspec skips unknown fields recursively; a member can nest thousands deep.
        raise PeerError(f"malformed {what}: nested too deeply") from None


# --- events -------------------------------------------------------------------


@dataclass(frozen=True)
class E2EEEvent:
    """What RoomCrypto tells its user (one base for the layer)."""


@dataclass(frozen=True)
class MemberVerified(E2EEEvent):
    """The member proved the room secret; ``identity`` is its device's public key."""

    session_id: int
    user: str
    identity: bytes


@dataclass(frozen=True)
class MemberRejected(E2EEEvent):
    """The member could not prove the room secret (or broke the handshake): no keys."""

    session_id: int
    user: str
    reason: str


@dataclass(frozen=True)
class PeerProblem(E2EEEvent):
    """A bad end-to-end message from a member; it was dropped and the call goes on.

    ``user``: the member's account as the server announced it ("" if not in the room),
    so a report that comes after it left still names it.
    """

    session_id: int
    message: str
    user: str = ""


@dataclass(frozen=True)
class VoiceReleased(E2EEEvent):
    """A held voice frame that opened once its key arrived."""

    session_id: int
    payload: bytes


@dataclass(frozen=True)
class ChatOpened(E2EEEvent):
    session_id: int
    text: str


@dataclass(frozen=True)
class ChatGap(E2EEEvent):
    """The server withheld chat messages from this member (sequence numbers skipped)."""

    session_id: int
    missing: int


@dataclass(frozen=True)
class ReportReceived(E2EEEvent):
    """A verified member's reception report on our voice."""

    session_id: int
    loss: float  # 0..1
    # Mean packets lost in a row (0: none); None from a member that does not send it
    # (and so cannot read spread voice frames).
    burst: float | None = None


@dataclass(frozen=True)
class CandidatesReceived(E2EEEvent):
    """A verified member's direct-path key and candidates: (kind, ip, port) each."""

    session_id: int
    key: bytes
    candidates: tuple[tuple[str, str, int], ...]


# --- per-member state -------------------------------------------------------------


@dataclass
class _Member:
    session_id: int
    user: str
    inbound: Inbound
    metadata: dict[bytes, bytes]
    channel: PairChannel | None = None
    deadline: float | None = None  # verify by then, or be reported
    identity: bytes | None = None
    rejected: bool = False
    next_chat_seq: int | None = None
    joined_after_us: bool = False  # our key ratchets before it gets it
    has_key: bool = False  # it got a key of ours: when it leaves, we rotate

    @property
    def verified(self) -> bool:
        return self.identity is not None


@dataclass
class _Reports:
    """Problem reports about one account: its latest session id and how many to show."""

    session_id: int
    user: str
    limiter: ReportLimiter


def _metadata(label: bytes, room_id: bytes, sender: int) -> bytes:
    # Binds each frame to its room and sender: the server cannot move frames
    # between rooms, and a frame re-attributed to another sender does not open.
    return label + room_id + _SESSION.pack(sender)


class RoomCrypto:
    """One member's end-to-end state for one room (sans-I/O)."""

    def __init__(
        self,
        *,
        room_id: bytes,
        secret: bytes,
        session_id: int,
        user: str,
        nick: str,
        identity_private: bytes,
        settings: ClientSettings | None = None,
        token: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.room_id = room_id
        self.session_id = session_id
        self.user = user
        self.settings = settings or ClientSettings()
        self.identity_private = identity_private
        self.identity_public = public_key(identity_private)
        self._psk = derive_room_psk(secret, room_id)
        # Next room secrets offered by members (and by us), by session id: see SecretMessage.
        self._offered: dict[int, bytes] = {}
        self._hello = _encoder.encode(PeerHello(user, nick))
        self._token = token
        self._outbound = Outbound(fresh_sender_key(0, token))
        self._voice_meta = _metadata(VOICE_LABEL, room_id, session_id)
        self._chat_meta = _metadata(CHAT_LABEL, room_id, session_id)
        self._chat_seq = 0
        self._members: dict[int, _Member] = {}
        self._outgoing: list[tuple[int, bytes]] = []
        self._events: deque[E2EEEvent] = deque()
        self._last_rotation = -math.inf
        self._rotate_at: float | None = None  # a rotation is owed, and due then
        # Per account name ("" for ids not in the room), so rejoining starts nothing afresh.
        self._reports: OrderedDict[str, _Reports] = OrderedDict()

    # --- queries ---------------------------------------------------------------

    @property
    def sender_key(self) -> SenderKey:
        return self._outbound.key

    def verified(self, session_id: int) -> bool:
        member = self._members.get(session_id)
        return member is not None and member.verified

    def identity_of(self, session_id: int) -> bytes | None:
        member = self._members.get(session_id)
        return None if member is None else member.identity

    def messages_to_send(self) -> list[tuple[int, bytes]]:
        """(member session id, pair message) to relay through the server; clears the queue."""
        out, self._outgoing = self._outgoing, []
        return out

    def next_event(self) -> E2EEEvent | None:
        return self._events.popleft() if self._events else None

    @property
    def rotation_pending(self) -> bool:
        """A member who had our key left and the rotation waits for its interval."""
        return self._rotate_at is not None

    def get_timer(self) -> float | None:
        members = self._members.values()
        times = [m.deadline for m in members if m.deadline is not None]
        times += [t for m in members if (t := m.inbound.get_timer()) is not None]
        times += [t for r in self._reports.values() if (t := r.limiter.get_timer()) is not None]
        if self._rotate_at is not None:
            times.append(self._rotate_at)
        return min(times, default=None)

    # --- membership (from the server's messages) ---------------------------------

    def start(self, members: Iterable[tuple[int, str]], now: float) -> None:
        """We joined: greet every member already in the room (we initiate)."""
        for session_id, user in members:
            member = self._add_member(session_id, user, now)
            self._open_channel(member)

    def member_joined(self, session_id: int, user: str, now: float) -> None:
        """Someone joined: it starts the handshake; we ratchet once it is verified."""
        if session_id == self.session_id or session_id in self._members:
            return
        member = self._add_member(session_id, user, now)  # its channel starts with its HS1
        member.joined_after_us = True

    def member_left(self, session_id: int, now: float) -> None:
        """Someone left: if it had our key, a fresh one, so nothing said later reaches it."""
        member = self._members.pop(session_id, None)
        self._offered.pop(session_id, None)
        if member is None:
            return
        if not member.has_key:
            return  # it never could open our frames: nothing to take away
        if now >= self._last_rotation + self.settings.rotation_min_interval:
            self._rotate(now)
        elif self._rotate_at is None:
            self._rotate_at = self._last_rotation + self.settings.rotation_min_interval

    # --- pair messages ---------------------------------------------------------------

    def peer_received(self, sender: int, data: bytes, now: float) -> None:
        member = self._members.get(sender)
        if member is None:
            self._problem(sender, "end-to-end message from someone not in the room", now)
            return
        if member.rejected:
            return  # reported once already; nothing it says counts
        if data[:1] == bytes((MessageKind.HS1,)):
            self._on_hs1(member, data, now)
            return
        channel = member.channel
        if channel is None:
            self._problem(sender, "end-to-end message before a handshake", now)
            return
        try:
            pair_events = channel.receive(data)
        except PeerAuthError as exc:
            self._flush(member)
            self._reject(member, str(exc))
            return
        except PeerError as exc:
            self._flush(member)
            if channel.failed:
                self._reject(member, str(exc))
            else:
                self._problem(sender, str(exc), now)
            return
        for event in pair_events:
            if isinstance(event, PeerVerified):
                self._on_verified(member, event, now)
            elif isinstance(event, PeerMessage):
                self._on_payload(member, event.payload, now)
            if member.rejected:
                break
        self._flush(member)

    def _on_hs1(self, member: _Member, data: bytes, now: float) -> None:
        """A member starts a handshake with us; settle who initiates if both did."""
        channel = member.channel
        if (
            channel is not None
            and channel.initiator
            and not channel.failed
            and self.session_id < member.session_id
        ):
            return  # ours stands; they will answer it
        if member.verified or (
            channel is not None and not channel.initiator and not channel.failed
        ):
            # A member starts one handshake with us per session; another HS1 is a
            # replay or a forgery and must not destroy the one under way.
            self._problem(member.session_id, "second handshake start ignored", now)
            return
        # Try it on a new channel first, so a forged HS1 changes nothing.
        candidate = self._new_channel(member, initiator=False)
        try:
            candidate.receive(data)
        except PeerError as exc:
            self._problem(member.session_id, f"handshake start ignored: {exc}", now)
            return
        member.channel = candidate
        self._flush(member)

    def _on_verified(self, member: _Member, event: PeerVerified, now: float) -> None:
        try:
            hello = _decode(_hello_decoder, event.hello, "member hello")
        except PeerError as exc:
            self._reject(member, str(exc))
            return
        if hello.user != member.user:
            # Whoever holds the secret could claim any name; the server's login is the
            # other witness, and both must agree.
            responder = member.channel is not None and not member.channel.initiator
            self._reject(
                member,
                f"says it is {hello.user!r} but the server says {member.user!r}",
            )
            if responder:  # instead of our confirmation: they learn it now, not by timeout
                self._outgoing.append((member.session_id, bytes((MessageKind.REJECT,))))
            return
        member.identity = event.remote_identity
        member.deadline = None
        self._events.append(MemberVerified(member.session_id, member.user, member.identity))
        self._first_key(member, now)

    def _first_key(self, member: _Member, now: float) -> None:
        """Give a member that just verified our key, never one it could open the past with."""
        if self._rotate_at is not None:
            # Our current key is one a departed member had; the owed rotation brings a
            # fresh one to everyone verified, this member too, within the interval.
            return
        if member.joined_after_us and self._outbound.ratchet(self._token):
            self._rotated(now)  # the step limit forced a fresh key: everyone needs it
            return
        self._send_key(member)

    def _on_payload(self, member: _Member, payload: bytes, now: float) -> None:
        try:
            message = _decode(_payload_decoder, payload, "member message")
            if isinstance(message, ReceptionReport):
                tenths = message.burst_tenths
                burst = None if tenths is None else tenths / 10
                self._events.append(
                    ReportReceived(member.session_id, message.loss_permille / 1000, burst)
                )
                return
            if isinstance(message, CandidatesMessage):
                self._events.append(
                    CandidatesReceived(member.session_id, message.key, tuple(message.candidates))
                )
                return
            if isinstance(message, SecretMessage):
                self._offered[member.session_id] = message.secret
                return
            key = SenderKey(message.generation, message.step, message.base_key)
            released = member.inbound.install(key, member.metadata.__getitem__, now)
        except PeerError as exc:
            self._problem(member.session_id, str(exc), now)
            return
        for item in released:
            if item.purpose == PURPOSE_VOICE:
                self._events.append(VoiceReleased(member.session_id, item.plaintext))
            else:
                self._chat_plaintext(member, item.plaintext, now)

    def send_report(self, session_id: int, loss: float, burst: float = 0.0) -> None:
        """Tell a verified member how its voice reaches us (dropped if not verified).

        ``burst``: mean packets lost in a row (0 without loss).
        """
        permille = min(max(round(loss * 1000), 0), 1000)
        tenths = min(max(round(burst * 10), 0), MAX_BURST_TENTHS)
        self._send_payload(session_id, ReceptionReport(permille, tenths))

    def send_candidates(
        self, session_id: int, key: bytes, candidates: list[tuple[str, str, int]]
    ) -> None:
        """Offer a verified member a direct path (dropped if not verified)."""
        self._send_payload(session_id, CandidatesMessage(key, candidates))

    # --- rotating the room secret (PROTOCOL.md 3.15) ---------------------------------

    def offer_secret(self, secret: bytes) -> list[int]:
        """Send the room's next secret to every verified member; the members it went to.

        Nothing changes until :meth:`token_changed` (the server took the rotation).
        """
        if len(secret) != SECRET_SIZE:
            raise LocalProtocolError(f"a room secret is {SECRET_SIZE} bytes")
        self._offered[self.session_id] = secret
        sent = []
        for member in self._members.values():
            if member.verified and not member.rejected:
                self._send_payload(member.session_id, SecretMessage(secret))
                sent.append(member.session_id)
        return sent

    def token_changed(self, token: bytes) -> bytes | None:
        """The server says the room's join token is now ``token``: the offered secret
        that derives it becomes the room secret (pair handshakes from now on use it) and
        is returned; None if no offer fits (we missed the rotation)."""
        for secret in self._offered.values():
            if hmac.compare_digest(derive_join_token(secret, self.room_id), token):
                self._psk = derive_room_psk(secret, self.room_id)
                self._offered.clear()
                return secret
        return None

    def _send_payload(self, session_id: int, payload: PeerPayload) -> None:
        member = self._members.get(session_id)
        if member is None or member.rejected or not member.verified:
            return
        channel = member.channel
        if channel is None or not channel.established:
            return
        channel.send(_encoder.encode(payload))
        self._flush(member)

    # --- voice ------------------------------------------------------------------------

    def seal_voice(self, payload: bytes) -> bytes:
        return self._outbound.seal(PURPOSE_VOICE, self._voice_meta, payload)

    def open_voice(self, sender: int, frame: bytes, now: float) -> bytes | None:
        """Plaintext of a member's voice frame, None if held for its key; PacketError if bad."""
        member = self._members.get(sender)
        if member is None or member.rejected:
            raise PacketError("voice from a member without keys")
        return member.inbound.open(PURPOSE_VOICE, member.metadata[PURPOSE_VOICE], frame, now)

    # --- chat -------------------------------------------------------------------------

    def seal_chat(self, text: str) -> bytes:
        if not 0 < len(text) <= MAX_CHAT_TEXT:
            raise LocalProtocolError(f"chat text must be 1..{MAX_CHAT_TEXT} characters")
        body = _encoder.encode(ChatBody(self._chat_seq, text))
        self._chat_seq += 1
        return self._outbound.seal(PURPOSE_CHAT, self._chat_meta, body)

    def open_chat(self, sender: int, data: bytes, now: float) -> None:
        """A sealed chat message from the server; results arrive as events."""
        member = self._members.get(sender)
        if member is None or member.rejected:
            self._problem(sender, "chat from a member without keys dropped", now)
            return
        try:
            plaintext = member.inbound.open(PURPOSE_CHAT, member.metadata[PURPOSE_CHAT], data, now)
        except PacketError as exc:
            self._problem(sender, f"chat message dropped: {exc}", now)
            return
        if plaintext is not None:
            self._chat_plaintext(member, plaintext, now)

    def _chat_plaintext(self, member: _Member, plaintext: bytes, now: float) -> None:
        try:
            body = _decode(_chat_decoder, plaintext, "chat message")
        except PeerError as exc:
            self._problem(member.session_id, str(exc), now)
            return
        expected = member.next_chat_seq
        if expected is not None and body.seq > expected:
            self._events.append(ChatGap(member.session_id, body.seq - expected))
        elif expected is not None and body.seq < expected:
            self._problem(member.session_id, "chat message out of order dropped", now)
            return
        member.next_chat_seq = body.seq + 1
        self._events.append(ChatOpened(member.session_id, body.text))

    # --- timers -----------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        if self._rotate_at is not None and now >= self._rotate_at:
            self._rotate(now)
        for reports in self._reports.values():
            self._summarise(reports, now)
        for member in list(self._members.values()):
            if member.deadline is not None and now >= member.deadline and not member.verified:
                self._reject(
                    member,
                    f"did not prove the room secret within {self.settings.peer_verify_timeout:g} s",
                )
            dropped = member.inbound.expire(now)
            if dropped:
                self._problem(
                    member.session_id,
                    f"{dropped} frame(s) never got a key and were dropped",
                    now,
                )

    # --- internals ---------------------------------------------------------------------

    def _add_member(self, session_id: int, user: str, now: float) -> _Member:
        member = _Member(
            session_id,
            user,
            Inbound.from_settings(self.settings),
            {
                PURPOSE_VOICE: _metadata(VOICE_LABEL, self.room_id, session_id),
                PURPOSE_CHAT: _metadata(CHAT_LABEL, self.room_id, session_id),
            },
            deadline=now + self.settings.peer_verify_timeout,
        )
        self._members[session_id] = member
        return member

    def _new_channel(self, member: _Member, *, initiator: bool) -> PairChannel:
        first, second = (
            (self.session_id, member.session_id)
            if initiator
            else (member.session_id, self.session_id)
        )
        return PairChannel(
            initiator=initiator,
            identity_private=self.identity_private,
            psk=self._psk,
            prologue=pair_prologue(self.room_id, first, second),
            hello=self._hello,
        )

    def _open_channel(self, member: _Member) -> None:
        """We start the handshake (we are the newcomer)."""
        member.channel = self._new_channel(member, initiator=True)
        member.channel.start()
        self._flush(member)

    def _flush(self, member: _Member) -> None:
        if member.channel is not None:
            for data in member.channel.messages_to_send():
                self._outgoing.append((member.session_id, data))

    def _send_key(self, member: _Member) -> None:
        channel = member.channel
        if channel is None or not channel.established:
            return
        key = self._outbound.key
        channel.send(_encoder.encode(KeyMessage(key.generation, key.step, key.base_key)))
        member.has_key = True
        self._flush(member)

    def _rotate(self, now: float) -> None:
        self._outbound.rotate(self._token)
        self._rotated(now)

    def _rotated(self, now: float) -> None:
        """Our key was replaced by a fresh one: every verified member gets it."""
        self._last_rotation = now
        self._rotate_at = None
        for member in self._members.values():
            if member.verified and not member.rejected:
                self._send_key(member)

    def _reject(self, member: _Member, reason: str) -> None:
        if member.rejected:
            return
        member.rejected = True
        member.deadline = None
        member.identity = None
        member.channel = None
        self._events.append(MemberRejected(member.session_id, member.user, reason))

    def _problem(self, session_id: int, message: str, now: float) -> None:
        """Report a bad message, unless this account's reports are being counted instead."""
        member = self._members.get(session_id)
        user = member.user if member is not None else ""  # strangers share one count
        reports = self._reports.get(user)
        if reports is None:
            settings = self.settings
            limiter = ReportLimiter(
                settings.problem_report_burst, settings.problem_report_interval, now
            )
            reports = self._reports[user] = _Reports(session_id, user, limiter)
            while len(self._reports) > MAX_REPORT_SOURCES:  # only a lying server gets here
                _, oldest = self._reports.popitem(last=False)
                self._summarise(oldest, now, force=True)
        else:
            self._reports.move_to_end(user)
        reports.session_id = session_id
        if reports.limiter.allow(message, now):
            self._events.append(PeerProblem(session_id, message, user))

    def report_held_problems(self, now: float) -> None:
        """Report every count of problems held back now (we are leaving: nothing lost)."""
        for reports in self._reports.values():
            self._summarise(reports, now, force=True)

    def _summarise(self, reports: _Reports, now: float, *, force: bool = False) -> None:
        """One report for the problems counted instead of reported, when it is due."""
        held = reports.limiter.take_due(now, force=force)
        if held:
            kinds = ", ".join(f"{text} (x{count})" for text, count in held.most_common())
            total = sum(held.values())
            self._events.append(
                PeerProblem(
                    reports.session_id, f"{total} more problem(s) not shown: {kinds}", reports.user
                )
            )
