"""The README as a new user follows it: its command lines, examples and links."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from bangor.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _ci_command(marker: str) -> list[str]:
    """The lines under ``<!-- marker -->``, cut out the way .ci/run cuts the test command."""
    script = (
        f"sed -n '/<!-- {marker} -->/,/^```$/p' README.md | sed -n '/^```sh$/,/^```$/p' "
        "| sed '1d;$d'"
    )
    out = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return out.splitlines()


@pytest.mark.parametrize("marker", ["run-command", "test-command"])
def test_each_command_line_is_one_line_that_works_on_a_fresh_debian(marker: str) -> None:
    """A fresh Debian has no package lists: apt-get install alone finds nothing."""
    [line] = _ci_command(marker)
    assert line.startswith("apt-get update && apt-get install -y ")


def test_the_run_line_puts_bangor_on_the_path_before_the_examples_use_it() -> None:
    [line] = _ci_command("run-command")
    steps = [step.strip() for step in line.split("&&")]
    link = 'ln -sf "$PWD/.venv/bin/bangor" /usr/local/bin/bangor'
    assert link in steps and steps[-1] == "bangor serve"
    assert steps.index(link) < len(steps) - 1


def _examples() -> list[list[str]]:
    """Every `bangor ...` command in the README's sh blocks, as its arguments."""
    text = README.read_text()
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```$", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            command: list[str] = []
            for word in [*shlex.split(line, comments=True), "&&"]:
                if word not in ("|", "&&", ";"):
                    if command or "=" not in word:  # skip VAR=value before a command
                        command.append(word)
                    continue
                if command[:1] == ["bangor"]:
                    commands.append(command[1:])
                command = []
    return commands


def test_every_example_is_a_command_line_bangor_accepts() -> None:
    examples = _examples()
    assert len(examples) >= 10
    parser = build_parser()
    for argv in examples:
        parser.parse_args(argv)  # a usage error exits, failing the test


def test_the_examples_use_the_data_directory_the_run_line_serves() -> None:
    """The run line's server uses the default data directory: `bangor user` examples
    that name another one would add accounts that server never sees."""
    for argv in _examples():
        if argv[:1] == ["user"]:
            assert "--data-dir" not in argv, argv


def test_relative_links_lead_to_files_in_the_repository() -> None:
    text = README.read_text()
    targets = re.findall(r"\]\(([^)#]+)\)", text)
    assert "docs/DESIGN.md" in targets
    for target in targets:
        if "://" not in target:
            assert (ROOT / target).is_file(), target
    assert "../" not in text  # nothing outside the repository
