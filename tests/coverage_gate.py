"""Branch-coverage gate: the sans-I/O cores and the relay stay at FLOOR % or more.

Runs the unit tests of the gated packages under coverage.py (branch coverage, in a
subprocess so the suite's own run is not traced), prints the per-file table and a line
per gate, and fails when a gate is below FLOOR. The percentage is coverage.py's with
``--branch``: lines and branch directions taken, over lines and branch directions.

CI runs it through tests/test_coverage_gate.py; by hand::

    .venv/bin/python -m tests.coverage_gate
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOOR = 95.0


@dataclass(frozen=True)
class Gate:
    module: str  # a package or one module, dotted
    tests: tuple[str, ...]  # test paths (from the repository root) that exercise it

    @property
    def path(self) -> str:
        """Where its source lives, relative to the repository root."""
        path = "src/" + self.module.replace(".", "/")
        return path + "/" if (ROOT / path).is_dir() else path + ".py"


GATES = (
    Gate("bangor.wire", ("tests/wire", "tests/fuzz")),
    Gate("bangor.audio", ("tests/audio",)),
    Gate("bangor.server.relay", ("tests/server/test_relay.py", "tests/fuzz")),
    Gate("bangor.media", ("tests/media",)),
)


@dataclass(frozen=True)
class Result:
    gate: Gate
    covered: int  # lines and branch directions taken
    total: int

    @property
    def percent(self) -> float:
        # Nothing measured is a misnamed gate, not a perfect one.
        return 100.0 * self.covered / self.total if self.total else 0.0

    @property
    def passed(self) -> bool:
        return self.percent >= FLOOR


@dataclass(frozen=True)
class Report:
    pytest_returncode: int
    table: str  # coverage.py's per-file table, or pytest's output when the tests failed
    results: tuple[Result, ...]

    def summary(self) -> str:
        lines = [self.table]
        for r in self.results:
            verdict = "ok" if r.passed else f"BELOW {FLOOR:.0f} %"
            lines.append(f"gate {r.gate.module}: {r.percent:.1f} % ({verdict})")
        return "\n".join(lines)


def _coverage(data_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coverage", *args],
        cwd=ROOT,
        env={**os.environ, "COVERAGE_FILE": str(data_file)},
        capture_output=True,
        text=True,
        check=False,
    )


def measure(gates: tuple[Gate, ...] = GATES) -> Report:
    """One coverage run over every gate's tests; totals per gate from the JSON report."""
    tests = list(dict.fromkeys(t for g in gates for t in g.tests))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / ".coverage"
        run = _coverage(
            data,
            "run",
            "--branch",
            f"--source={','.join(g.module for g in gates)}",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--hypothesis-seed=0",  # the same examples every run: a gate must not flicker
            *tests,
        )
        if run.returncode != 0:
            return Report(run.returncode, run.stdout[-5000:] + run.stderr[-2000:], ())
        table = _coverage(data, "report", "--show-missing").stdout
        report = Path(tmp) / "coverage.json"
        _coverage(data, "json", "-o", str(report), "--quiet")
        files = json.loads(report.read_text())["files"]
    results = []
    for gate in gates:
        summaries = [f["summary"] for name, f in files.items() if name.startswith(gate.path)]
        covered = sum(s["covered_lines"] + s["covered_branches"] for s in summaries)
        total = sum(s["num_statements"] + s["num_branches"] for s in summaries)
        results.append(Result(gate, covered, total))
    return Report(0, table, tuple(results))


def main() -> int:
    report = measure()
    print(report.summary())
    if report.pytest_returncode:
        print(f"the tests failed (pytest exit {report.pytest_returncode})")
        return 1
    return 0 if all(r.passed for r in report.results) else 1


if __name__ == "__main__":
    sys.exit(main())
