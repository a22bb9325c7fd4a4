"""Audio sources and sinks: generators, WAV files and sound cards.

Here, not in ``bangor.audio``, because it does I/O. Everything in ``bangor.audio``
works on int16 mono frames at SAMPLE_RATE of the client's frame duration (10,
20 or 40 ms; FRAME_SAMPLES by default); a source delivers frames of the length
it was opened for, and a sink accepts exactly those.

Specs (as on the command line):
  source: ``silence`` | ``tone`` | ``tone:HZ`` | ``FILE.wav`` | ``default`` | DEVICE
  sink:   ``null`` | ``FILE.wav`` | ``default`` | DEVICE
DEVICE is a PortAudio device index or part of its name, as `bangor devices` lists.

No source or sink blocks: the caller ticks once per frame. File and generator
sources return the next frame at once; a device source returns the oldest
captured frame, or silence while none has come. A device sink queues the frame
for the sound card's callback. A device that fails or goes away mid-call raises
AudioError once from read()/write(); after that the source ends (None) and the
sink discards.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import threading
import time
import wave
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO, Literal, Protocol

import numpy as np
import soxr

from bangor.errors import AudioError, DeviceError
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
    """Delivers frames (10, 20 or 40 ms, fixed when opened) of int16 mono PCM at 48 kHz."""

    def read(self) -> np.ndarray | None:
        """The next frame, or None at the end of the stream."""
        ...

    def close(self) -> None:
        """Release the file or device; idempotent."""
        ...


class Sink(Protocol):
    """Consumes frames (10, 20 or 40 ms, fixed when opened) of int16 mono PCM at 48 kHz."""

    def write(self, frame: np.ndarray) -> None:
        """Play or store one frame."""
        ...

    def close(self) -> None:
        """Flush and release the file or device; idempotent."""
        ...


def _check_frame(frame: np.ndarray, samples: int) -> None:
    if frame.dtype != np.int16 or frame.shape != (samples,):
        raise AudioError(
            f"a frame must be {samples} int16 samples, got {frame.dtype} {frame.shape}"
        )


def _check_samples(samples: int) -> int:
    # A whole number of 2.5 ms steps, as Opus frames are, up to Opus's 120 ms.
    if not 0 < samples <= SAMPLE_RATE * 120 // 1000 or samples % (SAMPLE_RATE // 400):
        raise AudioError(f"a frame of {samples} samples is not a valid Opus frame length")
    return samples


class SilenceSource:
    """Endless digital silence."""

    def __init__(self, frame_samples: int = FRAME_SAMPLES) -> None:
        self._samples = _check_samples(frame_samples)

    def read(self) -> np.ndarray | None:
        return np.zeros(self._samples, dtype=np.int16)

    def close(self) -> None:
        pass


class ToneSource:
    """Endless sine wave, phase continuous from frame to frame."""

    def __init__(self, hz: float = DEFAULT_TONE_HZ, frame_samples: int = FRAME_SAMPLES) -> None:
        self._hz = hz
        self._samples = _check_samples(frame_samples)
        self._phase = 0.0
        self._step = 2 * math.pi * hz / SAMPLE_RATE

    def read(self) -> np.ndarray | None:
        phases = self._phase + self._step * np.arange(self._samples)
        # Keep the phase small so float precision does not drift over hours.
        self._phase = (self._phase + self._step * self._samples) % (2 * math.pi)
        frame: np.ndarray = np.round(TONE_AMPLITUDE * np.sin(phases)).astype(np.int16)
        return frame

    def close(self) -> None:
        pass


class ArraySource:
    """Plays a 48 kHz int16 mono array once in frames (last one zero-padded)."""

    def __init__(self, pcm: np.ndarray, frame_samples: int = FRAME_SAMPLES) -> None:
        self._pcm = pcm
        self._samples = _check_samples(frame_samples)
        self._pos = 0

    def read(self) -> np.ndarray | None:
        if self._pos >= len(self._pcm):
            return None
        samples = self._samples
        frame = self._pcm[self._pos : self._pos + samples]
        self._pos += samples
        if len(frame) < samples:
            frame = np.concatenate([frame, np.zeros(samples - len(frame), np.int16)])
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

    def __init__(self, path: Path, frame_samples: int = FRAME_SAMPLES) -> None:
        self._path = path
        self._samples = _check_samples(frame_samples)
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
        _check_frame(frame, self._samples)
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

    def __init__(self, frame_samples: int = FRAME_SAMPLES) -> None:
        self._samples = _check_samples(frame_samples)

    def write(self, frame: np.ndarray) -> None:
        _check_frame(frame, self._samples)

    def close(self) -> None:
        pass


# --- sound cards: sounddevice over PortAudio ------------------------------------------

# Captured audio waiting for read(): 100 ms (5 frames of 20 ms; at least 2 frames).
# When the reader falls behind, the oldest go, so the capture delay cannot build up.
CAPTURE_QUEUE_MS = 100
# Audio waiting for the sound card: 100 ms. Beyond that the oldest is dropped, so the
# playback delay stays bounded when the card's clock runs slower than the loop's.
PLAYBACK_QUEUE_MS = 100
PLAYBACK_QUEUE_SAMPLES = SAMPLE_RATE * PLAYBACK_QUEUE_MS // 1000
# For the default 20 ms frames.
CAPTURE_QUEUE_FRAMES = CAPTURE_QUEUE_MS // (FRAME_SAMPLES * 1000 // SAMPLE_RATE)
PLAYBACK_QUEUE_FRAMES = PLAYBACK_QUEUE_SAMPLES // FRAME_SAMPLES
# A running stream without a callback for this long counts as gone: some drivers hang
# rather than fail when a USB device is pulled.
DEVICE_STALL_TIMEOUT = 2.0
# PortAudio's suggested latency: 'low' keeps the card's own buffer short for talking.
DEVICE_LATENCY = "low"
# How long close() waits for queued playback to reach the card.
CLOSE_DRAIN_TIMEOUT = PLAYBACK_QUEUE_MS / 1000 + 0.1

NO_DEVICES = (
    "no audio devices found: PortAudio sees no sound card here (none connected, or "
    "this user may not access them, e.g. not in the 'audio' group)"
)
_LIST_HINT = "run `bangor devices` to list them"

Kind = Literal["input", "output"]


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device as `bangor devices` shows it."""

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    is_default_input: bool
    is_default_output: bool

    def channels(self, kind: Kind) -> int:
        return self.max_input_channels if kind == "input" else self.max_output_channels


@dataclass
class DeviceStats:
    """What went wrong quietly: each of these is audible, none stops the call."""

    underruns: int = 0  # source: read() found no frame; sink: the card found too little
    dropped: int = 0  # frames thrown away because a queue was full
    xruns: int = 0  # callbacks whose PortAudio status flagged an over- or underflow


def _sounddevice() -> ModuleType:
    try:
        return importlib.import_module("sounddevice")
    except (ImportError, OSError) as exc:
        # sounddevice raises OSError when the PortAudio library is missing.
        raise DeviceError(PORTAUDIO_MISSING) from exc
    except Exception as exc:  # PortAudioError: the library is there but Pa_Initialize failed
        raise DeviceError(f"PortAudio failed to start: {exc}") from exc


def _default_index(value: Any) -> int | None:
    index = None if value is None else int(value)
    return index if index is not None and index >= 0 else None


def _query(sd: ModuleType) -> list[DeviceInfo]:
    try:
        devices = list(sd.query_devices())
        hostapis = list(sd.query_hostapis())
        default_in, default_out = (_default_index(i) for i in sd.default.device)
    except Exception as exc:  # PortAudioError
        raise DeviceError(f"cannot list audio devices: {exc}") from exc
    return [
        DeviceInfo(
            index=index,
            name=str(device["name"]),
            hostapi=str(hostapis[device["hostapi"]]["name"]),
            max_input_channels=int(device["max_input_channels"]),
            max_output_channels=int(device["max_output_channels"]),
            default_samplerate=float(device["default_samplerate"]),
            is_default_input=index == default_in,
            is_default_output=index == default_out,
        )
        for index, device in enumerate(devices)
    ]


def list_devices() -> list[DeviceInfo]:
    """Every device PortAudio sees (maybe none); AudioError when PortAudio is missing."""
    return _query(_sounddevice())


def select_device(devices: list[DeviceInfo], spec: str, kind: Kind) -> DeviceInfo:
    """The device ``spec`` names: ``default``, an index, or part of a name (any case)."""
    if not devices:
        raise DeviceError(NO_DEVICES)
    if spec == "default":
        for device in devices:
            if device.is_default_input if kind == "input" else device.is_default_output:
                return device
        raise DeviceError(
            f"there is no default {kind} device: pick one by name or index; {_LIST_HINT}"
        )
    if spec.isdigit():
        found = [d for d in devices if d.index == int(spec)]
        if not found:
            raise DeviceError(f"no audio device has index {spec}: {_LIST_HINT}")
        if not found[0].channels(kind):
            raise DeviceError(
                f"audio device {spec} {found[0].name!r} has no {kind} channels: {_LIST_HINT}"
            )
        return found[0]
    usable = [d for d in devices if d.channels(kind)]
    needle = spec.casefold()
    # An exact name wins over the longer names that contain it.
    matches = [d for d in usable if d.name.casefold() == needle] or [
        d for d in usable if needle in d.name.casefold()
    ]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DeviceError(f"no {kind} device matches {spec!r}: {_LIST_HINT}")
    listing = ", ".join(f"{d.index} {d.name!r}" for d in matches)
    raise DeviceError(f"{spec!r} matches several {kind} devices ({listing}): pick one by index")


class _DeviceStream:
    """What capture and playback share: device choice, the stream, failure reporting.

    The PortAudio callback runs on its own thread and must never raise (PortAudio
    would print a traceback and end the stream), so it only records a failure; the
    next read() or write() on the event loop reports it, once, as AudioError.
    """

    _kind: Kind
    _stream_class: str

    def __init__(
        self,
        spec: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        frame_samples: int = FRAME_SAMPLES,
    ) -> None:
        self.frame_samples = _check_samples(frame_samples)
        self._prepare()  # the subclass's buffers exist before the first callback can run
        sd = _sounddevice()
        self.device = select_device(_query(sd), spec, self._kind)
        self.label = f"{self._kind} device {self.device.index} {self.device.name!r}"
        self.stats = DeviceStats()
        self._clock = clock
        # A condition, so that DeviceSink.drain can wait for the callback.
        self._lock = threading.Condition()
        self._failure: str | None = None
        self._reported = False
        self._closed = False
        self._last_callback = clock()
        try:
            self._stream: Any = getattr(sd, self._stream_class)(
                samplerate=SAMPLE_RATE,
                channels=CHANNELS,
                dtype="int16",
                blocksize=frame_samples,  # the card's period: one of our frames
                device=self.device.index,
                latency=DEVICE_LATENCY,
                callback=self._callback,
                finished_callback=self._finished,
            )
        except Exception as exc:  # PortAudioError: busy, unsupported rate, ...
            raise DeviceError(f"cannot open {self.label}: {exc}") from exc
        try:
            self._stream.start()
        except Exception as exc:
            self._closed = True
            with contextlib.suppress(Exception):
                self._stream.close()
            raise DeviceError(f"cannot start {self.label}: {exc}") from exc

    def _prepare(self) -> None:
        raise NotImplementedError

    def _callback(self, data: Any, frames: int, when: Any, status: Any) -> None:
        raise NotImplementedError

    def _fail(self, why: str) -> None:
        with self._lock:
            if self._failure is None:
                self._failure = why
            self._lock.notify_all()

    def _finished(self) -> None:
        # PortAudio ends a stream by itself only when the device failed or went away.
        if not self._closed:
            self._fail("stopped")

    def _working(self) -> bool:
        """False once a failure was reported; raises AudioError the first time."""
        if self._reported:
            return False
        failure = self._failure
        if failure is None:
            try:
                active = bool(self._stream.active)
            except Exception as exc:  # PortAudioError: the stream is broken
                failure = f"failed ({exc})"
            else:
                if not active:
                    failure = "stopped"
                elif self._clock() - self._last_callback > DEVICE_STALL_TIMEOUT:
                    failure = f"delivered nothing for {DEVICE_STALL_TIMEOUT:g} s"
        if failure is None:
            return True
        self._reported = True
        raise AudioError(f"{self.label} {failure}: was it unplugged? {_LIST_HINT}")

    def _close_stream(self, *, play_out: bool) -> None:
        self._closed = True
        # The device may be gone already: closing must not fail then.
        with contextlib.suppress(Exception):
            if play_out and self._failure is None:
                self._stream.stop()  # lets the card play what it holds
            self._stream.close()


class DeviceSource(_DeviceStream):
    """Captures from a sound card; read() never blocks.

    The capture callback queues frames of ``frame_samples`` (at most CAPTURE_QUEUE_MS
    worth, dropping the oldest); read() takes the oldest one, or gives silence while
    none is there.
    """

    _kind = "input"
    _stream_class = "RawInputStream"

    def _prepare(self) -> None:
        # Called on PortAudio's thread once per frame captured (after it is queued), for
        # callers that pace on the sound card's clock; it must be quick and never raise.
        self.on_frame: Callable[[], None] | None = None
        self._frames: deque[bytes] = deque()
        self._partial = bytearray()  # bytes of a frame still being captured
        self._frame_bytes = self.frame_samples * 2  # int16 mono
        frame_ms = self.frame_samples * 1000 // SAMPLE_RATE
        self._max_frames = max(round(CAPTURE_QUEUE_MS / frame_ms), 2)

    def _callback(self, data: Any, frames: int, when: Any, status: Any) -> None:
        try:
            self._last_callback = self._clock()
            captured = bytes(data)
            with self._lock:
                if status:
                    self.stats.xruns += 1
                self._partial += captured
                size = self._frame_bytes
                captured_frames = 0
                while len(self._partial) >= size:
                    if len(self._frames) >= self._max_frames:
                        self._frames.popleft()
                        self.stats.dropped += 1
                    self._frames.append(bytes(self._partial[:size]))
                    del self._partial[:size]
                    captured_frames += 1
                if self._frames:
                    self._lock.notify_all()
            on_frame = self.on_frame
            if on_frame is not None:
                for _ in range(captured_frames):
                    on_frame()
        except Exception as exc:
            self._fail(f"failed in its callback ({exc!r})")

    def read(self) -> np.ndarray | None:
        if self._closed or not self._working():
            return None  # the failure was reported once: nothing more comes
        with self._lock:
            data = self._frames.popleft() if self._frames else None
            if data is None:
                self.stats.underruns += 1
        if data is None:
            return np.zeros(self.frame_samples, dtype=np.int16)
        return np.frombuffer(data, dtype=np.int16).copy()

    def wait(self, timeout: float) -> bool:
        """Wait until a captured frame is queued, for callers that pace on the device."""
        with self._lock:
            return self._lock.wait_for(
                lambda: bool(self._frames) or self._failure is not None, timeout
            ) and bool(self._frames)

    def close(self) -> None:
        if not self._closed:
            self._close_stream(play_out=False)


class DeviceSink(_DeviceStream):
    """Plays to a sound card; write() never blocks.

    write() queues the frame (at most PLAYBACK_QUEUE_MS, dropping the oldest); the
    playback callback takes what it needs and plays silence when short.
    """

    _kind = "output"
    _stream_class = "RawOutputStream"

    def _prepare(self) -> None:
        self._queue = bytearray()

    def _callback(self, data: Any, frames: int, when: Any, status: Any) -> None:
        try:
            self._last_callback = self._clock()
            size = len(data)
            with self._lock:
                if status:
                    self.stats.xruns += 1
                chunk = bytes(self._queue[:size])
                del self._queue[:size]
                if len(chunk) < size:
                    self.stats.underruns += 1
                if not self._queue:
                    self._lock.notify_all()
            data[: len(chunk)] = chunk
            data[len(chunk) :] = bytes(size - len(chunk))
        except Exception as exc:
            self._fail(f"failed in its callback ({exc!r})")
            with contextlib.suppress(Exception):
                data[:] = bytes(len(data))  # play silence, not whatever the buffer held

    def write(self, frame: np.ndarray) -> None:
        _check_frame(frame, self.frame_samples)
        if self._closed:
            raise AudioError(f"cannot write to {self.label}: sink is closed")
        if not self._working():
            return  # the failure was reported once: discard from now on
        with self._lock:
            self._queue += frame.tobytes()
            excess = len(self._queue) - PLAYBACK_QUEUE_SAMPLES * 2
            if excess > 0:
                del self._queue[:excess]
                self.stats.dropped += -(-excess // (self.frame_samples * 2))

    def queued(self) -> int:
        """Samples written but not yet handed to the card."""
        with self._lock:
            return len(self._queue) // 2

    def drain(self, timeout: float) -> bool:
        """Wait until the card has taken every queued sample; False on timeout."""
        with self._lock:
            return (
                self._lock.wait_for(lambda: not self._queue or self._failure is not None, timeout)
                and not self._queue
            )

    def close(self) -> None:
        if self._closed:
            return
        if self._failure is None:
            self.drain(CLOSE_DRAIN_TIMEOUT)
        self._close_stream(play_out=True)


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


def _is_tone(spec: str) -> bool:
    return spec == "tone" or spec.startswith("tone:")


def _is_wav(spec: str) -> bool:
    return spec.lower().endswith(".wav")


def is_generated_or_file(spec: str) -> bool:
    """Whether source ``spec`` is silence, a tone or a WAV file, not a sound card."""
    return spec == "silence" or _is_tone(spec) or _is_wav(spec)


def open_source(spec: str, frame_samples: int = FRAME_SAMPLES) -> Source:
    """Open a source of ``frame_samples`` frames by its command-line spec.

    AudioError if it cannot be opened.
    """
    if spec == "silence":
        return SilenceSource(frame_samples)
    if _is_tone(spec):
        return ToneSource(_parse_tone(spec), frame_samples)
    if _is_wav(spec):
        return ArraySource(read_wav(Path(spec)), frame_samples)
    if spec == "null":
        raise AudioError("bad source 'null': null is a sink; use 'silence' as a source")
    _check_not_a_file(spec, "source")
    return DeviceSource(spec, frame_samples=frame_samples)


def open_sink(spec: str, frame_samples: int = FRAME_SAMPLES) -> Sink:
    """Open a sink of ``frame_samples`` frames by its command-line spec.

    AudioError if it cannot be opened.
    """
    if spec == "null":
        return NullSink(frame_samples)
    if _is_wav(spec):
        return WavSink(Path(spec), frame_samples)
    if spec == "silence" or _is_tone(spec):
        raise AudioError(f"bad sink {spec!r}: that is a source; use 'null' to discard audio")
    _check_not_a_file(spec, "sink")
    return DeviceSink(spec, frame_samples=frame_samples)
