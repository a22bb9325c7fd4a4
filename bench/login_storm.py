"""Login storm: server memory and real logins while many wrong logins arrive at once.

It starts a real ``bangor serve`` on 127.0.0.1 (free port, temporary data directory,
SQLite) with three accounts, waits ``--settle`` seconds and reads the server's idle
``VmRSS``. Then ``--attackers`` connections (default 200) log in at once with wrong
passwords, half for random names without an account and half for the account
``victim``; with ``--seconds`` above 0 each attacker starts over as soon as it is
answered, for that long (a sustained storm). Meanwhile ``--real`` logins (default 20)
with the right password for ``alice`` are spread over the storm; they go through
``bangor.client.app.connect_and_login``, so they retry a BUSY answer as a real client
does. Each attacker gives up on an unanswered attempt after ``ATTACK_TIMEOUT``.

It prints the server's idle RSS, its peak (``VmHWM`` from ``/proc/PID/status``) and the
difference, the RSS after the storm, how the attackers' logins were answered (close
codes, or ``unreachable`` for connections refused or closed before an answer), and the
real logins that succeeded with their latency (p50 and max, including retries).

The server comes from ``--bangor`` (default: the one next to this Python), so the same
script measures another checkout: ``--bangor /other/checkout/.venv/bin/bangor``.

Run::

    .venv/bin/python bench/login_storm.py                  # 200 at once, one round
    .venv/bin/python bench/login_storm.py --seconds 10     # sustained for 10 s
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from procfs import HOST, free_port, memory_kb, stop

from bangor.client.app import Login, connect_and_login
from bangor.client.control import ControlClient
from bangor.errors import AuthError, BangorError, ConnectError, RefusedError, ThrottledError

BANGOR = str(Path(sys.executable).parent / "bangor")
PASSWORD = "bench password, not a secret"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
ATTACK_TIMEOUT = 30.0  # one attacker's attempt, connect to answer
REAL_TIMEOUT = 60.0  # one real login, retries included
SAMPLE_PERIOD = 0.1
SETTLE_AFTER = 2.0  # seconds after the storm for the last RSS reading


def outcome(exc: BaseException | None) -> str:
    """A short name for how an attempt ended."""
    if exc is None:
        return "welcome"
    if isinstance(exc, ThrottledError):
        return "THROTTLED"
    if isinstance(exc, AuthError):
        return "AUTH_FAILED"
    if isinstance(exc, RefusedError):
        return f"code {exc.code}"
    if isinstance(exc, ConnectError):
        return "unreachable"
    if isinstance(exc, TimeoutError):
        return "no answer"
    if isinstance(exc, BangorError):  # BusyError where the client knows it
        return type(exc).__name__
    raise exc


async def attack_once(port: int, index: int) -> str:
    user = "victim" if index % 2 else f"x{secrets.token_hex(6)}"
    client: ControlClient | None = None
    try:
        async with asyncio.timeout(ATTACK_TIMEOUT):
            client = await ControlClient.connect(HOST, port)
            client.start()
            await client.login(user, "wrong " + secrets.token_hex(4), "")
    except (BangorError, TimeoutError) as exc:
        return outcome(exc)
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
    return outcome(None)


async def attacker(port: int, index: int, until: float, counts: collections.Counter[str]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        counts[await attack_once(port, index)] += 1
        if loop.time() >= until:
            return


async def real_login(port: int, delay: float, latencies: list[float], failures: list[str]) -> None:
    await asyncio.sleep(delay)
    start = time.monotonic()
    try:
        async with asyncio.timeout(REAL_TIMEOUT):
            client, _ = await connect_and_login(HOST, port, Login("alice", PASSWORD))
    except (BangorError, TimeoutError) as exc:
        failures.append(f"{outcome(exc)}: {exc}")
        return
    latencies.append(time.monotonic() - start)
    await client.leave()


async def sample_peak(pid: int, stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak.append(memory_kb(pid)[1])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_PERIOD)


async def storm(args: argparse.Namespace, port: int, pid: int) -> None:
    loop = asyncio.get_running_loop()
    counts: collections.Counter[str] = collections.Counter()
    latencies: list[float] = []
    failures: list[str] = []
    stop, peak = asyncio.Event(), [0]
    sampler = asyncio.create_task(sample_peak(pid, stop, peak))
    started = loop.time()
    spread = max(args.seconds, 2.0)
    until = started + args.seconds
    tasks = [attacker(port, i, until, counts) for i in range(args.attackers)]
    tasks += [
        real_login(port, spread * i / max(args.real, 1), latencies, failures)
        for i in range(args.real)
    ]
    await asyncio.gather(*tasks)
    elapsed = loop.time() - started
    stop.set()
    await sampler
    rss, hwm = memory_kb(pid)
    await asyncio.sleep(SETTLE_AFTER)
    rss_later = memory_kb(pid)[0]
    print(f"storm: {args.attackers} attackers for {elapsed:.1f} s, {sum(counts.values())} attempts")
    for name, count in sorted(counts.items()):
        print(f"  {name:<12} {count}")
    print(
        f"server RSS idle {args.idle_kb / 1024:.1f} MiB, peak (VmHWM) {hwm / 1024:.1f} MiB, "
        f"peak over idle {(hwm - args.idle_kb) / 1024:.1f} MiB, after {rss / 1024:.1f} MiB, "
        f"{SETTLE_AFTER:g} s later {rss_later / 1024:.1f} MiB"
    )
    ok = len(latencies)
    line = f"real logins: {ok}/{args.real} ok"
    if latencies:
        line += (
            f", latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
            f"max {max(latencies) * 1000:.0f} ms"
        )
    print(line)
    for failure in failures:
        print(f"  failed: {failure}")


def run(cmd: list[str], stdin: str = "") -> None:
    subprocess.run(cmd, input=stdin, text=True, check=True, capture_output=True, timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bangor", default=BANGOR, help="the bangor executable to serve with")
    parser.add_argument("--attackers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=0.0, help="keep attacking this long")
    parser.add_argument("--real", type=int, default=20, help="real logins during the storm")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before idle RSS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bangor-storm-") as tmp:
        data = Path(tmp) / "data"
        for name in ("alice", "victim", "carol"):
            run([args.bangor, "user", "add", name, "--data-dir", str(data)], PASSWORD + "\n")
        port = free_port()
        server = subprocess.Popen(
            [args.bangor, "serve", "--host", HOST, "--port", str(port), "--data-dir", str(data)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "HOME": tmp},
        )
        try:
            assert server.stderr is not None
            deadline = time.monotonic() + START_TIMEOUT
            while "listening on" not in server.stderr.readline():
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("server did not start")
            # Keep reading its log so a full pipe never blocks it.
            threading.Thread(target=server.stderr.read, daemon=True).start()
            time.sleep(args.settle)
            args.idle_kb = memory_kb(server.pid)[0]
            asyncio.run(storm(args, port, server.pid))
        finally:
            stop(server, STOP_TIMEOUT)


if __name__ == "__main__":
    main()
