"""One member's media session for one call, sans-I/O (like aioquic's QuicConnection).

Inputs: datagrams from the UDP socket, pair messages and chat from the control
channel, membership changes, one captured frame per tick, and ``now`` with each.
Outputs: :meth:`MediaSession.datagrams_to_send` (to the relay, the server's STUN
responder and members on direct paths), :meth:`MediaSession.peer_messages_to_send`
(pair messages for the control channel), the frame to play from each
:meth:`MediaSession.tick`, :meth:`MediaSession.next_event` and
:meth:`MediaSession.get_timer` / :meth:`MediaSession.handle_timer`.

It owns the call's end-to-end state (:class:`~bangor.wire.e2ee.RoomCrypto`) and direct
paths (:class:`~bangor.wire.direct.DirectPaths`), and does itself what used to go
through the application: reception reports go out every ``report_interval``, reports
on our voice adapt our send plan, frames held for a key are played once it comes,
candidates go to each member once it is verified (and again when the server tells us
a new address), and a member's candidates start the checks.

The frame path, mouth to ear: capture -> chain (high-pass, echo cancellation, noise
suppression, gain) -> gate -> encode -> seal -> send; receive -> open -> jitter ->
decode -> mix -> play (and to the chain, as the echo canceller's reference).
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterable, Sequence

import numpy as np

from bangor.audio.capture import CaptureChain
from bangor.audio.mixer import Mixer
from bangor.errors import PacketError
from bangor.media import events as me
from bangor.media.sender import Sender
from bangor.media.streams import Streams
from bangor.settings import ClientSettings
from bangor.wire import e2ee, stun
from bangor.wire.direct import Candidate, DirectPaths, DirectSettings
from bangor.wire.media import HopOpener, HopSealer, MediaKeys, PacketType, peek_session_id
from bangor.wire.voice import pack_except, unpack_relayed

Address = tuple[str, int]

PLAN_INTERVAL = 1.0  # seconds: look at the send plan again even without reports
STUN_RETRY = 0.5  # seconds between STUN requests until the server answers
STUN_FAST_TRIES = 20  # then ask only now and then (an old server may not answer STUN)
_STAMP = struct.Struct("!Q")  # keepalive: our clock in ns, echoed by the server


class MediaSession:
    """The voice of one call: sealing, routing, playing out, and the paths it takes."""

    def __init__(
        self,
        session_id: int,
        keys: MediaKeys,
        settings: ClientSettings,
        crypto: e2ee.RoomCrypto,
        server_addr: Address,
        host_addresses: Sequence[Address] = (),
    ) -> None:
        self.session_id = session_id
        self.settings = settings
        self.crypto = crypto
        self.server_addr = server_addr
        # Our socket's addresses on our interfaces: host candidates for members.
        self.host_addresses = list(host_addresses)
        self.srflx: Address | None = None  # our address as the server sees it (STUN)
        self.direct = DirectPaths(session_id, DirectSettings())
        self.sender = Sender(settings)
        # Raises AudioError when a stage asked for has no library here.
        self.chain = CaptureChain(
            settings.frame_samples,
            noise_suppression=settings.noise_suppression,
            echo_cancellation=settings.echo_cancellation,
            agc=settings.agc,
        )
        self.streams = Streams(settings)
        # What the user controls: our microphone, what we hear, each speaker's volume.
        self.muted = False
        self.deafened = False  # hears nobody, and is not heard either (as in Mumble)
        self.talking = False  # push-to-talk held (only matters with settings.push_to_talk)
        self.volumes: dict[int, float] = {}  # session id -> gain (1.0)
        # The other members (session id -> account): voice goes through the relay
        # unless every one of them is reached directly.
        self.members: dict[int, str] = {}
        self._sealer = HopSealer(keys.client_to_server, session_id)
        self._opener = HopOpener(keys.server_to_client, session_id)
        self._mixer = Mixer(settings.frame_samples)
        self._record_mixer = Mixer(settings.frame_samples)
        self._heard: list[tuple[np.ndarray, float]] = []  # the last tick's, for a recording
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[me.CallEvent] = deque()
        self._rtt: float | None = None
        self._relay_up = False
        self._received = 0
        self._dropped = 0
        self._undecryptable = 0
        self._direct_sent = 0
        self._direct_received = 0
        self._stun_txid = stun.new_transaction_id()
        self._stun_tries = 0
        self._next_stun: float | None = None
        self._next_keepalive: float | None = None
        self._next_report: float | None = None
        self._next_plan: float | None = None

    # --- the call ----------------------------------------------------------------------

    def start(self, members: Iterable[tuple[int, str]], now: float) -> None:
        """We joined: greet the members, say hello to the relay, ask for our address."""
        members = list(members)
        self.members.update(members)
        for session_id, _ in members:
            self.sender.joined(session_id)
        self.crypto.start(members, now)
        self._keepalive(now)
        self._next_report = now + self.settings.report_interval
        self._next_plan = now + PLAN_INTERVAL
        if not self.settings.relay_only:
            self._next_stun = now
            self._discover(now)
        self._pump(now)

    def member_joined(self, session_id: int, user: str, now: float) -> None:
        self.members[session_id] = user
        self.sender.joined(session_id)
        self.crypto.member_joined(session_id, user, now)
        self._pump(now)

    def member_left(self, session_id: int, now: float) -> None:
        self.members.pop(session_id, None)
        self.crypto.member_left(session_id, now)
        self.streams.forget(session_id)
        self.volumes.pop(session_id, None)
        self.sender.forget(session_id)
        self.direct.remove(session_id)
        self._pump(now)

    def receive_peer(self, sender: int, data: bytes, now: float) -> None:
        """A pair message the server relayed from a member."""
        self.crypto.peer_received(sender, data, now)
        self._pump(now)

    def receive_chat(self, sender: int, data: bytes, now: float) -> None:
        self.crypto.open_chat(sender, data, now)
        self._pump(now)

    def seal_chat(self, text: str) -> bytes:
        """A chat line sealed for the room, for the control channel."""
        return self.crypto.seal_chat(text)

    @property
    def processing(self) -> me.Processing:
        chain = self.chain
        return me.Processing(chain.noise_suppression, chain.echo_cancellation, chain.agc)

    def set_processing(
        self,
        *,
        noise_suppression: bool | None = None,
        echo_cancellation: bool | None = None,
        agc: bool | None = None,
    ) -> me.Processing:
        """Turn stages of the capture chain on or off in a call (None: as it is);
        the chain as it runs now. A stage without its library here raises AudioError
        (naming the package) and nothing changes."""
        self.chain.configure(
            noise_suppression=noise_suppression, echo_cancellation=echo_cancellation, agc=agc
        )
        return self.processing

    def rekey_hop(self, keys: MediaKeys, now: float) -> None:
        """The server restarted and gave us our session id back, with new hop keys: the
        relay is reached with them from now on. End-to-end keys and direct paths go on."""
        self._sealer = HopSealer(keys.client_to_server, self.session_id)
        self._opener = HopOpener(keys.server_to_client, self.session_id)
        self._relay_up = False  # until the new server echoes a keepalive
        self._keepalive(now)
        self._pump(now)

    def greet(self, members: Iterable[tuple[int, str]], now: float) -> None:
        """Members we did not know in a room we came back to: we greet them (as a joiner
        does), since they saw us join."""
        members = list(members)
        self.members.update(members)
        self.crypto.start(members, now)
        self._pump(now)

    def set_max_bitrate(self, max_bitrate: int | None, now: float) -> None:
        self.sender.set_max_bitrate(max_bitrate, now)

    def finish(self, now: float) -> None:
        """The call is over: counts of problems not shown one by one come as events now."""
        self.crypto.report_held_problems(now)
        self._pump(now)

    @property
    def transmitting(self) -> bool:
        """Whether our microphone goes out (voice activity still decides each frame)."""
        if self.muted or self.deafened:
            return False
        return self.talking or not self.settings.push_to_talk

    # --- outputs -----------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def peer_messages_to_send(self) -> list[tuple[int, bytes]]:
        """(member session id, pair message) for the control channel to relay."""
        return self.crypto.messages_to_send()

    def next_event(self) -> me.CallEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        times = [
            t
            for t in (
                self.crypto.get_timer(),
                self.direct.get_timer(),
                self._next_stun,
                self._next_keepalive,
                self._next_report,
                self._next_plan,
            )
            if t is not None
        ]
        return min(times, default=None)

    def handle_timer(self, now: float) -> None:
        timer = self.crypto.get_timer()
        if timer is not None and now >= timer:
            self.crypto.handle_timer(now)
        timer = self.direct.get_timer()
        if timer is not None and now >= timer:
            self.direct.handle_timer(now)
        if self._next_stun is not None and now >= self._next_stun:
            self._discover(now)
        if self._next_keepalive is not None and now >= self._next_keepalive:
            self._keepalive(now)
        if self._next_report is not None and now >= self._next_report:
            self._next_report = max(self._next_report + self.settings.report_interval, now)
            for sender, loss, burst in self.streams.reception_reports(now):
                self.crypto.send_report(sender, loss, burst)
        if self._next_plan is not None and now >= self._next_plan:
            self._next_plan = max(self._next_plan + PLAN_INTERVAL, now)
            self.sender.update_plan(now)  # old reports expire, startup protection ends
        self._pump(now)

    def stats(self, now: float) -> me.MediaStats:
        streams = self.streams
        senders = tuple(
            me.SenderStats(
                sid,
                stream.jitter.stats(),
                stream.meter.total().loss,
                stream.frame_ms,
                stream.meter.kbps,
                streams.speaking(sid),
            )
            for sid, stream in streams.streams.items()
        )
        direct = self.direct.direct()
        paths = tuple(
            me.PathStats(sid, sid in direct, self.direct.rtt(sid)) for sid in self.members
        )
        plan = self.sender.plan
        return me.MediaStats(
            sent=self.sender.sent,
            suppressed=self.sender.suppressed,
            received=self._received,
            dropped=self._dropped,
            undecryptable=self._undecryptable,
            direct_sent=self._direct_sent,
            direct_received=self._direct_received,
            rtt=self._rtt,
            relay_up=self._relay_up,
            bitrate=plan.bitrate,
            redundancy=plan.depth,
            fec_loss_pct=plan.expected_loss,
            reported_loss=self.sender.adapter.worst_loss(now),
            senders=senders,
            paths=paths,
            processing=self.processing,
            input_level=self.chain.level,
        )

    # --- one tick (one of our frames) ----------------------------------------------------

    def tick(self, pcm_in: np.ndarray | None, now: float) -> np.ndarray:
        """Send this tick's captured frame (None: nothing captured) and give the frame
        to play: one tick of each speaker, mixed with its volume (silence if deafened)."""
        sent = False
        if pcm_in is None:
            self.chain.idle()
        else:
            pcm_in = self.chain.process(pcm_in)
            voice = self.chain.voice_probability
            for frame in self.sender.frames(pcm_in, self.transmitting, voice):
                self._send_voice(self.crypto.seal_voice(frame))
                sent = True
        heard = [(pcm, self.volumes.get(sid, 1.0)) for sid, pcm in self.streams.play()]
        # Deafened: silence out, though the streams still play through their decoders
        # (their state stays right) and into a recording.
        out = self._mixer.mix([] if self.deafened else heard)
        self.chain.far_end(out)  # what the microphone may hear of it again
        if sent and pcm_in is not None:
            heard.append((pcm_in, 1.0))
        self._heard = heard
        self._pump(now)
        return out

    def recording(self) -> np.ndarray:
        """The last tick as a recording keeps it: the call as heard plus our own voice
        while it went out (deafened or not)."""
        return self._record_mixer.mix(self._heard)

    def _send_voice(self, sealed: bytes) -> None:
        """One sealed voice frame: straight to members on direct paths, the rest by relay."""
        direct = self.direct.direct()
        if not direct:
            self._send(PacketType.VOICE, sealed)
            return
        for member, addr in direct.items():
            self._out.append((self.direct.seal(member, PacketType.VOICE, sealed), addr))
        self._direct_sent += len(direct)
        if not self.members.keys() <= direct.keys():
            self._send(PacketType.VOICE_EXCEPT, pack_except(sorted(direct), sealed))

    # --- datagrams ---------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """A datagram from the socket: the relay, the STUN responder or a member.

        Whatever does not open is counted as dropped, never raised.
        """
        if stun.is_stun(data):
            self._on_stun(data, addr, now)
        else:
            try:
                if peek_session_id(data) != self.session_id:
                    voice = self.direct.datagram_received(data, addr, now)
                    if voice is not None:
                        self._direct_received += 1
                        self._open_voice(*voice, now)
                else:
                    self._on_relayed(data, now)
            except PacketError:
                self._dropped += 1
        self._pump(now)

    def _on_relayed(self, data: bytes, now: float) -> None:
        header, payload = self._opener.open(data)
        if header.type is PacketType.VOICE:
            sender, inner = unpack_relayed(payload)
            self._open_voice(sender, inner, now)
        elif header.type is PacketType.KEEPALIVE_ACK and len(payload) == _STAMP.size:
            (sent,) = _STAMP.unpack(payload)
            self._rtt = max(_ns(now) - sent, 0) / 1e9
            if not self._relay_up:
                self._relay_up = True
                self._events.append(me.RelayPathUp())

    def _open_voice(self, sender: int, inner: bytes, now: float) -> None:
        self._received += 1  # all voice, whichever path it took
        try:
            plaintext = self.crypto.open_voice(sender, inner, now)
        except PacketError:
            self._undecryptable += 1
            return
        # None: held until the sender's key arrives (released as an E2EE event).
        if plaintext is not None and not self.streams.push(sender, plaintext, now, now):
            self._undecryptable += 1

    def _on_stun(self, data: bytes, addr: Address, now: float) -> None:
        if addr != self.server_addr:
            return  # only the server's answer tells us our address
        try:
            mapped = stun.parse_binding_success(data, self._stun_txid)
        except PacketError:
            self._dropped += 1
            return
        if mapped != self.srflx:
            self.srflx = mapped
            self._offer_candidates(list(self.members))

    def _send(self, ptype: PacketType, payload: bytes) -> None:
        self._out.append((self._sealer.seal(ptype, payload), self.server_addr))

    def _keepalive(self, now: float) -> None:
        # The stamp is our own clock: only we read it back, from the server's echo.
        self._send(PacketType.KEEPALIVE, _STAMP.pack(_ns(now)))
        self._next_keepalive = now + self.settings.keepalive_interval

    def _discover(self, now: float) -> None:
        """Ask the server's STUN responder for our address, until it answers (then rarely)."""
        self._stun_tries += 1
        fast = self.srflx is None and self._stun_tries < STUN_FAST_TRIES
        self._next_stun = now + (STUN_RETRY if fast else self.settings.keepalive_interval * 10)
        self._out.append((stun.binding_request(self._stun_txid), self.server_addr))

    # --- direct paths ----------------------------------------------------------------------

    def candidates(self) -> list[tuple[str, str, int]]:
        """Where members may reach us: (kind, ip, port) for host and server-reflexive."""
        found = [("host", ip, port) for ip, port in self.host_addresses]
        if self.srflx is not None and ("host", *self.srflx) not in found:
            found.append(("srflx", *self.srflx))
        return found

    def _offer_candidates(self, members: Iterable[int]) -> None:
        """Our direct-path key and candidates, to each of these members once verified."""
        if self.settings.relay_only:
            return
        candidates = self.candidates()
        for member in members:
            if self.crypto.verified(member):
                key = self.direct.local_key(member)
                self.crypto.send_candidates(member, key, candidates)

    def _on_candidates(self, event: e2ee.CandidatesReceived, now: float) -> None:
        if self.settings.relay_only or event.session_id not in self.members:
            return
        candidates = [Candidate(kind, ip, port) for kind, ip, port in event.candidates]
        try:
            self.direct.set_remote(event.session_id, event.key, candidates, now)
        except PacketError as exc:
            self._events.append(me.DirectPathRefused(event.session_id, str(exc)))

    # --- what the cores found ---------------------------------------------------------------

    def _pump(self, now: float) -> None:
        """Take in what RoomCrypto and DirectPaths found; queue what the app must know."""
        released: dict[int, list[bytes]] = {}
        while (event := self.crypto.next_event()) is not None:
            if isinstance(event, e2ee.VoiceReleased):
                released.setdefault(event.session_id, []).append(event.payload)
            elif isinstance(event, e2ee.ReportReceived):
                self.sender.report(event.session_id, event.loss, now, event.burst)
            elif isinstance(event, e2ee.CandidatesReceived):
                self._on_candidates(event, now)
            else:
                # Chat, verification, rejection, gaps and problems: the app shows them.
                self._events.append(event)
                if isinstance(event, e2ee.MemberVerified):
                    self._offer_candidates([event.session_id])
        for sender, payloads in released.items():
            self._undecryptable += self.streams.push_released(sender, payloads, now)
        self._out += self.direct.datagrams_to_send()
        while (change := self.direct.next_event()) is not None:
            self._events.append(change)


def _ns(now: float) -> int:
    return max(round(now * 1e9), 0)
