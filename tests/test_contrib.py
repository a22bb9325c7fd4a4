"""contrib/: the systemd unit and the example config file it reads."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from bangor.cli import build_parser, main
from bangor.errors import ExitCode

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "contrib" / "bangor.service"
EXAMPLE = ROOT / "contrib" / "bangor.toml"


def _service() -> dict[str, list[str]]:
    """The [Service] section, each key with all its values (systemd repeats keys)."""
    values: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_systemd_analyze_verify_passes() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze here")
    result = subprocess.run(
        [analyze, "verify", str(UNIT)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "bangor.service" not in result.stderr, result.stderr  # no warnings about it


def test_the_unit_matches_how_the_server_starts_and_restarts() -> None:
    service = _service()
    # READY=1 once listening (server/sdnotify.py); SIGUSR1 exits 0 to be started again,
    # and a usage error (exit 2: a bad config file) would only fail again.
    assert service["Type"] == ["notify"]
    assert service["ExecReload"] == ["/bin/kill -USR1 $MAINPID"]
    assert service["Restart"] == ["always"] and service["RestartPreventExitStatus"] == ["2"]
    [start] = service["ExecStart"]
    argv = shlex.split(start)
    assert argv[:2] == ["/usr/bin/env", "bangor"]
    args = build_parser().parse_args(argv[2:])
    assert args.command == "serve" and args.config == "/etc/bangor/bangor.toml"
    assert service["StateDirectory"] == ["bangor"]


def test_the_unit_is_hardened() -> None:
    service = _service()
    for key, value in {
        "User": "bangor",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "MemoryDenyWriteExecute": "yes",
        "LockPersonality": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }.items():
        assert service[key] == [value], key
    assert "@system-service" in service["SystemCallFilter"]


def test_the_example_config_is_one_serve_takes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "bangor.toml"
    config.write_text(EXAMPLE.read_text())
    config.chmod(0o644)  # as the README installs it
    for name in ("BANGOR_CONFIG", "BANGOR_DATA_DIR", "BANGOR_PORT", "BANGOR_HOST", "BANGOR_DB"):
        monkeypatch.delenv(name, raising=False)
    assert main(["serve", "--config", str(config), "--print-config"]) == ExitCode.OK
    printed = tomllib.loads(capsys.readouterr().out)
    assert printed["data_dir"] == "/var/lib/bangor"


def test_the_readme_names_the_variable_of_every_serve_option() -> None:
    """An option added to serve has a variable at once (server/config.py): say so."""
    from bangor.cli import _parser_of
    from bangor.server.config import CONFIG_ENV, ENV_PREFIX, setting_actions

    parser = build_parser()
    serve = _parser_of(parser, parser.parse_args(["serve"]))
    readme = (ROOT / "README.md").read_text()
    for action in setting_actions(serve):
        assert f"`{ENV_PREFIX}{action.dest.upper()}`" in readme, action.dest
    assert f"`{CONFIG_ENV}`" in readme
