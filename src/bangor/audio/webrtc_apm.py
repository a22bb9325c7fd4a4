"""WebRTC's audio processing module (high-pass, echo canceller AEC3), sans-I/O.

Reached through ``livekit``'s ``rtc.AudioProcessingModule`` (Apache-2.0, one native
library in wheels for Linux, macOS and Windows), the processing every WebRTC client
runs; its echo canceller estimates the echo path's delay itself. It works on 10 ms of
int16 mono in place; the stages it runs are fixed when it is made, so a stage turned
on or off in a call means a new module (cheap: no model to load).
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from bangor.errors import AudioError
from bangor.settings import SAMPLE_RATE

PIECE_SAMPLES = SAMPLE_RATE // 100  # the module takes exactly 10 ms

LIVEKIT_MISSING = (
    "echo cancellation needs the Python package livekit "
    "(pip install 'bangor[capture]'); or join with --echo-cancellation off"
)


def _rtc() -> Any:
    try:
        return importlib.import_module("livekit.rtc")
    except ImportError as exc:
        raise AudioError(LIVEKIT_MISSING) from exc


def available() -> bool:
    """Whether the package imports here (the CLI turns its stages on by default only then)."""
    try:
        _rtc()
    except AudioError:
        return False
    return True


class WebRtcApm:
    """One module with the stages asked for; far end and near end in 10 ms pieces."""

    def __init__(self, *, high_pass: bool = False, echo_cancellation: bool = False) -> None:
        self._rtc = _rtc()
        try:
            self._apm = self._rtc.AudioProcessingModule(
                echo_cancellation=echo_cancellation,
                high_pass_filter=high_pass,
            )
        except Exception as exc:  # the native library failed to load or start
            raise AudioError(f"WebRTC audio processing did not start: {exc}") from exc
        self.echo_cancellation = echo_cancellation

    def _frame(self, piece: np.ndarray) -> Any:
        if piece.dtype != np.int16 or piece.shape != (PIECE_SAMPLES,):
            raise AudioError(f"a piece must be {PIECE_SAMPLES} int16 samples, got {piece.shape}")
        data = bytearray(np.ascontiguousarray(piece, dtype=np.dtype("=i2")).tobytes())
        return self._rtc.AudioFrame(data, SAMPLE_RATE, 1, PIECE_SAMPLES)

    def process(self, piece: np.ndarray) -> np.ndarray:
        """10 ms of what the microphone heard, processed (a new array)."""
        frame = self._frame(piece)
        if self.echo_cancellation:
            # A hint only: AEC3 finds the echo path's delay itself. The far end is fed
            # as it is played, so 0 is our side's part of it.
            self._apm.set_stream_delay_ms(0)
        self._apm.process_stream(frame)
        return np.frombuffer(frame.data, dtype=np.int16).copy()

    def far_end(self, piece: np.ndarray) -> None:
        """10 ms of what we play: the echo canceller's reference."""
        self._apm.process_reverse_stream(self._frame(piece))
