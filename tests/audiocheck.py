"""Helpers for tests that judge audio by ear-like measures, not by byte counts.

Integration tests send speech through Bangor and compare what comes out with
what went in: find the delay, line the signals up, then compare loudness
envelopes (did the same words arrive?) and PESQ wide-band (how good?).
Signals here are float64 mono in [-1, 1) at 48 kHz unless noted.
"""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import soxr
from pesq import pesq
from scipy.signal import correlate

SR = 48_000
PESQ_SR = 16_000
ENVELOPE_MS = 10
# Envelope frames this far below the loudest count as silence and are left out.
SPEECH_RANGE_DB = 40.0


def read_wav_48k(path: str | Path) -> np.ndarray:
    """A 16-bit WAV as float64 mono at 48 kHz (downmixed, resampled with soxr)."""
    with wave.open(str(path), "rb") as w:
        channels = w.getnchannels()
        rate = w.getframerate()
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        raw = w.readframes(w.getnframes())
    pcm = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    mono: np.ndarray = pcm.reshape(-1, channels).mean(axis=1)
    if rate != SR:
        mono = soxr.resample(mono, rate, SR)
    return mono


def align(reference: np.ndarray, recorded: np.ndarray, sr: int = SR) -> tuple[int, np.ndarray]:
    """Find where ``reference`` starts inside ``recorded`` by cross-correlation.

    Returns (delay in samples, the part of ``recorded`` lined up with
    ``reference``, same length, zero padded where ``recorded`` is too short).
    A negative delay means ``recorded`` starts inside the reference.
    """
    del sr  # the delay is in samples; sr is kept for symmetry with the other helpers
    ref = np.asarray(reference, dtype=np.float64)
    rec = np.asarray(recorded, dtype=np.float64)
    corr = correlate(rec, ref, mode="full", method="fft")
    delay = int(np.argmax(corr)) - (len(ref) - 1)
    aligned = np.zeros(len(ref))
    src_start = max(delay, 0)
    dst_start = max(-delay, 0)
    count = max(0, min(len(ref) - dst_start, len(rec) - src_start))
    aligned[dst_start : dst_start + count] = rec[src_start : src_start + count]
    return delay, aligned


def _envelope_db(x: np.ndarray, sr: int) -> np.ndarray:
    hop = sr * ENVELOPE_MS // 1000
    n = len(x) // hop
    rms = np.sqrt(np.mean(np.square(x[: n * hop]).reshape(n, hop), axis=1))
    db: np.ndarray = 20 * np.log10(np.maximum(rms, 1e-6))
    return db


# With max_shift_ms, each segment of this many envelope frames (250 ms) is lined up
# on its own: an adaptive jitter buffer moves the play-out delay by whole 20 ms frames
# (it drops one to cut delay, or waits one for a late frame), and a shift in time is
# not lost audio. The moves add up over a call, so each segment's search is centred on
# where the segment before it was found, up to DRIFT_LIMIT times max_shift_ms in all.
SHIFT_SEGMENT = 25
DRIFT_LIMIT = 3


def envelope_correlation(
    reference: np.ndarray, aligned: np.ndarray, sr: int = SR, *, max_shift_ms: int = 0
) -> float:
    """Pearson correlation of the 10 ms RMS envelopes (dB) where the reference speaks.

    ``max_shift_ms``: let each 250 ms of ``aligned`` sit up to this far from where the
    overall alignment put it (the shift with the least squared error is taken).
    """
    ref_db = _envelope_db(np.asarray(reference, dtype=np.float64), sr)
    deg_db = _envelope_db(np.asarray(aligned, dtype=np.float64), sr)
    n = min(len(ref_db), len(deg_db))
    ref_db, deg_db = ref_db[:n], deg_db[:n]
    if max_shift_ms:
        deg_db = _follow_shifts(ref_db, deg_db, max_shift_ms // ENVELOPE_MS)
    # Pauses would dominate (equal silence everywhere); judge the speech.
    active = ref_db > ref_db.max() - SPEECH_RANGE_DB
    return float(np.corrcoef(ref_db[active], deg_db[active])[0, 1])


def _follow_shifts(ref_db: np.ndarray, deg_db: np.ndarray, lag: int) -> np.ndarray:
    n = len(ref_db)
    reach = lag * DRIFT_LIMIT
    padded = np.concatenate([np.full(reach, deg_db[0]), deg_db, np.full(reach, deg_db[-1])])
    loud = ref_db.max() - SPEECH_RANGE_DB

    def best(start: int, end: int, around: int, within: int) -> int:
        # Nearest first, so a pause (which fits every shift alike) keeps the delay.
        shifts = sorted(
            range(max(-reach, around - within), min(reach, around + within) + 1),
            key=lambda k: abs(k - around),
        )
        errors = [
            float(np.sum((padded[start + reach + k : end + reach + k] - ref_db[start:end]) ** 2))
            for k in shifts
        ]
        return shifts[int(np.argmin(errors))]

    out = np.empty(n)
    previous: int | None = None
    for start in range(0, n, SHIFT_SEGMENT):
        end = min(start + SHIFT_SEGMENT, n)
        if previous is None and ref_db[start:end].max() > loud:
            # The overall alignment may follow a later part of the call: the first words
            # may sit anywhere within reach.
            previous = best(start, end, 0, reach)
        elif previous is not None:
            previous = best(start, end, previous, lag)
        k = previous or 0
        out[start:end] = padded[start + reach + k : end + reach + k]
    return out


def pesq_wb(reference: np.ndarray, aligned: np.ndarray, sr: int = SR) -> float:
    """PESQ wide-band MOS-LQO (about 1.0 bad to 4.6 transparent), computed at 16 kHz."""
    ref = soxr.resample(np.asarray(reference, dtype=np.float64), sr, PESQ_SR)
    deg = soxr.resample(np.asarray(aligned, dtype=np.float64), sr, PESQ_SR)
    n = min(len(ref), len(deg))
    return float(pesq(PESQ_SR, ref[:n], deg[:n], "wb"))


def make_speech_wav(path: str | Path, text: str) -> None:
    """Synthesize ``text`` with espeak-ng into a WAV (22050 Hz, mono, 16-bit)."""
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)


def tone_present(audio: np.ndarray, hz: float, sr: int = SR, chunk_ms: int = 10) -> np.ndarray:
    """Per ``chunk_ms`` of ``audio``: whether the tone ``hz`` is there at full loudness.

    Full loudness is half the median level of the chunks that hold the tone, so packet-loss
    concealment fading a lost tone out counts as missing, not as heard.
    """
    size = sr * chunk_ms // 1000
    chunks = np.asarray(audio, dtype=np.float64)[: len(audio) // size * size].reshape(-1, size)
    rms = np.sqrt(np.mean(np.square(chunks), axis=1))
    peaks = np.argmax(np.abs(np.fft.rfft(chunks, axis=1)), axis=1) * sr / size
    toned: np.ndarray = (np.abs(peaks - hz) <= 1000 / chunk_ms) & (rms > 1e-3)
    if not toned.any():
        return toned
    result: np.ndarray = toned & (rms > 0.5 * float(np.median(rms[toned])))
    return result


def longest_gap_ms(present: np.ndarray, chunk_ms: int = 10) -> int:
    """The longest run without the sound between its first and its last chunk, in ms."""
    where = np.flatnonzero(present)
    if len(where) < 2:
        return len(present) * chunk_ms
    return int(np.max(np.diff(where)) - 1) * chunk_ms


# --- noise a microphone hears: a fan and a keyboard ---------------------------------------


def fan_noise(samples: int, rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    """A fan: noise falling 3 dB an octave above 50 Hz (pink), 6 below (brown), plus
    mains hum at 100, 200 and 300 Hz; RMS 1."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    freqs = np.maximum(np.fft.rfftfreq(samples, 1 / sr), 1.0)
    spectrum /= np.sqrt(freqs) * np.maximum(50.0 / freqs, 1.0) ** 0.5
    spectrum[freqs < 20] = 0
    noise = np.fft.irfft(spectrum, samples)
    noise /= np.sqrt(np.mean(np.square(noise)))
    t = np.arange(samples) / sr
    hum = sum(0.3 / k * np.sin(2 * np.pi * 100 * k * t) for k in (1, 2, 3))
    fan: np.ndarray = noise + hum
    return fan / np.sqrt(np.mean(np.square(fan)))


def key_clicks(
    samples: int, rng: np.random.Generator, per_second: float = 8.0, sr: int = SR
) -> np.ndarray:
    """Typing: 6 ms decaying noise bursts (a key going down, a softer one coming up
    60-120 ms later) at random times, about ``per_second`` keys a second; peak about 1."""
    out = np.zeros(samples)
    burst = int(sr * 0.006)
    envelope = np.exp(-np.arange(burst) / (sr * 0.0012))
    at = 0
    while True:
        at += int(rng.exponential(sr / per_second)) + sr // 40
        if at + burst >= samples:
            return out
        out[at : at + burst] += envelope * rng.standard_normal(burst) * rng.uniform(0.5, 1.0)
        up = at + int(sr * rng.uniform(0.06, 0.12))
        if up + burst < samples:
            out[up : up + burst] += 0.5 * envelope * rng.standard_normal(burst)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech`` plus ``noise`` scaled so that the speech (where it is not silent) is
    ``snr_db`` above the noise's RMS."""
    voiced = speech[np.abs(speech) > 1e-3]
    gain = np.sqrt(np.mean(np.square(voiced)) / np.mean(np.square(noise)) / 10 ** (snr_db / 10))
    mixed: np.ndarray = speech + gain * noise[: len(speech)]
    return mixed
