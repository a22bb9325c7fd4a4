"""The branch-coverage gate (tests/coverage_gate.py), run in the suite because CI runs
only pytest. It runs the gated packages' unit tests again under coverage: about 40 s;
`-m "not gate"` leaves it out of a quick local run."""

from __future__ import annotations

import pytest

from tests.coverage_gate import FLOOR, GATES, ROOT, Result, measure


def test_every_gate_names_source_and_tests_that_exist() -> None:
    for gate in GATES:
        assert (ROOT / gate.path).exists(), gate.path
        for path in gate.tests:
            assert (ROOT / path).exists(), path


def test_a_gate_below_the_floor_or_measuring_nothing_fails() -> None:
    gate = GATES[0]
    assert Result(gate, 95, 100).passed and Result(gate, 100, 100).passed
    assert not Result(gate, 949, 1000).passed
    assert not Result(gate, 0, 0).passed  # a misnamed gate measures nothing


@pytest.mark.gate
def test_the_cores_and_the_relay_keep_their_branch_coverage() -> None:
    report = measure()
    print(report.summary())  # the per-file table, shown with -s or on failure
    assert report.pytest_returncode == 0, report.table
    assert [r.gate for r in report.results] == list(GATES)
    assert all(r.percent >= FLOOR for r in report.results), report.summary()
