"""When `bangor` opens the terminal UI and when it stays headless."""

from __future__ import annotations

import pytest

from bangor.cli import build_parser, wants_tui
from tests.integration.conftest import run_bangor

INVITE = "bangor:whatever"


@pytest.mark.parametrize(
    ("extra", "terminal", "tui"),
    [
        ([], True, True),
        ([], False, False),  # piped: scripts keep the headless client
        (["--headless"], True, False),
        (["--json"], True, False),
    ],
)
def test_join_chooses_the_tui_only_for_a_terminal(
    extra: list[str], terminal: bool, tui: bool
) -> None:
    args = build_parser().parse_args(["join", INVITE, *extra])
    assert wants_tui(args, terminal) is tui


def test_bare_bangor_without_a_terminal_prints_help_and_exits_2() -> None:
    result = run_bangor([])
    assert result.returncode == 2
    assert "usage: bangor" in result.stdout


def test_profile_option_before_or_after_join() -> None:
    parser = build_parser()
    assert parser.parse_args(["--profile", "work"]).top_profile == "work"
    args = parser.parse_args(["join", INVITE, "--profile", "work"])
    assert (args.profile, args.top_profile) == ("work", "default")
    assert parser.parse_args(["join", INVITE]).profile is None
