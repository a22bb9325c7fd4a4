"""Opus voice codec: mono at 48 kHz, int16 PCM in and out, 10, 20 or 40 ms frames.

The encoder makes frames of the duration it was built for; the decoder takes a
packet of any duration Opus allows (a sender picks its own) and returns what it
holds. :func:`packet_samples` reads that duration from the packet's TOC byte
without decoding, so a receiver can size its jitter buffer to each sender.

A thin layer over libopus through ctypes (:mod:`bangor.audio.libopus`: the copy in
the ``av`` wheel, else the system's). ctypes over libopus rather than PyAV's codec API,
because it exposes packet-loss concealment and in-band FEC decoding. The library is
loaded lazily so that a machine without it fails with a message naming what to
install, not with an import-time traceback.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from bangor.audio import libopus
from bangor.errors import AudioError
from bangor.settings import (
    CHANNELS,
    FRAME_MS,
    FRAME_MS_CHOICES,
    FRAME_SAMPLES,
    MAX_BITRATE,
    MIN_BITRATE,
    SAMPLE_RATE,
)

LIBOPUS_MISSING = libopus.LIBOPUS_MISSING

_libopus: libopus.Libopus | None = None

# The most audio one Opus packet can hold: 120 ms (RFC 6716 section 3.2.5).
MAX_PACKET_SAMPLES = SAMPLE_RATE * 120 // 1000
# Samples of one frame at 48 kHz for each TOC configuration 0..31 (RFC 6716 section
# 3.1): SILK-only 10/20/40/60 ms in three bandwidths, hybrid 10/20 ms in two, CELT-only
# 2.5/5/10/20 ms in four.
_CONFIG_SAMPLES = (480, 960, 1920, 2880) * 3 + (480, 960) * 2 + (120, 240, 480, 960) * 4


def packet_samples(packet: bytes) -> int:
    """Samples at 48 kHz that an Opus packet decodes to, from its TOC byte alone.

    Cheap (no decoding) and sans-I/O; AudioError if the packet cannot be Opus.
    """
    if not packet:
        raise AudioError("empty Opus packet")
    toc = packet[0]
    code = toc & 0x3
    if code == 0:
        count = 1
    elif code in (1, 2):
        count = 2
    else:
        # Code 3: the frame count is in the low six bits of the second byte.
        if len(packet) < 2 or not packet[1] & 0x3F:
            raise AudioError(f"corrupt Opus packet ({len(packet)} bytes): bad frame count")
        count = packet[1] & 0x3F
    samples = _CONFIG_SAMPLES[toc >> 3] * count
    if samples > MAX_PACKET_SAMPLES:
        raise AudioError(f"corrupt Opus packet ({len(packet)} bytes): over 120 ms")
    return samples


def frame_samples(frame_ms: int) -> int:
    """Samples in one frame of ``frame_ms`` (one of FRAME_MS_CHOICES); AudioError else."""
    if frame_ms not in FRAME_MS_CHOICES:
        choices = ", ".join(str(ms) for ms in FRAME_MS_CHOICES)
        raise AudioError(f"Opus frame duration must be {choices} ms, got {frame_ms}")
    return SAMPLE_RATE * frame_ms // 1000


def load_libopus() -> libopus.Libopus:
    """Load libopus once (the wheel's, else the system's), or raise CodecUnavailableError.

    Nothing is cached on failure, so a library installed meanwhile is found next time.
    """
    global _libopus
    if _libopus is None:
        _libopus = libopus.find()
    return _libopus


def _check_frame(pcm: np.ndarray, samples: int) -> bytes:
    if pcm.dtype != np.int16:
        raise AudioError(f"PCM frame must be int16, got {pcm.dtype}")
    if pcm.shape != (samples,):
        raise AudioError(f"PCM frame must be {samples} mono samples, got shape {pcm.shape}")
    # libopus reads native-endian int16.
    return np.ascontiguousarray(pcm, dtype=np.dtype("=i2")).tobytes()


# The largest packet libopus is asked for (its documentation's recommended 4000 bytes).
MAX_PACKET_BYTES = 4000
# The most bit/s libopus is given for our mono voice. libopus up to 1.4 never spent
# more than this on one channel, whatever was asked; later ones (1.6.1 in the av wheel)
# go up to 750 kbit/s, whose 20 ms packets (up to 1275 bytes) would not fit a voice
# frame (MAX_VOICE_FRAME). So every library makes the packets clients were built for.
MAX_MONO_BITRATE = 300_000


class OpusEncoder:
    """Encodes one frame of ``frame_ms`` at a time (application VOIP, in-band FEC on)."""

    def __init__(
        self,
        bitrate: int = 32000,
        complexity: int = 9,
        fec: bool = True,
        expected_loss: int = 5,
        frame_ms: int = FRAME_MS,
    ) -> None:
        if not 0 <= complexity <= 10:
            raise AudioError(f"Opus complexity must be 0..10, got {complexity}")
        self.frame_samples = frame_samples(frame_ms)
        self._lib = load_libopus()
        self._state: int = _create(
            self._lib, self._lib.encoder_create, SAMPLE_RATE, CHANNELS, libopus.APPLICATION_VOIP
        )
        self._encode: Any = self._lib.encode
        # One output buffer for every call (a fresh one per frame costs as much as a
        # cheap encode); slicing it copies out just the packet.
        self._out: Any = ctypes.create_string_buffer(MAX_PACKET_BYTES)
        self._set(libopus.SET_SIGNAL, libopus.SIGNAL_VOICE)
        self._set(libopus.SET_COMPLEXITY, complexity)
        self._set(libopus.SET_INBAND_FEC, int(fec))
        self.bitrate = 0
        self.expected_loss = -1
        self.configure(bitrate, expected_loss)

    def __del__(self) -> None:
        # Popped, so a constructor that failed before the state existed frees nothing.
        if (state := self.__dict__.pop("_state", None)) is not None:
            self._lib.encoder_destroy(state)

    def _set(self, request: int, value: int) -> None:
        self._lib.ctl_set(self._state, request, value)

    def setting(self, request: int) -> int:
        """A setting as libopus holds it (``libopus.GET_*``): for tests and diagnostics."""
        return self._lib.ctl_get(self._state, request)

    def configure(self, bitrate: int, expected_loss: int) -> None:
        """Change the bitrate and the loss the in-band FEC is sized for, between frames.

        The encoder only spends bits on FEC when it expects some loss (0: none).
        """
        if not MIN_BITRATE <= bitrate <= MAX_BITRATE:
            raise AudioError(
                f"Opus bitrate must be {MIN_BITRATE}..{MAX_BITRATE} bit/s, got {bitrate}"
            )
        if not 0 <= expected_loss <= 100:
            raise AudioError(f"expected packet loss must be 0..100 %, got {expected_loss}")
        if bitrate != self.bitrate:
            self._set(libopus.SET_BITRATE, min(bitrate, MAX_MONO_BITRATE))
            self.bitrate = bitrate
        if expected_loss != self.expected_loss:
            self._set(libopus.SET_PACKET_LOSS_PERC, expected_loss)
            self.expected_loss = expected_loss

    @property
    def lookahead(self) -> int:
        """Samples the encoder delays its input by (Ogg Opus pre-skip)."""
        return self.setting(libopus.GET_LOOKAHEAD)

    def encode(self, pcm: np.ndarray) -> bytes:
        """Encode exactly ``frame_samples`` int16 samples into one Opus packet."""
        data = _check_frame(pcm, self.frame_samples)
        n: int = self._encode(self._state, data, self.frame_samples, self._out, MAX_PACKET_BYTES)
        if n < 0:
            raise AudioError(f"Opus encoding failed: {self._lib.strerror(n)}")
        packet: bytes = self._out[:n]
        return packet


class OpusDecoder:
    """Decodes packets of one sender; conceals or FEC-recovers lost frames.

    One decoder per sender: PLC and FEC rely on the decoder's memory of that
    sender's previous frames.
    """

    def __init__(self) -> None:
        self._lib = load_libopus()
        self._state: int = _create(self._lib, self._lib.decoder_create, SAMPLE_RATE, CHANNELS)
        self._opus_decode: Any = self._lib.decode
        # One output buffer for every call, and its pointer made once: building a
        # ctypes pointer to a fresh numpy array per frame cost as much as decoding.
        self._buffer: Any = (ctypes.c_int16 * MAX_PACKET_SAMPLES)()

    def __del__(self) -> None:
        if (state := self.__dict__.pop("_state", None)) is not None:
            self._lib.decoder_destroy(state)

    def _run(self, packet: bytes, fec: bool, samples: int) -> np.ndarray:
        # For a packet, `samples` is room enough; for PLC and FEC libopus makes
        # exactly that much (the duration of the frame that is missing).
        n = self._opus_decode(self._state, packet, len(packet), self._buffer, samples, int(fec))
        if n < 0:
            reason = self._lib.strerror(n)
            raise AudioError(f"corrupt Opus packet ({len(packet)} bytes): {reason}")
        return np.frombuffer(self._buffer, dtype=np.int16, count=n).copy()

    def decode(self, packet: bytes) -> np.ndarray:
        """Decode one packet into int16 samples (as many as it holds); AudioError if corrupt."""
        if not packet:
            raise AudioError("empty Opus packet")
        return self._run(packet, fec=False, samples=MAX_PACKET_SAMPLES)

    def conceal(self, samples: int = FRAME_SAMPLES) -> np.ndarray:
        """Synthesize one lost frame of ``samples`` from the decoder's history (Opus PLC)."""
        return self._run(b"", fec=False, samples=_check_lost(samples))

    def decode_fec(self, next_packet: bytes, samples: int = FRAME_SAMPLES) -> np.ndarray:
        """Recover the lost frame (``samples`` long) before ``next_packet`` from its FEC.

        Falls back to concealment inside libopus when the packet carries no FEC.
        ``next_packet`` must still be passed to :meth:`decode` afterwards.
        """
        if not next_packet:
            return self.conceal(samples)
        return self._run(next_packet, fec=True, samples=_check_lost(samples))


def _create(lib: libopus.Libopus, create: Any, *args: int) -> int:
    error = ctypes.c_int(0)
    state: int | None = create(*args, ctypes.byref(error))
    if error.value != libopus.OPUS_OK or not state:
        raise AudioError(f"cannot make an Opus codec: {lib.strerror(error.value)}")
    return state


def _check_lost(samples: int) -> int:
    # libopus conceals in whole 2.5 ms steps, up to one packet's worth.
    if not 0 < samples <= MAX_PACKET_SAMPLES or samples % (SAMPLE_RATE // 400):
        raise AudioError(f"cannot conceal {samples} samples: not a whole number of 2.5 ms")
    return samples
