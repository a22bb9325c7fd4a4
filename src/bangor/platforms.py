"""Where Linux, Windows and macOS differ for Bangor: per-user folders and file modes.

Folders: on Linux (and other Unix) exactly the XDG paths Bangor always used, so
existing users' keys and settings are still found; on Windows and macOS the places
those systems expect (platformdirs): ``%LOCALAPPDATA%\\bangor`` and
``~/Library/Application Support/bangor``. A Windows or macOS user who already has a
folder at the XDG path (from a Bangor before this) keeps using it: their identity key
is there, and a new one would look like an impostor to their friends.

File modes: Windows keeps who may read a file in ACLs, not in mode bits (``st_mode``
says 0o666 for every writable file and ``chmod`` only sets read-only), so checks of
group and other bits would refuse every key file there. The user's profile folders
are private to the user by default ACLs, which is what the 0600 and 0700 modes give
on Unix.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "bangor"


def modes_enforced() -> bool:
    """Whether Unix permission bits mean anything here (not on Windows)."""
    return sys.platform != "win32"


def _xdg(variable: str, default: str) -> Path:
    return Path(os.environ.get(variable) or str(Path.home() / default))


def _native(kind: str) -> Path | None:
    """platformdirs' folder of ``kind`` ("data" or "config") on Windows and macOS."""
    if sys.platform == "win32":
        # Chosen here, not by platformdirs at its import, so tests can force the branch.
        from platformdirs.windows import Windows

        # Settings roam with a Windows profile; keys and state stay on this machine.
        win = Windows(appname=APP_NAME, appauthor=False, roaming=kind == "config")
        return Path(win.user_config_dir if kind == "config" else win.user_data_dir)
    if sys.platform == "darwin":
        from platformdirs.macos import MacOS

        mac = MacOS(appname=APP_NAME, appauthor=False)
        return Path(mac.user_config_dir if kind == "config" else mac.user_data_dir)
    return None


def user_data_dir() -> Path:
    """This user's Bangor data folder: ``$XDG_DATA_HOME/bangor``, else
    ``~/.local/share/bangor`` on Linux; platformdirs' on Windows and macOS."""
    return _pick("data", _xdg("XDG_DATA_HOME", ".local/share") / APP_NAME)


def user_config_dir() -> Path:
    """This user's Bangor config folder: ``$XDG_CONFIG_HOME/bangor``, else
    ``~/.config/bangor`` on Linux; platformdirs' on Windows and macOS."""
    return _pick("config", _xdg("XDG_CONFIG_HOME", ".config") / APP_NAME)


def _pick(kind: str, legacy: Path) -> Path:
    native = _native(kind)
    return legacy if native is None or legacy.is_dir() else native
