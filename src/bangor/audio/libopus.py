"""libopus through ctypes: the copy inside the ``av`` wheel, or the system's.

PyAV's wheels carry libopus as a shared library of its own on every platform it
builds for (Linux x86_64 and aarch64, Windows, macOS), so ``pip install`` alone gives
Bangor a codec there, with or without a system libopus (Debian ``libopus0``; which
one comes first: :func:`find`). PyAV itself is never imported: importing it loads all of
FFmpeg, and its codec API has no Opus loss concealment or FEC decoding. The library
file is found through the ``av`` distribution's file list, so wheel layouts
(``av.libs/`` from auditwheel and delvewheel, ``av/.dylibs/`` from delocate) need no
guessing.

The binding is ours, not opuslib's: opuslib declares ``opus_encoder_ctl`` without
argument types, so its value reaches a variadic parameter as a fixed one, which
Apple Silicon passes in a different place (the encoder then reads garbage). Here the
two fixed parameters are declared and the value goes as a variadic argument, which
ctypes then passes as the platform's ABI wants.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bangor.errors import AudioError, CodecUnavailableError

LIBOPUS_MISSING = (
    "libopus is not installed: install the Python package av (pip install av; its wheels "
    "carry libopus), or the Debian package libopus0 (or your system's libopus)"
)

# The distribution whose wheels carry libopus, and how its copy is named in them:
# libopus-1a2b3c4d.so.0.10.1 (auditwheel), libopus.0.dylib (delocate),
# opus-1a2b3c4d.dll or libopus-0-1a2b3c4d.dll (delvewheel).
BUNDLING_DISTRIBUTION = "av"
LIBOPUS_ENV = "BANGOR_LIBOPUS"  # a libopus file to load instead
_BUNDLED_NAME = re.compile(r"(lib)?opus(-[0-9A-Za-z]+)*(\.\d+)*\.(so(\.\d+)*|dylib|dll)", re.I)

# opus_defines.h
APPLICATION_VOIP = 2048
APPLICATION_AUDIO = 2049
SIGNAL_VOICE = 3001
SET_BITRATE = 4002
GET_BITRATE = 4003
SET_COMPLEXITY = 4010
GET_COMPLEXITY = 4011
SET_INBAND_FEC = 4012
GET_INBAND_FEC = 4013
SET_PACKET_LOSS_PERC = 4014
GET_PACKET_LOSS_PERC = 4015
SET_SIGNAL = 4024
GET_SIGNAL = 4025
GET_LOOKAHEAD = 4027
OPUS_OK = 0


@dataclass(frozen=True)
class Libopus:
    """The loaded library, its functions typed, and where it came from."""

    path: str
    source: str  # "av" (the wheel's copy), "system", or "given" ($BANGOR_LIBOPUS)
    version: str  # opus_get_version_string(), e.g. "libopus 1.5.2"
    encoder_create: Any
    encoder_ctl: Any
    encode: Any
    encoder_destroy: Any
    decoder_create: Any
    decode: Any
    decoder_destroy: Any
    strerror_c: Any

    def strerror(self, code: int) -> str:
        raw: bytes = self.strerror_c(code)
        return raw.decode("utf-8", "replace")

    def ctl_set(self, encoder: int, request: int, value: int) -> None:
        """Change an encoder setting; AudioError with libopus' reason if refused."""
        # The value is a variadic argument: passed as ctypes.c_int32 so ctypes does not
        # have to guess its width.
        code: int = self.encoder_ctl(encoder, request, ctypes.c_int32(value))
        if code != OPUS_OK:
            raise AudioError(f"Opus encoder setting {request} refused: {self.strerror(code)}")

    def ctl_get(self, encoder: int, request: int) -> int:
        value = ctypes.c_int32()
        code: int = self.encoder_ctl(encoder, request, ctypes.byref(value))
        if code != OPUS_OK:
            raise AudioError(f"Opus encoder setting {request} refused: {self.strerror(code)}")
        return value.value


def _bind(path: str, source: str) -> Libopus:
    lib = ctypes.CDLL(path)
    c_int, c_int32, c_void_p = ctypes.c_int, ctypes.c_int32, ctypes.c_void_p
    err_p = ctypes.POINTER(ctypes.c_int)

    def fn(name: str, restype: Any, *argtypes: Any) -> Any:
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
        return function

    version = fn("opus_get_version_string", ctypes.c_char_p)()
    return Libopus(
        path=path,
        source=source,
        version=version.decode("ascii", "replace"),
        encoder_create=fn("opus_encoder_create", c_void_p, c_int32, c_int, c_int, err_p),
        # Only the fixed parameters: calls with one more argument are variadic calls.
        encoder_ctl=fn("opus_encoder_ctl", c_int, c_void_p, c_int),
        encode=fn("opus_encode", c_int32, c_void_p, c_void_p, c_int, c_void_p, c_int32),
        encoder_destroy=fn("opus_encoder_destroy", None, c_void_p),
        decoder_create=fn("opus_decoder_create", c_void_p, c_int32, c_int, err_p),
        # The packet as c_char_p: bytes pass without a copy, and b"" with length 0 is a
        # lost frame, which libopus conceals.
        decode=fn("opus_decode", c_int, c_void_p, ctypes.c_char_p, c_int32, c_void_p, c_int, c_int),
        decoder_destroy=fn("opus_decoder_destroy", None, c_void_p),
        strerror_c=fn("opus_strerror", ctypes.c_char_p, c_int),
    )


def bundled_candidates() -> list[str]:
    """The libopus files inside the installed ``av`` wheel (none when it is not there)."""
    try:
        dist = importlib.metadata.distribution(BUNDLING_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return []
    found = []
    for file in dist.files or ():
        if _BUNDLED_NAME.fullmatch(file.name):
            found.append(str(Path(str(dist.locate_file(file))).resolve()))
    return sorted(found)


def system_candidates() -> list[str]:
    """What the system's loader knows as libopus (Debian's libopus0: libopus.so.0)."""
    name = ctypes.util.find_library("opus")
    return [name] if name else []


def find() -> Libopus:
    """libopus, or CodecUnavailableError naming what to install.

    On Linux the distribution's libopus comes first (Debian's libopus0 is what the
    real-call tests measure; the wheel's 1.6.1 scored lower there with 40 ms frames),
    the wheel's copy when there is none (a Pi without libopus0). Elsewhere the wheel's
    copy comes first: a system libopus is rare on Windows and macOS, and the PATH that
    Windows searches may hold any program's opus.dll. ``$BANGOR_LIBOPUS`` names a
    library file to use instead (to compare versions, or to step around a bad build):
    only that one is tried.
    """
    failures = []
    bundled = ("av", bundled_candidates())
    system = ("system", system_candidates())
    if chosen := os.environ.get(LIBOPUS_ENV):
        candidates = [("given", [chosen])]
    elif sys.platform.startswith("linux"):
        candidates = [system, bundled]
    else:
        candidates = [bundled, system]
    for source, paths in candidates:
        for path in paths:
            try:
                return _bind(path, source)
            except (OSError, AttributeError) as exc:  # not loadable, or not libopus
                failures.append(f"{path}: {exc}")
    detail = f" (tried {'; '.join(failures)})" if failures else ""
    raise CodecUnavailableError(LIBOPUS_MISSING + detail)
