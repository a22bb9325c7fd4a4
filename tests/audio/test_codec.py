"""Opus codec: real tones and espeak-ng speech, encoded, decoded and compared."""

from __future__ import annotations

import ctypes.util
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bangor.audio import codec, libopus
from bangor.audio.codec import OpusDecoder, OpusEncoder, packet_samples
from bangor.errors import AudioError, CodecUnavailableError
from bangor.settings import FRAME_SAMPLES, SAMPLE_RATE
from tests.audiocheck import align, make_speech_wav, pesq_wb, read_wav_48k

SPEECH = (
    "Please call Stella. Ask her to bring these things with her from the store: "
    "six spoons of fresh snow peas, five thick slabs of blue cheese, "
    "and maybe a snack for her brother Bob."
)


def tone(hz: float, frames: int, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(frames * FRAME_SAMPLES) / SAMPLE_RATE
    return np.round(amplitude * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def frames_of(pcm: np.ndarray) -> list[np.ndarray]:
    pcm = np.pad(pcm, (0, -len(pcm) % FRAME_SAMPLES))
    return [pcm[i : i + FRAME_SAMPLES] for i in range(0, len(pcm), FRAME_SAMPLES)]


def peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)[np.argmax(spectrum)])


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    path = tmp_path_factory.mktemp("speech") / "stella.wav"
    make_speech_wav(path, SPEECH)
    pcm: np.ndarray = np.round(read_wav_48k(path) * 32768).clip(-32768, 32767).astype(np.int16)
    return pcm


def round_trip(pcm: np.ndarray, encoder: OpusEncoder) -> tuple[list[bytes], np.ndarray]:
    decoder = OpusDecoder()
    packets = [encoder.encode(f) for f in frames_of(pcm)]
    out = np.concatenate([decoder.decode(p) for p in packets])
    return packets, out


def test_tone_round_trip() -> None:
    pcm = tone(1000, 50)
    packets, out = round_trip(pcm, OpusEncoder())
    assert out.dtype == np.int16
    assert len(out) == len(pcm)
    # A steady tone's delay is ambiguous by whole periods; align finds the best fit.
    _, aligned = align(pcm.astype(float), out.astype(float))
    steady = slice(5 * FRAME_SAMPLES, 40 * FRAME_SAMPLES)
    assert np.corrcoef(pcm[steady], aligned[steady])[0, 1] > 0.99
    assert abs(peak_hz(out[steady]) - 1000) < 5
    # 32 kbit/s is 80 bytes per 20 ms frame on average.
    assert 40 < np.mean([len(p) for p in packets]) < 120


def test_speech_quality_with_fec(speech: np.ndarray) -> None:
    # Default settings reserve bits for FEC (5 % expected loss); measured PESQ-WB 3.54.
    _, out = round_trip(speech, OpusEncoder())
    delay, aligned = align(speech.astype(float), out.astype(float))
    # Opus' algorithmic delay is 6.5 ms (312 samples).
    assert 290 <= delay <= 330
    assert pesq_wb(speech / 32768, aligned / 32768) > 3.3


def test_speech_quality_without_fec(speech: np.ndarray) -> None:
    # Without FEC all bits go to the voice itself; measured PESQ-WB 3.95.
    _, out = round_trip(speech, OpusEncoder(fec=False))
    _, aligned = align(speech.astype(float), out.astype(float))
    assert pesq_wb(speech / 32768, aligned / 32768) > 3.7


def _decode_with_loss(packets: list[bytes], use_fec: bool, period: int = 10) -> np.ndarray:
    """Decode as a receiver would when every ``period``-th packet is lost."""
    decoder = OpusDecoder()
    out = []
    for k, packet in enumerate(packets):
        if k % period == 3 and k + 1 < len(packets):
            out.append(decoder.decode_fec(packets[k + 1]) if use_fec else decoder.conceal())
        else:
            out.append(decoder.decode(packet))
    return np.concatenate(out)


def test_fec_recovers_lost_frames_better_than_concealment(speech: np.ndarray) -> None:
    encoder = OpusEncoder()
    packets = [encoder.encode(f) for f in frames_of(speech)]
    scores = []
    for use_fec in (True, False):
        out = _decode_with_loss(packets, use_fec)
        _, aligned = align(speech.astype(float), out.astype(float))
        scores.append(pesq_wb(speech / 32768, aligned / 32768))
    fec_score, plc_score = scores
    # 10 % isolated losses; measured PESQ-WB 3.24 with FEC, 1.88 with concealment only.
    assert fec_score > 2.8
    assert fec_score > plc_score + 0.8


def test_without_fec_decode_fec_is_concealment(speech: np.ndarray) -> None:
    # Proves the FEC ctl really reaches the encoder (opuslib's setter silently fails).
    encoder = OpusEncoder(fec=False)
    packets = [encoder.encode(f) for f in frames_of(speech)]
    with_fec = _decode_with_loss(packets, True).astype(float)
    plc_only = _decode_with_loss(packets, False).astype(float)
    # Without LBRR data libopus falls back to concealment (equal but for rounding).
    assert np.sum((with_fec - plc_only) ** 2) < 1e-6 * np.sum(plc_only**2)


def test_conceal_continues_a_tone() -> None:
    encoder, decoder = OpusEncoder(), OpusDecoder()
    for frame in frames_of(tone(600, 20)):
        decoder.decode(encoder.encode(frame))
    hidden = decoder.conceal()
    assert hidden.shape == (FRAME_SAMPLES,)
    assert hidden.dtype == np.int16
    assert np.sqrt(np.mean(hidden.astype(float) ** 2)) > 1000
    assert abs(peak_hz(hidden) - 600) < 60


def test_conceal_on_fresh_decoder_is_silence() -> None:
    assert not np.any(OpusDecoder().conceal())
    assert not np.any(OpusDecoder().decode_fec(b""))


@pytest.mark.parametrize(
    "pcm",
    [
        np.zeros(FRAME_SAMPLES - 1, np.int16),
        np.zeros(FRAME_SAMPLES + 1, np.int16),
        np.zeros((FRAME_SAMPLES, 2), np.int16),
        np.zeros(FRAME_SAMPLES, np.float32),
    ],
)
def test_encode_rejects_wrong_frames(pcm: np.ndarray) -> None:
    with pytest.raises(AudioError):
        OpusEncoder().encode(pcm)


def test_encode_accepts_non_contiguous_frame() -> None:
    pcm = tone(1000, 1)
    strided = np.repeat(pcm, 2)[::2]
    assert not strided.flags.c_contiguous
    encoder = OpusEncoder()
    assert encoder.encode(strided) == OpusEncoder().encode(pcm)


@pytest.mark.parametrize(
    ("bitrate", "complexity", "loss"), [(10, 9, 5), (32000, 11, 5), (32000, 9, -1)]
)
def test_encoder_rejects_bad_settings(bitrate: int, complexity: int, loss: int) -> None:
    with pytest.raises(AudioError):
        OpusEncoder(bitrate=bitrate, complexity=complexity, expected_loss=loss)


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (b"", "empty"),
        (b"\xff", "corrupt"),
        (b"\xff\xff\xff", "corrupt"),
    ],
)
def test_decode_rejects_corrupt_packets(packet: bytes, reason: str) -> None:
    encoder, decoder = OpusEncoder(), OpusDecoder()
    with pytest.raises(AudioError, match=reason):
        decoder.decode(packet)
    # The decoder stays usable: the caller conceals and carries on.
    frame = tone(1000, 1)
    assert decoder.decode(encoder.encode(frame)).shape == (FRAME_SAMPLES,)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=200))
def test_decode_garbage_never_crashes(packet: bytes) -> None:
    try:
        out = OpusDecoder().decode(packet)
    except AudioError:
        return
    # Whatever it holds, the TOC byte said so: the receiver sizes its buffer from it.
    assert out.shape == (packet_samples(packet),)
    assert out.dtype == np.int16


@pytest.mark.parametrize("frame_ms", [10, 20, 40])
@pytest.mark.parametrize("bitrate", [8_000, 40_000, 128_000])
def test_each_frame_size_round_trips_and_its_toc_says_its_duration(
    frame_ms: int, bitrate: int
) -> None:
    samples = SAMPLE_RATE * frame_ms // 1000
    encoder, decoder = OpusEncoder(bitrate=bitrate, frame_ms=frame_ms), OpusDecoder()
    pcm = tone(700, 40)
    out = []
    for i in range(0, len(pcm), samples):
        packet = encoder.encode(pcm[i : i + samples])
        # At 40 ms CELT (high bitrates) packs two 20 ms frames: code 1-3 packets.
        assert packet_samples(packet) == samples
        out.append(decoder.decode(packet))
    decoded = np.concatenate(out).astype(float)
    assert len(decoded) == len(pcm)
    steady = decoded[10 * FRAME_SAMPLES :]
    assert abs(peak_hz(steady) - 700) < 20
    assert np.sqrt(np.mean(steady**2)) > 0.5 * np.sqrt(np.mean(pcm.astype(float) ** 2))


@pytest.mark.parametrize("frame_ms", [10, 40])
def test_concealment_and_fec_make_the_lost_frames_duration(frame_ms: int) -> None:
    samples = SAMPLE_RATE * frame_ms // 1000
    encoder, decoder = OpusEncoder(frame_ms=frame_ms, expected_loss=20), OpusDecoder()
    pcm = tone(600, 20)
    packets = [encoder.encode(pcm[i : i + samples]) for i in range(0, len(pcm), samples)]
    for packet in packets[:-2]:
        decoder.decode(packet)
    for hidden in (decoder.conceal(samples), decoder.decode_fec(packets[-1], samples)):
        assert hidden.shape == (samples,)
        assert abs(peak_hz(hidden) - 600) < 60


@pytest.mark.parametrize(
    ("packet", "samples"),
    [
        (bytes([0 << 3 | 0]), 480),  # SILK NB 10 ms, one frame
        (bytes([2 << 3 | 0]), 1920),  # SILK NB 40 ms
        (bytes([3 << 3 | 1]), 5760),  # SILK 60 ms, two frames: 120 ms
        (bytes([13 << 3 | 0]), 960),  # hybrid FB 20 ms
        (bytes([16 << 3 | 2, 0]), 240),  # CELT 2.5 ms, two frames
        (bytes([31 << 3 | 3, 2]), 1920),  # CELT 20 ms, code 3 with two frames
    ],
)
def test_packet_samples_reads_the_toc(packet: bytes, samples: int) -> None:
    assert packet_samples(packet) == samples


@pytest.mark.parametrize(
    "packet", [b"", bytes([31 << 3 | 3]), bytes([31 << 3 | 3, 0]), bytes([31 << 3 | 3, 7])]
)
def test_packet_samples_refuses_what_cannot_be_opus(packet: bytes) -> None:
    with pytest.raises(AudioError):
        packet_samples(packet)


@pytest.mark.parametrize("samples", [0, 100, 5761])
def test_conceal_refuses_durations_opus_cannot_make(samples: int) -> None:
    with pytest.raises(AudioError):
        OpusDecoder().conceal(samples)


def test_encoder_refuses_other_frame_durations() -> None:
    with pytest.raises(AudioError, match="10, 20, 40 ms"):
        OpusEncoder(frame_ms=30)


@pytest.fixture
def fresh_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the loaded libopus so the next OpusEncoder looks for it afresh."""
    monkeypatch.setattr(codec, "_libopus", None)


def no_libopus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libopus, "bundled_candidates", lambda: [])
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)


def test_missing_libopus_names_what_to_install(
    fresh_codec: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_libopus(monkeypatch)
    with pytest.raises(CodecUnavailableError) as info:
        OpusEncoder()
    assert str(info.value) == (
        "libopus is not installed: install the Python package av (pip install av; its "
        "wheels carry libopus), or the Debian package libopus0 (or your system's libopus)"
    )
    with pytest.raises(CodecUnavailableError, match="libopus0"):
        OpusDecoder()


def test_windows_and_macos_use_the_copy_in_the_av_wheel(
    fresh_codec: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # av is a dependency: its libopus is the one a pip install there gets.
    for system in ("win32", "darwin"):
        monkeypatch.setattr(codec, "_libopus", None)
        monkeypatch.setattr(sys, "platform", system)
        lib = codec.load_libopus()
        assert lib.source == "av"
        assert lib.path in libopus.bundled_candidates()
        assert lib.version.startswith("libopus ")
        out = OpusDecoder().decode(OpusEncoder().encode(tone(1000, 1)))
        assert out.shape == (FRAME_SAMPLES,)


def test_linux_prefers_the_system_libopus(fresh_codec: None) -> None:
    assert codec.load_libopus().source == "system"  # Debian's libopus0, as CI installs


def test_linux_without_a_system_libopus_uses_the_wheel_copy(
    fresh_codec: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)  # a bare Pi
    lib = codec.load_libopus()
    assert lib.source == "av"
    assert OpusEncoder().setting(libopus.GET_BITRATE) == 32_000


def test_bangor_libopus_names_the_one_to_load(
    fresh_codec: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    [bundled] = libopus.bundled_candidates()
    monkeypatch.setenv(libopus.LIBOPUS_ENV, bundled)
    lib = codec.load_libopus()
    assert (lib.source, lib.path) == ("given", bundled)
    monkeypatch.setattr(codec, "_libopus", None)
    monkeypatch.setenv(libopus.LIBOPUS_ENV, str(tmp_path / "nothing.so"))
    with pytest.raises(CodecUnavailableError, match=r"tried .*nothing\.so"):
        OpusDecoder()  # only that one: no quiet fallback to another library


def test_bundled_candidates_are_files_of_the_av_wheel() -> None:
    found = libopus.bundled_candidates()
    assert found
    assert all(Path(path).is_file() for path in found)


@pytest.mark.parametrize(
    ("name", "matches"),
    [
        # As in av 18.1.0's wheels: auditwheel (Linux), delocate (macOS), delvewheel.
        ("libopus-4a9173fa.so.0.11.1", True),
        ("libopus.0.dylib", True),
        ("libopus-0-4369edc456631a3cc933d7918747e5d2.dll", True),
        ("opus-1a2b3c4d.dll", True),
        ("libopusfile-1a2b3c4d.so.0", False),
        ("libopusenc.dylib", False),
        ("opus.py", False),
        ("libavcodec-1a2b3c4d.so.61", False),
    ],
)
def test_bundled_library_names(name: str, matches: bool) -> None:
    assert bool(libopus._BUNDLED_NAME.fullmatch(name)) is matches


def test_without_av_there_is_no_bundled_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libopus, "BUNDLING_DISTRIBUTION", "no-such-distribution-bangor")
    assert libopus.bundled_candidates() == []


def test_a_wheel_copy_that_does_not_load_falls_back_to_the_system(
    fresh_codec: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    broken = tmp_path / "libopus-deadbeef.so.0"
    broken.write_bytes(b"not a shared library")
    monkeypatch.setattr(libopus, "bundled_candidates", lambda: [str(broken)])
    monkeypatch.setattr(sys, "platform", "darwin")  # where the wheel's copy comes first
    lib = codec.load_libopus()
    assert lib.source == "system"  # Debian's libopus0, as the README's install line has
    out = OpusDecoder().decode(OpusEncoder().encode(tone(1000, 1)))
    assert out.shape == (FRAME_SAMPLES,)


def test_a_library_without_opus_is_not_taken_for_libopus(
    fresh_codec: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_libopus(monkeypatch)
    libc = "libc.so.6"  # a real library, without opus_* symbols
    monkeypatch.setattr(libopus, "system_candidates", lambda: [libc])
    with pytest.raises(CodecUnavailableError) as info:
        OpusDecoder()
    # What was tried is named, with why it was not libopus.
    assert f"tried {libc}: " in str(info.value)
    assert "opus_get_version_string" in str(info.value)


def test_codec_loads_again_after_the_library_returns(
    fresh_codec: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as gone:
        no_libopus(gone)
        with pytest.raises(CodecUnavailableError):
            OpusDecoder()
    # Nothing was cached on failure: the library is found once it is there again.
    out = OpusDecoder().decode(OpusEncoder().encode(tone(1000, 1)))
    assert out.shape == (FRAME_SAMPLES,)


# --- the encoder's settings and failures, as libopus sees them -------------------------


def test_configure_changes_only_what_changed() -> None:
    encoder = OpusEncoder(bitrate=24_000, expected_loss=5)
    encoder.configure(24_000, 12)
    # Read back from libopus itself, not from the wrapper's copy.
    assert encoder.setting(libopus.GET_BITRATE) == 24_000
    assert encoder.setting(libopus.GET_PACKET_LOSS_PERC) == 12
    encoder.configure(16_000, 12)
    assert encoder.setting(libopus.GET_BITRATE) == 16_000
    assert encoder.setting(libopus.GET_PACKET_LOSS_PERC) == 12
    assert (encoder.bitrate, encoder.expected_loss) == (16_000, 12)


@pytest.fixture(params=["system", "av"])
def each_libopus(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test once with Debian's libopus (1.3.1 here) and once with the wheel's (1.6.1)."""
    monkeypatch.setattr(codec, "_libopus", None)
    if request.param == "av":
        monkeypatch.setattr(sys, "platform", "darwin")
    assert codec.load_libopus().source == request.param
    return str(request.param)


def test_the_bitrate_stops_where_libopus_1_3_stopped_for_mono(each_libopus: str) -> None:
    # libopus 1.6 would spend 510 kbit/s: 20 ms packets too big for a voice frame.
    encoder = OpusEncoder(bitrate=510_000)
    assert encoder.bitrate == 510_000  # what was asked, as before
    assert encoder.setting(libopus.GET_BITRATE) == codec.MAX_MONO_BITRATE
    noise = np.random.default_rng(0).integers(-20000, 20000, (50, FRAME_SAMPLES))
    sizes = [len(encoder.encode(frame.astype(np.int16))) for frame in noise]
    assert max(sizes) <= codec.MAX_MONO_BITRATE // 8 // 50 + 25  # 750 bytes and a little


def test_every_setting_reaches_libopus(each_libopus: str) -> None:
    """The ctl value travels as a variadic argument (Apple Silicon passes those apart)."""
    encoder = OpusEncoder(complexity=7, fec=False)
    assert encoder.setting(libopus.GET_COMPLEXITY) == 7
    assert encoder.setting(libopus.GET_INBAND_FEC) == 0
    assert encoder.setting(libopus.GET_SIGNAL) == libopus.SIGNAL_VOICE
    assert OpusEncoder().setting(libopus.GET_INBAND_FEC) == 1


def test_a_refused_setting_says_why() -> None:
    encoder = OpusEncoder()
    with pytest.raises(AudioError, match="refused: invalid argument"):
        encoder._set(libopus.SET_BITRATE, -5)


def test_a_setting_libopus_does_not_know_says_why() -> None:
    with pytest.raises(AudioError, match="refused: request not implemented"):
        OpusEncoder().setting(4999)


def test_a_codec_libopus_cannot_make_says_why() -> None:
    lib = codec.load_libopus()
    with pytest.raises(AudioError, match="cannot make an Opus codec: invalid argument"):
        codec._create(lib, lib.decoder_create, 44_100, 1)  # not an Opus rate


def test_lookahead_is_the_ogg_pre_skip_of_a_48khz_voip_encoder() -> None:
    """2.5 ms of look-ahead plus 4 ms of delay compensation (RFC 7845's typical 312)."""
    assert OpusEncoder().lookahead == 312


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (-1, "invalid argument"),  # libopus' code, named by opus_strerror
        (-99, "unknown error"),
    ],
)
def test_a_failed_encode_says_why_in_words(code: int, reason: str) -> None:
    encoder = OpusEncoder()
    encoder._encode = lambda *args: code
    with pytest.raises(AudioError) as info:
        encoder.encode(tone(1000, 1))
    assert str(info.value) == f"Opus encoding failed: {reason}"
