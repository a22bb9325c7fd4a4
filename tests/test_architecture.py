"""The import contracts of pyproject.toml (`lint-imports`): CI runs only pytest, so here.

wire/, audio/ and media/ import no event loop, socket, clock, thread, io/, client or
server, directly or through another module; cli -> tui -> client -> server is one way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def lint_imports(src: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` with the project's contracts over the package under ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src)}  # ahead of the editable install
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_import_contracts_are_kept() -> None:
    result = lint_imports(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("wire/replay.py", "import time", "bangor.wire is not allowed to import time"),
        ("wire/voice.py", "import socket", "bangor.wire is not allowed to import socket"),
        ("audio/mixer.py", "import asyncio", "bangor.audio is not allowed to import asyncio"),
        ("audio/jitter.py", "import threading", "bangor.audio is not allowed to import threading"),
        (
            "wire/stun.py",
            "from bangor.client import events",
            "bangor.wire is not allowed to import bangor.client",
        ),
        (
            "audio/vad.py",
            "import bangor.server.relay",
            "bangor.audio is not allowed to import bangor.server",
        ),
        ("media/session.py", "import time", "bangor.media is not allowed to import time"),
        (
            "media/streams.py",
            "import bangor.io.devices",
            "bangor.media is not allowed to import bangor.io",
        ),
        # Indirectly: the cores import settings, so settings may not read the clock either.
        ("settings.py", "import time", "bangor.wire is not allowed to import time"),
        (
            "audio/codec.py",
            "import bangor.io.devices",
            "bangor.audio is not allowed to import bangor.io",
        ),
        ("tui/state.py", "import bangor.cli", "bangor.tui is not allowed to import bangor.cli"),
        (
            "server/relay.py",
            "import bangor.client.events",
            "bangor.server is not allowed to import bangor.client",
        ),
    ],
)
def test_an_import_that_breaks_a_contract_is_caught(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    """The contracts bite: one forbidden import in a copy of the package fails the lint."""
    shutil.copytree(
        ROOT / "src" / "bangor", tmp_path / "bangor", ignore=shutil.ignore_patterns("__pycache__")
    )
    with (tmp_path / "bangor" / module).open("a") as f:
        f.write(f"\n{line}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert broken in result.stdout
