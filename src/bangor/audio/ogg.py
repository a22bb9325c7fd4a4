"""Ogg Opus muxer (RFC 3533 framing, RFC 7845 Opus encapsulation), sans I/O.

:class:`OggOpusMuxer` turns Opus packets into Ogg pages and returns the bytes to
write; it never touches a file. A small page reader (:func:`read_pages`,
:func:`packets_of`) is here too, to check what the muxer wrote.

Written here rather than taken from PyPI: PyAV is heavy, PyOgg is an alpha
ctypes wrapper last released in 2020, soundfile (libsndfile) encodes PCM itself
so our encoder settings and packets could not be used, and mutagen (GPL) is a
tag editor whose page class leaves paging, granules and flushing to the caller,
which is most of this module.

Granule positions follow RFC 7845 section 4: a page carries the number of
48 kHz samples the decoder has produced once the last packet completed on that
page is decoded, counted from the start of the stream and including the
pre-skip samples the player later discards (so PCM position = granule -
pre-skip). A page on which no packet completes carries -1. Only the final (EOS)
page may claim fewer samples than its packets hold (end trimming, section 4.4).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from bangor.errors import AudioError

# RFC 3533 section 6: the page header.
CAPTURE_PATTERN = b"OggS"
STREAM_STRUCTURE_VERSION = 0
FLAG_CONTINUED = 0x01  # the page starts with the rest of a packet from the page before
FLAG_BOS = 0x02  # first page of the logical bitstream
FLAG_EOS = 0x04  # last page of the logical bitstream
_HEADER = struct.Struct("<4sBBqIIIB")  # pattern, version, type, granule, serial, seq, CRC, count
PAGE_HEADER_SIZE = _HEADER.size  # 27, the segment table follows
CRC_OFFSET = 22  # byte offset of the CRC field in the page header
MAX_SEGMENTS = 255  # lacing values per page (the count is one byte)
MAX_LACING = 255  # a lacing value of 255 means the packet goes on in the next segment
MAX_PAGE_BODY = MAX_SEGMENTS * MAX_LACING  # 65025 bytes
NO_GRANULE = -1  # granule of a page on which no packet completes
MAX_SERIAL = 2**32 - 1
MAX_GRANULE = 2**63 - 1

# Ogg CRC-32: polynomial 0x04C11DB7, not reflected, initial value 0, no final XOR.
CRC_POLYNOMIAL = 0x04C11DB7

# RFC 7845 section 5.
OPUS_HEAD_MAGIC = b"OpusHead"
OPUS_TAGS_MAGIC = b"OpusTags"
OPUS_HEAD_VERSION = 1
_OPUS_HEAD = struct.Struct("<8sBBHIhB")  # magic, version, channels, pre-skip, rate, gain, family
MAPPING_FAMILY_RTP = 0  # mono or stereo, no channel mapping table
MAX_CHANNELS_FAMILY_0 = 2
GRANULE_RATE = 48_000  # granules always count 48 kHz samples, whatever the input rate
MAX_PRE_SKIP = 2**16 - 1
MAX_INPUT_SAMPLE_RATE = 2**32 - 1
MAX_PACKET_SAMPLES = GRANULE_RATE * 120 // 1000  # an Opus packet holds at most 120 ms

# A page is written once it holds this much audio, so a crash loses at most
# about one second of a recording (opusenc's default --max-delay is 1000 ms too).
DEFAULT_PAGE_SAMPLES = GRANULE_RATE


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        reg = byte << 24
        for _ in range(8):
            reg = ((reg << 1) ^ CRC_POLYNOMIAL) if reg & 0x8000_0000 else reg << 1
        table.append(reg & 0xFFFF_FFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def ogg_crc(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """The Ogg page checksum of ``data`` (pass the page with its CRC field zeroed)."""
    table = _CRC_TABLE
    for byte in bytes(data):
        crc = ((crc << 8) & 0xFFFF_FFFF) ^ table[(crc >> 24) ^ byte]
    return crc


def lacing_values(size: int) -> list[int]:
    """Segment sizes of a packet of ``size`` bytes: 255s, then one value below 255.

    A packet whose size is a multiple of 255 ends with a 0 so the reader knows
    it ended (RFC 3533 section 5).
    """
    full, rest = divmod(size, MAX_LACING)
    return [MAX_LACING] * full + [rest]


@dataclass(frozen=True)
class OpusHead:
    """The identification header (RFC 7845 section 5.1), mapping family 0 only."""

    channels: int = 1
    pre_skip: int = 0
    input_sample_rate: int = GRANULE_RATE  # informational: what the encoder was fed
    output_gain: int = 0  # Q7.8 dB

    def to_bytes(self) -> bytes:
        return _OPUS_HEAD.pack(
            OPUS_HEAD_MAGIC,
            OPUS_HEAD_VERSION,
            self.channels,
            self.pre_skip,
            self.input_sample_rate,
            self.output_gain,
            MAPPING_FAMILY_RTP,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> OpusHead:
        if len(data) < _OPUS_HEAD.size or not data.startswith(OPUS_HEAD_MAGIC):
            raise AudioError("not an OpusHead packet")
        _, version, channels, pre_skip, rate, gain, family = _OPUS_HEAD.unpack_from(data)
        # Versions 2..15 stay compatible (section 5.1); only family 0 has no mapping table.
        if version >> 4 or family != MAPPING_FAMILY_RTP or len(data) != _OPUS_HEAD.size:
            raise AudioError(f"unsupported OpusHead (version {version}, mapping family {family})")
        return cls(channels, pre_skip, rate, gain)


@dataclass(frozen=True)
class OpusTags:
    """The comment header (RFC 7845 section 5.2): vendor string and NAME=value comments."""

    vendor: str = "bangor"
    comments: tuple[str, ...] = ()

    def to_bytes(self) -> bytes:
        out = bytearray(OPUS_TAGS_MAGIC)
        vendor = self.vendor.encode("utf-8")
        out += struct.pack("<I", len(vendor)) + vendor
        out += struct.pack("<I", len(self.comments))
        for comment in self.comments:
            raw = comment.encode("utf-8")
            out += struct.pack("<I", len(raw)) + raw
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> OpusTags:
        if not data.startswith(OPUS_TAGS_MAGIC):
            raise AudioError("not an OpusTags packet")
        try:
            pos = len(OPUS_TAGS_MAGIC)
            strings: list[str] = []
            (size,) = struct.unpack_from("<I", data, pos)
            vendor = data[pos + 4 : pos + 4 + size]
            pos += 4 + size
            (count,) = struct.unpack_from("<I", data, pos)
            pos += 4
            for _ in range(count):
                (size,) = struct.unpack_from("<I", data, pos)
                strings.append(data[pos + 4 : pos + 4 + size].decode("utf-8"))
                pos += 4 + size
            if pos > len(data):
                raise AudioError("truncated OpusTags packet")
            return cls(vendor.decode("utf-8"), tuple(strings))
        except (struct.error, UnicodeDecodeError) as exc:
            raise AudioError(f"malformed OpusTags packet: {exc}") from exc


@dataclass(frozen=True)
class OggPage:
    """One page as read back from a stream."""

    header_type: int
    granule: int
    serial: int
    sequence: int
    crc: int
    lacing: bytes  # the segment table
    body: bytes
    offset: int  # where the page starts in the stream
    size: int  # header, segment table and body

    @property
    def continued(self) -> bool:
        return bool(self.header_type & FLAG_CONTINUED)

    @property
    def bos(self) -> bool:
        return bool(self.header_type & FLAG_BOS)

    @property
    def eos(self) -> bool:
        return bool(self.header_type & FLAG_EOS)


def read_pages(data: bytes) -> Iterator[OggPage]:
    """Parse consecutive pages; AudioError on a bad page, a CRC mismatch or a truncated end."""
    offset = 0
    while offset < len(data):
        if len(data) - offset < PAGE_HEADER_SIZE:
            raise AudioError(f"truncated Ogg page header at byte {offset}")
        pattern, version, header_type, granule, serial, seq, crc, count = _HEADER.unpack_from(
            data, offset
        )
        if pattern != CAPTURE_PATTERN or version != STREAM_STRUCTURE_VERSION:
            raise AudioError(f"no Ogg page at byte {offset}")
        table_end = offset + PAGE_HEADER_SIZE + count
        lacing = data[offset + PAGE_HEADER_SIZE : table_end]
        end = table_end + sum(lacing)
        if len(lacing) < count or end > len(data):
            raise AudioError(f"truncated Ogg page at byte {offset}")
        page = bytearray(data[offset:end])
        page[CRC_OFFSET : CRC_OFFSET + 4] = bytes(4)
        if ogg_crc(page) != crc:
            raise AudioError(f"Ogg page at byte {offset} fails its CRC check")
        body = data[table_end:end]
        yield OggPage(header_type, granule, serial, seq, crc, lacing, body, offset, end - offset)
        offset = end


def packets_of(pages: Sequence[OggPage]) -> list[bytes]:
    """Reassemble the packets of one logical stream (a trailing incomplete packet is dropped)."""
    packets: list[bytes] = []
    partial = bytearray()
    for page in pages:
        pos = 0
        for value in page.lacing:
            partial += page.body[pos : pos + value]
            pos += value
            if value < MAX_LACING:
                packets.append(bytes(partial))
                partial.clear()
    return packets


class OggOpusMuxer:
    """Lays Opus packets out in Ogg pages for one logical bitstream.

    Call :meth:`headers` once, then :meth:`add_packet` per packet, then
    :meth:`finish`. Each returns the bytes of the pages completed by that call
    (often ``b""``), ready to be written in order.

    A page is flushed before a packet that would take it past ``page_samples``
    of audio or past the 255 lacing values of one page; a packet too large for
    any page (over 65024 bytes) continues across pages.
    """

    def __init__(
        self,
        serial: int,
        pre_skip: int,
        sample_rate: int = GRANULE_RATE,
        channels: int = 1,
        vendor: str = "bangor",
        comments: Sequence[str] = (),
        page_samples: int = DEFAULT_PAGE_SAMPLES,
    ) -> None:
        if not 0 <= serial <= MAX_SERIAL:
            raise ValueError(f"Ogg serial number must be a uint32, got {serial}")
        if not 0 <= pre_skip <= MAX_PRE_SKIP:
            raise ValueError(f"pre-skip must be 0..{MAX_PRE_SKIP} samples, got {pre_skip}")
        if not 0 <= sample_rate <= MAX_INPUT_SAMPLE_RATE:
            raise ValueError(f"input sample rate must be a uint32, got {sample_rate}")
        if not 1 <= channels <= MAX_CHANNELS_FAMILY_0:
            raise ValueError(f"channels must be 1 or 2 (mapping family 0), got {channels}")
        for comment in comments:
            if "=" not in comment:
                raise ValueError(f"an Opus comment must be NAME=value, got {comment!r}")
        if page_samples <= 0:
            raise ValueError(f"page_samples must be > 0, got {page_samples}")
        self.serial = serial
        self.head = OpusHead(channels, pre_skip, sample_rate)
        self.tags = OpusTags(vendor, tuple(comments))
        self._page_samples_limit = page_samples
        self._sequence = 0
        self._granule = 0  # samples of all packets completed so far
        self._last_granule = 0  # granule of the last page emitted that has one
        self._headers_done = False
        self._finished = False
        # The page being filled.
        self._lacing = bytearray()
        self._body = bytearray()
        self._page_granule = NO_GRANULE
        self._page_continued = False
        self._page_samples = 0  # samples of packets completed on this page

    @property
    def granule(self) -> int:
        """Samples of every packet added so far (pre-skip included)."""
        return self._granule

    @property
    def last_granule(self) -> int:
        """Granule position of the last page returned that has one (0 before audio)."""
        return self._last_granule

    @property
    def finished(self) -> bool:
        return self._finished

    def headers(self) -> bytes:
        """The OpusHead page (BOS, alone on its page) and the OpusTags page(s)."""
        if self._headers_done:
            raise ValueError("headers() was already called")
        self._headers_done = True
        # Header packets have granule 0 and each starts a page of its own (section 3).
        out = self._append(self.head.to_bytes(), 0)
        out += self._emit(FLAG_BOS)
        out += self._append(self.tags.to_bytes(), 0)
        out += self._emit(0)
        return out

    def add_packet(self, packet: bytes, samples: int) -> bytes:
        """Queue one Opus packet of ``samples`` 48 kHz samples; return any completed pages."""
        self._check_open()
        if not packet:
            raise ValueError("an Opus packet has at least one byte (its TOC)")
        if not 0 < samples <= MAX_PACKET_SAMPLES:
            raise ValueError(f"an Opus packet holds 1..{MAX_PACKET_SAMPLES} samples, got {samples}")
        if self._granule + samples > MAX_GRANULE:
            raise ValueError("granule position overflow")
        out = b""
        segments = len(packet) // MAX_LACING + 1
        full = len(self._lacing) + segments > MAX_SEGMENTS and segments <= MAX_SEGMENTS
        if self._lacing and (full or self._page_samples + samples > self._page_samples_limit):
            out = self._emit(0)
        self._granule += samples
        out += self._append(packet, self._granule)
        self._page_samples += samples
        return out

    def finish(self, trim: int = 0) -> bytes:
        """Flush the last page with the EOS flag (an empty EOS page if nothing is pending).

        ``trim``: samples at the end of the final page's packets that are padding
        and must not be played (RFC 7845 section 4.4); at most the samples of
        the packets completed on that page.
        """
        self._check_open()
        if not 0 <= trim <= self._page_samples:
            raise ValueError(
                f"can trim 0..{self._page_samples} samples (the final page's packets), got {trim}"
            )
        if not self._lacing:
            # Nothing pending: the empty EOS page repeats the stream's end position.
            self._page_granule = self._granule
        self._page_granule -= trim
        self._finished = True
        return self._emit(FLAG_EOS)

    def _check_open(self) -> None:
        if not self._headers_done:
            raise ValueError("call headers() first")
        if self._finished:
            raise ValueError("the stream is finished")

    def _append(self, packet: bytes, granule: int) -> bytes:
        """Lace ``packet`` into the current page, emitting pages it fills up."""
        out = b""
        pos = 0
        for index, value in enumerate(lacing_values(len(packet))):
            if len(self._lacing) == MAX_SEGMENTS:
                out += self._emit(0)
                # The next page starts mid-packet unless this packet had not begun.
                self._page_continued = index > 0
            self._lacing.append(value)
            self._body += packet[pos : pos + value]
            pos += value
        self._page_granule = granule
        return out

    def _emit(self, flags: int) -> bytes:
        if self._page_continued:
            flags |= FLAG_CONTINUED
        header = _HEADER.pack(
            CAPTURE_PATTERN,
            STREAM_STRUCTURE_VERSION,
            flags,
            self._page_granule,
            self.serial,
            self._sequence,
            0,
            len(self._lacing),
        )
        page = bytearray(header + self._lacing + self._body)
        page[CRC_OFFSET : CRC_OFFSET + 4] = struct.pack("<I", ogg_crc(page))
        self._sequence += 1
        if self._page_granule != NO_GRANULE:
            self._last_granule = self._page_granule
        self._lacing.clear()
        self._body.clear()
        self._page_granule = NO_GRANULE
        self._page_continued = False
        self._page_samples = 0
        return bytes(page)
