"""`bangor serve --cluster`: its options are checked before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from bangor.cli import main
from bangor.errors import ExitCode

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
