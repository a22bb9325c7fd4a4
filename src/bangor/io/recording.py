"""Recording a call to an Ogg Opus file.

:class:`OpusFileSink` is a :class:`~bangor.io.devices.Sink`: it encodes each
frame (10, 20 or 40 ms: the call's ticks) with our Opus encoder and writes the Ogg pages from
:class:`~bangor.audio.ogg.OggOpusMuxer` to the file as they are completed
(about one page per second of audio), so a crash loses at most about a second.

Errors: a file that cannot be created raises AudioError from the constructor.
A write that fails later (disk full, I/O error) raises AudioError once, naming
the file; the file is cut back to its last complete page, so what was recorded
stays a valid Ogg Opus stream (without an EOS page), and every later
``write()`` and ``close()`` is a no-op. The call goes on; the recording stops.
"""

from __future__ import annotations

import io
import math
import os
import secrets
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import numpy as np

from bangor.audio.codec import OpusEncoder
from bangor.audio.ogg import OggOpusMuxer
from bangor.errors import AudioError
from bangor.settings import CHANNELS, FRAME_MS, SAMPLE_RATE

# 64 kbit/s mono Opus is near transparent for speech (PESQ 4.4) and, being VBR, costs
# about 470 KB a minute of speech and less for silence.
DEFAULT_RECORD_BITRATE = 64_000
SERIAL_BITS = 32


class OpusFileSink:
    """Encodes int16 mono frames into an Ogg Opus file, written as it goes.

    Frames are ``frame_ms`` long (the caller's tick); Ogg Opus carries any Opus
    packet duration, so each becomes one packet.

    Not thread-safe: call write() and close() from one thread (the playback tick).
    """

    def __init__(
        self,
        path: Path,
        bitrate: int = DEFAULT_RECORD_BITRATE,
        *,
        serial: int | None = None,
        frame_ms: int = FRAME_MS,
    ) -> None:
        self._path = path
        # No FEC: a file loses no packets, so redundancy would only cost bits.
        self._encoder = OpusEncoder(bitrate=bitrate, fec=False, expected_loss=0, frame_ms=frame_ms)
        self._samples = self._encoder.frame_samples
        self._pre_skip = self._encoder.lookahead
        self._muxer = OggOpusMuxer(
            serial=secrets.randbits(SERIAL_BITS) if serial is None else serial,
            pre_skip=self._pre_skip,
            sample_rate=SAMPLE_RATE,
            channels=CHANNELS,
        )
        self._frames = 0
        self._written = 0  # bytes of complete pages in the file
        self._kept_granule = 0  # granule position of the last page in the file
        self._error: AudioError | None = None
        # Unbuffered on purpose: every write is a whole page (one write per
        # second of audio), and on a failed write we must know exactly how many
        # bytes reached the file to cut it back to the last complete page.
        try:
            self._file: io.FileIO | None = io.FileIO(path, "w")
        except OSError as exc:
            raise AudioError(f"cannot record to {path}: {exc.strerror or exc}") from exc
        self._write(self._muxer.headers())

    @property
    def path(self) -> Path:
        return self._path

    @property
    def seconds(self) -> float:
        """Audio recorded so far, in seconds."""
        return self._frames * self._samples / SAMPLE_RATE

    @property
    def error(self) -> AudioError | None:
        """The error that stopped the recording, if one did."""
        return self._error

    def write(self, frame: np.ndarray) -> None:
        """Encode and store one frame; AudioError once if the file cannot be written."""
        if self._file is None:
            if self._error is None:
                raise AudioError(f"cannot record to {self._path}: the recording is closed")
            return  # stopped by an error that was already raised
        packet = self._encoder.encode(frame)  # checks dtype and shape
        self._frames += 1
        self._write(self._muxer.add_packet(packet, self._samples))

    def close(self) -> None:
        """Write the last page (EOS) and close the file; idempotent."""
        if self._file is None:
            return
        # The encoder still holds its last `lookahead` samples of input: push
        # silence through and mark the surplus as padding (end trimming), so the
        # file decodes to exactly the frames written.
        samples = self._samples
        pad_frames = math.ceil(self._pre_skip / samples)
        silence = np.zeros(samples, dtype=np.int16)
        for _ in range(pad_frames):
            self._write(self._muxer.add_packet(self._encoder.encode(silence), samples))
        self._write(self._muxer.finish(trim=pad_frames * samples - self._pre_skip))
        file, self._file = self._file, None
        if file is not None:
            file.close()

    def __enter__(self) -> OpusFileSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _write(self, data: bytes) -> None:
        if not data or self._file is None:
            return
        view = memoryview(data)
        try:
            while view:
                view = view[self._file.write(view) :]
        except OSError as exc:
            self._fail(exc)
        self._written += len(data)
        self._kept_granule = self._muxer.last_granule

    def _fail(self, exc: OSError) -> NoReturn:
        file, self._file = self._file, None
        assert file is not None
        try:
            # Drop a partly written page so the file ends on a page boundary.
            os.ftruncate(file.fileno(), self._written)
        except OSError:
            pass  # e.g. a device like /dev/full; nothing more we can do
        finally:
            file.close()
        kept = max(0, self._kept_granule - self._pre_skip) / SAMPLE_RATE
        self._error = AudioError(
            f"cannot write recording {self._path}: {exc.strerror or exc}; "
            f"recording stopped, the file keeps the first {kept:.1f} s"
        )
        raise self._error from exc
