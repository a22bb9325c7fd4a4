"""Saved profiles and the password store (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bangor.errors import BangorError
from bangor.tui.config import (
    PasswordStore,
    Profile,
    config_path,
    load_profile,
    save_profile,
)
from tests.tui.conftest import MemoryKeyring


def test_config_lives_in_xdg_config_home_else_dot_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert config_path() == tmp_path / "config" / "bangor" / "config.toml"  # conftest's XDG
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config_path() == tmp_path / "home" / ".config" / "bangor" / "config.toml"


def test_profile_round_trip_keeps_other_profiles_and_keys(tmp_path: Path) -> None:
    assert load_profile() == Profile()  # no file yet
    path = config_path()
    path.parent.mkdir(parents=True)
    path.write_text('theme = "dark"\n[profiles.work]\nuser = "carol"\n')
    profile = Profile(server="pi.local:7600", user="alice", input="USB", output="null")
    save_profile(profile)
    assert load_profile() == profile
    assert load_profile("work").user == "carol"
    assert 'theme = "dark"' in path.read_text()


def test_profile_ignores_unknown_keys_and_refuses_bad_toml(tmp_path: Path) -> None:
    path = config_path()
    path.parent.mkdir(parents=True)
    path.write_text('[profiles.default]\nuser = "alice"\nfuture = 3\nnick = 7\n')
    assert load_profile() == Profile(user="alice")
    path.write_text("[profiles.default\n")
    with pytest.raises(BangorError, match="not valid TOML"):
        load_profile()


def test_without_a_keyring_nothing_is_stored() -> None:
    store = PasswordStore()  # conftest selects keyring's fail backend
    assert not store.available
    assert "asked each time" in store.describe()
    assert store.get("alice", "pi:7600") is None
    with pytest.raises(BangorError, match="no OS keyring"):
        store.set("alice", "pi:7600", "secret")


def test_keyring_stores_per_user_and_server(memory_keyring: MemoryKeyring) -> None:
    store = PasswordStore()
    assert store.available and "MemoryKeyring" in store.describe()
    store.set("alice", "pi:7600", "secret")
    assert store.get("alice", "pi:7600") == "secret"
    assert store.get("alice", "other:7600") is None
    assert memory_keyring.passwords == {("bangor", "alice@pi:7600"): "secret"}
