"""Real `bangor` processes on loopback: a server fixture and helpers to run clients."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

BANGOR = str(Path(sys.executable).parent / "bangor")
PASSWORD = "correct horse battery staple"
START_TIMEOUT = 20.0


def free_port() -> int:
    """A port number free for both TCP and UDP on 127.0.0.1."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


class LineReader:
    """Reads a pipe on a thread so tests can await a line with a timeout."""

    def __init__(self, stream: object) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, predicate: object, timeout: float = START_TIMEOUT) -> str:
        """Return the first line (new or already seen) that satisfies ``predicate``."""
        for line in self.seen:
            if predicate(line):  # type: ignore[operator]
                return line
        # One deadline for the whole wait: a chatty stream must not keep it alive forever.
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                raise AssertionError(f"timed out; lines so far: {self.seen[-20:]}") from None
            if line is None:
                raise AssertionError(f"stream ended; lines: {self.seen[-20:]}")
            self.seen.append(line)
            if predicate(line):  # type: ignore[operator]
                return line

    def rest(self, timeout: float = 10.0) -> list[str]:
        """All remaining lines until the stream closes."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                return self.seen
            if line is None:
                return self.seen
            self.seen.append(line)


def client_env(home: Path, password: str = PASSWORD) -> dict[str, str]:
    env = dict(os.environ)
    env["BANGOR_HOME"] = str(home)
    env["BANGOR_PASSWORD"] = password
    env.pop("BANGOR_USER", None)
    return env


@dataclass
class Client:
    proc: subprocess.Popen[str]
    stdout: LineReader
    stderr: LineReader

    def event(self, kind: str, timeout: float = START_TIMEOUT) -> dict[str, object]:
        line = self.stdout.wait_for(
            lambda line: line.startswith("{") and json.loads(line)["event"] == kind, timeout
        )
        result: dict[str, object] = json.loads(line)
        return result

    def events(self) -> list[dict[str, object]]:
        return [json.loads(x) for x in self.stdout.seen if x.startswith("{")]

    def events_of(
        self, kind: str, count: int, timeout: float = START_TIMEOUT
    ) -> list[dict[str, object]]:
        """The first ``count`` events of one kind, waiting for them as they come."""
        found: list[dict[str, object]] = []

        def enough(line: str) -> bool:
            if line.startswith("{") and json.loads(line)["event"] == kind:
                found.append(json.loads(line))
            return len(found) >= count

        self.stdout.wait_for(enough, timeout)
        return found

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        self.stdout.rest()
        self.stderr.rest()
        return code


@dataclass
class ServerProcess:
    host: str
    port: int
    data_dir: Path
    proc: subprocess.Popen[str]
    stderr: LineReader
    home: Path
    db_url: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def add_user(self, name: str, password: str = PASSWORD) -> None:
        run_bangor(["user", "add", name, *self.store_args()], stdin=password + "\n", check=True)

    def store_args(self) -> list[str]:
        return ["--db", self.db_url] if self.db_url else ["--data-dir", str(self.data_dir)]

    def create_room(
        self,
        user: str,
        name: str = "friends",
        *,
        prefix: Sequence[str] = (),
        args: Sequence[str] = (),
    ) -> str:
        """``prefix``: what the command runs under (``ip netns exec NS``, say);
        ``args``: more options for ``room create`` (``--max-bitrate BPS``, say)."""
        result = run_bangor(
            ["room", "create", name, "--server", self.address, "--user", user, *args],
            env=client_env(self.home / user),
            check=True,
            prefix=prefix,
        )
        lines = result.stdout.strip().splitlines()
        assert len(lines) == 1, result.stdout
        return lines[0]

    def speak_to(
        self,
        invite: str,
        speech: Path,
        seconds: float,
        *listener_args: str,
        stdin: str = "",
        speaker_args: Sequence[str] = (),
    ) -> tuple[Client, Client]:
        """bob joins with ``listener_args``, then alice speaks ``speech`` (``seconds`` long)
        with ``speaker_args`` and leaves; bob stays 2.5 s longer. Returns (alice, bob),
        both exited with 0."""
        bob = self.join(invite, "bob", *listener_args, "--duration", str(seconds + 4))
        bob.event("joined")
        alice = self.join(
            invite,
            "alice",
            *("--input", str(speech), "--output", "null", "--duration", str(seconds + 1.5)),
            *speaker_args,
            stdin=stdin or None,
        )
        assert alice.wait() == 0, alice.stderr.seen
        assert bob.wait() == 0, bob.stderr.seen
        return alice, bob

    def join(
        self,
        invite: str,
        user: str,
        *args: str,
        password: str = PASSWORD,
        stdin: str | None = None,
        prefix: Sequence[str] = (),
    ) -> Client:
        proc = subprocess.Popen(
            [*prefix, BANGOR, "join", invite, "--user", user, "--json", "--headless", *args],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=client_env(self.home / user, password),
        )
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.flush()
        return Client(proc, LineReader(proc.stdout), LineReader(proc.stderr))


def run_bangor(
    args: list[str],
    *,
    stdin: str = "",
    env: dict[str, str] | None = None,
    check: bool = False,
    timeout: float = 60,
    prefix: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*prefix, BANGOR, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"bangor {args} failed ({result.returncode}): {result.stderr}")
    return result


def start_server(
    tmp_path: Path,
    db_url: str | None = None,
    command: tuple[str, ...] = (BANGOR,),
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    extra: Sequence[str] = (),
    data_dir: Path | None = None,
) -> ServerProcess:
    """``command``: what runs ``serve`` (a wrapper that taps the server, or
    ``ip netns exec NS bangor`` with ``host`` an address of that namespace, say).
    ``port``: default, a free port on loopback. ``extra``: more ``serve`` options."""
    data_dir = data_dir or tmp_path / "server"
    port = port or free_port()
    args = [
        *command,
        "serve",
        "--host",
        host,
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]
    if db_url:
        args += ["--db", db_url]
    args += extra
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    server = ServerProcess(
        host, port, data_dir, proc, LineReader(proc.stderr), tmp_path / "homes", db_url
    )
    server.stderr.wait_for(lambda line: "listening on" in line)
    return server


def stop_server(server: ServerProcess) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path)
    yield srv
    stop_server(srv)
    assert not any("Traceback" in line for line in srv.stderr.rest(timeout=5))


def start_bangor(
    args: Sequence[str], home: Path, *, prefix: Sequence[str] = (), password: str | None = None
) -> Client:
    """Any long-running ``bangor`` command (``host``, say) with its output read as it comes.

    ``password`` None: no BANGOR_PASSWORD at all (open mode needs none).
    """
    env = client_env(home, password or "")
    if password is None:
        env.pop("BANGOR_PASSWORD")
    proc = subprocess.Popen(
        [*prefix, BANGOR, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    return Client(proc, LineReader(proc.stdout), LineReader(proc.stderr))
