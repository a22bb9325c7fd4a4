"""Voice activity gate: send frames while someone speaks, nothing while silent, sans-I/O.

The client feeds every capture frame (10, 20 or 40 ms) to :meth:`VoiceGate.process` and
encodes and sends only the frames it returns. The voiced/unvoiced decision is
WebRTC's VAD (the ``webrtcvad`` module, from the ``webrtcvad-wheels`` package:
a GMM over sub-band energies, a few microseconds per frame, no model files).

Two additions keep words whole:

* hang-over: after the last voiced frame, ``hangover_frames`` more frames are
  sent (300 ms by default), so soft word endings and short pauses between words
  are not clipped;
* pre-roll: the last ``preroll_frames`` frames held back while silent are sent
  just before the first voiced frame, since a word's soft start is often judged
  unvoiced.

The frames returned by one call are always consecutive and end with the frame
just passed in, so a caller that numbers frames by capture tick numbers the
returned frame ``i`` as ``tick - (len(frames) - 1 - i)``. No frame is returned
twice and none out of order.

While the capture chain suppresses noise, its model's voice probability decides
instead (``voice_probability`` to :meth:`VoiceGate.process`): WebRTC's VAD judges
energy in speech bands, so fans and key clicks open it even after suppression, while
the suppressor's model tells them from speech (the report of issue 15).
"""

from __future__ import annotations

import importlib
from collections import deque
from typing import Any

import numpy as np

from bangor.errors import AudioError
from bangor.settings import FRAME_SAMPLES, SAMPLE_RATE

# A frame with at least this voice probability (from the capture chain) is speech.
VOICE_PROBABILITY_THRESHOLD = 0.5

# The longest piece WebRTC's VAD judges at once (it takes 10, 20 or 30 ms): a 40 ms
# frame is judged as two 20 ms pieces, and is speech if either one is.
VAD_PIECE_SAMPLES = SAMPLE_RATE * 20 // 1000

WEBRTCVAD_MISSING = (
    "voice activity detection needs the Python package webrtcvad-wheels "
    "(pip install webrtcvad-wheels); or join with --vad off"
)


def _load_vad(aggressiveness: int) -> Any:
    try:
        module = importlib.import_module("webrtcvad")
    except ImportError as exc:
        raise AudioError(WEBRTCVAD_MISSING) from exc
    return module.Vad(aggressiveness)


class VoiceGate:
    """Decides, one frame of ``frame_samples`` at a time, what to send.

    ``aggressiveness`` is WebRTC's mode, 0 (lets most through) to 3 (strictest
    about what counts as speech). Hang-over and pre-roll count these frames.
    """

    def __init__(
        self,
        aggressiveness: int = 2,
        hangover_frames: int = 15,
        preroll_frames: int = 2,
        frame_samples: int = FRAME_SAMPLES,
    ) -> None:
        if frame_samples <= 0 or frame_samples % (SAMPLE_RATE // 100):
            raise AudioError(f"VAD frames must be whole 10 ms, got {frame_samples} samples")
        self._samples = frame_samples
        if not 0 <= aggressiveness <= 3:
            raise AudioError(f"VAD aggressiveness must be 0..3, got {aggressiveness}")
        if hangover_frames < 0:
            raise AudioError(f"VAD hang-over must be >= 0 frames, got {hangover_frames}")
        if preroll_frames < 0:
            raise AudioError(f"VAD pre-roll must be >= 0 frames, got {preroll_frames}")
        self._vad = _load_vad(aggressiveness)
        self._hangover = hangover_frames
        self._left = 0  # frames still to send after the last voiced one
        # The most recent frames held back (all consecutive, ending just before the next).
        self._held: deque[np.ndarray] = deque(maxlen=preroll_frames)

    @property
    def open(self) -> bool:
        """True while the next frame goes out even if silent (speech or its hang-over)."""
        return self._left > 0

    def reset(self) -> None:
        """Forget held frames and the hang-over (the microphone was switched off)."""
        self._held.clear()
        self._left = 0

    def _is_speech(self, pcm: np.ndarray) -> bool:
        # WebRTC's VAD adapts its noise model with every frame: one call per frame.
        if pcm.dtype != np.int16 or pcm.shape != (self._samples,):
            raise AudioError(
                f"a frame must be {self._samples} int16 samples, got {pcm.dtype} {pcm.shape}"
            )
        data = np.ascontiguousarray(pcm, dtype=np.dtype("=i2")).tobytes()
        if self._samples <= VAD_PIECE_SAMPLES:
            return bool(self._vad.is_speech(data, SAMPLE_RATE))
        # Every piece goes through, so the noise model sees all of the audio.
        step = VAD_PIECE_SAMPLES * 2
        votes = [
            bool(self._vad.is_speech(data[i : i + step], SAMPLE_RATE))
            for i in range(0, len(data), step)
        ]
        return any(votes)

    def process(self, pcm: np.ndarray, voice_probability: float | None = None) -> list[np.ndarray]:
        """The frames to encode and send now, oldest first; empty while silent.

        ``voice_probability`` (0..1, from the capture chain's noise suppressor) decides
        when given; WebRTC's VAD still sees the frame, so its noise model stays current.
        """
        speech = self._is_speech(pcm)
        if voice_probability is not None:
            speech = voice_probability >= VOICE_PROBABILITY_THRESHOLD
        if speech:
            frames = [*self._held, pcm]
            self._held.clear()
            self._left = self._hangover + 1  # this frame, then the hang-over
        elif self._left > 0:
            frames = [pcm]
        else:
            if self._held.maxlen:
                self._held.append(pcm.copy())  # a device may reuse its buffer
            return []
        self._left -= 1
        return frames
