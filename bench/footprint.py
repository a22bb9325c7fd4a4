"""Server memory footprint: `bangor serve` idle and after logins, next to murmurd.

It starts a real ``bangor serve`` on 127.0.0.1 (free port, temporary data directory,
SQLite) with ``--parallel`` accounts, waits ``--settle`` seconds after "listening on" and
reads the server's ``VmRSS`` (``/proc/PID/status``): the idle figure. Then it logs in
(Noise handshake, Hello with the right password, so one Argon2id verify each, then
closes) until ``--logins`` (default 5 and 50) have been made in all, ``--parallel`` at a
time, each account one login at a time (the server throttles a second login of a name in
flight), and reads ``VmRSS`` again ``--settle`` seconds after each count; ``VmHWM`` is the
peak.

Then the import time of what ``bangor serve`` imports: a second server run under
``PYTHONPROFILEIMPORTTIME`` (``python -X importtime``), every import up to "listening
on" summed (self times, so nothing twice), the module count, and the top-level packages
that cost the most.

With ``murmurd`` installed (Debian's mumble-server) the same RSS figures for it, run
with a temporary ini file on another free port (its own logins: TLS, Version and
Authenticate as an anonymous user, until ServerSync; no password hashing there);
otherwise it says why it skipped it.

Run::

    .venv/bin/python bench/footprint.py
    .venv/bin/python bench/footprint.py --logins 5 50 200 --parallel 2
    .venv/bin/python bench/footprint.py --bangor /other/checkout/.venv/bin/bangor
    .venv/bin/python bench/footprint.py --env MALLOC_ARENA_MAX=2
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from procfs import HOST, Lines, free_port, memory_kb, stop

from bangor.client.control import ControlClient

BANGOR = str(Path(sys.executable).parent / "bangor")
PASSWORD = "bench password, not a secret"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
LOGIN_TIMEOUT = 30.0
TOP_PACKAGES = 12
# Mumble's control protocol (TCP+TLS): a 2-byte type, a 4-byte length, a protobuf.
MUMBLE_VERSION, MUMBLE_REJECT, MUMBLE_AUTHENTICATE, MUMBLE_SERVER_SYNC = 0, 4, 2, 5
MUMBLE_CLIENT_VERSION = (1 << 16) | (3 << 8) | 4  # 1.3.4, the version Debian 12 ships


def mib(kb: int) -> str:
    return f"{kb / 1024:.1f}"


# --- bangor ---------------------------------------------------------------------------


def start_bangor(
    bangor: str, data: Path, port: int, env: dict[str, str]
) -> tuple[subprocess.Popen[str], Lines]:
    proc = subprocess.Popen(
        [bangor, "serve", "--host", HOST, "--port", str(port), "--data-dir", str(data)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    lines = Lines(proc.stderr)
    try:
        lines.wait_for(lambda line: "listening on" in line, time.monotonic() + START_TIMEOUT, "")
    except RuntimeError:
        stop(proc, STOP_TIMEOUT)
        raise SystemExit(f"bangor serve did not start: {lines.tail(5)}") from None
    return proc, lines


async def bangor_login(port: int, user: str) -> None:
    client = await ControlClient.connect(HOST, port)
    try:
        client.start()
        await client.login(user, PASSWORD, "")
    finally:
        await client.close()


async def log_in(
    login: Callable[[int], Awaitable[None]], first: int, last: int, parallel: int
) -> None:
    """Logins number ``first`` up to ``last`` (excluded), ``parallel`` lanes: login i
    runs in lane i % parallel, so a lane's account never has two logins in flight."""

    async def lane(lane_no: int) -> None:
        for i in range(first, last):
            if i % parallel == lane_no:
                async with asyncio.timeout(LOGIN_TIMEOUT):
                    await login(i)

    await asyncio.gather(*(lane(n) for n in range(parallel)))


def measure(
    name: str,
    pid: int,
    login: Callable[[int], Awaitable[None]],
    counts: list[int],
    parallel: int,
    settle: float,
) -> None:
    time.sleep(settle)
    rss, hwm = memory_kb(pid)
    print(f"{name}: idle RSS {mib(rss)} MiB")
    done = 0
    for count in counts:
        asyncio.run(log_in(login, done, count, parallel))
        done = count
        time.sleep(settle)
        rss, hwm = memory_kb(pid)
        print(f"{name}: after {count} logins RSS {mib(rss)} MiB (peak {mib(hwm)} MiB)")


def bench_bangor(args: argparse.Namespace, tmp: Path) -> None:
    data = tmp / "bangor"
    env = {**os.environ, "HOME": str(tmp), **dict(e.split("=", 1) for e in args.env)}
    for n in range(args.parallel):
        subprocess.run(
            [args.bangor, "user", "add", f"user{n}", "--data-dir", str(data)],
            input=PASSWORD + "\n",
            text=True,
            check=True,
            capture_output=True,
            timeout=60,
        )
    port = free_port()
    proc, _ = start_bangor(args.bangor, data, port, env)
    try:
        measure(
            "bangor serve",
            proc.pid,
            lambda i: bangor_login(port, f"user{i % args.parallel}"),
            args.logins,
            args.parallel,
            args.settle,
        )
    finally:
        stop(proc, STOP_TIMEOUT)
    import_times(args.bangor, data, env)


def import_times(bangor: str, data: Path, env: dict[str, str]) -> None:
    """What `bangor serve` imports before "listening on", from ``-X importtime``."""
    started = time.monotonic()
    proc, lines = start_bangor(bangor, data, free_port(), {**env, "PYTHONPROFILEIMPORTTIME": "1"})
    ready = time.monotonic() - started
    stop(proc, STOP_TIMEOUT)
    total = 0
    by_package: collections.Counter[str] = collections.Counter()
    modules = 0
    for _, line in lines.seen:  # up to "listening on"
        if not line.startswith("import time:") or "[us]" in line:
            continue
        self_us, _cumulative, name = line.removeprefix("import time:").split("|")
        modules += 1
        total += int(self_us)
        by_package[name.strip().split(".")[0]] += int(self_us)
    print(
        f"bangor serve imports: {modules} modules, {total / 1000:.0f} ms in all "
        f"(under -X importtime; 'listening on' {ready:.2f} s after the start)"
    )
    top = ", ".join(f"{name} {us / 1000:.0f}" for name, us in by_package.most_common(TOP_PACKAGES))
    print(f"  ms by package: {top}")


# --- murmurd --------------------------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def mumble_message(kind: int, body: bytes) -> bytes:
    return kind.to_bytes(2, "big") + len(body).to_bytes(4, "big") + body


def field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    return varint(number << 3 | 2) + varint(len(value)) + value


async def murmur_login(port: int, user: str) -> None:
    """Log in to murmurd as an anonymous ``user``; return at ServerSync."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # murmurd's own self-signed certificate
    reader, writer = await asyncio.open_connection(HOST, port, ssl=context)
    try:
        writer.write(
            mumble_message(MUMBLE_VERSION, field(1, MUMBLE_CLIENT_VERSION) + field(2, b"bench"))
            + mumble_message(MUMBLE_AUTHENTICATE, field(1, user.encode()) + field(5, 1))
        )
        while True:
            head = await reader.readexactly(6)
            body = await reader.readexactly(int.from_bytes(head[2:], "big"))
            kind = int.from_bytes(head[:2], "big")
            if kind == MUMBLE_SERVER_SYNC:
                return
            if kind == MUMBLE_REJECT:
                raise SystemExit(f"murmurd refused the login: {body!r}")
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def wait_for_port(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("murmurd ended before it listened")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.1)
    raise SystemExit("murmurd did not listen")


def bench_murmurd(args: argparse.Namespace, tmp: Path) -> None:
    murmurd = args.murmurd or shutil.which("murmurd") or "/usr/sbin/murmurd"
    if not Path(murmurd).exists():
        print("murmurd: not installed (apt-get install mumble-server), skipped")
        return
    port = free_port()
    ini = tmp / "murmur.ini"
    ini.write_text(
        f"database={tmp / 'murmur.sqlite'}\n"
        f"host={HOST}\nport={port}\n"
        "logfile=\npidfile=\nice=\nbonjour=false\nusers=100\n"
        # Many logins from one address in a minute are what we do, not an attack.
        "autobanAttempts=0\n" + ("uname=root\n" if os.geteuid() == 0 else "")
        # As root it would switch to its own user, who cannot write our temp directory.
    )
    proc = subprocess.Popen(
        [murmurd, "-ini", str(ini), "-fg"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_for_port(port, proc)
        measure(
            "murmurd",
            proc.pid,
            lambda i: murmur_login(port, f"bench{i}"),  # a name in use is refused
            args.logins,
            args.parallel,
            args.settle,
        )
    finally:
        stop(proc, STOP_TIMEOUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--bangor", default=BANGOR, help="the bangor executable to serve with")
    parser.add_argument("--murmurd", help="the murmurd executable (default: on PATH)")
    parser.add_argument(
        "--logins", type=int, nargs="+", default=[5, 50], help="RSS after this many, in all"
    )
    parser.add_argument("--parallel", type=int, default=2, help="logins at once (default 2)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set in the server's environment (MALLOC_ARENA_MAX=2, say); repeatable",
    )
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before each RSS")
    args = parser.parse_args()
    args.logins = sorted(args.logins)
    with tempfile.TemporaryDirectory(prefix="bangor-footprint-") as tmp:
        bench_bangor(args, Path(tmp))
        bench_murmurd(args, Path(tmp))


if __name__ == "__main__":
    main()
