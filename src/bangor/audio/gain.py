"""Automatic gain: quiet and loud speakers sent at one level, never clipped, sans-I/O.

Hand-written rather than WebRTC's (``livekit``'s module has one, on or off, no
settings): measured here it clips, 37 samples at full scale for speech peaking at
0.95 and some even for speech peaking at 0.3 (the report of issue 15). This one
follows the speech level, not the noise: a frame counts as speech when the capture
chain's voice probability says so (noise suppression on) or, without it, when it is
well above the noise floor; the gain moves slowly towards what brings speech to
TARGET_DBFS, and a limiter turns a frame down instead of clipping it.
"""

from __future__ import annotations

import math

import numpy as np

from bangor.audio.mixer import LIMIT
from bangor.settings import SAMPLE_RATE

TARGET_DBFS = -22.0  # speech level we aim at (mean dB of speech frames; RMS comes ~4 dB over)
MAX_GAIN_DB = 30.0  # at most this much up (a whisper far from the microphone)
MIN_GAIN_DB = -10.0
RISE_DB_PER_S = 6.0  # the gain goes up slowly (no pumping between words) ...
FALL_DB_PER_S = 20.0  # ... and down faster (a speaker who leans in)
LEVEL_TIME_S = 0.4  # time constant of the speech level estimate
FLOOR_RISE_DB_PER_S = 1.0  # the noise floor estimate creeps up, drops at once
SPEECH_ABOVE_FLOOR_DB = 12.0  # without a voice probability: speech is this far above it
SILENCE_DBFS = -100.0
QUIET_DBFS = -70.0  # nothing under this is speech, whatever the floor


def _db(rms: float) -> float:
    return 20.0 * math.log10(rms / 32768.0) if rms > 0 else SILENCE_DBFS


class AutoGain:
    """Frames of ``frame_samples`` int16 in, the same out, at one speech level."""

    def __init__(self, frame_samples: int) -> None:
        self._seconds = frame_samples / SAMPLE_RATE
        self._level = TARGET_DBFS  # speech level estimate, dBFS
        self._floor = SILENCE_DBFS
        self.gain_db = 0.0  # the gain the speech level asks for, as it moves
        self._applied = 1.0  # linear gain at the end of the last frame (after the limiter)

    def process(self, pcm: np.ndarray, voice_probability: float | None = None) -> np.ndarray:
        samples = pcm.astype(np.float32)
        level = _db(math.sqrt(float(np.mean(np.square(samples, dtype=np.float64)))))
        self._floor = min(level, self._floor + FLOOR_RISE_DB_PER_S * self._seconds)
        if voice_probability is not None:
            speech = voice_probability >= 0.5
        else:
            speech = level > max(self._floor + SPEECH_ABOVE_FLOOR_DB, QUIET_DBFS)
        if speech and level > QUIET_DBFS:
            alpha = 1.0 - math.exp(-self._seconds / LEVEL_TIME_S)
            self._level += alpha * (level - self._level)
            wanted = min(max(TARGET_DBFS - self._level, MIN_GAIN_DB), MAX_GAIN_DB)
            step = wanted - self.gain_db
            limit = (RISE_DB_PER_S if step > 0 else FALL_DB_PER_S) * self._seconds
            self.gain_db += min(max(step, -limit), limit)
        target = 10.0 ** (self.gain_db / 20.0)
        peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
        if peak * target > LIMIT:
            target = LIMIT / peak  # the limiter: this frame down, not clipped
        # Ramp from the last frame's gain, never above this frame's at its peak.
        ramp = np.minimum(np.linspace(self._applied, target, len(samples)), target)
        self._applied = target
        out: np.ndarray = np.clip(np.rint(samples * ramp), -32768, 32767).astype(np.int16)
        return out
