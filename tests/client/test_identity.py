"""The device identity key and known members: trust on first use, change noticed once."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from bangor.client.identity import (
    IDENTITY_KEY_FILE,
    KNOWN_MEMBERS_FILE,
    KnownMembers,
    Trust,
    TrustResult,
    identity_path,
    load_identity,
)
from bangor.errors import BangorError, LocalProtocolError
from bangor.wire.identity import identity_fingerprint

SERVER = "example.org:7600"


def _key() -> bytes:
    return os.urandom(32)


# --- load_identity ---------------------------------------------------------------


def test_identity_created_0600_under_bangor_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("BANGOR_HOME", str(home))
    key = load_identity()
    path = home / IDENTITY_KEY_FILE
    assert identity_path() == path
    assert len(key) == 32
    assert path.read_text() == key.hex() + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert load_identity() == key
    assert load_identity(home) == key


def test_identity_explicit_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANGOR_HOME", str(tmp_path / "elsewhere"))
    key = load_identity(tmp_path)
    assert (tmp_path / IDENTITY_KEY_FILE).read_text() == key.hex() + "\n"
    assert not (tmp_path / "elsewhere").exists()


def test_identity_readable_by_others_refused(tmp_path: Path) -> None:
    load_identity(tmp_path)
    path = tmp_path / IDENTITY_KEY_FILE
    os.chmod(path, 0o644)
    with pytest.raises(BangorError, match="readable by others; chmod 600 it"):
        load_identity(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # refused, not silently fixed


def test_identity_unsearchable_dir_is_a_bangor_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can search any directory")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o000)
    try:
        with pytest.raises(BangorError, match="key file"):
            load_identity(locked / "home")
    finally:
        locked.chmod(0o700)


# --- KnownMembers ----------------------------------------------------------------


def test_new_known_changed_known(tmp_path: Path) -> None:
    members = KnownMembers(tmp_path / KNOWN_MEMBERS_FILE)
    first, second = _key(), _key()
    fp1, fp2 = identity_fingerprint(first), identity_fingerprint(second)

    assert members.check(SERVER, "alice", first) == TrustResult(Trust.NEW, ())
    assert members.check(SERVER, "alice", first) == TrustResult(Trust.KNOWN, (fp1,))
    assert members.check(SERVER, "alice", second) == TrustResult(Trust.CHANGED, (fp1,))
    # The change is reported once; both devices are now known.
    assert members.check(SERVER, "alice", second) == TrustResult(Trust.KNOWN, (fp1, fp2))
    assert members.check(SERVER, "alice", first).trust is Trust.KNOWN
    assert members.get(SERVER, "alice") == (first, second)


def test_servers_and_users_do_not_mix(tmp_path: Path) -> None:
    members = KnownMembers(tmp_path / KNOWN_MEMBERS_FILE)
    key = _key()
    assert members.check(SERVER, "alice", key).trust is Trust.NEW
    assert members.check(SERVER, "bob", key).trust is Trust.NEW
    assert members.check("other.org:7600", "alice", key).trust is Trust.NEW
    assert members.check(SERVER, "bob", _key()).trust is Trust.CHANGED
    assert members.check("other.org:7600", "alice", key).trust is Trust.KNOWN
    assert members.get(SERVER, "alice") == (key,)
    assert members.get("example.org:7601", "alice") == ()
    assert members.get(SERVER, "carol") == ()


def test_persisted_and_reread(tmp_path: Path) -> None:
    path = tmp_path / KNOWN_MEMBERS_FILE
    key = _key()
    KnownMembers(path).check(SERVER, "alice", key)
    # A fresh instance (a later run) sees what the first one wrote.
    assert KnownMembers(path).check(SERVER, "alice", key).trust is Trust.KNOWN
    data = json.loads(path.read_text())
    assert data == {"version": 1, "servers": {SERVER: {"alice": [key.hex()]}}}


def test_file_mode_and_no_temp_left(tmp_path: Path) -> None:
    path = tmp_path / "new" / KNOWN_MEMBERS_FILE
    KnownMembers(path).check(SERVER, "alice", _key())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_default_follows_bangor_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANGOR_HOME", str(tmp_path))
    assert KnownMembers.default().path == tmp_path / KNOWN_MEMBERS_FILE


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        "[]",
        '{"version": 1}',
        '{"version": 1, "servers": []}',
        '{"version": 1, "servers": {"s": []}}',
        '{"version": 1, "servers": {"s": {"u": "abcd"}}}',
        '{"version": 1, "servers": {"s": {"u": ["zz"]}}}',
        '{"version": 1, "servers": {"s": {"u": ["abcd"]}}}',
        '{"version": 1, "servers": {"s": {"u": [7]}}}',
        '{"version": 2, "servers": {}}',
    ],
)
def test_corrupt_file_refused_and_left_alone(tmp_path: Path, content: str) -> None:
    path = tmp_path / KNOWN_MEMBERS_FILE
    path.write_text(content)
    members = KnownMembers(path)
    with pytest.raises(BangorError, match=str(path)):
        members.check(SERVER, "alice", _key())
    with pytest.raises(BangorError, match=str(path)):
        members.get(SERVER, "alice")
    assert path.read_text() == content


def test_invalid_utf8_refused(tmp_path: Path) -> None:
    path = tmp_path / KNOWN_MEMBERS_FILE
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(BangorError, match="corrupt"):
        KnownMembers(path).check(SERVER, "alice", _key())
    assert path.read_bytes() == b"\xff\xfe{"


def test_unreadable_file_refused(tmp_path: Path) -> None:
    path = tmp_path / KNOWN_MEMBERS_FILE
    path.mkdir()  # reading a directory fails with an OSError, as root too
    with pytest.raises(BangorError, match="cannot read known members file"):
        KnownMembers(path).get(SERVER, "alice")


def test_wrong_key_length_refused(tmp_path: Path) -> None:
    path = tmp_path / KNOWN_MEMBERS_FILE
    with pytest.raises(LocalProtocolError):
        KnownMembers(path).check(SERVER, "alice", b"\x00" * 31)
    assert not path.exists()


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    # Separate instances, as separate clients sharing one data directory would be.
    path = tmp_path / KNOWN_MEMBERS_FILE

    def add(worker: int) -> None:
        members = KnownMembers(path)
        for i in range(10):
            assert members.check(SERVER, f"user{worker}-{i}", _key()).trust is Trust.NEW

    threads = [threading.Thread(target=add, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    users = json.loads(path.read_text())["servers"][SERVER]
    assert len(users) == 80
