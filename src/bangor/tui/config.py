"""Saved profiles (TOML in the user's config dir) and passwords in the OS keyring.

The config file never holds a password. Passwords go to the OS keyring when a usable
backend is present (Secret Service, macOS Keychain, Windows Credential Locker); without
one the UI asks each time.
"""

from __future__ import annotations

import contextlib
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import tomli_w

from bangor.errors import BangorError
from bangor.platforms import user_config_dir

CONFIG_NAME = "config.toml"
DEFAULT_PROFILE = "default"
KEYRING_SERVICE = "bangor"
# A config file larger than this is not ours (or is damaged): refuse to parse it.
MAX_CONFIG_BYTES = 64 * 1024


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/bangor``, else ``~/.config/bangor`` (on Windows and macOS their
    own per-user config folder: :mod:`bangor.platforms`)."""
    return user_config_dir()


def config_path() -> Path:
    return config_dir() / CONFIG_NAME


@dataclass
class Profile:
    """What the UI remembers between runs: where, who and with which devices."""

    server: str = ""  # host:port, for creating rooms
    user: str = ""
    nick: str = ""
    input: str = "default"  # a source spec, as --input takes
    output: str = "default"  # a sink spec, as --output takes


def load_profile(name: str = DEFAULT_PROFILE, path: Path | None = None) -> Profile:
    """The saved profile, or an empty one when there is no config file yet."""
    path = path or config_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Profile()
    except OSError as exc:
        raise BangorError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise BangorError(f"{path} is over {MAX_CONFIG_BYTES} bytes: not a bangor config")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BangorError(f"{path} is not valid TOML: {exc}") from None
    table = data.get("profiles", {}).get(name, {})
    if not isinstance(table, dict):
        raise BangorError(f"{path}: [profiles.{name}] must be a table")
    known = {f.name for f in fields(Profile)}
    # Unknown keys are ignored (a newer version may have written them); values must be text.
    values = {k: v for k, v in table.items() if k in known and isinstance(v, str)}
    return Profile(**values)


def save_profile(profile: Profile, name: str = DEFAULT_PROFILE, path: Path | None = None) -> Path:
    """Write the profile, keeping other profiles and keys in the file; returns the path."""
    path = path or config_path()
    data: dict[str, Any] = {}
    with contextlib.suppress(FileNotFoundError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        data = tomllib.loads(path.read_text("utf-8"))
    profiles = data.setdefault("profiles", {})
    if not isinstance(profiles, dict):
        profiles = data["profiles"] = {}
    profiles[name] = asdict(profile)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(tomli_w.dumps(data), "utf-8")
        tmp.replace(path)  # whole file or old file, never half of one
    except OSError as exc:
        raise BangorError(f"cannot write {path}: {exc.strerror}") from None
    return path


class PasswordStore:
    """Passwords in the OS keyring, one per account and server; does nothing without one."""

    def __init__(self) -> None:
        self._keyring: Any = None
        self.backend_name = ""
        try:
            import keyring
            from keyring.backends import fail

            backend = keyring.get_keyring()
            # The fail backend (and priority 0 ones such as null) store nothing.
            if not isinstance(backend, fail.Keyring) and float(backend.priority) > 0:
                self._keyring = keyring
                self.backend_name = type(backend).__name__
        except Exception:  # a broken keyring setup must not stop the client
            self._keyring = None

    @property
    def available(self) -> bool:
        return self._keyring is not None

    def describe(self) -> str:
        """What happens to the password, in words for the user."""
        if self.available:
            return f"password kept in the OS keyring ({self.backend_name}) when you tick 'remember'"
        return "no OS keyring here: the password is asked each time, never saved"

    @staticmethod
    def account(user: str, server: str) -> str:
        return f"{user}@{server}"

    def get(self, user: str, server: str) -> str | None:
        if not self.available:
            return None
        try:
            value = self._keyring.get_password(KEYRING_SERVICE, self.account(user, server))
        except Exception:  # locked or gone away: ask instead
            return None
        return value if isinstance(value, str) else None

    def set(self, user: str, server: str, password: str) -> None:
        if not self.available:
            raise BangorError("no OS keyring here: the password cannot be remembered")
        try:
            self._keyring.set_password(KEYRING_SERVICE, self.account(user, server), password)
        except Exception as exc:
            raise BangorError(f"the OS keyring refused the password: {exc}") from None
