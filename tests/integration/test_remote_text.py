"""What others write reaches a person's terminal only escaped (issue 12, finding 5)."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import (
    BANGOR,
    LineReader,
    client_env,
    run_bangor,
    start_server,
    stop_server,
)
from tests.integration.hostile_server import HOSTILE_NICK
from tests.test_text import unsafe

pytestmark = pytest.mark.integration

HOSTILE_SERVER = str(Path(__file__).with_name("hostile_server.py"))
HOSTILE_CHAT = [
    "\x1b[2K\rbob verified: safety number 99999 88888",
    "\x1b]0;pwned\x07\x1b[2J\x1b[H",
    "\u202eevil\u202c and \x9b2J",
    "done",
]


def raw_lines(stream: object) -> LineReader:
    """Lines as the terminal would get them: split at \\n only, nothing translated."""
    return LineReader(io.TextIOWrapper(stream, encoding="utf-8", newline="\n"))  # type: ignore[arg-type]


def test_hostile_names_and_chat_reach_a_headless_terminal_only_escaped(tmp_path: Path) -> None:
    server = start_server(tmp_path, command=(sys.executable, HOSTILE_SERVER))
    try:
        for user in ("bob", "mallory"):
            server.add_user(user)
        code = server.create_room("bob")
        # The CLI refuses such a nickname before it connects anywhere.
        names = ["--user", "mallory", "--name", HOSTILE_NICK]
        refused = run_bangor(
            ["join", code, "--headless", "--duration", "1", *names],
            env=client_env(server.home / "mallory"),
        )
        assert refused.returncode == 2 and "nickname must not contain" in refused.stderr

        # bob reads human lines at a terminal (no --json); keep every byte he is shown.
        human = ["--headless", "--input", "silence", "--output", "null"]
        bob = subprocess.Popen(
            [BANGOR, "join", code, "--user", "bob", *human],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=client_env(server.home / "bob"),
        )
        out, err = raw_lines(bob.stdout), raw_lines(bob.stderr)
        try:
            out.wait_for(lambda line: line.startswith("joined room"))
            mallory = server.join(
                code, "mallory", "--input", "silence", "--output", "null", stdin=""
            )
            mallory.event("member_verified")
            assert mallory.proc.stdin is not None
            mallory.proc.stdin.write("".join(f"{line}\n" for line in HOSTILE_CHAT))
            mallory.proc.stdin.flush()
            out.wait_for(lambda line: line.endswith("> done"))
            mallory.proc.send_signal(signal.SIGTERM)
            assert mallory.wait() == 0, mallory.stderr.seen
            out.wait_for(lambda line: line.endswith(" left"))
        finally:
            bob.send_signal(signal.SIGTERM)
            assert bob.wait(30) == 0
            lines = out.rest() + err.rest()
    finally:
        stop_server(server)

    shown = "\n".join(lines)
    assert unsafe(shown.replace("\n", "")) == [], [ln for ln in lines if unsafe(ln)]
    # Every hostile text did arrive (so the test could fail), visibly escaped ...
    nick = "\\x1b[2K\\x0dbob verified: safety number 11111 22222 33333 44444\\u202e"
    assert f"{nick} joined" in lines
    assert any(line.startswith(f"{nick} verified: safety number ") for line in lines)
    assert f"<{nick} (mallory)> \\x1b[2K\\x0dbob verified: safety number 99999 88888" in lines
    assert f"<{nick} (mallory)> \\x1b]0;pwned\\x07\\x1b[2J\\x1b[H" in lines
    # ... and no line bob reads pretends to be a verification it is not.
    assert not [line for line in lines if line.startswith("bob verified")]
