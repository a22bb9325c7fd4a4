"""Mixer: int16 sums that saturate instead of wrapping around."""

from __future__ import annotations

import numpy as np
import pytest

from bangor.audio.mixer import mix
from bangor.errors import AudioError
from bangor.settings import FRAME_SAMPLES, SAMPLE_RATE

T = np.arange(FRAME_SAMPLES) / SAMPLE_RATE


def tone(hz: float, amplitude: float) -> np.ndarray:
    return np.round(amplitude * 32767 * np.sin(2 * np.pi * hz * T)).astype(np.int16)


def test_empty_is_silence() -> None:
    out = mix([])
    assert out.dtype == np.int16
    assert out.shape == (FRAME_SAMPLES,)
    assert not np.any(out)


def test_single_frame_unchanged() -> None:
    a = tone(440, 0.5)
    out = mix([a])
    assert np.array_equal(out, a)
    assert out is not a


def test_two_quiet_tones_sum_exactly() -> None:
    a, b = tone(450, 0.3), tone(1000, 0.3)  # whole FFT bins of a 20 ms frame
    out = mix([a, b])
    assert out.dtype == np.int16
    assert np.array_equal(out, a + b)  # no sample can overflow at 0.3 + 0.3
    spectrum = np.abs(np.fft.rfft(out))
    freqs = np.fft.rfftfreq(FRAME_SAMPLES, 1 / SAMPLE_RATE)
    assert set(freqs[np.argsort(spectrum)[-2:]]) == {450.0, 1000.0}


def test_loud_tones_clip_instead_of_wrapping() -> None:
    a, b = tone(440, 0.9), tone(440, 0.9)
    out = mix([a, b])
    exact = a.astype(np.int32) + b.astype(np.int32)
    assert np.array_equal(out, np.clip(exact, -32768, 32767))
    assert out.max() == 32767
    assert out.min() == -32768
    # Wrapping would flip the sign of the loudest samples.
    assert np.all(np.sign(out) == np.sign(exact))


def test_many_speakers_at_full_scale() -> None:
    frames = [np.full(FRAME_SAMPLES, -32768, np.int16)] * 10
    assert np.all(mix(frames) == -32768)
    frames = [np.full(FRAME_SAMPLES, 32767, np.int16)] * 10
    assert np.all(mix(frames) == 32767)


def test_opposite_tones_cancel() -> None:
    a = tone(300, 0.8)
    assert not np.any(mix([a, -a]))


def test_inputs_not_modified() -> None:
    a, b = tone(440, 0.9), tone(440, 0.9)
    copy = a.copy()
    mix([a, b])
    assert np.array_equal(a, copy)


@pytest.mark.parametrize(
    "frames",
    [
        [np.zeros(FRAME_SAMPLES, np.int16), np.zeros(FRAME_SAMPLES - 1, np.int16)],
        [np.zeros(FRAME_SAMPLES, np.int16), np.zeros(FRAME_SAMPLES, np.float64)],
    ],
)
def test_mismatched_frames_rejected(frames: list[np.ndarray]) -> None:
    with pytest.raises(AudioError):
        mix(frames)
