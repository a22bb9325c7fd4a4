"""Server key pinning: trust on first use, refusal on change, one entry per server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bangor.client.pinning import KnownServers, client_data_dir
from bangor.errors import KeyPinError


def test_first_use_then_same_key_then_changed_key(tmp_path: Path) -> None:
    known = KnownServers(tmp_path / "known_servers")
    key = os.urandom(16)
    assert known.check("example.org", 7600, key) is True
    assert known.check("example.org", 7600, key) is False
    with pytest.raises(KeyPinError, match="HAS CHANGED") as changed:
        known.check("example.org", 7600, os.urandom(16))
    assert str(tmp_path / "known_servers") in str(changed.value)
    assert known.get("example.org", 7600) == key  # a refusal changes nothing


def test_host_spellings_share_one_entry(tmp_path: Path) -> None:
    known = KnownServers(tmp_path / "known_servers")
    key = os.urandom(16)
    known.remember("Example.ORG", 7600, key)
    assert known.get("example.org", 7600) == key
    known.remember("[::1]", 7600, key)
    assert known.get("0:0:0:0:0:0:0:1", 7600) == key
    assert known.get("example.org", 7601) is None  # the port is part of the identity
    assert len((tmp_path / "known_servers").read_text().splitlines()) == 2


def test_default_location_follows_bangor_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BANGOR_HOME", str(tmp_path))
    assert client_data_dir() == tmp_path
    assert KnownServers.default().path == tmp_path / "known_servers"
