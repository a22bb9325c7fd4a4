"""Smoke tests: the real `bangor join INVITE` in an 80x24 tmux pane, a person's view."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bangor.tui.app import SPEAKING
from tests.integration.conftest import BANGOR, ServerProcess, client_env

pytestmark = pytest.mark.integration

SCREEN_TIMEOUT = 30.0
POLL = 0.1  # seconds between looks at the pane: tmux has nothing to wait on
PANE_KEEP = 600  # seconds a pane outlives its command (the fixture ends it sooner)


class Tmux:
    """One tmux server of our own (-L), so the test never touches a user's sessions."""

    def __init__(self) -> None:
        tmux = shutil.which("tmux")
        # No skip: the README's test command installs tmux; a missing one must fail.
        assert tmux is not None, "tmux is not installed (apt-get install -y tmux)"
        # -u: UTF-8 whatever the locale (CI may have none), for the speaking indicator.
        self.base = [tmux, "-u", "-L", f"bangor-test-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]

    def run(self, *args: str) -> str:
        done = subprocess.run([*self.base, *args], capture_output=True, text=True, check=True)
        return done.stdout

    def start(self, command: list[str], env: dict[str, str], exit_file: Path) -> int:
        """Run ``command`` in an 80x24 pane; returns its pid. Its exit status goes to
        ``exit_file`` (tmux's own pane_dead_status is not reliable in every setup)."""
        self.exit_file = exit_file
        env_args = shlex.join(f"{k}={v}" for k, v in env.items())
        self.run(
            *("new-session", "-d", "-s", "main", "-x", "80", "-y", "24"),
            # After the command, the pane stays (sleep) so that what it left can be read.
            f"env {env_args} {shlex.join(command)}; echo $? > {shlex.quote(str(exit_file))}"
            f"; exec sleep {PANE_KEEP}",
        )
        shell = self.run("display-message", "-p", "-t", "main", "#{pane_pid}").strip()
        deadline = time.monotonic() + SCREEN_TIMEOUT
        while True:  # the pane's shell starts the command (env execs it: the same pid)
            found = subprocess.run(["pgrep", "-P", shell], capture_output=True, text=True)
            if found.stdout.split():
                return int(found.stdout.split()[0])
            assert time.monotonic() < deadline, "the command did not start"
            time.sleep(POLL)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "main")

    def wait_for(self, condition: Callable[[str], bool], what: str) -> str:
        deadline = time.monotonic() + SCREEN_TIMEOUT
        while True:
            screen = self.screen()
            if condition(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; screen:\n{screen}")
            time.sleep(POLL)

    def exit_status(self) -> int:
        """The command's exit status, once it has exited."""
        deadline = time.monotonic() + SCREEN_TIMEOUT
        while not self.exit_file.exists() or not self.exit_file.read_text().strip():
            assert time.monotonic() < deadline, f"still running:\n{self.screen()}"
            time.sleep(POLL)
        return int(self.exit_file.read_text())


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    t = Tmux()
    yield t
    subprocess.run([*t.base, "kill-server"], capture_output=True)


def start_alice(server: ServerProcess, tmux: Tmux, tmp_path: Path, invite: str) -> int:
    env = client_env(server.home / "alice")
    pane_env = {k: env[k] for k in ("BANGOR_HOME", "BANGOR_PASSWORD", "PATH")}
    pane_env |= {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "LANG": "C.UTF-8",
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
    }
    join = [BANGOR, "join", invite, "--user", "alice", "--input", "silence", "--output", "null"]
    pid = tmux.start(join, pane_env, tmp_path / "exit-status")
    tmux.wait_for(lambda s: "room friends as alice" in s, "the call screen")
    return pid


def test_join_in_tmux_see_speaker_chat_and_leave(
    server: ServerProcess, tmux: Tmux, tmp_path: Path
) -> None:
    for user in ("alice", "bob"):
        server.add_user(user)
    invite = server.create_room("alice")
    start_alice(server, tmux, tmp_path, invite)
    bob = server.join(
        invite, "bob", "--input", "tone:440", "--vad", "off", "--output", "null", stdin=""
    )
    try:
        screen = tmux.wait_for(
            lambda s: any("bob" in line and SPEAKING in line for line in s.splitlines()),
            "bob in the member list, speaking",
        )
        assert len(screen.splitlines()) <= 24 and max(map(len, screen.splitlines())) <= 80

        tmux.run("send-keys", "-t", "main", "-l", "hello from the terminal")
        tmux.run("send-keys", "-t", "main", "Enter")
        assert bob.event("chat")["text"] == "hello from the terminal"
        assert bob.proc.stdin is not None
        bob.proc.stdin.write("hello from bob\n")
        bob.proc.stdin.flush()
        tmux.wait_for(lambda s: "<bob> hello from bob" in s, "bob's chat line")

        tmux.run("send-keys", "-t", "main", "F10")
        assert tmux.exit_status() == 0
        assert bob.event("member_left")["member"]["user"] == "alice"  # type: ignore[index]
        assert "Traceback" not in tmux.screen()
    finally:
        bob.proc.terminate()
        bob.wait()


def test_sigterm_leaves_the_call_cleanly(server: ServerProcess, tmux: Tmux, tmp_path: Path) -> None:
    for user in ("alice", "bob"):
        server.add_user(user)
    invite = server.create_room("alice")
    bob = server.join(invite, "bob", "--input", "silence", "--output", "null")
    try:
        bob.event("joined")
        pid = start_alice(server, tmux, tmp_path, invite)
        bob.event("member_joined")
        os.kill(pid, signal.SIGTERM)
        assert tmux.exit_status() == 0
        # Left through the server (a clean leave), not noticed by a timeout.
        assert bob.event("member_left", timeout=5)["member"]["user"] == "alice"  # type: ignore[index]
        assert "Traceback" not in tmux.screen()
    finally:
        bob.proc.terminate()
        bob.wait()
