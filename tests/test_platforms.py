"""Per-user folders and file modes on Linux, Windows and macOS, each branch forced here.

platformdirs' Windows class is made to read %LOCALAPPDATA% and %APPDATA% from the
environment (it has a way to, for machines without the Windows API), and its macOS
class builds on the home folder, so both branches run on Linux with ``sys.platform``
patched.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from bangor import cli, platforms
from bangor.client.identity import IDENTITY_KEY_FILE
from bangor.client.pinning import client_data_dir
from bangor.errors import ExitCode
from bangor.keyfile import load_or_create_key
from bangor.tui.config import config_dir, config_path


@pytest.fixture(autouse=True)
def windows_folders_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # platformdirs asks the Windows shell through ctypes when ctypes imports, which
    # here it does without the shell: read %LOCALAPPDATA% and %APPDATA% instead.
    from platformdirs import windows

    monkeypatch.setattr(windows, "_RESOLVE_WIN_FOLDER", windows.get_win_folder_from_env_vars)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh home folder, no XDG or Bangor overrides, Windows' folders inside it."""
    for name in ("BANGOR_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "AppData" / "Local"))
    monkeypatch.setenv("APPDATA", str(tmp_path / "AppData" / "Roaming"))
    return tmp_path


def test_linux_keeps_the_paths_bangor_always_used(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    assert client_data_dir() == home / ".local" / "share" / "bangor"
    assert config_path() == home / ".config" / "bangor" / "config.toml"
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "conf"))
    assert client_data_dir() == home / "data" / "bangor"
    assert config_dir() == home / "conf" / "bangor"


def test_windows_uses_its_app_data_folders(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    assert client_data_dir() == home / "AppData" / "Local" / "bangor"
    # Settings roam with the Windows profile; the identity key stays on this machine.
    assert config_dir() == home / "AppData" / "Roaming" / "bangor"


def test_macos_uses_application_support(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    support = home / "Library" / "Application Support" / "bangor"
    assert client_data_dir() == support
    assert config_dir() == support


@pytest.mark.parametrize("system", ["win32", "darwin"])
def test_an_existing_xdg_folder_is_kept(
    system: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A user of an earlier Bangor has their identity key there: moving would lose it.
    (home / ".local" / "share" / "bangor").mkdir(parents=True)
    (home / ".config" / "bangor").mkdir(parents=True)
    monkeypatch.setattr(sys, "platform", system)
    assert client_data_dir() == home / ".local" / "share" / "bangor"
    assert config_dir() == home / ".config" / "bangor"


def test_bangor_home_wins_everywhere(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANGOR_HOME", str(home / "mine"))
    for system in ("linux", "win32", "darwin"):
        monkeypatch.setattr(sys, "platform", system)
        assert client_data_dir() == home / "mine"


def _loose_key(path: Path) -> None:
    load_or_create_key(path)
    path.chmod(0o644)


def test_a_key_readable_by_others_is_refused_where_modes_mean_something(
    tmp_path: Path,
) -> None:
    path = tmp_path / "identity.key"
    _loose_key(path)
    assert platforms.modes_enforced()
    with pytest.raises(Exception, match="readable by others; chmod 600 it"):
        load_or_create_key(path)


def test_windows_does_not_refuse_every_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On Windows st_mode says 0o666 for any writable file: the check is skipped there.
    path = tmp_path / "identity.key"
    _loose_key(path)
    key = bytes.fromhex(path.read_text().strip())
    monkeypatch.setattr(sys, "platform", "win32")
    assert not platforms.modes_enforced()
    assert load_or_create_key(path) == key


def test_bangor_identity_starts_as_on_windows(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The client's startup with Windows' branches: its folder, and a key with "loose"
    mode bits (as every Windows file has) is used, not refused."""
    monkeypatch.setattr(sys, "platform", "win32")
    folder = home / "AppData" / "Local" / "bangor"
    assert cli.main(["identity", "--json"]) == ExitCode.OK
    made = json.loads(capsys.readouterr().out)
    assert made["path"] == str(folder / IDENTITY_KEY_FILE)
    (folder / IDENTITY_KEY_FILE).chmod(0o666)
    assert cli.main(["identity", "--json"]) == ExitCode.OK
    assert json.loads(capsys.readouterr().out) == made
    # The same file on Unix is refused, as before.
    monkeypatch.setenv("BANGOR_HOME", str(folder))
    monkeypatch.setattr(sys, "platform", "linux")
    assert cli.main(["identity"]) == ExitCode.ERROR
    assert "readable by others" in capsys.readouterr().err


def test_server_data_dir_is_left_alone_on_windows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # `bangor host` runs a server on Windows too: no "made it private" warning each start
    # for modes that Windows reports for every folder.
    from bangor.server import sqlite

    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    monkeypatch.setattr(sys, "platform", "win32")
    sqlite.secure_data_dir(data)
    sqlite.check_path(str(data / "bangor.db"), "bangor.db")
    assert stat.S_IMODE(data.stat().st_mode) == 0o755
    assert not caplog.records
    monkeypatch.setattr(sys, "platform", "linux")
    sqlite.secure_data_dir(data)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
