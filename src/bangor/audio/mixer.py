"""Mixes the decoded frames of several speakers into one frame for playback.

Each speaker has a gain (per-user volume); the sum goes through a limiter, so loud
speakers at once are turned down for a moment instead of clipped (clipping squares
off the waveform: audible distortion).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bangor.errors import AudioError
from bangor.settings import FRAME_SAMPLES

_INT16_MIN = -32768
_INT16_MAX = 32767


# The limiter keeps peaks below this (about -0.2 dBFS) so nothing ever clips.
LIMIT = 32000.0
# Per 20 ms the limiter's gain recovers towards 1 by this factor (about 6 dB per
# 240 ms): fast enough to sound natural, slow enough not to pump. Frames of other
# durations use the same rate in time.
RELEASE = 1.06
MAX_GAIN = 4.0  # per-speaker volume: 400 %


class Mixer:
    """Mixes speakers with per-speaker gain and a limiter instead of clipping.

    When the sum of loud speakers would exceed the int16 range, the whole frame is
    scaled down (the gain ramps across the frame, so there is no click) and comes
    back up slowly afterwards; quiet sums pass unchanged.
    """

    def __init__(self, frame_samples: int = FRAME_SAMPLES) -> None:
        self._samples = frame_samples
        self._release = RELEASE ** (frame_samples / FRAME_SAMPLES)
        self._gain = 1.0
        self.limited_frames = 0  # frames the limiter had to turn down

    def mix(self, frames: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
        """Sum (frame, gain) pairs of int16 frames into one int16 frame."""
        if not frames:
            self._gain = min(self._gain * self._release, 1.0)
            return np.zeros(self._samples, dtype=np.int16)
        if len(frames) == 1 and self._gain == 1.0:
            # One speaker at full volume, not limited (the usual case): the sum is
            # the frame itself; skip the float round trip, which gives the same.
            frame, gain = frames[0]
            quick = gain == 1.0 and frame.dtype == np.int16 and len(frame) > 0
            if quick and max(int(frame.max()), -int(frame.min())) <= LIMIT:
                return frame.copy()
        shape = frames[0][0].shape
        acc = np.zeros(shape, dtype=np.float32)
        for frame, gain in frames:
            if frame.dtype != np.int16:
                raise AudioError(f"can only mix int16 frames, got {frame.dtype}")
            if frame.shape != shape:
                raise AudioError(f"cannot mix frames of shapes {shape} and {frame.shape}")
            if gain:
                acc += frame.astype(np.float32) * min(max(gain, 0.0), MAX_GAIN)
        peak = float(np.max(np.abs(acc))) if len(acc) else 0.0
        target = min(self._gain * self._release, 1.0)
        if peak * target > LIMIT:
            target = LIMIT / peak
            self.limited_frames += 1
        if target != self._gain or target < 1.0:
            # Ramp from the last frame's gain to this one's; never above target at
            # the peak, since the ramp ends at target and starts lower only when
            # the previous frame was turned down further.
            ramp = np.linspace(self._gain, target, len(acc), dtype=np.float32)
            acc *= np.minimum(ramp, target)
        self._gain = target
        np.clip(acc, _INT16_MIN, _INT16_MAX, out=acc)
        return np.round(acc).astype(np.int16)
