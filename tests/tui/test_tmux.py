"""Smoke test: the real `bangor join INVITE` in an 80x24 tmux pane, a person's view."""

from __future__ import annotations

import shlex
import shutil
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


class Tmux:
    """One tmux server of our own (-L), so the test never touches a user's sessions."""

    def __init__(self) -> None:
        tmux = shutil.which("tmux")
        # No skip: the README's test command installs tmux; a missing one must fail.
        assert tmux is not None, "tmux is not installed (apt-get install -y tmux)"
        self.base = [tmux, "-L", f"bangor-test-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]

    def run(self, *args: str) -> str:
        done = subprocess.run([*self.base, *args], capture_output=True, text=True, check=True)
        return done.stdout

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


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    t = Tmux()
    yield t
    subprocess.run([*t.base, "kill-server"], capture_output=True)


def test_join_in_tmux_see_speaker_chat_and_leave(
    server: ServerProcess, tmux: Tmux, tmp_path: Path
) -> None:
    for user in ("alice", "bob"):
        server.add_user(user)
    invite = server.create_room("alice")
    env = client_env(server.home / "alice")
    env_args = [f"{k}={env[k]}" for k in ("BANGOR_HOME", "BANGOR_PASSWORD", "PATH")]
    env_args += [f"XDG_CONFIG_HOME={tmp_path / 'config'}", "LANG=C.UTF-8"]
    env_args += ["PYTHON_KEYRING_BACKEND=keyring.backends.fail.Keyring"]
    exit_file = tmp_path / "exit-code"
    join = [BANGOR, "join", invite, "--user", "alice", "--input", "silence", "--output", "null"]
    command = f"env {shlex.join(env_args)} {shlex.join(join)}; echo $? > {exit_file}"
    tmux.run("new-session", "-d", "-s", "main", "-x", "80", "-y", "24", command)

    tmux.wait_for(lambda s: "room friends as alice" in s, "the call screen")
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
        deadline = time.monotonic() + SCREEN_TIMEOUT
        while not exit_file.exists() or not exit_file.read_text().strip():
            assert time.monotonic() < deadline, f"bangor join did not exit:\n{tmux.screen()}"
            time.sleep(POLL)
        assert exit_file.read_text().strip() == "0"
        assert bob.event("member_left")["member"]["user"] == "alice"  # type: ignore[index]
    finally:
        bob.proc.terminate()
        bob.wait()
