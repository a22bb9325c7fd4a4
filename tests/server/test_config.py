"""`bangor serve --config FILE`, BANGOR_* variables and --print-config (server/config.py)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from bangor.cli import main
from bangor.errors import ExitCode
from bangor.server import config
from bangor.settings import ServerSettings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only the variables a test sets: none of the machine's BANGOR_* may leak in."""
    for name in list(os.environ):
        if name.startswith("BANGOR_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def _print_config(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[dict[str, object], str]:
    code = main(["serve", "--print-config", *args])
    out = capsys.readouterr()
    assert code == ExitCode.OK, out.err
    return tomllib.loads(out.out), out.out


def _usage_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(["serve", "--print-config", *args])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE, err
    return err


def _file(tmp_path: Path, text: str, name: str = "bangor.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_without_a_file_the_defaults_are_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    printed, text = _print_config([], capsys)
    assert printed["port"] == 7600 and printed["host"] == "0.0.0.0"
    assert printed["data_dir"] == str(tmp_path / "xdg" / "bangor-server")
    assert printed["heartbeat"] == ServerSettings.cluster_heartbeat
    assert printed["log_format"] == "text" and printed["open"] is False
    assert "db" not in printed and "# db: not set" in text
    assert printed["limits"] == {
        name: getattr(ServerSettings(), name) for name in config.limit_fields()
    }
    assert "port = 7600  # default" in text
    assert not (tmp_path / "xdg").exists()  # printing creates no data directory


def test_flags_win_over_variables_which_win_over_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _file(
        tmp_path,
        'port = 7001\nhost = "127.0.0.2"\ndata-dir = "/from/file"\nopen = true\n'
        "stale_after = 9\n[limits]\nmax_sessions = 10\nrestart_spread = 3\n",
    )
    monkeypatch.setenv("BANGOR_PORT", "7002")
    monkeypatch.setenv("BANGOR_HOST", "127.0.0.3")
    monkeypatch.setenv("BANGOR_WEB", "")  # empty: as if unset
    # A flag given with its default value still wins over the variable and the file.
    printed, text = _print_config(["--config", str(path), "--port", "7600"], capsys)
    assert printed["port"] == 7600 and "port = 7600  # --port" in text
    assert printed["host"] == "127.0.0.3" and 'host = "127.0.0.3"  # BANGOR_HOST' in text
    assert printed["data_dir"] == "/from/file"
    assert f'data_dir = "/from/file"  # {path}' in text
    assert printed["open"] is True and printed["stale_after"] == 9.0
    assert printed["heartbeat"] == 1.0 and "web" not in printed
    limits = printed["limits"]
    assert isinstance(limits, dict)
    assert limits["max_sessions"] == 10 and limits["restart_spread"] == 3.0
    assert limits["max_members_per_room"] == ServerSettings.max_members_per_room
    # BANGOR_CONFIG names the file when --config does not.
    monkeypatch.setenv("BANGOR_CONFIG", str(path))
    printed, _text = _print_config(["--open"], capsys)
    assert printed["port"] == 7002 and printed["data_dir"] == "/from/file"


def test_switches_from_variables(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BANGOR_OPEN", "yes")
    printed, _text = _print_config([], capsys)
    assert printed["open"] is True
    monkeypatch.setenv("BANGOR_OPEN", "maybe")
    assert "BANGOR_OPEN='maybe': expected 1 or 0" in _usage_error([], capsys)
    monkeypatch.setenv("BANGOR_OPEN", "0")
    monkeypatch.setenv("BANGOR_PORT", "seventy")
    assert "BANGOR_PORT='seventy': invalid literal" in _usage_error([], capsys)
    monkeypatch.setenv("BANGOR_PORT", "7600")
    monkeypatch.setenv("BANGOR_LOG_FORMAT", "xml")
    assert "BANGOR_LOG_FORMAT='xml': expected one of text, json" in _usage_error([], capsys)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("prot = 7600\n", "prot: unknown setting"),
        ("max_sessions = 3\n", "max_sessions: unknown setting (it belongs in [limits])"),
        ("config = 'x.toml'\n", "config: unknown setting"),
        ("print_config = true\n", "print_config: unknown setting"),
        ("port = '7600'\n", "port: expected a whole number, got '7600'"),
        ("port = true\n", "port: expected a whole number, got True"),
        ("host = 127\n", "host: expected a string"),
        ("open = 1\n", "open: expected true or false, got 1"),
        ("heartbeat = -1\n", "heartbeat: must be 0..86400 seconds"),
        ("log_format = 'xml'\n", "log_format: expected one of text, json, got 'xml'"),
        ("data-dir = 'a'\ndata_dir = 'b'\n", "data_dir: given twice"),
        ("limits = 3\n", "limits must be a table"),
        ("[limits]\nmax_sesions = 3\n", "[limits] max_sesions: unknown setting"),
        ("[limits]\nmax_sessions = 2.5\n", "[limits] max_sessions: expected a whole number"),
        ("[limits]\nmax_sessions = true\n", "[limits] max_sessions: expected a number"),
        ("[limits]\nmax_sessions = '3'\n", "[limits] max_sessions: expected a number"),
        ("[limits]\nidle_timeout = nan\n", "[limits] idle_timeout: expected a finite number"),
        ("[limits]\nidle_timeout = -1.0\n", "[limits] idle_timeout: expected a finite number"),
        ("[limits]\ncluster_heartbeat = 2.0\n", "set it as heartbeat (the --heartbeat option)"),
        ("[limits]\nopen = true\n", "set it as open (the --open option)"),
        ("port = \n", "Invalid value"),
    ],
)
def test_bad_keys_and_types_are_usage_errors_naming_key_and_file(
    text: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _file(tmp_path, text)
    err = _usage_error(["--config", str(path)], capsys)
    assert f"config file {path}" in err and says in err


def test_a_missing_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _usage_error(["--config", str(tmp_path / "none.toml")], capsys)
    assert f"cannot read config file {tmp_path / 'none.toml'}" in err


def test_the_file_is_checked_like_the_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Values from a file go through serve's own checks (cluster, web), as flags do."""
    path = _file(tmp_path, "cluster = true\n")
    assert "--cluster needs a shared PostgreSQL" in _usage_error(["--config", str(path)], capsys)
    path = _file(tmp_path, "heartbeat = 3\n")
    assert "more than twice --heartbeat" in _usage_error(["--config", str(path)], capsys)


def test_print_config_round_trips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _file(
        tmp_path,
        'host = "::1"\nweb = "127.0.0.1:8443"\nlog-format = "json"\n'
        "[limits]\nmax-sessions = 12\nidle_timeout = 20\nhash_workers = 1\n",
    )
    monkeypatch.setenv("BANGOR_PORT", "7005")
    first, text = _print_config(["--config", str(source), "--heartbeat", "0.5"], capsys)
    printed = _file(tmp_path, text, "printed.toml")
    monkeypatch.delenv("BANGOR_PORT")
    second, _text = _print_config(["--config", str(printed)], capsys)
    assert second == first
    assert first["port"] == 7005 and first["heartbeat"] == 0.5 and first["web"] == "127.0.0.1:8443"


def test_a_database_password_is_hidden_and_refused_in_a_file_others_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "postgresql://bangor:hunter2@db/bangor"
    path = _file(tmp_path, f'db = "{url}"\n')
    printed, text = _print_config(["--config", str(path)], capsys)
    assert "hunter2" not in text and printed["db"] == "postgresql://bangor:***@db/bangor"
    assert "password hidden" in text
    path.chmod(0o644)
    err = _usage_error(["--config", str(path)], capsys)
    assert "holds a database password and anyone may read it" in err and "hunter2" not in err
    # Without a password, a file anyone reads is fine; a password in BANGOR_DB is too.
    path.write_text('db = "postgresql://bangor@db/bangor"\n')
    _print_config(["--config", str(path)], capsys)
    monkeypatch.setenv("BANGOR_DB", url)
    printed, text = _print_config(["--config", str(path)], capsys)
    assert "hunter2" not in text and "# BANGOR_DB; password hidden" in text


def test_an_option_added_later_is_a_key_and_a_variable_without_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The metrics helper's --metrics, say: nothing in config.py names it."""
    parser = config.ServeParser(prog="serve")
    parser.add_argument("--port", type=int, default=7600)
    parser.add_argument("--metrics", metavar="HOST:PORT")
    parser.add_argument("--config")
    path = _file(tmp_path, 'metrics = "127.0.0.1:9100"\n')
    effective = config.resolve(parser.parse_args(["--config", str(path)]), {})
    assert effective.options["metrics"] == config.Setting("127.0.0.1:9100", str(path))
    effective = config.resolve(
        parser.parse_args(["--config", str(path)]), {"BANGOR_METRICS": ":9200"}
    )
    assert effective.options["metrics"] == config.Setting(":9200", "BANGOR_METRICS")
    effective = config.resolve(parser.parse_args(["--metrics", "x:1"]), {})
    assert effective.options["metrics"] == config.Setting("x:1", "--metrics")
    assert "config" not in effective.options


def test_every_limit_has_a_type_a_file_can_give() -> None:
    """A new ServerSettings field of another type must be taught to [limits] first."""
    for name, kind in config.limit_fields().items():
        assert kind in (int, float, bool), name


def test_toml_strings_escape_what_toml_forbids() -> None:
    text = 'a"b\\c\x1b\x7f\té😀'
    assert tomllib.loads(f"k = {config.toml_value(text)}")["k"] == text
    for value in (1.0, 1e-05, 1e20, 3, True, float("inf")):
        assert tomllib.loads(f"k = {config.toml_value(value)}")["k"] == value


def test_a_source_with_a_newline_stays_in_its_comment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _file(tmp_path, "port = 7001\n", name="odd\nport = 1.toml")
    printed, _text = _print_config(["--config", str(path)], capsys)
    assert printed["port"] == 7001
