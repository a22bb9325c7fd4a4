"""`bangor identity` as a real process with BANGOR_HOME set."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bangor.client.identity import IDENTITY_KEY_FILE
from bangor.wire.identity import identity_fingerprint
from bangor.wire.noise import public_key
from tests.integration.conftest import client_env, run_bangor


def _stored_fingerprint(home: Path) -> str:
    private = bytes.fromhex((home / IDENTITY_KEY_FILE).read_text().strip())
    return identity_fingerprint(public_key(private))


def test_prints_fingerprint_of_stored_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = run_bangor(["identity"], env=client_env(home))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [_stored_fingerprint(home)]
    second = run_bangor(["identity"], env=client_env(home))
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout


def test_json(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = run_bangor(["identity", "--json"], env=client_env(home))
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    path = home / IDENTITY_KEY_FILE
    private = bytes.fromhex(path.read_text().strip())
    assert info == {
        "fingerprint": _stored_fingerprint(home),
        "public_key": public_key(private).hex(),
        "path": str(path),
    }


def test_key_readable_by_others_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_bangor(["identity"], env=client_env(home)).returncode == 0
    os.chmod(home / IDENTITY_KEY_FILE, 0o644)
    result = run_bangor(["identity"], env=client_env(home))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "readable by others; chmod 600 it" in result.stderr
    assert str(home / IDENTITY_KEY_FILE) in result.stderr
    assert "Traceback" not in result.stderr


def test_listed_in_help(tmp_path: Path) -> None:
    result = run_bangor(["--help"], env=client_env(tmp_path))
    assert result.returncode == 0
    assert "identity" in result.stdout
