"""Voice on its way in, per sender: jitter buffer, Opus decoder, loss meter, PCM queue.

Each sender picks its own frame duration, read from its packets' Opus TOC byte. Its
jitter buffer counts its frames; decoded audio (or a loss concealed, from in-band FEC
when the next packet is there, for the lost frame's duration) goes into a small PCM
queue per sender, and each of our ticks takes exactly one tick's samples from it,
popping and decoding that sender's frames as needed: two 10 ms frames for a 20 ms
tick, one 40 ms frame every other 20 ms tick.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bangor.audio.codec import OpusDecoder, packet_samples
from bangor.audio.jitter import Frame, JitterBuffer, Lost
from bangor.audio.loss import LossMeter
from bangor.errors import AudioError, PacketError
from bangor.media.sender import at_least_one
from bangor.settings import FRAME_SAMPLES, SAMPLE_RATE, ClientSettings
from bangor.wire.voice import VoiceFrame

SPEAKING_MS = 200  # a speaker whose last real frame played within this is speaking


@dataclass
class ReceiveStream:
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


class Streams:
    """Every sender we hear, played out one of our ticks at a time."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.frame_ms = settings.frame_ms
        self.frame_samples = settings.frame_samples
        self.streams: dict[int, ReceiveStream] = {}
        self.ticks = 0
        self._speaking_ticks = at_least_one(SPEAKING_MS, self.frame_ms)

    def push(self, sender: int, plaintext: bytes, now: float, arrival: float | None) -> bool:
        """An opened voice frame into the sender's jitter buffer; False if malformed.

        ``arrival`` is its arrival time, which the buffer adapts its depth to; None
        for frames that were held back (their timing says nothing).
        """
        try:
            frame = VoiceFrame.parse(plaintext)
        except PacketError:
            return False
        stream = self.streams.get(sender)
        samples = _samples_of(frame.opus)
        if stream is None:
            samples = samples or FRAME_SAMPLES
            stream = self.streams[sender] = ReceiveStream(
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
        # copies to come (the farthest comes `reach` ticks late); without loss here the
        # wait would only add delay.
        jitter.set_extra_frames(frame.reach if stream.loss_until > now else 0)
        for seq, copy in frame.copies():
            jitter.push_redundant(seq, copy)
        jitter.push(frame.seq, frame.opus, now=arrival)
        return True

    def push_released(self, sender: int, plaintexts: list[bytes], now: float) -> int:
        """Frames held until their key arrived, oldest first; how many were malformed.

        For a stream not playing yet (we just joined, or the sender just did), the
        older ones would only add delay: keep what fills the prebuffer. For a stream
        in progress (a rekey), every frame goes in, so nothing is skipped.
        """
        if sender not in self.streams and plaintexts:
            samples = _frame_samples_of(plaintexts[-1]) or FRAME_SAMPLES
            keep = self._target_frames(samples * 1000 / SAMPLE_RATE)
            plaintexts = plaintexts[-keep:]
        return sum(not self.push(sender, p, now, None) for p in plaintexts)

    def forget(self, sender: int) -> None:
        self.streams.pop(sender, None)

    def reception_reports(self, now: float) -> list[tuple[int, float, float]]:
        """(sender, loss, mean burst) of each speaker heard since the last call."""
        reports = []
        for sender, stream in self.streams.items():
            interval = stream.meter.interval()
            if interval.lost:
                stream.loss_until = now + self.settings.loss_hold
            if interval.expected >= self.settings.min_report_packets:
                reports.append((sender, interval.loss, interval.burst))
        return reports

    def speaking(self, sender: int) -> bool:
        """Whether a real frame of this speaker played within the last SPEAKING_MS."""
        stream = self.streams.get(sender)
        if stream is None or stream.last_voice_tick is None:
            return False
        return self.ticks - stream.last_voice_tick < self._speaking_ticks

    def play(self) -> list[tuple[int, np.ndarray]]:
        """One tick: (sender, its audio) of each sender that plays something now."""
        self.ticks += 1
        out = []
        for sender, stream in self.streams.items():
            pcm = self.play_stream(stream)
            if pcm is not None:
                out.append((sender, pcm))
        return out

    def play_stream(self, stream: ReceiveStream) -> np.ndarray | None:
        """One tick of this sender's audio, or None while it plays nothing."""
        need = self.frame_samples
        queued = stream.pcm
        while stream.pcm_samples < need:
            pcm = self.decode_next(stream)
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

    def decode_next(self, stream: ReceiveStream) -> np.ndarray | None:
        """The sender's next frame from its jitter buffer, decoded or concealed."""
        item = stream.jitter.pop()
        if item is None:
            return None
        samples = stream.frame_samples
        try:
            if isinstance(item, Frame):
                stream.last_voice_tick = self.ticks
                return stream.decoder.decode(item.payload)
            assert isinstance(item, Lost)
            if item.next_payload is not None:
                return stream.decoder.decode_fec(item.next_payload, samples)
            return stream.decoder.conceal(samples)
        except AudioError:
            stream.bad_frames += 1
            return stream.decoder.conceal(samples)

    def _target_frames(self, frame_ms: float) -> int:
        return at_least_one(self.settings.jitter_target_ms, frame_ms)

    def _jitter_buffer(self, samples: int) -> JitterBuffer:
        """A jitter buffer for a sender of ``samples`` frames, its depths set in ms."""
        frame_ms = samples * 1000 / SAMPLE_RATE
        # Each tick takes this many of its frames at once: never aim below that.
        per_tick = at_least_one(self.frame_ms, frame_ms)
        target = max(self._target_frames(frame_ms), per_tick)
        most = max(at_least_one(self.settings.jitter_max_ms, frame_ms), target)
        return JitterBuffer(target, most, per_tick, frame_ms=frame_ms)


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
