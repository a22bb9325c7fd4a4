"""Sources and sinks: generators, WAV files (espeak-ng speech), sound devices, error paths.

Sound devices are tested twice: in-process against a fake ``sounddevice`` module
(selection, queues, a device that vanishes: all deterministic), and in
subprocesses against the real PortAudio over ALSA configurations made for the test
(PortAudio missing, no devices, and a playback and a capture device backed by files).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import types
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bangor.errors import AudioError
from bangor.io.devices import (
    CAPTURE_QUEUE_FRAMES,
    DEVICE_STALL_TIMEOUT,
    NO_DEVICES,
    PLAYBACK_QUEUE_FRAMES,
    PORTAUDIO_MISSING,
    DeviceSink,
    DeviceSource,
    Sink,
    Source,
    list_devices,
    open_sink,
    open_source,
)
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


# --- sound devices against a fake sounddevice module --------------------------------


class FakePortAudioError(Exception):
    """Stands in for sounddevice.PortAudioError."""


class FakeStream:
    """A PortAudio callback stream that the test drives by hand."""

    def __init__(self, fake: FakeSounddevice, kind: str, **kwargs: Any) -> None:
        if fake.open_error is not None:
            raise fake.open_error
        self.fake = fake
        self.kind = kind
        self.kwargs = kwargs
        self.callback: Callable[..., None] = kwargs["callback"]
        self.finished_callback: Callable[[], None] = kwargs["finished_callback"]
        self.running = self.closed = False
        self.active_error: Exception | None = None
        fake.streams.append(self)

    def start(self) -> None:
        if self.fake.start_error is not None:
            raise self.fake.start_error
        self.running = True

    def _end(self) -> None:
        if self.running:
            self.running = False
            self.finished_callback()  # PortAudio calls it however a stream ends

    def stop(self) -> None:
        self._end()

    def close(self) -> None:
        self._end()
        self.closed = True
        if self.fake.close_error is not None:
            raise self.fake.close_error

    @property
    def active(self) -> bool:
        if self.active_error is not None:
            raise self.active_error
        return self.running

    def vanish(self) -> None:
        """What PortAudio does when the device goes away: the stream ends by itself."""
        self._end()

    def capture(self, pcm: bytes, status: int = 0) -> None:
        self.callback(pcm, len(pcm) // 2, None, status)

    def play(self, nbytes: int = FRAME_SAMPLES * 2, status: int = 0) -> bytes:
        buffer = bytearray(b"\xaa" * nbytes)  # garbage, as a real buffer may hold
        self.callback(buffer, nbytes // 2, None, status)
        return bytes(buffer)


FAKE_DEVICES = [
    ("HDA Intel PCH: ALC3246 Analog (hw:0,0)", 2, 2),
    ("USB Headset: Audio (hw:1,0)", 1, 2),
    ("HDMI 0 (hw:0,3)", 0, 8),
    ("pulse", 32, 32),
    ("default", 32, 32),
    ("PulseAudio Monitor", 2, 0),
]
USB = "USB Headset: Audio (hw:1,0)"


class FakeSounddevice:
    """Just the part of the sounddevice module that devices.py uses."""

    def __init__(self, devices: list[tuple[str, int, int]], default: tuple[int, int]) -> None:
        self.streams: list[FakeStream] = []
        self.open_error: Exception | None = None
        self.start_error: Exception | None = None
        self.close_error: Exception | None = None
        listed = [
            {
                "name": name,
                "hostapi": 0,
                "max_input_channels": inputs,
                "max_output_channels": outputs,
                "default_samplerate": 48000.0,
            }
            for name, inputs, outputs in devices
        ]
        self.module = types.SimpleNamespace(
            PortAudioError=FakePortAudioError,
            query_devices=lambda: list(listed),
            query_hostapis=lambda: [{"name": "ALSA"}],
            default=types.SimpleNamespace(device=list(default)),
            RawInputStream=lambda **kw: FakeStream(self, "input", **kw),
            RawOutputStream=lambda **kw: FakeStream(self, "output", **kw),
        )

    @property
    def stream(self) -> FakeStream:
        return self.streams[-1]


@pytest.fixture
def fake_sd(monkeypatch: pytest.MonkeyPatch) -> FakeSounddevice:
    fake = FakeSounddevice(FAKE_DEVICES, default=(4, 4))
    monkeypatch.setitem(sys.modules, "sounddevice", fake.module)
    return fake


def use_fake(monkeypatch: pytest.MonkeyPatch, fake: FakeSounddevice) -> FakeSounddevice:
    monkeypatch.setitem(sys.modules, "sounddevice", fake.module)
    return fake


def numbered(k: int) -> np.ndarray:
    """A frame that differs from every other k's."""
    return (np.arange(FRAME_SAMPLES) + 1000 * k).astype(np.int16)


def must_read(source: Source) -> np.ndarray:
    frame = source.read()
    assert frame is not None
    return frame


def silence_bytes(n: int = FRAME_SAMPLES * 2) -> bytes:
    return bytes(n)


@pytest.mark.parametrize(
    ("spec", "kind", "index"),
    [
        ("default", "input", 4),
        ("default", "output", 4),
        ("1", "input", 1),
        ("2", "output", 2),
        ("usb headset", "input", 1),
        ("USB HEADSET", "output", 1),
        ("hdmi", "output", 2),
        ("pulse", "input", 3),  # the exact name wins over "PulseAudio Monitor"
        ("pulseaudio", "input", 5),
        ("PCH", "output", 0),
    ],
)
def test_device_selection(fake_sd: FakeSounddevice, spec: str, kind: str, index: int) -> None:
    opened = open_source(spec) if kind == "input" else open_sink(spec)
    assert isinstance(opened, DeviceSource if kind == "input" else DeviceSink)
    assert opened.device.index == index
    stream = fake_sd.stream
    assert stream.kind == kind and stream.running
    assert {k: stream.kwargs[k] for k in ("device", "samplerate", "channels", "dtype")} == {
        "device": index,
        "samplerate": 48000,
        "channels": 1,
        "dtype": "int16",
    }
    assert stream.kwargs["blocksize"] == FRAME_SAMPLES  # 20 ms callbacks
    opened.close()
    assert stream.closed
    opened.close()  # idempotent


def test_selection_ambiguous(fake_sd: FakeSounddevice) -> None:
    with pytest.raises(AudioError) as info:
        open_source("hw:")
    assert str(info.value) == (
        "'hw:' matches several input devices (0 'HDA Intel PCH: ALC3246 Analog (hw:0,0)', "
        "1 'USB Headset: Audio (hw:1,0)'): pick one by index"
    )
    with pytest.raises(AudioError, match=r"several output devices \(0 .*, 1 .*, 2 'HDMI 0"):
        open_sink("HW:")
    assert not fake_sd.streams


@pytest.mark.parametrize(
    ("opener", "spec", "message"),
    [
        (open_sink, "Bluetooth", "no output device matches 'Bluetooth'"),
        (open_source, "hdmi", "no input device matches 'hdmi'"),
        (open_source, "9", "no audio device has index 9"),
        (open_source, "2", "audio device 2 'HDMI 0 (hw:0,3)' has no input channels"),
        (open_sink, "5", "audio device 5 'PulseAudio Monitor' has no output channels"),
    ],
)
def test_selection_unknown(
    fake_sd: FakeSounddevice, opener: Callable[[str], object], spec: str, message: str
) -> None:
    with pytest.raises(AudioError) as info:
        opener(spec)
    assert str(info.value) == f"{message}: run `bangor devices` to list them"
    assert not fake_sd.streams


def test_no_default_device(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fake(monkeypatch, FakeSounddevice(FAKE_DEVICES, default=(-1, -1)))
    with pytest.raises(AudioError, match="there is no default input device: pick one by name"):
        open_source("default")
    with pytest.raises(AudioError, match="run `bangor devices`"):
        open_sink("default")


@pytest.mark.parametrize("spec", ["default", "0", "USB"])
def test_no_devices_fake(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    use_fake(monkeypatch, FakeSounddevice([], default=(-1, -1)))
    assert list_devices() == []
    for opener in (open_source, open_sink):
        with pytest.raises(AudioError) as info:
            opener(spec)
        assert str(info.value) == NO_DEVICES


def test_device_open_and_start_failures(fake_sd: FakeSounddevice) -> None:
    fake_sd.open_error = FakePortAudioError("Device unavailable [PaErrorCode -9985]")
    with pytest.raises(AudioError) as info:
        open_source("usb")
    assert str(info.value) == (
        f"cannot open input device 1 {USB!r}: Device unavailable [PaErrorCode -9985]"
    )
    fake_sd.open_error = None
    fake_sd.start_error = FakePortAudioError("Invalid sample rate [PaErrorCode -9997]")
    with pytest.raises(AudioError, match=r"cannot start output device 1 .*Invalid sample rate"):
        open_sink("usb")
    assert fake_sd.stream.closed  # not left open behind the error


def test_list_devices_fake(fake_sd: FakeSounddevice) -> None:
    devices = list_devices()
    assert [(d.index, d.name, d.max_input_channels, d.max_output_channels) for d in devices] == [
        (i, name, inputs, outputs) for i, (name, inputs, outputs) in enumerate(FAKE_DEVICES)
    ]
    assert [d.index for d in devices if d.is_default_input or d.is_default_output] == [4]
    assert {d.hostapi for d in devices} == {"ALSA"}


def test_cli_devices_fake(fake_sd: FakeSounddevice, capsys: pytest.CaptureFixture[str]) -> None:
    from bangor.cli import main

    assert main(["devices"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(FAKE_DEVICES)
    assert lines[1] == f"  1  in   1  out   2  {USB} (ALSA)"
    assert lines[4] == "  4  in  32  out  32  default (ALSA)  [default input and output]"
    assert main(["devices", "--json"]) == 0
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert objects[1] == {
        "index": 1,
        "name": USB,
        "hostapi": "ALSA",
        "max_input_channels": 1,
        "max_output_channels": 2,
        "default_samplerate": 48000.0,
        "is_default_input": False,
        "is_default_output": False,
    }


def test_cli_devices_none_fake(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bangor.cli import main

    use_fake(monkeypatch, FakeSounddevice([], default=(-1, -1)))
    assert main(["devices"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: {NO_DEVICES}\n"


def test_source_delivers_captured_frames_in_order(fake_sd: FakeSounddevice) -> None:
    source = open_source("usb")
    assert isinstance(source, DeviceSource)
    stream = fake_sd.stream
    frames = [numbered(k) for k in range(3)]
    stream.capture(frames[0].tobytes())
    stream.capture(frames[1].tobytes() + frames[2].tobytes(), status=1)  # two at once
    for want in frames:
        got = source.read()
        assert got is not None and got.dtype == np.int16 and np.array_equal(got, want)
    silent = source.read()  # nothing captured yet: silence, never a wait
    assert silent is not None and silent.shape == (FRAME_SAMPLES,) and not silent.any()
    assert (source.stats.underruns, source.stats.dropped, source.stats.xruns) == (1, 0, 1)
    # Callbacks that do not line up with 20 ms frames still give whole frames.
    pcm = numbered(7).tobytes()
    stream.capture(pcm[:700])
    assert not np.any(must_read(source))  # a part of a frame is not a frame yet
    stream.capture(pcm[700:])
    assert np.array_equal(must_read(source), numbered(7))
    source.close()


def test_source_queue_drops_oldest(fake_sd: FakeSounddevice) -> None:
    source = open_source("usb")
    assert isinstance(source, DeviceSource)
    extra = 2
    for k in range(CAPTURE_QUEUE_FRAMES + extra):
        fake_sd.stream.capture(numbered(k).tobytes())
    assert source.stats.dropped == extra
    for k in range(extra, CAPTURE_QUEUE_FRAMES + extra):
        assert np.array_equal(must_read(source), numbered(k))
    assert not np.any(must_read(source))


def test_source_wait(fake_sd: FakeSounddevice) -> None:
    source = open_source("usb")
    assert isinstance(source, DeviceSource)
    assert not source.wait(0.0)
    capture = threading.Thread(target=fake_sd.stream.capture, args=(numbered(1).tobytes(),))
    capture.start()
    assert source.wait(10.0)
    capture.join()
    assert np.array_equal(must_read(source), numbered(1))


def test_sink_plays_written_frames(fake_sd: FakeSounddevice) -> None:
    sink = open_sink("usb")
    assert isinstance(sink, DeviceSink)
    stream = fake_sd.stream
    for k in range(3):
        sink.write(numbered(k))
    assert sink.queued() == 3 * FRAME_SAMPLES
    for k in range(3):
        assert stream.play() == numbered(k).tobytes()
    assert stream.play() == silence_bytes()  # underrun: silence, not the old buffer
    assert sink.stats.underruns == 1
    # Callback sizes other than 20 ms take the queue apart at any sample.
    sink.write(numbered(4))
    sink.write(numbered(5))
    played = stream.play(1000) + stream.play(FRAME_SAMPLES * 4 - 1000)
    assert played == numbered(4).tobytes() + numbered(5).tobytes()
    assert sink.stats.underruns == 1
    with pytest.raises(AudioError):
        sink.write(np.zeros(FRAME_SAMPLES, np.float32))


def test_sink_queue_drops_oldest(fake_sd: FakeSounddevice) -> None:
    sink = open_sink("usb")
    assert isinstance(sink, DeviceSink)
    extra = 3
    for k in range(PLAYBACK_QUEUE_FRAMES + extra):
        sink.write(numbered(k))
    # The delay stays at the bound instead of growing with every late callback.
    assert sink.queued() == PLAYBACK_QUEUE_FRAMES * FRAME_SAMPLES
    assert sink.stats.dropped == extra
    for k in range(extra, PLAYBACK_QUEUE_FRAMES + extra):
        assert fake_sd.stream.play() == numbered(k).tobytes()


def test_sink_drain_and_close(fake_sd: FakeSounddevice) -> None:
    sink = open_sink("usb")
    assert isinstance(sink, DeviceSink)
    stream = fake_sd.stream
    sink.write(numbered(1))
    assert not sink.drain(0.0)  # nobody has played it
    played: list[bytes] = []
    card = threading.Thread(target=lambda: played.append(stream.play()))
    card.start()
    assert sink.drain(10.0)
    card.join()
    assert played == [numbered(1).tobytes()]
    # close() lets the card take what is queued before it closes the stream.
    sink.write(numbered(2))
    sink.write(numbered(3))
    card = threading.Thread(target=lambda: played.extend([stream.play(), stream.play()]))
    card.start()
    sink.close()
    card.join()
    assert played[1:] == [numbered(2).tobytes(), numbered(3).tobytes()]
    assert stream.closed
    with pytest.raises(AudioError, match=r"cannot write to output device 1 .*: sink is closed"):
        sink.write(numbered(4))


def unplugged(label: str, what: str) -> str:
    return f"{label} {what}: was it unplugged? run `bangor devices` to list them"


def test_source_device_vanishes(fake_sd: FakeSounddevice) -> None:
    source = open_source("usb")
    stream = fake_sd.stream
    stream.capture(numbered(1).tobytes())
    assert np.array_equal(must_read(source), numbered(1))
    stream.vanish()
    with pytest.raises(AudioError) as info:
        source.read()
    assert str(info.value) == unplugged(f"input device 1 {USB!r}", "stopped")
    assert source.read() is None  # reported once; then the source has ended
    assert source.read() is None
    fake_sd.close_error = FakePortAudioError("Stream is stopped")
    source.close()  # a gone device closes without a fuss
    assert stream.closed


def test_sink_device_fails(fake_sd: FakeSounddevice) -> None:
    sink = open_sink("usb")
    assert isinstance(sink, DeviceSink)
    stream = fake_sd.stream
    sink.write(numbered(1))
    stream.active_error = FakePortAudioError("Unanticipated host error [PaErrorCode -9999]")
    with pytest.raises(AudioError) as info:
        sink.write(numbered(2))
    assert str(info.value) == unplugged(
        f"output device 1 {USB!r}", "failed (Unanticipated host error [PaErrorCode -9999])"
    )
    sink.write(numbered(3))  # reported once; from now on frames are discarded
    assert sink.queued() == FRAME_SAMPLES  # only the frame from before the failure
    fake_sd.close_error = FakePortAudioError("Unanticipated host error")
    sink.close()
    assert stream.closed


def test_stream_inactive_is_reported(fake_sd: FakeSounddevice) -> None:
    sink = open_sink("usb")
    fake_sd.stream.running = False  # inactive without a finished callback
    with pytest.raises(AudioError, match=r"output device 1 .* stopped: was it unplugged"):
        sink.write(numbered(1))


def test_stalled_device_is_reported(fake_sd: FakeSounddevice) -> None:
    now = [100.0]
    source = DeviceSource("usb", clock=lambda: now[0])
    stream = fake_sd.stream
    # Callbacks keep coming, however slowly: fine.
    for _ in range(3):
        now[0] += DEVICE_STALL_TIMEOUT * 0.9
        stream.capture(numbered(1).tobytes())
        assert source.read() is not None
    now[0] += DEVICE_STALL_TIMEOUT * 1.1
    with pytest.raises(AudioError) as info:
        source.read()
    assert str(info.value) == unplugged(f"input device 1 {USB!r}", "delivered nothing for 2 s")
    assert source.read() is None


def test_callback_errors_stay_in_the_callback(
    fake_sd: FakeSounddevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    escaped: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: escaped.append(args.exc_value))

    class BrokenBuffer(bytearray):
        def __setitem__(self, key: Any, value: Any) -> None:
            if len(value) != len(self):  # the partial copy fails, the silence fill works
                raise OSError("buffer gone")
            super().__setitem__(key, value)

    source = open_source("usb")
    sink = open_sink("usb")
    assert isinstance(sink, DeviceSink)
    in_stream, out_stream = fake_sd.streams
    sink.write(numbered(1))
    buffer = BrokenBuffer(b"\xaa" * (FRAME_SAMPLES * 3))
    threads = [
        threading.Thread(target=in_stream.callback, args=(object(), FRAME_SAMPLES, None, 0)),
        threading.Thread(target=out_stream.callback, args=(buffer, len(buffer) // 2, None, 0)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert escaped == []  # PortAudio's thread saw no exception
    assert bytes(buffer) == bytes(len(buffer))  # and the card played silence
    with pytest.raises(AudioError, match=r"input device 1 .* failed in its callback \(TypeError"):
        source.read()
    with pytest.raises(AudioError, match=r"output device 1 .* failed in its callback \(OSError"):
        sink.write(numbered(2))


def test_close_is_not_a_failure(fake_sd: FakeSounddevice) -> None:
    source = open_source("usb")
    sink = open_sink("usb")
    source.close()
    sink.close()
    assert all(s.closed for s in fake_sd.streams)
    assert source.read() is None  # ended, with no error about a vanished device


# --- sound devices through the real PortAudio (subprocesses) ------------------------

REPO = Path(__file__).resolve().parents[2]
needs_alsa = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the test devices are ALSA configurations"
)

# sounddevice finds PortAudio with ctypes.util.find_library; answering None is exactly
# what it meets on a machine without libportaudio2.
HIDE_PORTAUDIO = """
import ctypes.util
_find_library = ctypes.util.find_library
ctypes.util.find_library = lambda name: None if "portaudio" in name else _find_library(name)
"""

OPEN_DEFAULTS = """
import json
from bangor.io.devices import list_devices, open_sink, open_source
from bangor.errors import AudioError
out = {}
for name, call in (
    ("list", lambda: [d.name for d in list_devices()]),
    ("source", lambda: open_source("default")),
    ("sink", lambda: open_sink("default")),
):
    try:
        result = call()
        out[name] = result if name == "list" else None
    except AudioError as exc:
        out[name] = str(exc)
print(json.dumps(out))
"""

CLI = "import sys\nfrom bangor.cli import main\nsys.exit(main(sys.argv[1:]))\n"

# PortAudio 19.6 aborts the process (an assert in its ALSA device scan) when the ALSA
# configuration lists every pcm as a usable device, e.g. none at all; a pcm named
# "default" is scanned apart and keeps it away from that assert. This one cannot be
# opened, so it is not a device.
UNUSABLE_DEFAULT = "pcm.default { type hw card 99 }\n"

# Devices backed by files through ALSA's built-in file and null plugins: no sound
# card, no extra ALSA plugin package. The null slave takes and gives audio as fast as
# asked, so the test paces on the queues, never on a clock.
FILE_DEVICES = """
pcm.bangor_out {{ type file slave.pcm {{ type null }} file "{out}" format "raw" }}
pcm.bangor_in {{
    type file
    slave.pcm {{ type null }}
    file "/dev/null"
    infile "{infile}"
    format "raw"
}}
"""


def run_python(
    code: str, *args: str, alsa_conf: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if alsa_conf is not None:
        env["ALSA_CONFIG_PATH"] = str(alsa_conf)
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def require_portaudio(result: subprocess.CompletedProcess[str]) -> None:
    # The suite's install line has libportaudio2: its absence must show, not skip.
    if PORTAUDIO_MISSING in result.stdout + result.stderr:
        pytest.fail("these tests need the Debian package libportaudio2 and sounddevice")


@pytest.fixture
def file_devices(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    """An ALSA configuration, its playback file and its capture file (3 s of 1 kHz)."""
    out, infile = tmp_path / "played.raw", tmp_path / "to-capture.raw"
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    np.round(9000 * np.sin(2 * np.pi * 1000 * t)).astype("<i2").tofile(infile)
    conf = tmp_path / "asound.conf"
    conf.write_text(UNUSABLE_DEFAULT + FILE_DEVICES.format(out=out, infile=infile))
    yield conf, out, infile


def test_portaudio_missing_real_import() -> None:
    result = run_python(HIDE_PORTAUDIO + OPEN_DEFAULTS)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == dict.fromkeys(("list", "source", "sink"), PORTAUDIO_MISSING)
    assert "libportaudio2" in PORTAUDIO_MISSING
    for argv in (["devices"], ["devices", "--json"]):
        cli = run_python(HIDE_PORTAUDIO + CLI, *argv)
        assert cli.returncode == 1
        assert cli.stdout == ""
        assert cli.stderr == f"error: {PORTAUDIO_MISSING}\n"


@needs_alsa
def test_portaudio_present_no_devices(tmp_path: Path) -> None:
    conf = tmp_path / "asound.conf"
    conf.write_text(UNUSABLE_DEFAULT)
    result = run_python(OPEN_DEFAULTS, alsa_conf=conf)
    require_portaudio(result)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    if out["list"]:
        pytest.skip(f"PortAudio sees devices an ALSA configuration cannot hide: {out['list']}")
    assert out == {"list": [], "source": NO_DEVICES, "sink": NO_DEVICES}
    for argv in (["devices"], ["devices", "--json"]):
        cli = run_python(CLI, *argv, alsa_conf=conf)
        assert cli.returncode == 1
        assert cli.stdout == ""
        assert cli.stderr.splitlines()[-1] == f"error: {NO_DEVICES}"


@needs_alsa
def test_cli_lists_real_devices(file_devices: tuple[Path, Path, Path]) -> None:
    conf, _, _ = file_devices
    cli = run_python(CLI, "devices", alsa_conf=conf)
    require_portaudio(cli)
    assert cli.returncode == 0, cli.stderr
    lines = {re.sub(r"\s+", " ", line.strip()) for line in cli.stdout.splitlines()}
    assert any(re.fullmatch(r"\d+ in \d+ out [1-9]\d* bangor_out \(ALSA\).*", x) for x in lines)
    assert any(re.fullmatch(r"\d+ in [1-9]\d* out \d+ bangor_in \(ALSA\).*", x) for x in lines)
    cli = run_python(CLI, "devices", "--json", alsa_conf=conf)
    listed = [json.loads(line) for line in cli.stdout.splitlines()]
    by_name = {d["name"]: d for d in listed}
    assert by_name["bangor_out"]["max_output_channels"] > 0
    assert by_name["bangor_in"]["max_input_channels"] > 0
    assert {d["hostapi"] for d in listed} >= {"ALSA"}
    assert [d["index"] for d in listed] == list(range(len(listed)))


@needs_alsa
def test_real_playback_device(file_devices: tuple[Path, Path, Path]) -> None:
    conf, out, _ = file_devices
    code = """
import json
from bangor.io.devices import open_sink, open_source
sink = open_sink("BANGOR_OUT")
tone = open_source("tone:700")
drained = []
for _ in range(50):
    sink.write(tone.read())
    drained.append(sink.drain(10.0))  # the card takes each frame before the next comes
sink.close()
print(json.dumps({"device": sink.device.name, "drained": all(drained),
                  "dropped": sink.stats.dropped}))
"""
    result = run_python(code, alsa_conf=conf)
    require_portaudio(result)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"device": "bangor_out", "drained": True, "dropped": 0}
    tone = open_source("tone:700")
    sent = np.concatenate([must_read(tone) for _ in range(50)])
    played = np.fromfile(out, "<i2")
    # The card played silence whenever the queue was empty, in whole callbacks; take
    # those out and the tone must be there, every sample, in order.
    start = int(np.flatnonzero(played)[0] - np.flatnonzero(sent)[0])
    blocks = played[start : start + (len(played) - start) // FRAME_SAMPLES * FRAME_SAMPLES]
    blocks = blocks.reshape(-1, FRAME_SAMPLES)
    heard = blocks[blocks.any(axis=1)].reshape(-1)
    assert np.array_equal(heard, sent)
    assert abs(peak_hz(heard.astype(float)) - 700) <= 1.0


@needs_alsa
def test_real_capture_device(file_devices: tuple[Path, Path, Path], tmp_path: Path) -> None:
    conf, _, infile = file_devices
    captured_path = tmp_path / "captured.raw"
    code = f"""
import json
import numpy as np
from bangor.io.devices import list_devices, open_source
index = next(d.index for d in list_devices() if d.name == "bangor_in")
source = open_source(str(index))
frames = []
for _ in range(25):
    assert source.wait(10.0), "nothing captured"
    frames.append(source.read())
source.close()
np.concatenate(frames).astype("<i2").tofile({str(captured_path)!r})
print(json.dumps({{"device": source.device.name, "index": index}}))
"""
    result = run_python(code, alsa_conf=conf)
    require_portaudio(result)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["device"] == "bangor_in"
    captured = np.fromfile(captured_path, "<i2")
    assert len(captured) == 25 * FRAME_SAMPLES
    # The file plugin loops its input file, which holds whole frames of whole 1 kHz
    # periods: every frame captured, dropped ones or not, is the file's first frame.
    first = np.fromfile(infile, "<i2")[:FRAME_SAMPLES]
    assert all(np.array_equal(f, first) for f in captured.reshape(-1, FRAME_SAMPLES))
    assert abs(peak_hz(captured.astype(float)) - 1000) <= 2.0
    assert 8900 < np.abs(captured).max() <= 9000


# --- frames of 10 and 40 ms (join --frame-ms) ----------------------------------------


@pytest.mark.parametrize("ms", [10, 40])
def test_generators_and_wav_give_frames_of_the_chosen_duration(ms: int, tmp_path: Path) -> None:
    samples = SAMPLE_RATE * ms // 1000
    assert must_read(open_source("silence", samples)).shape == (samples,)
    tone = np.concatenate(read_all(open_source("tone:1234", samples), limit=2000 // ms))
    assert all(f.shape == (samples,) for f in read_all(open_source("tone", samples), limit=3))
    t = np.arange(len(tone)) / SAMPLE_RATE
    # Phase continuous across frames of this size too.
    assert np.abs(tone - 0.3 * 32767 * np.sin(2 * np.pi * 1234 * t)).max() <= 1.0
    path = tmp_path / "in.wav"
    pcm = (np.arange(samples * 5 + 7) % 3000).astype(np.int16)
    write_wav(path, pcm, SAMPLE_RATE, 1)
    frames = read_all(open_source(str(path), samples))
    assert [len(f) for f in frames] == [samples] * 6  # the last one zero-padded
    assert np.array_equal(np.concatenate(frames)[: len(pcm)], pcm)
    sink = open_sink(str(tmp_path / "out.wav"), samples)
    for frame in frames:
        sink.write(frame)
    with pytest.raises(AudioError, match=f"{samples} int16 samples"):
        sink.write(np.zeros(FRAME_SAMPLES, np.int16))
    sink.close()
    back = read_all(open_source(str(tmp_path / "out.wav"), samples))
    assert np.array_equal(np.concatenate(back), np.concatenate(frames))


@pytest.mark.parametrize("samples", [0, 100, 480 * 13])
def test_frame_lengths_opus_cannot_carry_are_refused(samples: int) -> None:
    with pytest.raises(AudioError, match="not a valid Opus frame length"):
        open_source("silence", samples)


@pytest.mark.parametrize("ms", [10, 40])
def test_devices_take_frames_of_the_chosen_duration(fake_sd: FakeSounddevice, ms: int) -> None:
    samples = SAMPLE_RATE * ms // 1000
    source = open_source("usb", samples)
    assert fake_sd.stream.kwargs["blocksize"] == samples
    pcm = (np.arange(samples * 20) % 5000).astype(np.int16)
    fake_sd.stream.capture(pcm.tobytes())
    got = [must_read(source) for _ in range(20)]
    # The queue holds about 100 ms whatever the frame: the oldest went.
    kept = max(round(100 / ms), 2)
    assert source.stats.dropped == 20 - kept
    assert np.array_equal(np.concatenate(got[:kept]), pcm[-kept * samples :])
    assert not np.any(got[kept])
    sink = open_sink("usb", samples)
    assert fake_sd.stream.kwargs["blocksize"] == samples
    for k in range(20):
        sink.write(pcm[k * samples : (k + 1) * samples])
    assert sink.queued() == SAMPLE_RATE // 10  # 100 ms, the oldest dropped
    with pytest.raises(AudioError):
        sink.write(np.zeros(FRAME_SAMPLES, np.int16))


def test_the_capture_callback_tells_of_each_whole_frame(fake_sd: FakeSounddevice) -> None:
    source = open_source("default")
    assert isinstance(source, DeviceSource)
    told: list[int] = []
    source.on_frame = lambda: told.append(1)
    fake_sd.stream.capture(numbered(1).tobytes()[:FRAME_SAMPLES])  # half a frame
    assert told == []
    fake_sd.stream.capture(numbered(1).tobytes()[FRAME_SAMPLES:] + numbered(2).tobytes())
    assert len(told) == 2
    source.close()
