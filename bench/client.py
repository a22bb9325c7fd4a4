"""Client benchmark: what one real ``bangor join`` process costs in a call, next to the server.

For each room size N (``--members``, default 2, 4 and 8 in turn) it starts, in a fresh
temporary directory:

1. a real ``bangor serve`` on 127.0.0.1 (free port, its own data directory), and waits
   for the ``listening on`` line on its stderr;
2. N accounts (``bangor user add``) and one room (``bangor room create``);
3. N real ``bangor join --json --headless --input tone:HZ --output null`` clients, every
   one with its own tone, so all N talk at once: each encodes and sends 50 frames/s (20 ms
   frames; 100 or 25 with ``--frame-ms 10`` or ``40``) and
   receives, decodes and mixes the N-1 others (the null sink still gets the mix). With
   ``--speakers K`` only the first K talk; the others send silence, which voice activity
   detection keeps off the wire (keepalives only), and the measured client is the last.

Once every client has printed its ``joined`` event it lets the call settle for
``--warmup`` seconds (key exchange, jitter buffers filling, imports done), then measures
for ``--seconds``:

- CPU: utime + stime from ``/proc/PID/stat`` (all threads), over the elapsed wall time,
  in % of one core, for the first client (the one measured in detail), the mean over all
  N clients, and the server;
- memory: ``VmRSS`` from ``/proc/PID/status`` sampled every 0.5 s, average and peak, for
  that client and the server;
- a sanity check from the measured client's own ``stats`` events: voice frames per second
  that reached its jitter buffers from the others (expected (N-1) x 50);
- the whole machine: cores not idle (``/proc/stat``: the CPUs minus idle and iowait time,
  which the kernel tracks precisely; its user/system ticks miss much of a 50 Hz load), next
  to the cores this call's own processes used, and hypervisor steal.

It uses only the ``bangor`` command line (no imports from the package), so the same
script measures any version: ``--bangor`` names the executable (default: the one next to
this Python). It relies only on the ``joined`` event to know a client is in the call.

Run::

    .venv/bin/python bench/client.py                       # 2, 4, 8 members, 20 s each
    .venv/bin/python bench/client.py --members 4 --seconds 30
    .venv/bin/python bench/client.py --members 5 --speakers 1      # one talks, four listen
    .venv/bin/python bench/client.py --bangor /other/checkout/.venv/bin/bangor
    .venv/bin/python bench/client.py --members 2 --capture on      # the capture chain's cost

Every wait is bounded; it stops what it started on exit (also on Ctrl-C or SIGTERM) and
removes its temporary directory. It only uses 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from procfs import HOST, Lines, free_port, memory_kb

BANGOR = str(Path(sys.executable).parent / "bangor")
PASSWORD = "bench password, not a secret"
START_TIMEOUT = 30.0  # server ready line; each client's `joined` event
COMMAND_TIMEOUT = 60.0  # `user add`, `room create`
STOP_TIMEOUT = 10.0  # SIGTERM to exit, before SIGKILL
SAMPLE_PERIOD = 0.5  # seconds between RSS samples
DEFAULT_FRAME_MS = 20  # the clients' Opus frame duration unless --frame-ms says otherwise
MAX_MEMBERS = 16  # the server's room limit
TICK = os.sysconf("SC_CLK_TCK")


def tone_hz(index: int) -> int:
    """A different tone for each client, none a multiple of another's."""
    return 330 + 125 * index


# --- /proc ------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (every thread), from ``/proc/PID/stat``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of proc(5)


@dataclass(frozen=True)
class HostTimes:
    idle: float  # seconds, all cores: idle + iowait
    steal: float


def host_times() -> HostTimes:
    with open("/proc/stat") as f:
        _cpu, *values = f.readline().split()
    idle, iowait, steal = int(values[3]), int(values[4]), int(values[7])
    return HostTimes((idle + iowait) / TICK, steal / TICK)


# --- processes ----------------------------------------------------------------------------------


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[str]
    stdout: Lines | None
    stderr: Lines

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with code {self.popen.returncode}:\n{self.stderr.tail()}"
            )

    def event(self, kind: str, deadline: float) -> dict[str, object]:
        assert self.stdout is not None

        def matches(line: str) -> bool:
            return line.startswith("{") and json.loads(line).get("event") == kind

        try:
            line = self.stdout.wait_for(matches, deadline, f"{self.name}'s {kind!r} event")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; stderr:\n{self.stderr.tail()}") from None
        data: dict[str, object] = json.loads(line)
        return data


@dataclass
class Processes:
    """What a run started; ``stop`` ends the clients first, then the server."""

    items: list[Process] = field(default_factory=list)

    def start(self, name: str, args: list[str], env: dict[str, str], stdout: bool) -> Process:
        popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert popen.stderr is not None
        out = Lines(popen.stdout) if popen.stdout is not None else None
        process = Process(name, popen, out, Lines(popen.stderr))
        self.items.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.items):  # clients leave before the server goes
            if process.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(STOP_TIMEOUT)
            if process.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.popen.kill()
                process.popen.wait()
        self.items.clear()


def client_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["BANGOR_HOME"] = str(home)
    env["BANGOR_PASSWORD"] = PASSWORD
    env.pop("BANGOR_USER", None)
    return env


def run_command(args: list[str], *, stdin: str = "", env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        args, input=stdin, capture_output=True, text=True, env=env, timeout=COMMAND_TIMEOUT
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[1:3])} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result.stdout


# --- one call --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    members: list[int]
    seconds: float
    warmup: float
    bangor: str
    speakers: int | None = None  # None: every member talks
    frame_ms: int | None = None  # None: the clients' default (20 ms)
    capture: str | None = None  # "on"/"off": every stage of the capture chain; None: default


@dataclass
class Usage:
    """One process over the measured window."""

    cpu_percent: float
    rss_avg_mib: float
    rss_peak_mib: float


@dataclass
class Result:
    members: int
    speakers: int
    client: Usage
    clients_mean_cpu: float
    server: Usage
    heard_per_s: float | None  # voice frames/s reaching the measured client's jitter buffers
    host_busy_cores: float  # every process on the machine
    call_cores: float  # the server and all clients
    steal_percent: float
    frames_per_second: int = 1000 // DEFAULT_FRAME_MS  # each speaker's, as it ticks


def heard_rate(client: Process, start: float, end: float) -> float | None:
    """Frames/s into the client's jitter buffers, between its first and last stats in the window.

    Uses the per-sender ``received`` counts of ``stats`` events (both before and after E2EE
    they count frames handed to a jitter buffer: with E2EE, only frames that decrypted).
    """
    assert client.stdout is not None
    client.stdout.drain()
    points: list[tuple[float, int]] = []
    for arrived, line in client.stdout.seen:
        if start <= arrived <= end and line.startswith("{"):
            data = json.loads(line)
            if data.get("event") == "stats" and isinstance(data.get("senders"), dict):
                total = sum(int(s.get("received", 0)) for s in data["senders"].values())
                points.append((arrived, total))
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        return None
    return (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])


def measure(opts: Options, n: int, tmp: Path, procs: Processes) -> Result:
    bangor = opts.bangor
    port = free_port()
    data_dir = tmp / "server"
    server = procs.start(
        "server",
        [bangor, "serve", "--host", HOST, "--port", str(port), "--data-dir", str(data_dir)],
        dict(os.environ),
        stdout=False,
    )
    server.stderr.wait_for(
        lambda line: "listening on" in line,
        time.monotonic() + START_TIMEOUT,
        "the server's 'listening on' line",
    )

    users = [f"member{i}" for i in range(n)]
    for user in users:
        run_command(
            [bangor, "user", "add", user, "--data-dir", str(data_dir)], stdin=PASSWORD + "\n"
        )
    homes = {user: tmp / "homes" / user for user in users}
    invite = run_command(
        [bangor, "room", "create", "bench", "--server", f"{HOST}:{port}", "--user", users[0]],
        env=client_env(homes[users[0]]),
    ).strip()

    # A tone is not speech to voice activity detection: turn it off where the version has
    # it, so every member really talks (versions before it always send).
    gate = ["--vad", "off"] if "--vad" in run_command([bangor, "join", "--help"]) else []
    # A backstop: the clients leave by themselves should this script be killed outright.
    lifetime = opts.warmup + opts.seconds + START_TIMEOUT + 60
    speakers = n if opts.speakers is None else min(opts.speakers, n)
    frames = [] if opts.frame_ms is None else ["--frame-ms", str(opts.frame_ms)]
    chain = (
        []
        if opts.capture is None
        else [
            *("--noise-suppression", opts.capture),
            *("--echo-cancellation", opts.capture),
            *("--agc", opts.capture),
        ]
    )
    clients = [
        procs.start(
            user,
            [
                bangor,
                "join",
                invite,
                "--user",
                user,
                "--json",
                "--headless",
                "--input",
                f"tone:{tone_hz(i)}" if i < speakers else "silence",
                "--output",
                "null",
                "--duration",
                str(lifetime),
                *(gate if i < speakers else []),  # the silent ones send no voice
                *frames,
                *chain,
            ],
            client_env(homes[user]),
            stdout=True,
        )
        for i, user in enumerate(users)
    ]
    deadline = time.monotonic() + START_TIMEOUT
    for client in clients:
        client.event("joined", deadline)

    settle_until = time.monotonic() + opts.warmup
    while (left := settle_until - time.monotonic()) > 0:
        for process in (server, *clients):
            process.check_alive()
        time.sleep(min(left, SAMPLE_PERIOD))

    # The last member: a listener when not everybody talks.
    measured = clients[-1]
    watched = (measured, server)
    pids = [p.pid for p in (server, *clients)]
    cpu0 = {pid: cpu_seconds(pid) for pid in pids}
    host0 = host_times()
    start = time.monotonic()
    rss: dict[int, list[int]] = {p.pid: [] for p in watched}
    end = start + opts.seconds
    while True:
        for process in (server, *clients):
            process.check_alive()
        for process in watched:
            rss[process.pid].append(memory_kb(process.pid)[0])
        now = time.monotonic()
        if now >= end:
            break
        time.sleep(min(SAMPLE_PERIOD, end - now))
    cpu1 = {pid: cpu_seconds(pid) for pid in pids}
    host1 = host_times()
    elapsed = time.monotonic() - start
    cpus = os.cpu_count() or 1

    def cpu_percent(pid: int) -> float:
        return 100 * (cpu1[pid] - cpu0[pid]) / elapsed

    def usage(process: Process) -> Usage:
        samples = rss[process.pid]
        return Usage(
            cpu_percent(process.pid),
            sum(samples) / len(samples) / 1024,
            max(samples) / 1024,
        )

    return Result(
        members=n,
        speakers=speakers,
        client=usage(measured),
        clients_mean_cpu=sum(cpu_percent(c.pid) for c in clients) / n,
        server=usage(server),
        heard_per_s=heard_rate(measured, start, start + elapsed),
        host_busy_cores=cpus - (host1.idle - host0.idle) / elapsed,
        call_cores=sum(cpu_percent(pid) for pid in pids) / 100,
        steal_percent=100 * (host1.steal - host0.steal) / elapsed / cpus,
        frames_per_second=1000 // (opts.frame_ms or DEFAULT_FRAME_MS),
    )


def run_one(opts: Options, n: int) -> Result:
    procs = Processes()
    with tempfile.TemporaryDirectory(prefix="bangor-bench-client-") as tmp:
        try:
            return measure(opts, n, Path(tmp), procs)
        finally:
            procs.stop()


# --- report -----------------------------------------------------------------------------------

HEADERS = (
    "members",
    "speakers",
    "client CPU %",
    "all clients CPU % (mean)",
    "client RSS MiB avg/peak",
    "server CPU %",
    "server RSS MiB avg/peak",
    "heard frames/s (expected)",
    "host cores busy (this call)",
    "steal %",
)


def row(r: Result) -> tuple[str, ...]:
    heard = "n/a" if r.heard_per_s is None else f"{r.heard_per_s:.0f}"
    return (
        str(r.members),
        str(r.speakers),
        f"{r.client.cpu_percent:.1f}",
        f"{r.clients_mean_cpu:.1f}",
        f"{r.client.rss_avg_mib:.1f} / {r.client.rss_peak_mib:.1f}",
        f"{r.server.cpu_percent:.1f}",
        f"{r.server.rss_avg_mib:.1f} / {r.server.rss_peak_mib:.1f}",
        f"{heard} ({min(r.speakers, r.members - 1) * r.frames_per_second})",
        f"{r.host_busy_cores:.2f} of {os.cpu_count()} ({r.call_cores:.2f})",
        f"{r.steal_percent:.1f}",
    )


def print_table(results: list[Result]) -> None:
    if not results:
        return
    rows = [HEADERS, *(row(r) for r in results)]
    widths = [max(len(cells[i]) for cells in rows) for i in range(len(HEADERS))]
    for cells in rows:
        print("  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)), flush=True)
    for r in results:
        if r.host_busy_cores > 0.9 * (os.cpu_count() or 1):
            print(
                f"note: with {r.members} members the machine was busy on all "
                f"{os.cpu_count()} cores: overloaded, so the numbers are bounded by that"
            )
        if r.steal_percent > 5:
            print(f"note: with {r.members} members the hypervisor stole over 5 % of the CPUs")


# --- command line -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description="CPU and memory of one real `bangor join` client (and the server) in a "
        "call where every member talks."
    )
    parser.add_argument(
        "-m",
        "--members",
        type=int,
        nargs="+",
        default=[2, 4, 8],
        metavar="N",
        help="room size(s), run in turn (default: 2 4 8)",
    )
    parser.add_argument(
        "-s", "--seconds", type=float, default=20.0, help="measured seconds per call (default 20)"
    )
    parser.add_argument(
        "-w",
        "--warmup",
        type=float,
        default=5.0,
        help="seconds after every client joined before measuring (default 5)",
    )
    parser.add_argument(
        "--speakers",
        type=int,
        metavar="K",
        help="only the first K members talk (the rest send silence, which voice activity "
        "detection keeps off the wire); the measured client is the last member",
    )
    parser.add_argument(
        "--frame-ms",
        type=int,
        choices=[10, 20, 40],
        metavar="MS",
        help="every client sends (and ticks at) Opus frames of MS ms: 10, 20 or 40 "
        "(default: the clients' own, 20; needs a version with join --frame-ms)",
    )
    parser.add_argument(
        "--capture",
        choices=["on", "off"],
        help="every client runs the capture chain (noise suppression, echo cancellation, "
        "gain) or not (default: the clients' own, off for tones; needs a version with "
        "join --noise-suppression)",
    )
    parser.add_argument(
        "--bangor",
        default=BANGOR,
        metavar="PATH",
        help="the bangor executable to run (default: the one next to this Python)",
    )
    args = parser.parse_args(argv)
    if any(not 2 <= n <= MAX_MEMBERS for n in args.members):
        parser.error(f"--members must be 2..{MAX_MEMBERS}")
    if not 1 <= args.seconds <= 600 or not 0 <= args.warmup <= 120:
        parser.error("--seconds must be 1..600 and --warmup 0..120")
    if not os.access(args.bangor, os.X_OK):
        parser.error(f"--bangor {args.bangor}: not an executable")
    return Options(
        args.members,
        args.seconds,
        args.warmup,
        args.bangor,
        args.speakers,
        args.frame_ms,
        args.capture,
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the `finally` that stops the processes


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    print(
        f"bangor: {opts.bangor}\n"
        f"every member talks (tone in, null out); warm-up {opts.warmup:g} s, "
        f"measured {opts.seconds:g} s; {os.cpu_count()} CPUs; CPU % is of one core\n",
        flush=True,
    )
    results: list[Result] = []
    try:
        for n in opts.members:
            results.append(run_one(opts, n))
    except RuntimeError as exc:
        print_table(results)
        print(f"bench/client.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print_table(results)
        print("bench/client.py: interrupted", file=sys.stderr)
        return 130
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
