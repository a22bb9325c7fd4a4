"""Recording to Ogg Opus: judged by opusinfo, ffprobe and opusdec, and on a full disk."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bangor.audio.ogg import packets_of, read_pages
from bangor.errors import AudioError
from bangor.io.devices import ToneSource
from bangor.io.recording import DEFAULT_RECORD_BITRATE, OpusFileSink
from bangor.settings import FRAME_SAMPLES, SAMPLE_RATE
from tests.audiocheck import (
    align,
    envelope_correlation,
    make_speech_wav,
    pesq_wb,
    read_wav_48k,
)

SPEECH = (
    "Please call Stella. Ask her to bring these things with her from the store: "
    "six spoons of fresh snow peas, five thick slabs of blue cheese, "
    "and maybe a snack for her brother Bob."
)
TONE_HZ = 440.0
TONE_SECONDS = 3
# Decoded audio must line up with the input to this many samples. Not 0: the
# encoder's VOIP mode high-passes its input, and that filter's phase lead moves
# low tones earlier (measured: 21 samples at 220 Hz, 7 at 440 Hz, 3 at 1 kHz, 3
# for speech; 0 in AUDIO mode, see test_ogg). A wrong pre-skip is off by ~312.
ALIGN_TOLERANCE = 10
MIN_PESQ = 4.0  # measured 4.44 at 64 kbit/s; transparent speech is about 4.5
MIN_ENVELOPE_CORRELATION = 0.97  # measured 0.99
TMPFS_BYTES = 64 * 1024  # about 8 s of 64 kbit/s audio


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: install {package}")
    return path


def opusinfo(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("opusinfo", "opus-tools"), path], capture_output=True, text=True, check=False
    )


FFPROBE_ARGS = ("-v", "error", "-show_streams", "-show_format", "-of", "json")


def ffprobe(path: Path) -> dict[str, dict[str, str]]:
    out = subprocess.run(
        [tool("ffprobe", "ffmpeg"), *FFPROBE_ARGS, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(out.stdout)
    assert len(data["streams"]) == 1
    return {"stream": data["streams"][0], "format": data["format"]}


def opusdec(path: Path, wav: Path | None = None) -> np.ndarray:
    wav = wav or path.with_suffix(".wav")
    subprocess.run([tool("opusdec", "opus-tools"), "--quiet", path, wav], check=True)
    return read_wav_48k(wav)


def record(path: Path, pcm: np.ndarray) -> None:
    with OpusFileSink(path) as sink:
        for i in range(0, len(pcm), FRAME_SAMPLES):
            sink.write(pcm[i : i + FRAME_SAMPLES])


def frames_of(pcm: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.pad(pcm, (0, -len(pcm) % FRAME_SAMPLES))
    return out


def peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)[np.argmax(spectrum)])


@dataclass(frozen=True)
class Recording:
    pcm: np.ndarray  # what was written, int16
    path: Path


@pytest.fixture(scope="module")
def tone(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    source = ToneSource(TONE_HZ)
    frames = [source.read() for _ in range(TONE_SECONDS * SAMPLE_RATE // FRAME_SAMPLES)]
    pcm = np.concatenate([f for f in frames if f is not None])
    path = tmp_path_factory.mktemp("tone") / "tone.opus"
    record(path, pcm)
    return Recording(pcm, path)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    tmp = tmp_path_factory.mktemp("speech")
    make_speech_wav(tmp / "speech.wav", SPEECH)
    pcm = frames_of(np.round(read_wav_48k(tmp / "speech.wav") * 32767).astype(np.int16))
    path = tmp / "speech.opus"
    record(path, pcm)
    return Recording(pcm, path)


@pytest.mark.parametrize("name", ["tone", "speech"])
def test_opusinfo_accepts(name: str, request: pytest.FixtureRequest) -> None:
    rec: Recording = request.getfixturevalue(name)
    info = opusinfo(rec.path)
    text = info.stdout + info.stderr
    assert info.returncode == 0, text
    assert "WARNING" not in text and "error" not in text.lower(), text
    assert "Pre-skip: 312" in text
    assert "Packet duration:   20.0ms (max),   20.0ms (avg),   20.0ms (min)" in text
    seconds = len(rec.pcm) / SAMPLE_RATE
    assert f"Playback length: 0m:{seconds:06.3f}s" in text  # exact, thanks to end trimming


@pytest.mark.parametrize("name", ["tone", "speech"])
def test_ffprobe_reads_opus_48k_mono(name: str, request: pytest.FixtureRequest) -> None:
    rec: Recording = request.getfixturevalue(name)
    probe = ffprobe(rec.path)
    stream = probe["stream"]
    assert stream["codec_name"] == "opus"
    assert int(stream["sample_rate"]) == SAMPLE_RATE
    assert int(stream["channels"]) == 1
    assert probe["format"]["format_name"] == "ogg"
    seconds = len(rec.pcm) / SAMPLE_RATE
    # ffmpeg counts the pre-skip into the duration (it does so for opusenc files too).
    assert abs(float(probe["format"]["duration"]) - seconds) < FRAME_SAMPLES / SAMPLE_RATE


def test_tone_decodes_to_the_same_tone(tone: Recording) -> None:
    decoded = opusdec(tone.path)
    assert len(decoded) == len(tone.pcm)  # pre-skip and end trimming undone exactly
    assert abs(peak_hz(decoded) - TONE_HZ) < 1.0
    reference = tone.pcm / 32768
    # A tone repeats every ~109 samples: search lags within half a period only.
    inner = slice(FRAME_SAMPLES, -FRAME_SAMPLES)
    errors = {
        lag: float(np.mean((np.roll(reference, -lag)[inner] - decoded[inner]) ** 2))
        for lag in range(-50, 51)
    }
    lag = min(errors, key=errors.__getitem__)
    assert abs(lag) <= ALIGN_TOLERANCE, lag
    rms_in = float(np.sqrt(np.mean(reference[inner] ** 2)))
    rms_out = float(np.sqrt(np.mean(decoded[inner] ** 2)))
    assert abs(20 * np.log10(rms_out / rms_in)) < 0.5  # same loudness


def test_speech_decodes_aligned_and_clean(speech: Recording) -> None:
    decoded = opusdec(speech.path)
    assert len(decoded) == len(speech.pcm)
    reference = speech.pcm / 32768
    delay, aligned = align(reference, decoded)
    assert abs(delay) <= ALIGN_TOLERANCE, delay
    assert envelope_correlation(reference, aligned) > MIN_ENVELOPE_CORRELATION
    assert pesq_wb(reference, aligned) > MIN_PESQ


def test_size_follows_the_bitrate(speech: Recording) -> None:
    seconds = len(speech.pcm) / SAMPLE_RATE
    kbit_s = speech.path.stat().st_size * 8 / seconds / 1000
    # VBR: speech with pauses lands a little under the target; Ogg adds about 1.5 %.
    assert 0.6 * DEFAULT_RECORD_BITRATE / 1000 < kbit_s < 1.1 * DEFAULT_RECORD_BITRATE / 1000


def test_pages_reach_the_file_as_they_come(tmp_path: Path) -> None:
    path = tmp_path / "live.opus"
    sink = OpusFileSink(path)
    source = ToneSource()
    for _ in range(3 * SAMPLE_RATE // FRAME_SAMPLES):
        frame = source.read()
        assert frame is not None
        sink.write(frame)
    # Not closed (as after a crash): every second is on disk already, bar the last.
    pages = list(read_pages(path.read_bytes()))
    assert pages[0].bos and not pages[-1].eos
    assert pages[-1].granule == 2 * SAMPLE_RATE
    assert "EOS not set" in opusinfo(path).stdout
    sink.close()
    assert list(read_pages(path.read_bytes()))[-1].eos


def test_empty_recording_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "empty.opus"
    OpusFileSink(path).close()
    info = opusinfo(path)
    assert info.returncode == 0 and "WARNING" not in info.stdout, info.stdout
    assert "Playback length: 0m:00.000s" in info.stdout
    assert len(opusdec(path)) == 0


def test_close_is_idempotent_and_write_after_close_fails(tmp_path: Path) -> None:
    path = tmp_path / "x.opus"
    sink = OpusFileSink(path, serial=42)
    sink.write(np.zeros(FRAME_SAMPLES, dtype=np.int16))
    sink.close()
    size = path.stat().st_size
    sink.close()
    assert path.stat().st_size == size
    with pytest.raises(AudioError, match="closed"):
        sink.write(np.zeros(FRAME_SAMPLES, dtype=np.int16))
    assert {p.serial for p in read_pages(path.read_bytes())} == {42}
    assert sink.error is None
    assert sink.seconds == FRAME_SAMPLES / SAMPLE_RATE


def test_bad_frame_raises_and_recording_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "x.opus"
    with OpusFileSink(path) as sink:
        with pytest.raises(AudioError, match="int16"):
            sink.write(np.zeros(FRAME_SAMPLES, dtype=np.float32))
        with pytest.raises(AudioError, match="960"):
            sink.write(np.zeros(100, dtype=np.int16))
        sink.write(np.zeros(FRAME_SAMPLES, dtype=np.int16))
    assert len(packets_of(list(read_pages(path.read_bytes())))) == 2 + 2  # headers, frame, pad


@pytest.mark.parametrize("where", ["missing-dir/call.opus", "."])
def test_unwritable_path(tmp_path: Path, where: str) -> None:
    path = tmp_path / where
    with pytest.raises(AudioError, match=rf"^cannot record to {re.escape(str(path))}: \w"):
        OpusFileSink(path)


def test_bad_bitrate() -> None:
    with pytest.raises(AudioError, match="bitrate"):
        OpusFileSink(Path("/nonexistent/never-created.opus"), bitrate=1000)


def test_dev_full_fails_at_once() -> None:
    # /dev/full answers every write with ENOSPC.
    with pytest.raises(AudioError, match=r"^cannot write recording /dev/full: No space left"):
        OpusFileSink(Path("/dev/full"))


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", mount_point],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", mount_point], check=True)


def test_disk_full(tiny_fs: Path, tmp_path: Path) -> None:
    path = tiny_fs / "call.opus"
    sink = OpusFileSink(path)
    source = ToneSource()
    errors: list[AudioError] = []
    frames = 0
    for _ in range(60 * SAMPLE_RATE // FRAME_SAMPLES):
        frame = source.read()
        assert frame is not None
        try:
            sink.write(frame)
            frames += not errors  # frames accepted before the failure
        except AudioError as exc:
            errors.append(exc)
    sink.close()
    sink.close()
    # One clean error naming the file; later writes and close are no-ops.
    assert len(errors) == 1
    message = str(errors[0])
    assert message.startswith(f"cannot write recording {path}: No space left on device;")
    assert sink.error is errors[0]

    data = path.read_bytes()
    assert 0 < len(data) <= TMPFS_BYTES
    pages = list(read_pages(data))  # every page complete, CRCs good, nothing after them
    assert sum(p.size for p in pages) == len(data)
    assert pages[0].bos and not any(p.eos for p in pages)
    kept = (pages[-1].granule - 312) / SAMPLE_RATE
    assert f"the file keeps the first {kept:.1f} s" in message
    assert kept > 5  # most of the 64 KiB holds audio
    # The page that failed held the last second written; the ones before are whole.
    assert len(packets_of(pages)) - 2 == frames - SAMPLE_RATE // FRAME_SAMPLES

    # What is there plays: the only complaint is the missing end of stream.
    info = opusinfo(path)
    warnings = [line for line in info.stdout.splitlines() if "WARNING" in line]
    assert warnings == ["WARNING: EOS not set on stream 1 (normal for live streams)"]
    assert ffprobe(path)["stream"]["codec_name"] == "opus"
    decoded = opusdec(path, tmp_path / "decoded.wav")  # not on the full disk
    assert len(decoded) == pages[-1].granule - 312
    assert abs(peak_hz(decoded) - 440.0) < 1.0


@pytest.mark.parametrize("ms", [10, 40])
def test_frames_of_other_durations_record_the_same_tone(ms: int, tmp_path: Path) -> None:
    samples = SAMPLE_RATE * ms // 1000
    source = ToneSource(TONE_HZ, samples)
    frames = [source.read() for _ in range(2000 // ms)]
    pcm = np.concatenate([f for f in frames if f is not None])
    path = tmp_path / f"tone{ms}.opus"
    with OpusFileSink(path, frame_ms=ms) as sink:
        for i in range(0, len(pcm), samples):
            sink.write(pcm[i : i + samples])
        assert sink.seconds == pytest.approx(2.0)
        with pytest.raises(AudioError):
            sink.write(np.zeros(FRAME_SAMPLES, np.int16))  # not this recording's frame
    pages = list(read_pages(path.read_bytes()))
    assert pages[-1].granule - 312 >= len(pcm)
    decoded = opusdec(path)
    assert len(decoded) == len(pcm)  # pre-skip and end trimming undone exactly
    assert abs(peak_hz(decoded) - TONE_HZ) < 1.0
    inner = slice(FRAME_SAMPLES, -FRAME_SAMPLES)
    rms_in = float(np.sqrt(np.mean((pcm[inner] / 32768) ** 2)))
    rms_out = float(np.sqrt(np.mean(decoded[inner] ** 2)))
    assert abs(20 * np.log10(rms_out / rms_in)) < 0.5
