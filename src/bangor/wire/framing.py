"""Length-prefixed frames for the control channel (sans-I/O).

Every Noise message on the TCP stream is preceded by a 2-byte big-endian length,
as the Noise spec suggests. The decoder never holds more than one frame's worth
of bytes, so a peer cannot make us buffer without bound.
"""

from __future__ import annotations

from bangor.errors import FramingError, LocalProtocolError

MAX_FRAME_SIZE = 65535
LENGTH_PREFIX = 2


def encode_frame(payload: bytes) -> bytes:
    """Prefix ``payload`` with its 2-byte big-endian length."""
    size = len(payload)
    if size > MAX_FRAME_SIZE:
        raise LocalProtocolError(f"frame of {size} bytes exceeds {MAX_FRAME_SIZE}")
    return size.to_bytes(LENGTH_PREFIX, "big") + payload


class FrameDecoder:
    """Splits a byte stream into frame payloads; keeps any partial frame."""

    __slots__ = ("_buf", "_failed", "_length")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._length: int | None = None  # payload length of the frame being read
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame (prefix included)."""
        return len(self._buf) + (LENGTH_PREFIX if self._length is not None else 0)

    def feed(self, data: bytes) -> list[bytes]:
        """Consume ``data``; return the payload of every frame it completes."""
        if self._failed:
            raise FramingError("stream is broken after a framing error")
        frames: list[bytes] = []
        view = memoryview(data)
        pos, end = 0, len(view)
        buf = self._buf
        while pos < end:
            if self._length is None:
                if not buf and end - pos >= LENGTH_PREFIX:
                    length = (view[pos] << 8) | view[pos + 1]
                    pos += LENGTH_PREFIX
                else:
                    take = min(LENGTH_PREFIX - len(buf), end - pos)
                    buf += view[pos : pos + take]
                    pos += take
                    if len(buf) < LENGTH_PREFIX:
                        break
                    length = int.from_bytes(buf, "big")
                    buf.clear()
                if length == 0:
                    # An empty Noise message is never valid; treat it as garbage.
                    self._failed = True
                    raise FramingError("empty frame")
                self._length = length
            length = self._length
            if not buf and end - pos >= length:
                # Fast path: the whole payload is in this chunk, no copy into buf.
                frames.append(bytes(view[pos : pos + length]))
                pos += length
                self._length = None
                continue
            take = min(length - len(buf), end - pos)
            buf += view[pos : pos + take]
            pos += take
            if len(buf) == length:
                frames.append(bytes(buf))
                buf.clear()
                self._length = None
        return frames
