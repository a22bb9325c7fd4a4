"""Server key pinning: invite fingerprints, else trust on first use.

``known_servers`` holds one line per server: ``host:port fingerprint-hex``. A
changed key is refused with a loud message (like SSH): a server whose key changed
may be an impostor, and only its operator can say it is not.
"""

from __future__ import annotations

import os
from pathlib import Path

from bangor.errors import KeyPinError
from bangor.platforms import user_data_dir
from bangor.wire.invite import normalize_host

KNOWN_SERVERS = "known_servers"


def client_data_dir() -> Path:
    """``$BANGOR_HOME``, else ``$XDG_DATA_HOME/bangor``, else ``~/.local/share/bangor``
    (on Windows and macOS their own per-user data folder: :mod:`bangor.platforms`)."""
    if home := os.environ.get("BANGOR_HOME"):
        return Path(home)
    return user_data_dir()


class KnownServers:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def default(cls) -> KnownServers:
        return cls(client_data_dir() / KNOWN_SERVERS)

    @staticmethod
    def key(host: str, port: int) -> str:
        """One entry per server however its host is spelled (case, IP literal form)."""
        return f"{normalize_host(host)}:{port}"

    def _load(self) -> dict[str, str]:
        entries: dict[str, str] = {}
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return entries
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2:
                entries[parts[0]] = parts[1]
        return entries

    def get(self, host: str, port: int) -> bytes | None:
        value = self._load().get(self.key(host, port))
        return bytes.fromhex(value) if value else None

    def remember(self, host: str, port: int, fp: bytes) -> None:
        entries = self._load()
        entries[self.key(host, port)] = fp.hex()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(f"{k} {v}\n" for k, v in sorted(entries.items())))
        tmp.replace(self.path)

    def check(self, host: str, port: int, fp: bytes) -> bool:
        """True if first seen (and now remembered); raises KeyPinError on a change."""
        known = self.get(host, port)
        server = self.key(host, port)
        if known is None:
            self.remember(host, port, fp)
            return True
        if known != fp:
            raise KeyPinError(
                f"WARNING: THE KEY OF SERVER {server} HAS CHANGED. Someone may be "
                f"intercepting the connection, or the server was reinstalled. Refusing to "
                f"connect. If the operator confirms the new key, remove the line for "
                f"{server} from {self.path}."
            )
        return False
