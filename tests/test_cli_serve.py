"""`bangor serve --cluster` and `--metrics`: their options are checked before anything
starts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from bangor.cli import _metrics_address, build_parser, main
from bangor.errors import ExitCode, UsageError
from bangor.server.web import WebOptions

PG = "postgresql://postgres@127.0.0.1/nowhere"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--cluster", "--advertise", "h:1"], "needs a shared PostgreSQL database"),
        (["--cluster", "--db", PG], "needs --advertise"),
        (["--cluster", "--db", PG, "--advertise", "nowhere"], "wants HOST:PORT"),
        (["--cluster", "--db", PG, "--advertise", "h:0"], "wants HOST:PORT"),
        (["--advertise", "h:1"], "--advertise is for --cluster"),
        (
            ["--cluster", "--db", PG, "--advertise", "h:1", "--heartbeat", "3"],
            "more than twice --heartbeat",
        ),
    ],
)
def test_cluster_options_are_checked_first(
    args: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["serve", "--data-dir", str(tmp_path), *args])
    assert code == ExitCode.USAGE
    assert says in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("nine", "expected [HOST:]PORT"),
        ("70000", "expected [HOST:]PORT"),
        ("localhost:", "expected [HOST:]PORT"),
        ("-1", "expected [HOST:]PORT"),
        ("bad host:9100", "bad host 'bad host'"),
        ("7600", "port 7600 is the server's own"),  # --port's default
        ("127.0.0.1:7600", "port 7600 is the server's own"),
    ],
)
def test_bad_metrics_addresses_are_usage_errors(
    value: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["serve", "--data-dir", str(tmp_path), "--metrics", value])
    assert code == ExitCode.USAGE
    assert says in capsys.readouterr().err
    assert not (tmp_path / "server.key").exists()  # refused before anything started


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("9100", ("127.0.0.1", 9100)),  # PORT alone: loopback, whatever --host is
        (":9100", ("127.0.0.1", 9100)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
        ("[::1]:9100", ("::1", 9100)),
        ("metrics.example:0", ("metrics.example", 0)),
    ],
)
def test_metrics_address(value: str, address: tuple[str, int]) -> None:
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--metrics", value])
    assert _metrics_address(args, None) == address


def test_metrics_port_may_not_be_the_web_port() -> None:
    args = build_parser().parse_args(["serve", "--metrics", "8443"])
    with pytest.raises(UsageError, match="port 8443 is the server's own"):
        _metrics_address(args, WebOptions("127.0.0.1", 8443))


def test_metrics_without_prometheus_client_names_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "prometheus_client" else real(name, *a),
    )
    code = main(["serve", "--data-dir", str(tmp_path), "--metrics", "9100"])
    assert code == ExitCode.ERROR
    assert "pip install 'bangor[metrics]'" in capsys.readouterr().err
