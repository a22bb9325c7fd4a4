"""This device's identity key and the identity keys of members seen before.

``identity.key`` holds the device's long-term X25519 private key (hex, mode 0600),
made on first use. ``known_members.json`` remembers, per server and user name,
every identity public key seen, so a key that changes is noticed (trust on first
use, like Signal: a change is reported once, then the new key is remembered too).
Public keys are stored whole, not as fingerprints, so safety numbers can be
recomputed from the file later.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from bangor.client.pinning import client_data_dir
from bangor.errors import BangorError, LocalProtocolError
from bangor.keyfile import load_or_create_key
from bangor.wire.identity import identity_fingerprint
from bangor.wire.noise import KEY_SIZE

IDENTITY_KEY_FILE = "identity.key"
KNOWN_MEMBERS_FILE = "known_members.json"
FILE_VERSION = 1
FILE_MODE = 0o600
DIR_MODE = 0o700

Members = dict[str, dict[str, list[bytes]]]  # server -> user -> keys, oldest first


def identity_path(data_dir: Path | None = None) -> Path:
    """Where the identity key lives: ``data_dir`` or :func:`client_data_dir`."""
    return (data_dir if data_dir is not None else client_data_dir()) / IDENTITY_KEY_FILE


def load_identity(data_dir: Path | None = None) -> bytes:
    """The device's long-term X25519 private key, created (mode 0600) on first use.

    A key file readable by group or others is refused, not repaired: it may have
    leaked already.
    """
    path = identity_path(data_dir)
    try:
        return load_or_create_key(path)
    except OSError as exc:
        # e.g. a parent directory we may not search: Path.exists() raises then.
        raise BangorError(f"cannot read key file {path}: {exc.strerror}") from None


class Trust(Enum):
    NEW = "new"  # first key seen for this user: now remembered
    KNOWN = "known"  # one of the keys remembered for this user
    CHANGED = "changed"  # user known, key not: new device or impostor; now remembered


@dataclass(frozen=True)
class TrustResult:
    trust: Trust
    known: tuple[str, ...]  # fingerprints remembered before this check, oldest first


class KnownMembers:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def default(cls) -> KnownMembers:
        return cls(client_data_dir() / KNOWN_MEMBERS_FILE)

    def get(self, server: str, user: str) -> tuple[bytes, ...]:
        """The identity public keys remembered for ``user`` on ``server``, oldest first."""
        return tuple(self._load().get(server, {}).get(user, []))

    def check(self, server: str, user: str, identity_public: bytes) -> TrustResult:
        """Classify ``identity_public`` for ``user`` on ``server`` and remember it."""
        if len(identity_public) != KEY_SIZE:
            raise LocalProtocolError(f"identity public key must be {KEY_SIZE} bytes")
        key = bytes(identity_public)
        # Locked across read-modify-write: two clients sharing a data directory
        # must not drop each other's new entries (a forgotten user is a TOFU hole).
        with self._locked():
            members = self._load()
            keys = members.setdefault(server, {}).setdefault(user, [])
            known = tuple(identity_fingerprint(k) for k in keys)
            if key in keys:
                return TrustResult(Trust.KNOWN, known)
            trust = Trust.CHANGED if keys else Trust.NEW
            keys.append(key)
            self._save(members)
        return TrustResult(trust, known)

    # -- file ----------------------------------------------------------------

    def _corrupt(self, why: str) -> BangorError:
        return BangorError(
            f"known members file {self.path} is corrupt ({why}); fix or move it away"
        )

    def _load(self) -> Members:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise BangorError(
                f"cannot read known members file {self.path}: {exc.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise self._corrupt("not UTF-8") from None
        try:
            data: Any = json.loads(text)
        except ValueError:
            raise self._corrupt("not valid JSON") from None
        if not isinstance(data, dict):
            raise self._corrupt("not a JSON object")
        if data.get("version") != FILE_VERSION:
            raise BangorError(
                f"known members file {self.path} has version {data.get('version')!r}; "
                f"this Bangor reads version {FILE_VERSION}"
            )
        servers = data.get("servers")
        if not isinstance(servers, dict):
            raise self._corrupt('"servers" is not an object')
        members: Members = {}
        for server, users in servers.items():
            if not isinstance(users, dict):
                raise self._corrupt(f"entry for server {server!r} is not an object")
            for user, hexkeys in users.items():
                members.setdefault(server, {})[user] = self._parse_keys(server, user, hexkeys)
        return members

    def _parse_keys(self, server: str, user: str, hexkeys: Any) -> list[bytes]:
        bad = self._corrupt(f"bad key list for user {user!r} on server {server!r}")
        if not isinstance(hexkeys, list):
            raise bad
        keys: list[bytes] = []
        for item in hexkeys:
            if not isinstance(item, str):
                raise bad
            try:
                key = bytes.fromhex(item)
            except ValueError:
                raise bad from None
            if len(key) != KEY_SIZE:
                raise bad
            keys.append(key)
        return keys

    def _save(self, members: Members) -> None:
        data = {
            "version": FILE_VERSION,
            "servers": {
                server: {user: [k.hex() for k in keys] for user, keys in users.items()}
                for server, users in members.items()
            },
        }
        payload = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            # A temp file left by a crash: ours to remove, since writers hold the lock.
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            # Atomic rename: a reader sees the old file or the new one, never half.
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise BangorError(
                f"cannot write known members file {self.path}: {exc.strerror}"
            ) from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if sys.platform == "win32":  # no flock; concurrent writers may lose an entry
            yield
            return
        import fcntl

        lock = self.path.with_name(f".{self.path.name}.lock")
        try:
            self.path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            raise BangorError(
                f"cannot lock known members file {self.path}: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock
