"""Mixer: per-speaker gain, and a limiter instead of clipping or wrapping around."""

from __future__ import annotations

import numpy as np
import pytest

from bangor.audio.mixer import LIMIT, Mixer
from bangor.errors import AudioError
from bangor.settings import FRAME_SAMPLES, SAMPLE_RATE

T = np.arange(FRAME_SAMPLES) / SAMPLE_RATE


def tone(hz: float, amplitude: float) -> np.ndarray:
    return np.round(amplitude * 32767 * np.sin(2 * np.pi * hz * T)).astype(np.int16)


def test_empty_is_silence() -> None:
    out = Mixer().mix([])
    assert out.dtype == np.int16
    assert out.shape == (FRAME_SAMPLES,)
    assert not np.any(out)


def test_single_frame_unchanged() -> None:
    a = tone(440, 0.5)
    out = Mixer().mix([(a, 1.0)])
    assert np.array_equal(out, a)
    assert out is not a


@pytest.mark.parametrize("peak", [31999, 32000, 32001, 32767, -32768])
def test_one_speaker_at_full_volume_mixes_as_the_general_path(peak: int) -> None:
    # The shortcut for one speaker must give what summing does, at the limit too.
    a = tone(440, 0.3)
    a[100] = peak
    quick, general = Mixer(), Mixer()
    for frame in (a, tone(440, 0.3), tone(440, 0.3)):
        silence = np.zeros_like(frame)  # a second speaker takes the general path
        assert np.array_equal(
            quick.mix([(frame, 1.0)]), general.mix([(frame, 1.0), (silence, 1.0)])
        )
    assert quick.limited_frames == general.limited_frames == (abs(peak) > LIMIT)


def test_opposite_tones_cancel() -> None:
    a = tone(300, 0.8)
    assert not np.any(Mixer().mix([(a, 1.0), (-a, 1.0)]))


def test_inputs_not_modified() -> None:
    a, b = tone(440, 0.9), tone(440, 0.9)
    copy = a.copy()
    Mixer().mix([(a, 1.0), (b, 1.0)])
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
        Mixer().mix([(f, 1.0) for f in frames])


# --- Mixer: per-speaker gain and a limiter ---------------------------------------


def test_mixer_passes_quiet_speech_unchanged() -> None:
    a, b = tone(450, 0.3), tone(1000, 0.3)
    out = Mixer().mix([(a, 1.0), (b, 1.0)])
    assert np.array_equal(out, a + b)


def test_mixer_gain_and_mute() -> None:
    a, b = tone(450, 0.3), tone(1000, 0.3)
    mixer = Mixer()
    half = mixer.mix([(a, 0.5), (b, 0.0)])
    assert np.max(np.abs(half.astype(int) - np.round(a * 0.5))) <= 1
    spectrum = np.abs(np.fft.rfft(half))
    freqs = np.fft.rfftfreq(FRAME_SAMPLES, 1 / SAMPLE_RATE)
    assert freqs[np.argmax(spectrum)] == 450.0 and spectrum[freqs == 1000.0][0] < 1.0


def test_loud_speakers_are_turned_down_not_clipped() -> None:
    mixer = Mixer()
    loud = [(tone(450, 0.9), 1.0), (tone(450, 0.9), 1.0), (tone(450, 0.9), 2.0)]
    exact = sum(f.astype(np.float64) * g for f, g in loud)
    for _ in range(5):
        out = mixer.mix(loud)
        assert np.max(np.abs(out)) <= LIMIT  # never at the int16 rails
        # The waveform keeps its shape (scaled), unlike clipping, which flattens it.
        assert np.corrcoef(out, exact)[0, 1] > 0.999
    assert mixer.limited_frames == 5
    # Clipping the same sum would square off the peaks.
    clipped = np.clip(exact, -32768, 32767)
    assert np.corrcoef(clipped, exact)[0, 1] < np.corrcoef(out, exact)[0, 1]


def test_gain_comes_back_after_the_loud_part() -> None:
    mixer = Mixer()
    mixer.mix([(tone(450, 0.9), 4.0)])
    quiet = tone(450, 0.1)
    outs = [mixer.mix([(quiet, 1.0)]) for _ in range(60)]
    assert np.max(np.abs(outs[0])) < 0.8 * np.max(np.abs(quiet))  # still turned down
    assert np.array_equal(outs[-1], quiet)  # back to unity after ~1 s


@pytest.mark.parametrize("ms", [10, 40])
def test_frames_of_other_durations_recover_at_the_same_rate_in_time(ms: int) -> None:
    samples = SAMPLE_RATE * ms // 1000
    assert Mixer(samples).mix([]).shape == (samples,)
    gains = {}
    for each in (FRAME_SAMPLES, samples):
        mixer = Mixer(each)
        loud = tone(450, 0.9)[:each] if each <= FRAME_SAMPLES else np.tile(tone(450, 0.9), 2)
        mixer.mix([(loud, 4.0)])
        # 200 ms of silence later, how far the gain came back.
        for _ in range(200 * SAMPLE_RATE // 1000 // each):
            mixer.mix([])
        gains[each] = mixer._gain
    assert gains[samples] == pytest.approx(gains[FRAME_SAMPLES], rel=0.02)
    assert gains[samples] < 1.0
