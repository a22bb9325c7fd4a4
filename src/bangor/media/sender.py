"""Our voice on its way out: voice gate, Opus encoder, redundancy history, send plan.

One call of :meth:`Sender.frames` per tick of ours takes the captured frame and gives
the serialized voice frames (plaintext, before end-to-end sealing) to send now: none
while the gate holds back silence, several when it releases its pre-roll.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from bangor.audio.adaptation import SendAdapter, SendPlan
from bangor.audio.codec import OpusEncoder
from bangor.audio.vad import VoiceGate
from bangor.settings import MAX_VOICE_FRAME, ClientSettings
from bangor.wire.voice import MAX_REDUNDANT, PACKET_MODULO, SEQ_MODULO, VoiceFrame


def at_least_one(ms: float, frame_ms: float) -> int:
    """A duration in whole frames, rounded up, at least one."""
    return max(math.ceil(ms / frame_ms - 1e-9), 1)


class Sender:
    """Encodes our frames and decides how many earlier frames each packet repeats."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.frame_ms = settings.frame_ms
        self.adapter = SendAdapter(
            settings.bitrate,
            fec=settings.fec,
            max_depth=settings.max_redundancy,
            thresholds=settings.redundancy_thresholds,
            hold=settings.loss_hold,
            startup=settings.redundancy_startup,
        )
        self.plan: SendPlan = self.adapter.initial()
        self.encoder = OpusEncoder(
            bitrate=self.plan.bitrate,
            complexity=settings.complexity,
            fec=settings.fec,
            expected_loss=self.plan.expected_loss,
            frame_ms=self.frame_ms,
        )
        self.gate: VoiceGate | None = None
        if settings.vad:
            self.gate = VoiceGate(
                settings.vad_aggressiveness,
                at_least_one(settings.vad_hangover_ms, self.frame_ms),
                at_least_one(settings.vad_preroll_ms, self.frame_ms),
                settings.frame_samples,
            )
        self.sent = 0  # voice frames
        # Frames not sent because the gate judged them silent (a frame held for
        # pre-roll counts here until it goes out); sent + suppressed = frames read.
        self.suppressed = 0
        self.seq = 0
        self._packet = 0
        # (seq, opus) of the frames just sent, for copies in the next packets.
        self._history: deque[tuple[int, bytes]] = deque(maxlen=MAX_REDUNDANT)

    # --- the send plan --------------------------------------------------------------

    def report(self, listener: int, loss: float, now: float) -> None:
        """A listener's loss report on our voice: adapt redundancy, FEC and bitrate."""
        self.adapter.report(listener, loss, now)
        self.update_plan(now)

    def forget(self, listener: int) -> None:
        self.adapter.forget(listener)

    def set_max_bitrate(self, max_bitrate: int | None, now: float) -> None:
        self.adapter.set_max_bitrate(max_bitrate)
        self.update_plan(now)

    def update_plan(self, now: float) -> None:
        plan = self.adapter.plan(now)
        if plan != self.plan:
            self.plan = plan
            self.encoder.configure(plan.bitrate, plan.expected_loss)

    # --- one tick -------------------------------------------------------------------

    def frames(
        self, pcm: np.ndarray, transmitting: bool, voice_probability: float | None = None
    ) -> list[bytes]:
        """This tick's voice frames, unless the gate (or mute) holds the frame back.

        The sequence number counts every tick, sent or not, so a receiver sees a
        pause as a gap (its jitter buffer goes idle), never as frames out of order.
        Frames the gate releases late (pre-roll) are the ticks just before this one.
        While listeners report loss, each packet also carries the frames of the
        ``plan.depth`` ticks before it (those that were sent). ``voice_probability``
        (the capture chain's, while it suppresses noise) decides for the gate.
        """
        if not transmitting:
            captured: list[np.ndarray] = []
            if self.gate is not None:
                self.gate.reset()  # nothing from before the switch-off goes out later
        else:
            captured = [pcm] if self.gate is None else self.gate.process(pcm, voice_probability)
        first = (self.seq - len(captured) + 1) % SEQ_MODULO
        depth = self.plan.depth
        out = []
        for i, each in enumerate(captured):
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
            out.append(frame)
            self._packet = (self._packet + 1) % PACKET_MODULO
            history.append((seq, opus))
        self.seq = (self.seq + 1) % SEQ_MODULO
        self.sent += len(out)
        self.suppressed += 1 - len(out)
        return out
