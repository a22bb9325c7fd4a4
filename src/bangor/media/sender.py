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
from bangor.wire.voice import MAX_SPREAD, PACKET_MODULO, SEQ_MODULO, VoiceFrame


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
            spread_burst=settings.spread_burst,
            # No redundancy asked for (--redundancy 0): none spread either.
            max_spread_depth=settings.max_burst_redundancy if settings.max_redundancy else 0,
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
        self._history: deque[tuple[int, bytes]] = deque(maxlen=MAX_SPREAD)

    # --- the send plan --------------------------------------------------------------

    def joined(self, listener: int) -> None:
        self.adapter.joined(listener)

    def report(self, listener: int, loss: float, now: float, burst: float | None = None) -> None:
        """A listener's loss report on our voice: adapt redundancy, FEC and bitrate."""
        self.adapter.report(listener, loss, now, burst)
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
        ``plan.depth`` ticks before it, or of the ticks ``plan.spread`` back (those
        that were sent). ``voice_probability`` (the capture chain's, while it
        suppresses noise) decides for the gate.
        """
        if not transmitting:
            captured: list[np.ndarray] = []
            if self.gate is not None:
                self.gate.reset()  # nothing from before the switch-off goes out later
        else:
            captured = [pcm] if self.gate is None else self.gate.process(pcm, voice_probability)
        first = (self.seq - len(captured) + 1) % SEQ_MODULO
        depth, spread = self.plan.depth, self.plan.spread
        out = []
        for i, each in enumerate(captured):
            seq = (first + i) % SEQ_MODULO
            opus = self.encoder.encode(each)
            history = self._history
            if history and history[-1][0] != (seq - 1) % SEQ_MODULO:
                history.clear()  # a pause: the frames before it are not the ones just before
            if spread:
                # Farthest first; the history holds only ticks since the last pause.
                distances = [d for d in reversed(spread) if d <= len(history)]
                copies = [history[-d][1] for d in distances]
            else:
                distances = []
                copies = [frame for _, frame in history][-depth:] if depth else []
            frame = self._frame(seq, opus, copies, distances)
            while len(frame) > MAX_VOICE_FRAME and copies:
                copies.pop(0)  # a high bitrate: repeat fewer frames than planned
                distances = distances[1:]
                frame = self._frame(seq, opus, copies, distances)
            out.append(frame)
            self._packet = (self._packet + 1) % PACKET_MODULO
            history.append((seq, opus))
        self.seq = (self.seq + 1) % SEQ_MODULO
        self.sent += len(out)
        self.suppressed += 1 - len(out)
        return out

    def _frame(self, seq: int, opus: bytes, copies: list[bytes], distances: list[int]) -> bytes:
        plan = self.plan
        return VoiceFrame(
            seq, opus, self._packet, tuple(copies), plan.depth, tuple(distances), plan.spread
        ).serialize()
