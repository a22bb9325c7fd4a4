"""Ogg Opus muxer: CRC against opusenc's pages, page structure, lacing, spanning packets.

The page checks parse with a few struct calls written here, independent of
bangor.audio.ogg.read_pages, so a bug shared by the writer and reader shows.
"""

from __future__ import annotations

import ctypes
import shutil
import struct
import subprocess
import wave
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bangor.audio import libopus
from bangor.audio.codec import load_libopus
from bangor.audio.ogg import (
    DEFAULT_PAGE_SAMPLES,
    FLAG_BOS,
    FLAG_CONTINUED,
    FLAG_EOS,
    MAX_SEGMENTS,
    NO_GRANULE,
    OggOpusMuxer,
    OggPage,
    OpusHead,
    OpusTags,
    lacing_values,
    ogg_crc,
    packets_of,
    read_pages,
)
from bangor.errors import AudioError
from bangor.settings import FRAME_SAMPLES, SAMPLE_RATE
from tests.audiocheck import align, read_wav_48k

PRE_SKIP = 312
SERIAL = 0x1234_5678
OPUS_TOOLS = "opus-tools (apt-get install opus-tools)"


def tool(name: str, package: str = OPUS_TOOLS) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: install {package}")
    return path


@dataclass(frozen=True)
class RawPage:
    magic: bytes
    version: int
    flags: int
    granule: int
    serial: int
    seq: int
    crc: int
    lacing: list[int]
    raw: bytes


def raw_pages(data: bytes) -> list[RawPage]:
    """Split a stream into pages with plain struct calls (no CRC check)."""
    pages = []
    pos = 0
    while pos < len(data):
        magic, version, flags, granule, serial, seq, crc, count = struct.unpack_from(
            "<4sBBqIIIB", data, pos
        )
        lacing = list(data[pos + 27 : pos + 27 + count])
        end = pos + 27 + count + sum(lacing)
        pages.append(
            RawPage(magic, version, flags, granule, serial, seq, crc, lacing, data[pos:end])
        )
        pos = end
    assert pos == len(data), "stream ends inside a page"
    return pages


def zeroed_crc(page: bytes) -> bytes:
    return page[:22] + bytes(4) + page[26:]


def fake_packet(size: int, seed: int = 0) -> bytes:
    # TOC byte 0xF8: CELT-only, fullband, 20 ms, one frame; the rest is noise.
    rng = np.random.default_rng(seed)
    return b"\xf8" + rng.integers(0, 256, size - 1, dtype=np.uint8).tobytes()


def mux(
    packets: list[bytes], samples: int = FRAME_SAMPLES, page_samples: int = DEFAULT_PAGE_SAMPLES
) -> bytes:
    muxer = OggOpusMuxer(SERIAL, PRE_SKIP, page_samples=page_samples)
    out = muxer.headers()
    for packet in packets:
        out += muxer.add_packet(packet, samples)
    return out + muxer.finish()


# --- CRC ---------------------------------------------------------------------


def test_crc_check_value() -> None:
    # CRC-32/POSIX ("cksum": poly 0x04C11DB7, init 0, no reflection) has check value
    # 0x765E7680 with a final XOR of 0xFFFFFFFF; Ogg skips that XOR.
    assert ogg_crc(b"123456789") == 0x765E7680 ^ 0xFFFF_FFFF
    assert ogg_crc(b"") == 0


def _crc_via_zlib(data: bytes) -> int:
    # zlib's CRC-32 is the bit-reflected form of the same polynomial: feed it
    # bit-reversed bytes with its pre/post inversion undone, reverse the result.
    reverse = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))
    reg = zlib.crc32(data.translate(reverse), 0xFFFF_FFFF) ^ 0xFFFF_FFFF
    return int(f"{reg:032b}"[::-1], 2)


@given(st.binary(max_size=600))
def test_crc_matches_reflected_zlib(data: bytes) -> None:
    assert ogg_crc(data) == _crc_via_zlib(data)


@pytest.fixture(scope="module")
def opusenc_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A 3 s chirp encoded by the reference encoder, opusenc."""
    tmp = tmp_path_factory.mktemp("opusenc")
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    pcm = np.round(8000 * np.sin(2 * np.pi * (200 + 300 * t) * t)).astype("<i2")
    with wave.open(str(tmp / "in.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    out = tmp / "ref.opus"
    # A long comment makes opusenc split the OpusTags packet across pages.
    subprocess.run(
        [tool("opusenc"), "--quiet", "--comment", "X=" + "y" * 70_000, str(tmp / "in.wav"), out],
        check=True,
    )
    return out.read_bytes()


def test_crc_of_every_opusenc_page(opusenc_file: bytes) -> None:
    pages = raw_pages(opusenc_file)
    assert len(pages) >= 4
    assert any(p.flags == FLAG_CONTINUED for p in pages)  # the split comment header
    for page in pages:
        assert ogg_crc(zeroed_crc(page.raw)) == page.crc


def test_reader_parses_opusenc_output(opusenc_file: bytes) -> None:
    pages = list(read_pages(opusenc_file))
    assert pages[0].bos and pages[-1].eos
    packets = packets_of(pages)
    head = OpusHead.from_bytes(packets[0])
    assert (head.channels, head.pre_skip, head.input_sample_rate) == (1, PRE_SKIP, SAMPLE_RATE)
    tags = OpusTags.from_bytes(packets[1])
    assert "X=" + "y" * 70_000 in tags.comments
    # RFC 7845 end trimming as the reference does it: the input length plus pre-skip.
    assert pages[-1].granule == 3 * SAMPLE_RATE + PRE_SKIP
    assert (len(packets) - 2) * FRAME_SAMPLES >= pages[-1].granule


def test_reader_rejects_a_flipped_bit(opusenc_file: bytes) -> None:
    bad = bytearray(opusenc_file)
    bad[100] ^= 0x10
    with pytest.raises(AudioError, match="fails its CRC check"):
        list(read_pages(bytes(bad)))
    with pytest.raises(AudioError, match="truncated Ogg page at byte"):
        list(read_pages(opusenc_file[:-1]))


# --- headers -----------------------------------------------------------------


def test_opus_head_bytes() -> None:
    expected = b"OpusHead" + bytes([1, 1, 0x38, 0x01, 0x80, 0xBB, 0, 0, 0, 0, 0])
    assert OpusHead(1, 312, 48_000).to_bytes() == expected
    assert OpusHead.from_bytes(expected) == OpusHead(1, 312, 48_000)


def test_opus_tags_round_trip() -> None:
    tags = OpusTags("bangor", ("TITLE=Tuesday call", "DATE=2024-05-01"))
    raw = tags.to_bytes()
    assert raw.startswith(b"OpusTags\x06\x00\x00\x00bangor\x02\x00\x00\x00")
    assert OpusTags.from_bytes(raw) == tags
    with pytest.raises(AudioError):
        OpusTags.from_bytes(raw[:-3])


def test_header_pages() -> None:
    muxer = OggOpusMuxer(SERIAL, PRE_SKIP, vendor="bangor", comments=["TITLE=x"])
    pages = raw_pages(muxer.headers())
    assert len(pages) == 2
    head, tags = pages
    assert head.magic == b"OggS" and head.version == 0
    assert head.flags == FLAG_BOS and tags.flags == 0
    assert head.granule == tags.granule == 0
    assert [head.seq, tags.seq] == [0, 1]
    assert head.serial == tags.serial == SERIAL
    assert head.lacing == [19]  # OpusHead alone on its page
    assert head.raw[28:] == OpusHead(1, PRE_SKIP, 48_000).to_bytes()


# --- audio pages -------------------------------------------------------------


def test_page_structure_of_three_seconds() -> None:
    packets = [fake_packet(160, seed=i) for i in range(150)]
    data = mux(packets)
    pages = raw_pages(data)
    for page in pages:
        assert page.magic == b"OggS"
        assert page.version == 0
        assert page.serial == SERIAL
    assert [p.seq for p in pages] == list(range(len(pages)))
    assert [p.flags for p in pages] == [FLAG_BOS] + [0] * (len(pages) - 2) + [FLAG_EOS]
    audio = pages[2:]
    granules = [p.granule for p in audio]
    # One packet per lacing value here; granule = packets completed so far * 960.
    counts = np.cumsum([len(p.lacing) for p in audio])
    assert granules == [int(c) * FRAME_SAMPLES for c in counts]
    assert granules == sorted(set(granules))  # strictly increasing
    assert all(len(p.lacing) * FRAME_SAMPLES <= DEFAULT_PAGE_SAMPLES for p in audio)
    assert granules[-1] == 150 * FRAME_SAMPLES
    assert packets_of(list(read_pages(data)))[2:] == packets


def test_a_page_is_returned_once_it_holds_a_second() -> None:
    muxer = OggOpusMuxer(SERIAL, PRE_SKIP)
    muxer.headers()
    per_page = DEFAULT_PAGE_SAMPLES // FRAME_SAMPLES
    outputs = [muxer.add_packet(fake_packet(100), FRAME_SAMPLES) for _ in range(3 * per_page)]
    flushed = [i for i, out in enumerate(outputs) if out]
    # The page is complete when the packet that would overfill it arrives.
    assert flushed == [per_page, 2 * per_page]
    assert raw_pages(outputs[per_page])[0].granule == DEFAULT_PAGE_SAMPLES
    assert muxer.last_granule == 2 * DEFAULT_PAGE_SAMPLES


@pytest.mark.parametrize(
    ("size", "lacing"),
    [
        (1, [1]),
        (254, [254]),
        (255, [255, 0]),  # a multiple of 255 ends with a 0 lacing value
        (256, [255, 1]),
        (510, [255, 255, 0]),
        (600, [255, 255, 90]),
    ],
)
def test_lacing_255_rule(size: int, lacing: list[int]) -> None:
    assert lacing_values(size) == lacing
    data = mux([fake_packet(size)])
    audio = raw_pages(data)[2]
    assert audio.lacing == lacing
    assert audio.granule == FRAME_SAMPLES
    assert packets_of(list(read_pages(data)))[2] == fake_packet(size)


def test_page_is_flushed_before_it_runs_out_of_segments() -> None:
    # 300-byte packets take 2 segments: 127 fit on a page, the 128th starts the next.
    packets = [fake_packet(300, seed=i) for i in range(200)]
    data = mux(packets, page_samples=10**6)
    audio = raw_pages(data)[2:]
    assert [len(p.lacing) for p in audio] == [254, 146]
    assert all(p.flags & FLAG_CONTINUED == 0 for p in audio)
    assert [p.granule for p in audio] == [127 * FRAME_SAMPLES, 200 * FRAME_SAMPLES]
    assert packets_of(list(read_pages(data)))[2:] == packets


def test_packet_spanning_pages() -> None:
    small, big, tail = fake_packet(50, 1), fake_packet(140_000, 2), fake_packet(60, 3)
    data = mux([small, big, tail])
    audio = raw_pages(data)[2:]
    # 1 segment for `small`, 550 for `big` (549 x 255 + 5) as 254 + 255 + 41, 1 for `tail`.
    assert [len(p.lacing) for p in audio] == [MAX_SEGMENTS, MAX_SEGMENTS, 42]
    assert [p.flags for p in audio] == [0, FLAG_CONTINUED, FLAG_CONTINUED | FLAG_EOS]
    # Only `small` completes on the first page; nothing completes on the second.
    assert [p.granule for p in audio] == [FRAME_SAMPLES, NO_GRANULE, 3 * FRAME_SAMPLES]
    assert packets_of(list(read_pages(data)))[2:] == [small, big, tail]


def test_packet_of_exactly_a_full_page() -> None:
    # 255 x 255 bytes need 256 lacing values: the terminating 0 goes on a second page.
    big = fake_packet(MAX_SEGMENTS * 255)
    data = mux([big])
    audio = raw_pages(data)[2:]
    assert [p.lacing for p in audio] == [[255] * 255, [0]]
    assert [p.granule for p in audio] == [NO_GRANULE, FRAME_SAMPLES]
    assert audio[1].flags == FLAG_CONTINUED | FLAG_EOS
    assert packets_of(list(read_pages(data)))[2] == big


def test_finish_with_trim_and_empty_eos_page() -> None:
    muxer = OggOpusMuxer(SERIAL, PRE_SKIP)
    muxer.headers()
    muxer.add_packet(fake_packet(100), FRAME_SAMPLES)
    muxer.add_packet(fake_packet(100), FRAME_SAMPLES)
    with pytest.raises(ValueError, match="can trim"):
        muxer.finish(trim=2 * FRAME_SAMPLES + 1)
    last = raw_pages(muxer.finish(trim=648))[0]
    assert last.flags == FLAG_EOS
    assert last.granule == 2 * FRAME_SAMPLES - 648
    # Nothing pending: an empty EOS page that repeats the end position.
    muxer = OggOpusMuxer(SERIAL, PRE_SKIP)
    muxer.headers()
    eos = raw_pages(muxer.finish())[0]
    assert (eos.flags, eos.granule, eos.lacing, eos.seq) == (FLAG_EOS, 0, [], 2)


def test_misuse_raises_value_error() -> None:
    muxer = OggOpusMuxer(SERIAL, PRE_SKIP)
    with pytest.raises(ValueError, match="headers"):
        muxer.add_packet(b"\xf8", FRAME_SAMPLES)
    muxer.headers()
    with pytest.raises(ValueError, match="already"):
        muxer.headers()
    with pytest.raises(ValueError, match="at least one byte"):
        muxer.add_packet(b"", FRAME_SAMPLES)
    with pytest.raises(ValueError, match="samples"):
        muxer.add_packet(b"\xf8", 0)
    muxer.finish()
    with pytest.raises(ValueError, match="finished"):
        muxer.add_packet(b"\xf8", FRAME_SAMPLES)
    for serial, pre_skip, channels in ((-1, 0, 1), (2**32, 0, 1), (1, 70_000, 1), (1, 0, 3)):
        with pytest.raises(ValueError):
            OggOpusMuxer(serial, pre_skip, channels=channels)
    with pytest.raises(ValueError, match="NAME=value"):
        OggOpusMuxer(1, 0, comments=["no equals sign"])


def test_read_pages_yields_values() -> None:
    data = mux([fake_packet(100)])
    pages = list(read_pages(data))
    assert isinstance(pages[0], OggPage)
    assert [p.offset for p in pages] == [0, pages[0].size, pages[0].size + pages[1].size]
    assert sum(p.size for p in pages) == len(data)


# --- real Opus through reference tools ---------------------------------------


def test_real_opus_decodes_sample_exact(tmp_path: Path) -> None:
    """Muxed packets of a plain libopus encoder decode to exactly the input, in time.

    APPLICATION_AUDIO here, because the VOIP mode's input high-pass filter
    advances the waveform by a few samples (see test_recording): this test
    isolates the muxer's pre-skip, granules and end trimming.
    """
    lib = load_libopus()
    error = ctypes.c_int()
    state = lib.encoder_create(SAMPLE_RATE, 1, libopus.APPLICATION_AUDIO, ctypes.byref(error))
    assert error.value == libopus.OPUS_OK
    lib.ctl_set(state, libopus.SET_BITRATE, 64_000)
    pre_skip = lib.ctl_get(state, libopus.GET_LOOKAHEAD)
    out_buffer = ctypes.create_string_buffer(4000)

    def encode(frame: bytes) -> bytes:
        n: int = lib.encode(state, frame, FRAME_SAMPLES, out_buffer, len(out_buffer))
        assert n > 0
        packet: bytes = out_buffer[:n]
        return packet

    # A chirp: no period, so cross-correlation has one clear peak.
    t = np.arange(50 * FRAME_SAMPLES) / SAMPLE_RATE
    pcm = np.round(8000 * np.sin(2 * np.pi * (200 + 900 * t) * t)).astype(np.int16)
    muxer = OggOpusMuxer(SERIAL, pre_skip, comments=["X=" + "z" * 70_000], page_samples=9600)
    out = muxer.headers()
    for i in range(0, len(pcm), FRAME_SAMPLES):
        out += muxer.add_packet(encode(pcm[i : i + FRAME_SAMPLES].tobytes()), 960)
    out += muxer.add_packet(encode(bytes(2 * FRAME_SAMPLES)), 960)
    lib.encoder_destroy(state)
    out += muxer.finish(trim=FRAME_SAMPLES - pre_skip)
    path = tmp_path / "exact.opus"
    path.write_bytes(out)

    info = subprocess.run([tool("opusinfo"), path], capture_output=True, text=True)
    assert info.returncode == 0, info.stdout + info.stderr
    assert "WARN" not in info.stdout + info.stderr
    assert "Playback length: 0m:01.000s" in info.stdout

    subprocess.run([tool("opusdec"), "--quiet", path, tmp_path / "out.wav"], check=True)
    decoded = read_wav_48k(tmp_path / "out.wav")
    assert len(decoded) == len(pcm)
    delay, aligned = align(pcm / 32768, decoded)
    assert delay == 0
    snr = 10 * np.log10(np.sum((pcm / 32768) ** 2) / np.sum((pcm / 32768 - aligned) ** 2))
    assert snr > 15, snr


# --- what the reader refuses -------------------------------------------------

HEAD = OpusHead(1, PRE_SKIP, 48_000).to_bytes()


@pytest.mark.parametrize(
    ("packet", "error"),
    [
        (HEAD[:-1], "not an OpusHead packet"),
        (b"OpusTags" + HEAD[8:], "not an OpusHead packet"),
        (HEAD[:8] + b"\x10" + HEAD[9:], r"unsupported OpusHead \(version 16, mapping family 0\)"),
        (HEAD[:-1] + b"\x01", r"unsupported OpusHead \(version 1, mapping family 1\)"),
        (HEAD + b"\x00", "unsupported OpusHead"),  # family 0 has no mapping table after it
    ],
)
def test_opus_head_refuses_what_it_cannot_play(packet: bytes, error: str) -> None:
    with pytest.raises(AudioError, match=error):
        OpusHead.from_bytes(packet)


def test_opus_head_of_a_later_compatible_version_is_read() -> None:
    """Versions 2..15 only add fields a version 1 reader may ignore (RFC 7845 5.1)."""
    assert OpusHead.from_bytes(HEAD[:8] + b"\x0f" + HEAD[9:]) == OpusHead(1, PRE_SKIP, 48_000)


@pytest.mark.parametrize(
    ("packet", "error"),
    [
        (b"OpusHead" + bytes(16), "not an OpusTags packet"),
        (b"OpusTags\x02\x00\x00\x00\xff\xfe\x00\x00\x00\x00", "malformed OpusTags packet"),
        (b"OpusTags\x00\x00\x00\x00\x01\x00\x00\x00", "malformed OpusTags packet"),  # count 1, none
        (b"OpusTags\x00\x00", "malformed OpusTags packet"),
        (b"OpusTags\x00\x00\x00\x00\x01\x00\x00\x00\x05\x00\x00\x00A=b", "truncated OpusTags"),
    ],
)
def test_opus_tags_refuses_malformed_packets(packet: bytes, error: str) -> None:
    with pytest.raises(AudioError, match=error):
        OpusTags.from_bytes(packet)


def test_reader_refuses_what_is_not_an_ogg_page() -> None:
    data = mux([fake_packet(100)])
    with pytest.raises(AudioError, match="no Ogg page at byte 0"):
        list(read_pages(b"RIFF" + data[4:]))
    with pytest.raises(AudioError, match="no Ogg page at byte 0"):
        list(read_pages(data[:4] + b"\x01" + data[5:]))  # stream structure version 1
    with pytest.raises(AudioError, match=f"truncated Ogg page header at byte {len(data)}"):
        list(read_pages(data + data[:26]))


def test_reader_flags_follow_the_header_type() -> None:
    small, big = fake_packet(50, 1), fake_packet(70_000, 2)
    pages = list(read_pages(mux([small, big])))
    assert [(p.bos, p.continued, p.eos) for p in pages] == [
        (True, False, False),  # OpusHead
        (False, False, False),  # OpusTags
        (False, False, False),  # `small` and the start of `big`
        (False, True, True),  # the rest of `big`
    ]


def test_muxer_counts_granules_and_knows_when_it_is_finished() -> None:
    muxer = OggOpusMuxer(SERIAL, PRE_SKIP)
    muxer.headers()
    assert (muxer.granule, muxer.last_granule, muxer.finished) == (0, 0, False)
    muxer.add_packet(fake_packet(10), FRAME_SAMPLES)
    muxer.add_packet(fake_packet(10), 2 * FRAME_SAMPLES)
    assert muxer.granule == 3 * FRAME_SAMPLES
    assert muxer.last_granule == 0  # both still on the open page
    muxer.finish()
    assert (muxer.last_granule, muxer.finished) == (3 * FRAME_SAMPLES, True)


@pytest.mark.parametrize(
    ("sample_rate", "page_samples", "error"),
    [
        (-1, DEFAULT_PAGE_SAMPLES, "input sample rate must be a uint32"),
        (2**32, DEFAULT_PAGE_SAMPLES, "input sample rate must be a uint32"),
        (SAMPLE_RATE, 0, "page_samples must be > 0"),
    ],
)
def test_muxer_refuses_impossible_settings(sample_rate: int, page_samples: int, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        OggOpusMuxer(SERIAL, PRE_SKIP, sample_rate=sample_rate, page_samples=page_samples)
