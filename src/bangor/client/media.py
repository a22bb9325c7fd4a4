"""The client's media engine: capture -> Opus -> E2EE seal -> hop seal -> UDP, and back.

The engine ticks every 20 ms on the event loop's clock: it reads one frame from the
source, encodes and sends it, then pulls one frame from each sender's jitter buffer,
decodes (or conceals a loss, from in-band FEC when the next packet is there), mixes
and writes to the sink. Ticks are scheduled against absolute times so they do not
drift; after a long stall the schedule is reset rather than bursting to catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, cast

import numpy as np

from bangor.audio.codec import OpusDecoder, OpusEncoder
from bangor.audio.devices import Sink, Source
from bangor.audio.jitter import Frame, JitterBuffer, Lost
from bangor.audio.mixer import mix
from bangor.audio.vad import VoiceGate
from bangor.errors import AudioError, PacketError
from bangor.settings import FRAME_MS, FRAME_SAMPLES, ClientSettings
from bangor.wire.media import HopOpener, HopSealer, MediaKeys, PacketType
from bangor.wire.voice import VoiceFrame, unpack_relayed

TICK = FRAME_MS / 1000
MAX_STALL_TICKS = 10  # behind by more than this: reset the schedule instead of bursting
_STAMP = struct.Struct("!Q")


class VoiceCrypto(Protocol):
    """End-to-end sealing of voice frames (``wire.e2ee.RoomCrypto``)."""

    def seal_voice(self, payload: bytes) -> bytes: ...

    def open_voice(self, sender: int, frame: bytes, now: float) -> bytes | None: ...


@dataclass
class SenderStream:
    """What the client keeps per remote speaker."""

    jitter: JitterBuffer
    decoder: OpusDecoder
    bad_frames: int = 0


@dataclass
class MediaStats:
    sent: int = 0  # voice packets
    # Frames not sent because the voice gate judged them silent (so far: a frame held
    # for pre-roll counts here until it goes out); sent + suppressed = frames read.
    suppressed: int = 0
    received: int = 0
    dropped: int = 0  # datagrams that failed to open (forged, replayed, malformed)
    undecryptable: int = 0  # voice that failed end to end (no key, forged, replayed)
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
    stats: MediaStats = field(default_factory=MediaStats)
    streams: dict[int, SenderStream] = field(default_factory=dict)
    transport: asyncio.DatagramTransport | None = None
    source_done: bool = False
    _seq: int = 0

    def __post_init__(self) -> None:
        self.sealer = HopSealer(self.keys.client_to_server, self.session_id)
        self.opener = HopOpener(self.keys.server_to_client, self.session_id)
        self.encoder = OpusEncoder(bitrate=self.settings.bitrate)
        self.gate: VoiceGate | None = None
        if self.settings.vad:
            self.gate = VoiceGate(
                self.settings.vad_aggressiveness,
                self.settings.vad_hangover_frames,
                self.settings.vad_preroll_frames,
            )
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- asyncio glue -----------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        loop = self._loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, remote_addr=(host, port))
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
            self.transport.sendto(self.sealer.seal(ptype, payload))

    def send_keepalive(self) -> None:
        self._send(PacketType.KEEPALIVE, _STAMP.pack(time.monotonic_ns()))

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.keepalive_interval)
            self.send_keepalive()

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            self.tick()
            next_tick += TICK
            delay = next_tick - loop.time()
            if delay < -MAX_STALL_TICKS * TICK:
                next_tick = loop.time()
                delay = 0
            await asyncio.sleep(max(delay, 0))

    # --- receive ----------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
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
        try:
            now = self._loop.time() if self._loop is not None else time.monotonic()
            plaintext = self.crypto.open_voice(sender, inner, now)
        except PacketError:
            self.stats.undecryptable += 1
            return
        if plaintext is not None:  # else held until the sender's key arrives
            self.push(sender, plaintext, now)

    def push_released(self, sender: int, plaintexts: list[bytes]) -> None:
        """Frames held until their key arrived, oldest first.

        For a stream not playing yet (we just joined, or the sender just did), the
        older ones would only add delay: keep what fills the prebuffer. For a stream
        in progress (a rekey), every frame goes in, so nothing is skipped.
        """
        if sender not in self.streams:
            plaintexts = plaintexts[-self.settings.jitter_target_frames :]
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
        if stream is None:
            stream = self.streams[sender] = SenderStream(
                JitterBuffer(self.settings.jitter_target_frames, self.settings.jitter_max_frames),
                OpusDecoder(),
            )
        stream.jitter.push(frame.seq, frame.opus, now=now)

    def forget(self, sender: int) -> None:
        self.streams.pop(sender, None)

    # --- one 20 ms tick -----------------------------------------------------------

    def tick(self) -> None:
        if not self.source_done:
            try:
                pcm = self.source.read()
            except AudioError:
                pcm = None  # a vanished device ends our sending, not the call
            if pcm is None:
                self.source_done = True
            else:
                self._send_voice(pcm)
        frames = [f for f in (self._play(s) for s in self.streams.values()) if f is not None]
        self.sink.write(mix(frames) if frames else np.zeros(FRAME_SAMPLES, dtype=np.int16))

    def _send_voice(self, pcm: np.ndarray) -> None:
        """Encode and send this tick's frame, unless the voice gate holds it back.

        The sequence number counts every tick, sent or not, so a receiver sees a
        pause as a gap (its jitter buffer goes idle), never as frames out of order.
        Frames the gate releases late (pre-roll) are the ticks just before this one.
        """
        frames = [pcm] if self.gate is None else self.gate.process(pcm)
        first = (self._seq - len(frames) + 1) % 2**32
        for i, each in enumerate(frames):
            opus = self.encoder.encode(each)
            frame = VoiceFrame((first + i) % 2**32, opus).serialize()
            self._send(PacketType.VOICE, self.crypto.seal_voice(frame))
        self._seq = (self._seq + 1) % 2**32
        self.stats.sent += len(frames)
        self.stats.suppressed += 1 - len(frames)

    @staticmethod
    def _play(stream: SenderStream) -> np.ndarray | None:
        item = stream.jitter.pop()
        if item is None:
            return None
        try:
            if isinstance(item, Frame):
                return stream.decoder.decode(item.payload)
            assert isinstance(item, Lost)
            if item.next_payload is not None:
                return stream.decoder.decode_fec(item.next_payload)
            return stream.decoder.conceal()
        except AudioError:
            stream.bad_frames += 1
            return stream.decoder.conceal()
