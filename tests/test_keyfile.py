"""Tests for bangor.keyfile."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bangor.errors import BangorError
from bangor.keyfile import load_or_create_key


def test_created_0600_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "server.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text() == key.hex() + "\n"
    assert load_or_create_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["server.key"]  # no temp left


def test_group_readable_refused(tmp_path: Path) -> None:
    path = tmp_path / "k"
    load_or_create_key(path)
    for mode in (0o640, 0o604, 0o660):
        os.chmod(path, mode)
        with pytest.raises(BangorError, match="readable by others; chmod 600 it"):
            load_or_create_key(path)


@pytest.mark.parametrize(
    "content", [b"", b"zz" * 32 + b"\n", b"ab" * 31 + b"\n", b"ab" * 33, b"\xff\xfe"]
)
def test_corrupt_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "k"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(BangorError, match="corrupt"):
        load_or_create_key(path)


def test_directory_refused(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.mkdir(mode=0o700)
    with pytest.raises(BangorError):
        load_or_create_key(path)


def test_hex_without_newline_accepted(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text("11" * 32)
    os.chmod(path, 0o600)
    assert load_or_create_key(path) == bytes([0x11]) * 32
