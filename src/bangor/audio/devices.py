"""Audio sources and sinks: generators, WAV files and sound cards.

The only audio module that does I/O. Everything else in ``bangor.audio``
works on int16 mono frames of FRAME_SAMPLES samples at SAMPLE_RATE; the
sources here deliver exactly that, and the sinks accept exactly that.

Specs (as on the command line):
  source: ``silence`` | ``tone`` | ``tone:HZ`` | ``FILE.wav`` | ``default`` | DEVICE
  sink:   ``null`` | ``FILE.wav`` | ``default`` | DEVICE

File and generator sources do not pace themselves: ``read()`` returns at once
and the caller ticks every 20 ms. Device sources block until a frame is captured.
"""

from __future__ import annotations

import importlib
import math
import wave
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO, Protocol

import numpy as np
import soxr

from bangor.errors import AudioError
from bangor.settings import CHANNELS, FRAME_SAMPLES, SAMPLE_RATE

PORTAUDIO_MISSING = (
    "audio devices need PortAudio: install the Debian package libportaudio2 "
    "and the Python package sounddevice"
)

DEFAULT_TONE_HZ = 440.0
TONE_AMPLITUDE = 0.3 * 32767  # loud enough to hear and measure, far from clipping

# Specs that name a file of a type we cannot read: refuse them instead of
# looking for a sound card of that name.
_OTHER_AUDIO_SUFFIXES = frozenset({".mp3", ".ogg", ".opus", ".flac", ".aiff", ".aif", ".raw"})


class Source(Protocol):
    """Delivers 20 ms frames of int16 mono PCM at 48 kHz."""

    def read(self) -> np.ndarray | None:
        """The next FRAME_SAMPLES-sample frame, or None at the end of the stream."""
        ...

    def close(self) -> None:
        """Release the file or device; idempotent."""
        ...


class Sink(Protocol):
    """Consumes 20 ms frames of int16 mono PCM at 48 kHz."""

    def write(self, frame: np.ndarray) -> None:
        """Play or store one frame."""
        ...

    def close(self) -> None:
        """Flush and release the file or device; idempotent."""
        ...


def _check_frame(frame: np.ndarray) -> None:
    if frame.dtype != np.int16 or frame.shape != (FRAME_SAMPLES,):
        raise AudioError(
            f"a frame must be {FRAME_SAMPLES} int16 samples, got {frame.dtype} {frame.shape}"
        )


class SilenceSource:
    """Endless digital silence."""

    def read(self) -> np.ndarray | None:
        return np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def close(self) -> None:
        pass


class ToneSource:
    """Endless sine wave, phase continuous from frame to frame."""

    def __init__(self, hz: float = DEFAULT_TONE_HZ) -> None:
        self._hz = hz
        self._phase = 0.0
        self._step = 2 * math.pi * hz / SAMPLE_RATE

    def read(self) -> np.ndarray | None:
        phases = self._phase + self._step * np.arange(FRAME_SAMPLES)
        # Keep the phase small so float precision does not drift over hours.
        self._phase = (self._phase + self._step * FRAME_SAMPLES) % (2 * math.pi)
        frame: np.ndarray = np.round(TONE_AMPLITUDE * np.sin(phases)).astype(np.int16)
        return frame

    def close(self) -> None:
        pass


class ArraySource:
    """Plays a 48 kHz int16 mono array once in frames (last one zero-padded)."""

    def __init__(self, pcm: np.ndarray) -> None:
        self._pcm = pcm
        self._pos = 0

    def read(self) -> np.ndarray | None:
        if self._pos >= len(self._pcm):
            return None
        frame = self._pcm[self._pos : self._pos + FRAME_SAMPLES]
        self._pos += FRAME_SAMPLES
        if len(frame) < FRAME_SAMPLES:
            frame = np.concatenate([frame, np.zeros(FRAME_SAMPLES - len(frame), np.int16)])
        return frame.copy()

    def close(self) -> None:
        self._pos = len(self._pcm)


def read_wav(path: Path) -> np.ndarray:
    """Read a 16-bit PCM WAV (any rate, mono or stereo) as int16 mono at 48 kHz."""
    try:
        with wave.open(str(path), "rb") as w:
            channels = w.getnchannels()
            width = w.getsampwidth()
            rate = w.getframerate()
            raw = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise AudioError(f"cannot read {path}: {exc}") from exc
    if width != 2:
        raise AudioError(f"cannot read {path}: only 16-bit PCM WAV is supported")
    pcm = np.frombuffer(raw, dtype="<i2")
    pcm = pcm[: len(pcm) - len(pcm) % channels].reshape(-1, channels)
    # Mean of int16 channels fits in int16; no clipping needed.
    mono: np.ndarray = pcm.astype(np.int32).mean(axis=1).round().astype(np.int16)
    if rate != SAMPLE_RATE and len(mono):
        resampled: np.ndarray = soxr.resample(mono, rate, SAMPLE_RATE)
        mono = resampled.astype(np.int16)
    return mono


class WavSink:
    """Writes frames to a 48 kHz mono 16-bit WAV as they come."""

    def __init__(self, path: Path) -> None:
        self._path = path
        # Open the file ourselves: wave.open(name) leaves a broken object whose
        # __del__ raises when the path cannot be created.
        try:
            self._file: BinaryIO | None = path.open("wb")
        except OSError as exc:
            raise AudioError(f"cannot write {path}: {exc}") from exc
        self._wav: wave.Wave_write | None = wave.open(self._file, "wb")  # noqa: SIM115
        self._wav.setnchannels(CHANNELS)
        self._wav.setsampwidth(2)
        self._wav.setframerate(SAMPLE_RATE)

    def write(self, frame: np.ndarray) -> None:
        _check_frame(frame)
        if self._wav is None:
            raise AudioError(f"cannot write {self._path}: sink is closed")
        try:
            self._wav.writeframes(frame.astype("<i2").tobytes())
        except OSError as exc:
            raise AudioError(f"cannot write {self._path}: {exc}") from exc

    def close(self) -> None:
        # wave patches the RIFF and data sizes in the header on close.
        wav, file = self._wav, self._file
        self._wav = self._file = None
        try:
            if wav is not None:
                wav.close()
        except OSError as exc:
            raise AudioError(f"cannot write {self._path}: {exc}") from exc
        finally:
            if file is not None:
                file.close()


class NullSink:
    """Discards every frame (still checks the format, to catch bugs)."""

    def write(self, frame: np.ndarray) -> None:
        _check_frame(frame)

    def close(self) -> None:
        pass


def _sounddevice() -> ModuleType:
    try:
        return importlib.import_module("sounddevice")
    except (ImportError, OSError) as exc:
        # sounddevice raises OSError when the PortAudio library is missing.
        raise AudioError(PORTAUDIO_MISSING) from exc


def _device_id(spec: str) -> int | str | None:
    if spec == "default":
        return None
    return int(spec) if spec.isdigit() else spec


def _open_stream(stream_type: str, direction: str, spec: str) -> Any:
    """Open and start a 20 ms mono int16 PortAudio stream, or raise AudioError."""
    sd = _sounddevice()
    try:
        stream = getattr(sd, stream_type)(
            samplerate=SAMPLE_RATE,
            channels=CHANNELS,
            dtype="int16",
            blocksize=FRAME_SAMPLES,
            device=_device_id(spec),
        )
        stream.start()
    except Exception as exc:  # PortAudioError, ValueError for unknown devices
        raise AudioError(f"cannot open {direction} device {spec!r}: {exc}") from exc
    return stream


class DeviceSource:
    """Captures from a sound card through sounddevice (PortAudio); blocks per frame."""

    def __init__(self, spec: str) -> None:
        self._stream = _open_stream("InputStream", "input", spec)
        self._spec = spec

    def read(self) -> np.ndarray | None:
        try:
            data, _overflowed = self._stream.read(FRAME_SAMPLES)
        except Exception as exc:
            raise AudioError(f"input device {self._spec!r} failed: {exc}") from exc
        return np.asarray(data, dtype=np.int16).reshape(-1)[:FRAME_SAMPLES].copy()

    def close(self) -> None:
        self._stream.close()


class DeviceSink:
    """Plays to a sound card through sounddevice (PortAudio); blocks when full."""

    def __init__(self, spec: str) -> None:
        self._stream = _open_stream("OutputStream", "output", spec)
        self._spec = spec

    def write(self, frame: np.ndarray) -> None:
        _check_frame(frame)
        try:
            self._stream.write(frame.reshape(-1, CHANNELS))
        except Exception as exc:
            raise AudioError(f"output device {self._spec!r} failed: {exc}") from exc

    def close(self) -> None:
        self._stream.close()


def _parse_tone(spec: str) -> float:
    if spec == "tone":
        return DEFAULT_TONE_HZ
    text = spec.removeprefix("tone:")
    try:
        hz = float(text)
    except ValueError:
        raise AudioError(f"bad source {spec!r}: tone frequency must be a number") from None
    if not 0 < hz < SAMPLE_RATE / 2:
        raise AudioError(f"bad source {spec!r}: tone frequency must be in (0, 24000) Hz")
    return hz


def _check_not_a_file(spec: str, kind: str) -> None:
    if not spec:
        raise AudioError(f"empty audio {kind}")
    suffix = Path(spec).suffix.lower()
    if "/" in spec or suffix in _OTHER_AUDIO_SUFFIXES:
        raise AudioError(f"bad {kind} {spec!r}: only .wav files are supported")


def open_source(spec: str) -> Source:
    """Open a source by its command-line spec; AudioError if it cannot be opened."""
    if spec == "silence":
        return SilenceSource()
    if spec == "tone" or spec.startswith("tone:"):
        return ToneSource(_parse_tone(spec))
    if spec.lower().endswith(".wav"):
        return ArraySource(read_wav(Path(spec)))
    if spec == "null":
        raise AudioError("bad source 'null': null is a sink; use 'silence' as a source")
    _check_not_a_file(spec, "source")
    return DeviceSource(spec)


def open_sink(spec: str) -> Sink:
    """Open a sink by its command-line spec; AudioError if it cannot be opened."""
    if spec == "null":
        return NullSink()
    if spec.lower().endswith(".wav"):
        return WavSink(Path(spec))
    if spec in ("silence", "tone") or spec.startswith("tone:"):
        raise AudioError(f"bad sink {spec!r}: that is a source; use 'null' to discard audio")
    _check_not_a_file(spec, "sink")
    return DeviceSink(spec)
