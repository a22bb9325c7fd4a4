"""Load or create a static X25519 private key stored as hex text, mode 0600.

Not sans-I/O: this is the one file helper the server (and clients, for their
identity) use. A key that others can read is refused rather than silently fixed,
because it may already have leaked.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import stat

from bangor.errors import BangorError
from bangor.platforms import modes_enforced
from bangor.wire.noise import KEY_SIZE, generate_static_key

KEY_FILE_MODE = 0o600
KEY_DIR_MODE = 0o700


def _read_key(path: pathlib.Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise BangorError(f"cannot read key file {path}: {exc.strerror}") from None
    try:
        # fstat on the open file, so the mode we check is the file we read.
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise BangorError(f"key file {path} is not a regular file")
        # Windows has no such bits (every file says 0o666); its ACLs keep the user's
        # profile private, so there the check would only refuse every key file.
        if modes_enforced() and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise BangorError(f"key file {path} is readable by others; chmod 600 it")
        raw = os.read(fd, 4 * KEY_SIZE)  # hex plus whitespace; more than this is garbage
    finally:
        os.close(fd)
    try:
        key = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise BangorError(f"key file {path} is corrupt (expected 64 hex digits)") from None
    if len(key) != KEY_SIZE:
        raise BangorError(f"key file {path} is corrupt (expected 64 hex digits)")
    return key


def write_private(path: pathlib.Path, data: bytes) -> None:
    """Write ``data`` to ``path``, mode 0600 (its folder made 0700 if missing); OSError.

    Through a new file renamed over ``path``: rename is atomic, so a reader sees the old
    contents or the whole new ones, never half.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(mode=KEY_DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _create_key(path: pathlib.Path) -> bytes:
    key = generate_static_key()
    try:
        write_private(path, (key.hex() + "\n").encode("ascii"))
    except OSError as exc:
        raise BangorError(f"cannot create key file {path}: {exc.strerror}") from None
    return key


def load_or_create_key(path: pathlib.Path) -> bytes:
    """The 32-byte private key in ``path``, generated and saved on first use."""
    if path.exists():
        return _read_key(path)
    return _create_key(path)
