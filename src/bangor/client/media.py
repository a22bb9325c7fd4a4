"""The client's media engine: capture -> Opus -> E2EE seal -> hop seal -> UDP, and back.

The engine ticks once per frame of ours (``settings.frame_ms``: 10, 20 or 40 ms) on
the event loop's clock: it reads one frame from the source, encodes and sends it (with
copies of the frames before it while listeners report loss), then takes one tick of
audio from each sender, mixes with each speaker's volume and writes to the sink.

Each sender picks its own frame duration, read from its packets' Opus TOC byte. Its
jitter buffer counts its frames; decoded audio (or a loss concealed, from in-band FEC
when the next packet is there, for the lost frame's duration) goes into a small PCM
queue per sender, and each tick takes exactly one tick's samples from it, popping and
decoding that sender's frames as needed: two 10 ms frames for a 20 ms tick, one
40 ms frame every other 20 ms tick.

Ticks are scheduled against absolute times so they do not drift; after a long stall
the schedule is reset rather than bursting to catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, cast

import ifaddr
import numpy as np

from bangor.audio.adaptation import SendAdapter, SendPlan
from bangor.audio.codec import OpusDecoder, OpusEncoder, packet_samples
from bangor.audio.jitter import Frame, JitterBuffer, Lost
from bangor.audio.loss import LossMeter
from bangor.audio.mixer import Mixer
from bangor.audio.vad import VoiceGate
from bangor.errors import AudioError, ConnectError, PacketError
from bangor.io.devices import NullSink, Sink, Source
from bangor.settings import FRAME_SAMPLES, MAX_VOICE_FRAME, SAMPLE_RATE, ClientSettings
from bangor.wire import stun
from bangor.wire.direct import DirectPaths, DirectSettings, PathChanged
from bangor.wire.media import HopOpener, HopSealer, MediaKeys, PacketType, peek_session_id
from bangor.wire.voice import (
    MAX_REDUNDANT,
    PACKET_MODULO,
    SEQ_MODULO,
    VoiceFrame,
    pack_except,
    unpack_relayed,
)

MAX_STALL_S = 0.2  # behind by more than this: reset the schedule instead of bursting
PLAN_INTERVAL = 1.0  # seconds: look at the send plan again even without reports
SPEAKING_MS = 200  # a speaker whose last real frame played within this is speaking
STUN_RETRY = 0.5  # seconds between STUN requests until the server answers
STUN_FAST_TRIES = 20  # then ask only now and then (an old server may not answer STUN)
MAX_HOST_CANDIDATES = 6  # interface addresses offered to members (room for srflx and more)
_STAMP = struct.Struct("!Q")


def _at_least_one(ms: float, frame_ms: float) -> int:
    # A duration in whole frames, rounded up, at least one.
    return max(math.ceil(ms / frame_ms - 1e-9), 1)


class VoiceCrypto(Protocol):
    """End-to-end sealing of voice frames (``wire.e2ee.RoomCrypto``)."""

    def seal_voice(self, payload: bytes) -> bytes: ...

    def open_voice(self, sender: int, frame: bytes, now: float) -> bytes | None: ...


@dataclass
class SenderStream:
    """What the client keeps per remote speaker."""

    jitter: JitterBuffer
    decoder: OpusDecoder
    frame_samples: int = FRAME_SAMPLES  # the sender's frame duration, from its TOC bytes
    meter: LossMeter = field(default_factory=LossMeter)
    bad_frames: int = 0
    last_voice_tick: int | None = None  # our tick of the last frame played (not concealed)
    loss_until: float = -1.0  # we saw this sender's packets lost recently, until then
    # Decoded audio not played yet: less than one of the sender's frames plus a tick.
    pcm: list[np.ndarray] = field(default_factory=list)
    pcm_samples: int = 0
    resets: int = 0  # times the sender changed its frame duration

    @property
    def frame_ms(self) -> float:
        return self.frame_samples * 1000 / SAMPLE_RATE


@dataclass
class MediaStats:
    sent: int = 0  # voice packets
    # Frames not sent because the voice gate judged them silent (so far: a frame held
    # for pre-roll counts here until it goes out); sent + suppressed = frames read.
    suppressed: int = 0
    received: int = 0
    dropped: int = 0  # datagrams that failed to open (forged, replayed, malformed)
    undecryptable: int = 0  # voice that failed end to end (no key, forged, replayed)
    direct_sent: int = 0  # voice packets sent straight to a member (not via the relay)
    direct_received: int = 0  # of ``received``, those that came straight from a member
    rtt: float | None = None
    udp_ok: bool = False


@dataclass
class MediaEngine(asyncio.DatagramProtocol):
    session_id: int
    keys: MediaKeys
    source: Source
    sink: Sink
    settings: ClientSettings
    crypto: VoiceCrypto
    on_path: Callable[[str], None] = lambda path: None
    # A member's direct path came up or went down (wire.direct.PathChanged).
    on_peer_path: Callable[[PathChanged], None] = lambda change: None
    # Our server-reflexive address became known: offer candidates to the members again.
    on_candidates: Callable[[], None] = lambda: None
    # A device failed: the message says what happened; the call goes on.
    on_problem: Callable[[str], None] = lambda message: None
    stats: MediaStats = field(default_factory=MediaStats)
    streams: dict[int, SenderStream] = field(default_factory=dict)
    transport: asyncio.DatagramTransport | None = None
    source_done: bool = False
    # What the user controls: our microphone, what we hear, each speaker's volume.
    muted: bool = False
    deafened: bool = False  # hears nobody, and is not heard either (as in Mumble)
    talking: bool = False  # push-to-talk held (only matters with settings.push_to_talk)
    volumes: dict[int, float] = field(default_factory=dict)  # session id -> gain (1.0)
    # The call as heard, plus our own voice while it goes out (``--record``).
    recorder: Sink | None = None
    # The loop's clock once started; reports and plans are timed on it.
    clock: Callable[[], float] = time.monotonic
    # The other members of the room (session ids), kept by the application: voice goes
    # through the relay unless every one of them is reached directly.
    members: set[int] = field(default_factory=set)
    server_addr: tuple[str, int] = ("", 0)
    local_addr: tuple[str, int] = ("", 0)
    srflx: tuple[str, int] | None = None  # our address as the server sees it (STUN)
    _seq: int = 0
    _packet: int = 0
    _ticks: int = 0

    def __post_init__(self) -> None:
        self.sealer = HopSealer(self.keys.client_to_server, self.session_id)
        self.opener = HopOpener(self.keys.server_to_client, self.session_id)
        settings = self.settings
        self.adapter = SendAdapter(
            settings.bitrate,
            fec=settings.fec,
            max_depth=settings.max_redundancy,
            thresholds=settings.redundancy_thresholds,
            hold=settings.loss_hold,
            startup=settings.redundancy_startup,
        )
        self.plan: SendPlan = self.adapter.initial()
        self.frame_ms = settings.frame_ms
        self.frame_samples = settings.frame_samples
        self.encoder = OpusEncoder(
            bitrate=self.plan.bitrate,
            complexity=settings.complexity,
            fec=settings.fec,
            expected_loss=self.plan.expected_loss,
            frame_ms=self.frame_ms,
        )
        self.mixer = Mixer(self.frame_samples)
        self.record_mixer = Mixer(self.frame_samples)
        self._plan_ticks = _at_least_one(PLAN_INTERVAL * 1000, self.frame_ms)
        self._speaking_ticks = _at_least_one(SPEAKING_MS, self.frame_ms)
        # (seq, opus) of the frames just sent, for copies in the next packets.
        self._history: deque[tuple[int, bytes]] = deque(maxlen=MAX_REDUNDANT)
        self.gate: VoiceGate | None = None
        if self.settings.vad:
            self.gate = VoiceGate(
                self.settings.vad_aggressiveness,
                _at_least_one(self.settings.vad_hangover_ms, self.frame_ms),
                _at_least_one(self.settings.vad_preroll_ms, self.frame_ms),
                self.frame_samples,
            )
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.direct = DirectPaths(self.session_id, DirectSettings())
        self._stun_txid = stun.new_transaction_id()
        self._stun_tries = 0
        self._next_stun = 0.0

    # --- asyncio glue -----------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self.clock = loop.time
        # One unconnected socket for the relay, STUN and direct paths: the address the
        # server sees (and tells us by STUN) is then the one members can reach us at.
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            family, _, _, _, sockaddr = infos[0]
            self.server_addr = (str(sockaddr[0]), int(sockaddr[1]))
            wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
            await loop.create_datagram_endpoint(
                lambda: self, local_addr=(wildcard, 0), family=family
            )
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise ConnectError(f"no UDP path to {host}:{port}: {reason.lower()}") from None
        assert self.transport is not None
        self.local_addr = self.transport.get_extra_info("sockname")[:2]
        self.send_keepalive()
        self._tasks = [
            loop.create_task(self._tick_loop()),
            loop.create_task(self._keepalive_loop()),
        ]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors while the server restarts; the control channel reports outages

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.transport is not None:
            self.transport.close()

    def _send(self, ptype: PacketType, payload: bytes) -> None:
        if self.transport is not None:
            self.transport.sendto(self.sealer.seal(ptype, payload), self.server_addr)

    def _send_to(self, packets: list[tuple[bytes, tuple[str, int]]]) -> None:
        if self.transport is not None:
            for packet, addr in packets:
                self.transport.sendto(packet, addr)

    def send_keepalive(self) -> None:
        self._send(PacketType.KEEPALIVE, _STAMP.pack(time.monotonic_ns()))

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.keepalive_interval)
            self.send_keepalive()

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        tick = self.frame_ms / 1000
        next_tick = loop.time()
        while True:
            self.tick()
            next_tick += tick
            delay = next_tick - loop.time()
            if delay < -MAX_STALL_S:
                next_tick = loop.time()
                delay = 0
            await asyncio.sleep(max(delay, 0))

    # --- receive ----------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if stun.is_stun(data):
            self._on_stun(data, addr)
            return
        try:
            if peek_session_id(data) != self.session_id:
                self._on_direct(data, addr)
                return
            header, payload = self.opener.open(data)
            if header.type is PacketType.VOICE:
                sender, inner = unpack_relayed(payload)
            elif header.type is PacketType.KEEPALIVE_ACK and len(payload) == _STAMP.size:
                (sent,) = _STAMP.unpack(payload)
                self.stats.rtt = (time.monotonic_ns() - sent) / 1e9
                if not self.stats.udp_ok:
                    self.stats.udp_ok = True
                    self.on_path("relay")
                return
            else:
                return
        except PacketError:
            self.stats.dropped += 1
            return
        self.stats.received += 1
        self._open_voice(sender, inner)

    def _open_voice(self, sender: int, inner: bytes) -> None:
        try:
            now = self.clock()
            plaintext = self.crypto.open_voice(sender, inner, now)
        except PacketError:
            self.stats.undecryptable += 1
            return
        if plaintext is not None:  # else held until the sender's key arrives
            self.push(sender, plaintext, now)

    def _on_direct(self, data: bytes, addr: tuple[str, int]) -> None:
        """A datagram from a member on a direct path (or someone pretending)."""
        try:
            voice = self.direct.datagram_received(data, _plain(addr), self.clock())
        except PacketError:
            self.stats.dropped += 1
            return
        self._flush_direct()
        if voice is not None:
            self.stats.received += 1  # all voice, whichever path it took
            self.stats.direct_received += 1
            self._open_voice(*voice)

    def _on_stun(self, data: bytes, addr: tuple[str, int]) -> None:
        if _plain(addr) != self.server_addr:
            return  # only the server's answer tells us our address
        try:
            mapped = stun.parse_binding_success(data, self._stun_txid)
        except PacketError:
            self.stats.dropped += 1
            return
        if mapped != self.srflx:
            self.srflx = mapped
            self.on_candidates()

    def _flush_direct(self) -> None:
        self._send_to(self.direct.datagrams_to_send())
        while (change := self.direct.next_event()) is not None:
            if isinstance(change, PathChanged):
                self.on_peer_path(change)

    def candidates(self) -> list[tuple[str, str, int]]:
        """Where members may reach us: (kind, ip, port) for host and server-reflexive."""
        port = self.local_addr[1]
        if not port:
            return []  # no socket yet: nothing to offer (the key still lets us probe them)
        ipv6 = ":" in self.server_addr[0]  # the socket's family is the server's
        found = [("host", ip, port) for ip in host_addresses(ipv6)]
        if self.srflx is not None and ("host", *self.srflx) not in found:
            found.append(("srflx", *self.srflx))
        return found

    def _discover(self, now: float) -> None:
        """Ask the server's STUN responder for our address, until it answers (then rarely)."""
        if now < self._next_stun:
            return
        self._stun_tries += 1
        fast = self.srflx is None and self._stun_tries < STUN_FAST_TRIES
        self._next_stun = now + (STUN_RETRY if fast else self.settings.keepalive_interval * 10)
        if self.transport is not None:
            self.transport.sendto(stun.binding_request(self._stun_txid), self.server_addr)

    def push_released(self, sender: int, plaintexts: list[bytes]) -> None:
        """Frames held until their key arrived, oldest first.

        For a stream not playing yet (we just joined, or the sender just did), the
        older ones would only add delay: keep what fills the prebuffer. For a stream
        in progress (a rekey), every frame goes in, so nothing is skipped.
        """
        if sender not in self.streams and plaintexts:
            samples = _frame_samples_of(plaintexts[-1]) or FRAME_SAMPLES
            keep = self._target_frames(samples * 1000 / SAMPLE_RATE)
            plaintexts = plaintexts[-keep:]
        for plaintext in plaintexts:
            self.push(sender, plaintext)

    def push(self, sender: int, plaintext: bytes, now: float | None = None) -> None:
        """An opened voice frame into the sender's jitter buffer.

        ``now`` is its arrival time (loop clock), which the buffer adapts its depth
        to; None for frames that were held back (their timing says nothing).
        """
        try:
            frame = VoiceFrame.parse(plaintext)
        except PacketError:
            self.stats.undecryptable += 1
            return
        stream = self.streams.get(sender)
        samples = _samples_of(frame.opus)
        if stream is None:
            samples = samples or FRAME_SAMPLES
            stream = self.streams[sender] = SenderStream(
                self._jitter_buffer(samples), OpusDecoder(), samples
            )
        elif samples and samples != stream.frame_samples:
            # The sender changed its frame duration: its buffer counted frames of the
            # old one, so start over (what was decoded already still plays).
            stream.jitter = self._jitter_buffer(samples)
            stream.frame_samples = samples
            stream.resets += 1
        stream.meter.on_packet(frame.packet, len(frame.opus), stream.frame_ms)
        jitter = stream.jitter
        # While the sender repeats frames and we lose some, wait long enough for the
        # copies to come; without loss here the wait would only add delay.
        lossy = stream.loss_until > (now if now is not None else self.clock())
        jitter.set_extra_frames(frame.depth if lossy else 0)
        count = len(frame.redundant)
        for i, copy in enumerate(frame.redundant):
            jitter.push_redundant((frame.seq - count + i) % SEQ_MODULO, copy)
        jitter.push(frame.seq, frame.opus, now=now)

    def _target_frames(self, frame_ms: float) -> int:
        return _at_least_one(self.settings.jitter_target_ms, frame_ms)

    def _jitter_buffer(self, samples: int) -> JitterBuffer:
        """A jitter buffer for a sender of ``samples`` frames, its depths set in ms."""
        frame_ms = samples * 1000 / SAMPLE_RATE
        # Each tick takes this many of its frames at once: never aim below that.
        per_tick = _at_least_one(self.frame_ms, frame_ms)
        target = max(self._target_frames(frame_ms), per_tick)
        most = max(_at_least_one(self.settings.jitter_max_ms, frame_ms), target)
        return JitterBuffer(target, most, per_tick, frame_ms=frame_ms)

    def forget(self, sender: int) -> None:
        self.streams.pop(sender, None)
        self.volumes.pop(sender, None)
        self.adapter.forget(sender)
        self.members.discard(sender)
        self.direct.remove(sender)

    def reception_reports(self) -> list[tuple[int, float]]:
        """(sender, loss) of each speaker heard since the last call, for their adapters."""
        reports = []
        now = self.clock()
        for sender, stream in self.streams.items():
            interval = stream.meter.interval()
            if interval.lost:
                stream.loss_until = now + self.settings.loss_hold
            if interval.expected >= self.settings.min_report_packets:
                reports.append((sender, interval.loss))
        return reports

    def on_report(self, listener: int, loss: float) -> None:
        """A listener's loss report on our voice: adapt redundancy, FEC and bitrate."""
        now = self.clock()
        self.adapter.report(listener, loss, now)
        self.update_plan(now)

    def set_max_bitrate(self, max_bitrate: int | None) -> None:
        self.adapter.set_max_bitrate(max_bitrate)
        self.update_plan(self.clock())

    def update_plan(self, now: float) -> None:
        plan = self.adapter.plan(now)
        if plan != self.plan:
            self.plan = plan
            self.encoder.configure(plan.bitrate, plan.expected_loss)

    def speaking(self, sender: int) -> bool:
        """Whether a real frame of this speaker played within the last SPEAKING_MS."""
        stream = self.streams.get(sender)
        if stream is None or stream.last_voice_tick is None:
            return False
        return self._ticks - stream.last_voice_tick < self._speaking_ticks

    @property
    def transmitting(self) -> bool:
        """Whether our microphone goes out (voice activity still decides each frame)."""
        if self.muted or self.deafened:
            return False
        return self.talking or not self.settings.push_to_talk

    # --- one tick (one of our frames) ----------------------------------------------

    def tick(self) -> None:
        self._ticks += 1
        now = self.clock()
        if self._ticks % self._plan_ticks == 0:
            self.update_plan(now)  # old reports expire, startup protection ends
        if not self.settings.relay_only:
            self._discover(now)
            self.direct.handle_timer(now)
            self._flush_direct()
        sent = False
        pcm: np.ndarray | None = None
        if not self.source_done:
            try:
                pcm = self.source.read()
            except AudioError as exc:
                pcm = None  # a vanished device ends our sending, not the call
                self.on_problem(f"{exc}; you are silent from now on, the call goes on")
            if pcm is None:
                self.source_done = True
            else:
                sent = self._send_voice(pcm)
        frames = []
        for sender, stream in self.streams.items():
            pcm_in = self._play(stream)
            if pcm_in is not None:
                frames.append((pcm_in, self.volumes.get(sender, 1.0)))
        try:
            # Deafened: silence out, though the streams still play through their
            # decoders (their state stays right) and into a recording.
            self.sink.write(self.mixer.mix([] if self.deafened else frames))
        except AudioError as exc:
            self.sink = NullSink(self.frame_samples)
            self.on_problem(f"{exc}; playing to nothing from now on, the call goes on")
        if self.recorder is not None:
            if sent and pcm is not None:
                frames.append((pcm, 1.0))
            try:
                self.recorder.write(self.record_mixer.mix(frames))
            except AudioError as exc:
                self.recorder = None  # the sink has closed its file as far as it got
                self.on_problem(f"{exc}; the call goes on")

    def _send_voice(self, pcm: np.ndarray) -> bool:
        """Encode and send this tick's frame, unless the voice gate holds it back.

        The sequence number counts every tick, sent or not, so a receiver sees a
        pause as a gap (its jitter buffer goes idle), never as frames out of order.
        Frames the gate releases late (pre-roll) are the ticks just before this one.
        While listeners report loss, each packet also carries the frames of the
        ``plan.depth`` ticks before it (those that were sent).
        """
        if not self.transmitting:
            frames: list[np.ndarray] = []
            if self.gate is not None:
                self.gate.reset()  # nothing from before the switch-off goes out later
        else:
            frames = [pcm] if self.gate is None else self.gate.process(pcm)
        first = (self._seq - len(frames) + 1) % SEQ_MODULO
        depth = self.plan.depth
        for i, each in enumerate(frames):
            seq = (first + i) % SEQ_MODULO
            opus = self.encoder.encode(each)
            history = self._history
            if history and history[-1][0] != (seq - 1) % SEQ_MODULO:
                history.clear()  # a pause: the frames before it are not the ones just before
            copies = [frame for _, frame in history][-depth:] if depth else []
            frame = VoiceFrame(seq, opus, self._packet, tuple(copies), depth).serialize()
            while len(frame) > MAX_VOICE_FRAME and copies:
                copies.pop(0)  # a high bitrate: repeat fewer frames than planned
                frame = VoiceFrame(seq, opus, self._packet, tuple(copies), depth).serialize()
            self._send_sealed(self.crypto.seal_voice(frame))
            self._packet = (self._packet + 1) % PACKET_MODULO
            history.append((seq, opus))
        self._seq = (self._seq + 1) % SEQ_MODULO
        self.stats.sent += len(frames)
        self.stats.suppressed += 1 - len(frames)
        return bool(frames)

    def _send_sealed(self, sealed: bytes) -> None:
        """One sealed voice frame: straight to members on direct paths, the rest by relay."""
        direct = self.direct.direct()
        if not direct:
            self._send(PacketType.VOICE, sealed)
            return
        if self.transport is not None:
            for member, addr in direct.items():
                self.transport.sendto(self.direct.seal(member, PacketType.VOICE, sealed), addr)
        self.stats.direct_sent += len(direct)
        if not self.members <= direct.keys():
            self._send(PacketType.VOICE_EXCEPT, pack_except(sorted(direct), sealed))

    def _play(self, stream: SenderStream) -> np.ndarray | None:
        """One tick of this sender's audio, or None while it plays nothing."""
        need = self.frame_samples
        queued = stream.pcm
        while stream.pcm_samples < need:
            pcm = self._decode_next(stream)
            if pcm is None:
                break
            queued.append(pcm)
            stream.pcm_samples += len(pcm)
        if not stream.pcm_samples:
            return None
        if len(queued) == 1 and stream.pcm_samples == need:
            stream.pcm_samples = 0
            return queued.pop()  # the sender's frames are our ticks: nothing to cut
        joined = np.concatenate(queued)
        out, rest = joined[:need], joined[need:]
        queued.clear()
        if len(rest):
            queued.append(rest)
        stream.pcm_samples = len(rest)
        if len(out) < need:
            out = np.pad(out, (0, need - len(out)))  # the end of a talk spurt
        return out

    def _decode_next(self, stream: SenderStream) -> np.ndarray | None:
        """The sender's next frame from its jitter buffer, decoded or concealed."""
        item = stream.jitter.pop()
        if item is None:
            return None
        samples = stream.frame_samples
        try:
            if isinstance(item, Frame):
                stream.last_voice_tick = self._ticks
                return stream.decoder.decode(item.payload)
            assert isinstance(item, Lost)
            if item.next_payload is not None:
                return stream.decoder.decode_fec(item.next_payload, samples)
            return stream.decoder.conceal(samples)
        except AudioError:
            stream.bad_frames += 1
            return stream.decoder.conceal(samples)


def _samples_of(opus: bytes) -> int | None:
    # The frame duration a packet's TOC byte says; None if it cannot be Opus (the
    # decoder then counts it as a bad frame and conceals).
    try:
        return packet_samples(opus)
    except AudioError:
        return None


def _frame_samples_of(plaintext: bytes) -> int | None:
    try:
        return _samples_of(VoiceFrame.parse(plaintext).opus)
    except PacketError:
        return None


def _plain(addr: tuple[str, int] | tuple[str, int, int, int]) -> tuple[str, int]:
    """(ip, port) of a socket address (IPv6 ones carry flow info and scope too)."""
    return (addr[0], addr[1])


def host_addresses(ipv6: bool = False) -> list[str]:
    """This machine's interface addresses that members could reach (no loopback)."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                parsed = ipaddress.ip_address(text)
            except ValueError:
                continue
            if parsed.is_loopback or parsed.is_link_local or (parsed.version == 6) != ipv6:
                continue
            if text not in found:
                found.append(text)
    return found[:MAX_HOST_CANDIDATES]
