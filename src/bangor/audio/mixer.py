"""Mixes the decoded frames of several speakers into one frame for playback.

Plain summation with saturation: sums in int32 (no wrap-around), then clips to
the int16 range. Clipping only happens when people talk loudly at once, which
is rare in a call and less harmful than scaling every speaker down.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bangor.errors import AudioError
from bangor.settings import FRAME_SAMPLES

_INT16_MIN = -32768
_INT16_MAX = 32767


def mix(frames: Sequence[np.ndarray]) -> np.ndarray:
    """Sum int16 frames of equal length, saturating at the int16 limits.

    No frames gives one frame of silence (FRAME_SAMPLES zeros).
    """
    if not frames:
        return np.zeros(FRAME_SAMPLES, dtype=np.int16)
    shape = frames[0].shape
    acc = np.zeros(shape, dtype=np.int32)
    for frame in frames:
        if frame.dtype != np.int16:
            raise AudioError(f"can only mix int16 frames, got {frame.dtype}")
        if frame.shape != shape:
            raise AudioError(f"cannot mix frames of shapes {shape} and {frame.shape}")
        acc += frame
    np.clip(acc, _INT16_MIN, _INT16_MAX, out=acc)
    return acc.astype(np.int16)
