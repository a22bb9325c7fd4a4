"""Sources and sinks: generators, WAV files (espeak-ng speech), error paths."""

from __future__ import annotations

import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from bangor.audio.devices import PORTAUDIO_MISSING, Sink, Source, open_sink, open_source
from bangor.errors import AudioError
from bangor.settings import FRAME_SAMPLES, SAMPLE_RATE
from tests.audiocheck import align, envelope_correlation, make_speech_wav


def read_all(source: Source, limit: int = 10_000) -> list[np.ndarray]:
    frames = []
    for _ in range(limit):
        frame = source.read()
        if frame is None:
            break
        frames.append(frame)
    return frames


def write_wav(path: Path, pcm: np.ndarray, rate: int, channels: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())


def peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)[np.argmax(spectrum)])


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("speech") / "hello.wav"
    make_speech_wav(path, "Hello, can you hear me? The connection seems fine on my side.")
    return path


def test_silence() -> None:
    source = open_source("silence")
    for _ in range(5):
        frame = source.read()
        assert frame is not None
        assert frame.dtype == np.int16
        assert frame.shape == (FRAME_SAMPLES,)
        assert not np.any(frame)
    source.close()


@pytest.mark.parametrize(
    ("spec", "hz"), [("tone", 440.0), ("tone:1000", 1000.0), ("tone:97.5", 97.5)]
)
def test_tone_frequency_and_level(spec: str, hz: float) -> None:
    source = open_source(spec)
    frames = read_all(source, limit=50)  # endless: stops at the limit
    assert len(frames) == 50
    signal = np.concatenate(frames).astype(float)
    # One second gives 1 Hz FFT bins; the peak must sit on the requested tone.
    assert abs(peak_hz(signal) - hz) <= 1.0
    assert 0.28 * 32767 < np.abs(signal).max() <= 0.31 * 32767


def test_tone_phase_continuous_across_frames() -> None:
    source = open_source("tone:1234")
    signal = np.concatenate(read_all(source, limit=10)).astype(float)
    t = np.arange(len(signal)) / SAMPLE_RATE
    ideal = 0.3 * 32767 * np.sin(2 * np.pi * 1234 * t)
    # A phase jump at a frame boundary would leave an error far above rounding.
    assert np.abs(signal - ideal).max() <= 1.0


def test_espeak_wav_read_at_48k(speech_wav: Path) -> None:
    with wave.open(str(speech_wav)) as w:
        assert w.getframerate() == 22050
        native = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(float)
    duration = len(native) / 22050
    frames = read_all(open_source(str(speech_wav)))
    assert all(f.shape == (FRAME_SAMPLES,) and f.dtype == np.int16 for f in frames)
    expected_frames = duration * SAMPLE_RATE / FRAME_SAMPLES
    assert abs(len(frames) - expected_frames) <= 1
    # The same speech, just at 48 kHz: aligned at zero delay, equal envelopes.
    pcm = np.concatenate(frames).astype(float)
    t22 = np.arange(len(native)) / 22050
    upsampled = np.interp(np.arange(int(duration * SAMPLE_RATE)) / SAMPLE_RATE, t22, native)
    delay, aligned = align(upsampled, pcm)
    assert abs(delay) <= 2
    assert envelope_correlation(upsampled, aligned) > 0.99
    assert abs(np.abs(pcm).max() - np.abs(native).max()) < 0.1 * np.abs(native).max()


def test_stereo_downmix(tmp_path: Path) -> None:
    n = SAMPLE_RATE // 2
    t = np.arange(n) / SAMPLE_RATE
    left = np.round(8000 * np.sin(2 * np.pi * 500 * t)).astype(np.int16)
    right = np.round(8000 * np.sin(2 * np.pi * 1500 * t)).astype(np.int16)
    path = tmp_path / "stereo.wav"
    write_wav(path, np.stack([left, right], axis=1).reshape(-1), SAMPLE_RATE, 2)
    frames = read_all(open_source(str(path)))
    assert len(frames) == 25
    mono = np.concatenate(frames)
    want = (left.astype(np.int32) + right.astype(np.int32)) / 2
    assert np.abs(mono - want).max() <= 1  # rounding only, no resampling at 48 kHz
    spectrum = np.abs(np.fft.rfft(mono.astype(float)))
    freqs = np.fft.rfftfreq(len(mono), 1 / SAMPLE_RATE)
    assert set(freqs[np.argsort(spectrum)[-2:]]) == {500.0, 1500.0}


def test_last_partial_frame_zero_padded(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    pcm = np.full(FRAME_SAMPLES + 100, 1000, np.int16)
    write_wav(path, pcm, SAMPLE_RATE, 1)
    source = open_source(str(path))
    first, second = source.read(), source.read()
    assert first is not None and second is not None
    assert np.all(first == 1000)
    assert np.all(second[:100] == 1000) and not np.any(second[100:])
    assert source.read() is None
    assert source.read() is None  # stays at the end
    source.close()


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match=r"cannot read .*nope\.wav: .*No such file"):
        open_source(str(path))


def test_not_a_wav(tmp_path: Path) -> None:
    path = tmp_path / "fake.wav"
    path.write_bytes(b"this is not audio at all")
    with pytest.raises(AudioError, match=r"fake\.wav"):
        open_source(str(path))


def test_8bit_wav_rejected(tmp_path: Path) -> None:
    path = tmp_path / "8bit.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(bytes(800))
    with pytest.raises(AudioError, match="16-bit"):
        open_source(str(path))


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("tone:abc", "number"),
        ("tone:0", "frequency"),
        ("tone:30000", "frequency"),
        ("song.mp3", "only .wav"),
        ("some/dir/file", "only .wav"),
        ("", "empty"),
        ("null", "sink"),
    ],
)
def test_bad_source_spec(spec: str, reason: str) -> None:
    with pytest.raises(AudioError, match=reason):
        open_source(spec)


@pytest.mark.parametrize(
    ("spec", "reason"), [("tone", "source"), ("silence", "source"), ("x.flac", "only .wav")]
)
def test_bad_sink_spec(spec: str, reason: str) -> None:
    with pytest.raises(AudioError, match=reason):
        open_sink(spec)


def test_sink_wav_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    sink: Sink = open_sink(str(path))
    frames = read_all(open_source("tone:700"), limit=20)
    frames.append(np.full(FRAME_SAMPLES, -32768, np.int16))
    for frame in frames:
        sink.write(frame)
    sink.close()
    sink.close()  # idempotent
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SAMPLE_RATE)
        assert w.getnframes() == len(frames) * FRAME_SAMPLES
        back = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert np.array_equal(back, np.concatenate(frames))
    # And it reads back through our own source unchanged.
    assert np.array_equal(np.concatenate(read_all(open_source(str(path)))), back)


def test_sink_rejects_wrong_frames(tmp_path: Path) -> None:
    sink = open_sink(str(tmp_path / "out.wav"))
    with pytest.raises(AudioError):
        sink.write(np.zeros(FRAME_SAMPLES, np.float32))
    with pytest.raises(AudioError):
        open_sink("null").write(np.zeros(10, np.int16))
    sink.close()


def test_sink_unwritable_path(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r"cannot write .*missing-dir"):
        open_sink(str(tmp_path / "missing-dir" / "out.wav"))


def test_null_sink() -> None:
    sink = open_sink("null")
    sink.write(np.zeros(FRAME_SAMPLES, np.int16))
    sink.close()


@pytest.mark.parametrize("spec", ["default", "3", "USB Headset"])
def test_devices_without_portaudio(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails as if absent
    with pytest.raises(AudioError) as info:
        open_source(spec)
    assert str(info.value) == PORTAUDIO_MISSING
    with pytest.raises(AudioError) as info:
        open_sink(spec)
    assert str(info.value) == PORTAUDIO_MISSING
