"""Reconnect time after a server restart: p50/p95 over ``--restarts`` restarts.

It starts a real ``bangor serve`` on 127.0.0.1 (free port, temporary data directory,
SQLite) with ``--members`` accounts, creates a room, and starts that many real clients
(``join --json --headless --input tone --output null``, ``--relay-only`` unless
``--direct``). Then ``--restarts`` times: SIGUSR1 to the server (it says "restarting" to
every client, with the window to come back in, and exits), start it again on the same port
and data directory, and wait for every client's ``reconnected`` event. Per client and
restart it records:

- ``outage``: the client's own figure in ``reconnected``, from the moment its control
  session ended to the moment it was back in the room (what a user lives through);
- ``after ready``: from the new server's "listening on" line to the ``reconnected``
  line reaching this script (how long clients take once a server is there again; the
  spread window a restarting server asks for is in it on purpose);
- ``server down``: from SIGUSR1 to the new server's "listening on" (process exit and
  start-up, not the client's doing).

It prints p50, p95 and max of each, in milliseconds, and whether every reconnect
resumed the session (same id, so keys and direct paths went on).

Run::

    .venv/bin/python bench/reconnect.py                   # 2 members, 20 restarts (~1 min)
    .venv/bin/python bench/reconnect.py --members 4 --restarts 40
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from procfs import HOST, free_port

BANGOR = str(Path(sys.executable).parent / "bangor")
PASSWORD = "bench password, not a secret"
TIMEOUT = 30.0


class Lines:
    """A pipe read on a thread: (arrival time, line)."""

    def __init__(self, stream: object) -> None:
        self.queue: queue.Queue[tuple[float, str] | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.queue.put((time.monotonic(), line.rstrip("\n")))
        self.queue.put(None)

    def wait_for(self, predicate: object, timeout: float = TIMEOUT) -> tuple[float, str]:
        deadline = time.monotonic() + timeout
        while True:
            item = self.queue.get(timeout=max(deadline - time.monotonic(), 0.001))
            if item is None:
                raise RuntimeError("stream ended")
            if predicate(item[1]):  # type: ignore[operator]
                return item


def serve(port: int, data_dir: Path) -> tuple[subprocess.Popen[str], Lines]:
    proc = subprocess.Popen(
        [BANGOR, "serve", "--host", HOST, "--port", str(port), "--data-dir", str(data_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, Lines(proc.stderr)


def event(kind: str) -> object:
    return lambda line: line.startswith("{") and json.loads(line)["event"] == kind


def percentiles(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"p50 {statistics.median(ms):7.0f}  p95 {p95:7.0f}  max {ms[-1]:7.0f}  (n={len(ms)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--restarts", type=int, default=20)
    parser.add_argument("--direct", action="store_true", help="allow direct paths")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "server"
        port = free_port()
        users = [f"user{i}" for i in range(args.members)]
        for user in users:
            subprocess.run(
                [BANGOR, "user", "add", user, "--data-dir", str(data_dir)],
                input=PASSWORD + "\n",
                text=True,
                check=True,
                capture_output=True,
            )
        server, server_lines = serve(port, data_dir)
        clients: list[tuple[subprocess.Popen[str], Lines]] = []
        outage: list[float] = []
        after_ready: list[float] = []
        down: list[float] = []
        resumed = 0
        try:
            server_lines.wait_for(lambda line: "listening on" in line)
            env = dict(os.environ, BANGOR_HOME=str(Path(tmp) / "home"), BANGOR_PASSWORD=PASSWORD)
            invite = subprocess.run(
                [
                    BANGOR,
                    "room",
                    "create",
                    "bench",
                    "--server",
                    f"{HOST}:{port}",
                    "--user",
                    users[0],
                ],
                env=env,
                text=True,
                check=True,
                capture_output=True,
            ).stdout.strip()
            for user in users:
                join = [BANGOR, "join", invite, "--user", user, "--json", "--headless"]
                join += ["--input", "tone", "--output", "null"]
                join += [] if args.direct else ["--relay-only"]
                proc = subprocess.Popen(
                    join,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    env=env,
                )
                lines = Lines(proc.stdout)
                lines.wait_for(event("joined"))
                clients.append((proc, lines))
            for _, lines in clients:
                lines.wait_for(event("member_verified"))
            for n in range(args.restarts):
                stopped = time.monotonic()
                server.send_signal(signal.SIGUSR1)
                server.wait(TIMEOUT)
                server, server_lines = serve(port, data_dir)
                ready, _ = server_lines.wait_for(lambda line: "listening on" in line)
                down.append(ready - stopped)
                for _, lines in clients:
                    at, line = lines.wait_for(event("reconnected"))
                    back = json.loads(line)
                    outage.append(float(back["outage"]))
                    after_ready.append(at - ready)
                    resumed += bool(back["resumed"])
                print(
                    f"restart {n + 1}/{args.restarts}: server down {down[-1] * 1000:.0f} ms",
                    file=sys.stderr,
                )
        finally:
            for proc, _ in clients:
                proc.send_signal(signal.SIGINT)
            for proc, _ in clients:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()

    path = "direct paths allowed" if args.direct else "relay only"
    print(f"reconnect after a server restart: {args.members} members, {args.restarts} restarts,")
    print(f"  {path}")
    print(f"  outage (client, control lost -> back in room) ms: {percentiles(outage)}")
    print(f"  after ready (server listening -> reconnected) ms:  {percentiles(after_ready)}")
    print(f"  server down (SIGUSR1 -> listening again) ms:       {percentiles(down)}")
    print(f"  resumed (same session id): {resumed}/{len(outage)}")


if __name__ == "__main__":
    main()
