"""Abuse benchmark: a real two-member call and real logins while each attack runs in turn.

For each row (a baseline without attack, then each attack of ``attacks.py``) it starts
afresh, so no attack inherits another's memory or lockouts:

1. a real ``bangor serve`` on 127.0.0.1 (free port) over a copy of a data directory made
   once with ``bangor user add`` (SQLite accounts: the call's two members, the account
   the real logins use, the churn and peer-flood account holders, and the real account
   the login storm guesses at);
2. a real call through the relay: the speaker ``bangor join --input tone:440 --vad off
   --relay-only`` and the listener ``bangor join --output FILE.wav --json --relay-only``;
   once the listener has verified the speaker (end-to-end keys are in place) the call
   settles for ``--warmup`` seconds, over which the server's idle RSS is sampled;
3. the attack, in a child process (its own event loop and CPU time, so it does not slow
   the measuring), for ``--seconds``; meanwhile 20 real logins (the client's own
   ``connect_and_login``, from 127.0.0.1), spread evenly over the attack, each given
   ``LOGIN_TIMEOUT`` seconds; then ``TAIL`` seconds more for the call to show late harm.

Per row it prints: real logins that got in and their latency (p50/max, from TCP connect
to ``welcome``), the longest gap in the tone the listener recorded from the attack's start
to the end of the tail (10 ms chunks below half the settled level; a listener that
dropped out gaps until the end), the server's RSS peak (sampled ``VmRSS`` and ``VmHWM``)
over its idle RSS, the server's CPU over the attack, and bytes the server sent to UDP
sources that sent it only unauthenticated datagrams (garbage, forged media, malformed
STUN; valid STUN Binding requests are answered by design, never with more bytes than
they carried: shown apart). The last column checks issue 12's bar: every real login in,
no gap over 200 ms, RSS within idle + 80 MiB, 0 bytes answered to garbage.

Run::

    .venv/bin/python bench/abuse.py                          # all attacks, 8 s each
    .venv/bin/python bench/abuse.py --attack login-storm --seconds 15
    .venv/bin/python bench/abuse.py --attacker-address 127.0.0.2 --json

With two or more CPUs the server is pinned to the last one and everything else to the
others (``--no-pin``: not), as if the server had its own machine.

Every wait is bounded; it stops what it started on exit and removes its temporary
directory. It only uses loopback addresses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
import wave
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from attacks import ATTACKS, CHURNER, FLOODER, VICTIM, AttackResult, AttackSpec, Rates, attack_main
from procfs import HOST, free_port, memory_kb, pin

from bangor.client.app import Login, connect_and_login
from bangor.errors import BangorError
from bangor.wire.invite import SECRET_SIZE, Invite
from bangor.wire.pairwise import derive_join_token
from client import (
    PASSWORD,
    Process,
    Processes,
    client_env,
    cpu_seconds,
    host_times,
    run_command,
)

BANGOR = str(Path(sys.executable).parent / "bangor")

SPEAKER, LISTENER, REAL = "speaker", "listener", "real"
USERS = (SPEAKER, LISTENER, REAL, CHURNER, FLOODER, VICTIM)
TONE_HZ = 440
BASELINE = "baseline"
ROWS = (BASELINE, *ATTACKS)

REAL_LOGINS = 20
LOGIN_TIMEOUT = 10.0  # a real login slower than this counts as lost
START_TIMEOUT = 30.0  # server ready line, joins, the listener verifying the speaker
CHILD_TIMEOUT = 30.0  # the attacker process: ready after start, result after the attack
TAIL = 1.0  # seconds after the attack still judged (late harm: a backlog, a dropped member)
SAMPLE_PERIOD = 0.05  # seconds between server RSS samples
CHUNK_MS = 10  # gap resolution
SETTLE_S = 1.0  # after the listener verified the speaker, before its level is taken
PRESENT = 0.5  # a chunk holds the tone when its RMS is above this share of the settled RMS
SR = 48_000

BUSY_OTHERS = 0.5  # cores other processes kept busy beyond which a row says so

# Issue 12's bar.
MAX_GAP_MS = 200.0
MAX_RSS_OVER_IDLE_MIB = 80.0


# --- real logins -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginOutcome:
    ok: bool
    seconds: float
    why: str = ""


async def real_login(port: int, at: float) -> LoginOutcome:
    """One real login at monotonic time ``at``, as the client does it; then it leaves."""
    await asyncio.sleep(max(at - time.monotonic(), 0))
    start = time.monotonic()
    try:
        client, _ = await asyncio.wait_for(
            connect_and_login(HOST, port, Login(REAL, PASSWORD, REAL)), LOGIN_TIMEOUT
        )
    except TimeoutError:
        return LoginOutcome(False, time.monotonic() - start, "timed out")
    except Exception as exc:  # whatever the server did to it, a lost login is a number
        return LoginOutcome(False, time.monotonic() - start, f"{type(exc).__name__}: {exc}")
    took = time.monotonic() - start
    await client.leave()
    return LoginOutcome(True, took)


# --- the listener's recording --------------------------------------------------------------


def chunk_levels(path: Path) -> np.ndarray:
    """RMS of each CHUNK_MS of a 48 kHz mono 16-bit WAV (empty if unreadable)."""
    try:
        with wave.open(str(path), "rb") as w:
            raw = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error):
        return np.zeros(0)
    pcm = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768
    size = SR * CHUNK_MS // 1000
    chunks = pcm[: len(pcm) // size * size].reshape(-1, size)
    levels: np.ndarray = np.sqrt(np.mean(chunks**2, axis=1))
    return levels


def longest_gap_ms(
    levels: np.ndarray, settled: tuple[float, float], window: tuple[float, float]
) -> float:
    """The longest run without the tone in ``window`` (seconds from the recording's start).

    The tone's level is the median over ``settled``; past the recording's end (the
    listener dropped out) is all gap.
    """

    def index(t: float) -> int:
        return max(int(t * 1000 / CHUNK_MS), 0)

    a, b = index(window[0]), math.ceil(window[1] * 1000 / CHUNK_MS)
    reference = levels[index(settled[0]) : index(settled[1])]
    level = float(np.median(reference)) if len(reference) else 0.0
    present = np.zeros(b - a, dtype=bool)
    if level > 1e-3:  # else the tone never arrived: all of it is gap
        inside = levels[a:b] > PRESENT * level
        present[: len(inside)] = inside
    longest = run = 0
    for here in present:
        run = 0 if here else run + 1
        longest = max(longest, run)
    return float(longest * CHUNK_MS)


# --- one row -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    rows: tuple[str, ...]
    seconds: float
    warmup: float
    attacker: str
    rates: Rates
    json: bool
    server_cpu: int | None  # the server's own CPU; None: not pinned
    other_cpus: set[int] | None  # everything else this bench starts, itself included


@dataclass
class Row:
    attack: str
    logins_ok: int = 0
    logins_total: int = REAL_LOGINS
    login_p50_ms: float | None = None
    login_max_ms: float | None = None
    login_failures: dict[str, int] = field(default_factory=dict)
    longest_gap_ms: float | None = None
    rss_idle_mib: float = 0.0
    rss_peak_mib: float = 0.0
    server_cpu_percent: float = 0.0
    unauth_answered: int | None = None  # bytes; None: the attack sent no datagrams
    stun_request_bytes: int = 0
    stun_answer_bytes: int = 0
    listener_events: dict[str, int] = field(default_factory=dict)  # in the judged window
    listener_errors: int = 0
    playout_deficit_ms: float = 0.0  # wall time the listener's recording lacks (its stalls)
    # The listener's own count for the whole call (its last stats): frames it concealed
    # in the end, and frames that came too late to play.
    listener_lost: int = 0
    listener_late: int = 0
    listener_undecryptable: int = 0
    # The machine over the attack: cores not idle, and the share of them no process of
    # this bench used (other work on the machine disturbs the call too).
    busy_cores: float = 0.0
    other_cores: float = 0.0
    steal_percent: float = 0.0
    attack_counts: dict[str, int] = field(default_factory=dict)
    attacker_cpu_percent: float = 0.0
    server_alive: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def rss_over_idle_mib(self) -> float:
        return self.rss_peak_mib - self.rss_idle_mib

    def failures(self) -> list[str]:
        """Where this row misses issue 12's bar."""
        missed = []
        if self.logins_ok < self.logins_total:
            missed.append("logins")
        if self.longest_gap_ms is None or self.longest_gap_ms > MAX_GAP_MS:
            missed.append("gap")
        if self.rss_over_idle_mib > MAX_RSS_OVER_IDLE_MIB:
            missed.append("RSS")
        if self.unauth_answered:
            missed.append("bytes")
        if not self.server_alive:
            missed.append("server died")
        return missed


def join_args(invite: str, user: str, lifetime: float, talk: bool, wav: Path) -> list[str]:
    audio = ["--input", f"tone:{TONE_HZ}", "--vad", "off", "--output", "null"]
    if not talk:
        audio = ["--input", "silence", "--output", str(wav)]
    return [
        BANGOR, "join", invite, "--user", user, "--json", "--headless", "--relay-only",
        "--duration", f"{lifetime:g}", *audio,
    ]  # fmt: skip


def json_events(process: Process) -> list[tuple[float, dict[str, Any]]]:
    """Every JSON event ``process`` printed so far, with when the bench read it."""
    assert process.stdout is not None
    process.stdout.drain()
    events = []
    for arrived, line in process.stdout.seen:
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                events.append((arrived, json.loads(line)))
    return events


def event_time(process: Process, kind: str) -> float:
    """When the bench read ``process``'s first ``kind`` event (it has been seen)."""
    for arrived, event in json_events(process):
        if event.get("event") == kind:
            return arrived
    raise RuntimeError(f"no {kind} event from {process.name}")


def tracebacks(lines: list[tuple[float, str]], stopped: float) -> list[str]:
    """A note per kind of traceback in a server's log (the line before it and its exception
    line), with how often, and whether it came while the row ran or once told to stop."""
    seen: Counter[str] = Counter()
    for i, (arrived, line) in enumerate(lines):
        if line.startswith("Traceback"):
            after = (x for _, x in lines[i + 1 :] if x and not x.startswith((" ", "Traceback")))
            before = lines[i - 1][1] if i else ""
            when = "at shutdown" if arrived >= stopped else "during the row"
            seen[f"{when}: {before} / {next(after, '?')}"] += 1
    return [f"the server logged {n} traceback(s) {what}" for what, n in seen.items()]


async def create_room(port: int) -> str:
    """A room made by the speaker, and its invite with a fresh room secret."""
    client, _ = await asyncio.wait_for(
        connect_and_login(HOST, port, Login(SPEAKER, PASSWORD, SPEAKER)), START_TIMEOUT
    )
    try:
        created = await asyncio.wait_for(client.create_room("abuse"), START_TIMEOUT)
    finally:
        await client.leave()
    room = bytes.fromhex(created.room_id)
    secret = secrets.token_bytes(SECRET_SIZE)
    return Invite(HOST, port, room, secret, client.server_fingerprint).encode()


class Attacker:
    """The attack's child process and its pipe."""

    def __init__(self, spec: AttackSpec) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, theirs = ctx.Pipe()
        self.proc = ctx.Process(target=attack_main, args=(spec, theirs), daemon=True)
        self.proc.start()
        theirs.close()

    async def receive(self, timeout: float) -> object:
        try:
            if not await asyncio.to_thread(self.conn.poll, timeout):
                raise RuntimeError("the attacker process did not answer in time")
            return self.conn.recv()
        except (EOFError, OSError):
            self.proc.join(1)
            raise RuntimeError(f"the attacker process died ({self.proc.exitcode})") from None

    def stop(self) -> None:
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


class Sampler:
    """The server's VmRSS every SAMPLE_PERIOD, on a task, until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                rss = memory_kb(self.pid)[0]
                if rss:  # 0: the process is gone
                    self.samples.append(rss)
            await asyncio.sleep(SAMPLE_PERIOD)

    async def stop(self) -> list[int]:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        return self.samples


def hwm_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        return memory_kb(pid)[1]
    return 0


@dataclass(frozen=True)
class Call:
    """A server and a two-member call through its relay, settled and ready for an attack."""

    server: Process
    listener: Process
    speaker: Process
    port: int
    invite: str
    wav: Path
    start_of_wav: float  # monotonic time of the recording's first sample (about)
    verified: float  # when the listener had the speaker's keys
    sessions: tuple[int, ...]  # the listener's and the speaker's session ids


async def start_call(opts: Options, template: Path, tmp: Path, procs: Processes) -> Call:
    deadline = time.monotonic() + START_TIMEOUT
    data_dir = tmp / "server"
    shutil.copytree(template, data_dir)
    port = free_port()
    server = procs.start(
        "server",
        [BANGOR, "serve", "--host", HOST, "--port", str(port), "--data-dir", str(data_dir)],
        dict(os.environ),
        stdout=False,
    )
    pin(server.pid, opts.server_cpu)
    await asyncio.to_thread(
        server.stderr.wait_for, lambda line: "listening on" in line, deadline, "the ready line"
    )
    pin(server.pid, opts.server_cpu)  # any thread that started before the first pin
    invite = await create_room(port)
    wav = tmp / "heard.wav"
    lifetime = opts.warmup + opts.seconds + TAIL + LOGIN_TIMEOUT + 2 * START_TIMEOUT
    # Processes stop in reverse: the listener first, so its last stats still count the
    # speaker and its recording ends with the call.
    speaker, listener = (
        procs.start(
            user,
            join_args(invite, user, lifetime, user == SPEAKER, wav),
            client_env(tmp / user),
            stdout=True,
        )
        for user in (SPEAKER, LISTENER)
    )
    heard = await asyncio.to_thread(listener.event, "joined", deadline)
    spoke = await asyncio.to_thread(speaker.event, "joined", deadline)
    await asyncio.to_thread(listener.event, "member_verified", deadline)
    sessions = tuple(int(e["you"]["session_id"]) for e in (heard, spoke))  # type: ignore[index]
    return Call(
        server,
        listener,
        speaker,
        port,
        invite,
        wav,
        # The listener ticks (and records) from just before it prints `joined`.
        start_of_wav=event_time(listener, "joined"),
        verified=event_time(listener, "member_verified"),
        sessions=sessions,
    )


@dataclass
class Window:
    """What happened while the attack ran (and the tail after it)."""

    go: float = 0.0
    end: float = 0.0  # of the judged window: the attack plus TAIL
    logins: list[LoginOutcome] = field(default_factory=list)
    idle_kb: list[int] = field(default_factory=list)
    peak_kb: list[int] = field(default_factory=list)
    hwm_rose_to: int = 0  # VmHWM at the end, when it rose over the window (else 0)


async def attack_window(opts: Options, name: str, call: Call, row: Row) -> Window:
    """Settle, run the attack and the real logins, and take the server's and machine's load."""
    window = Window()
    attacker = None
    if name != BASELINE:
        invite = Invite.parse(call.invite)
        spec = AttackSpec(
            name, HOST, call.port, opts.attacker, opts.seconds, opts.rates, PASSWORD,
            invite.room_id.hex(), call.sessions, derive_join_token(invite.secret, invite.room_id),
        )  # fmt: skip
        attacker = Attacker(spec)
    server = call.server
    logins: list[asyncio.Future[LoginOutcome]] = []
    sampler = Sampler(server.pid)
    try:
        settle_until = time.monotonic() + opts.warmup
        if attacker is not None:
            ready = await attacker.receive(CHILD_TIMEOUT)
            if ready != "ready":
                raise RuntimeError(str(ready))
        await asyncio.sleep(max(settle_until - time.monotonic(), 0))
        for process in (server, call.listener, call.speaker):
            process.check_alive()
        window.idle_kb = await sampler.stop()
        hwm0 = hwm_kb(server.pid)

        sampler = Sampler(server.pid)
        ours = (server.pid, call.listener.pid, call.speaker.pid)
        cpu0 = {pid: cpu_seconds(pid) for pid in ours}
        host0, self0 = host_times(), time.process_time()
        go = window.go = time.monotonic()
        if attacker is not None:
            attacker.conn.send("go")
        spacing = opts.seconds / REAL_LOGINS
        logins = [
            asyncio.ensure_future(real_login(call.port, go + (i + 0.5) * spacing))
            for i in range(REAL_LOGINS)
        ]
        await asyncio.sleep(max(go + opts.seconds - time.monotonic(), 0))
        elapsed = time.monotonic() - go
        host1, used = host_times(), time.process_time() - self0
        for pid in ours:
            with contextlib.suppress(OSError):
                spent = cpu_seconds(pid) - cpu0[pid]
                used += spent
                if pid == server.pid:
                    row.server_cpu_percent = 100 * spent / elapsed
        cpus = os.cpu_count() or 1
        row.busy_cores = cpus - (host1.idle - host0.idle) / elapsed
        row.steal_percent = 100 * (host1.steal - host0.steal) / elapsed / cpus
        if attacker is not None:
            outcome = await attacker.receive(CHILD_TIMEOUT)
            if isinstance(outcome, AttackResult):
                row.attack_counts = outcome.counts
                row.unauth_answered = outcome.unauth_answered
                row.stun_request_bytes = outcome.stun_request_bytes
                row.stun_answer_bytes = outcome.stun_answer_bytes
                row.attacker_cpu_percent = 100 * outcome.cpu_seconds / max(outcome.elapsed, 1e-9)
                used += outcome.cpu_seconds
            else:
                row.notes.append(f"the attack failed: {outcome}")
        row.other_cores = max(row.busy_cores - used / elapsed, 0.0)
        window.logins = list(await asyncio.gather(*logins))
        await asyncio.sleep(max(go + opts.seconds + TAIL - time.monotonic(), 0))
        window.end = time.monotonic()
        hwm1 = hwm_kb(server.pid)
        window.hwm_rose_to = hwm1 if hwm1 > hwm0 else 0
    finally:
        window.peak_kb = await sampler.stop()
        for login in logins:
            login.cancel()
        if attacker is not None:
            attacker.stop()
    return window


async def measure(opts: Options, name: str, template: Path, tmp: Path, procs: Processes) -> Row:
    row = Row(name)
    call = await start_call(opts, template, tmp, procs)
    window = await attack_window(opts, name, call, row)

    # What each process made of it, then the call ends (the listener's WAV is closed).
    row.server_alive = call.server.popen.poll() is None
    kinds = Counter(
        str(e.get("event")) for t, e in json_events(call.listener) if window.go <= t <= window.end
    )
    row.listener_events = dict(kinds)
    row.listener_errors = kinds["error"] + kinds["warning"]  # e2ee reports are warnings
    for process in (call.listener, call.speaker):
        if process.popen.poll() is not None:
            row.notes.append(f"the {process.name} exited ({process.popen.returncode})")
    listener_stayed = call.listener.popen.poll() is None
    stopped = time.monotonic()
    procs.stop()
    # The listener prints its final stats as it leaves.
    for _, stats in [e for e in json_events(call.listener) if e[1].get("event") == "stats"][-1:]:
        row.listener_undecryptable = int(stats.get("undecryptable", 0))
        for sender in stats["senders"].values():
            row.listener_lost += int(sender.get("lost", 0))
            row.listener_late += int(sender.get("late", 0))
    call.server.stderr.drain()
    row.notes += tracebacks(call.server.stderr.seen, stopped)

    ok = sorted(o.seconds * 1000 for o in window.logins if o.ok)
    row.logins_ok = len(ok)
    row.login_failures = dict(Counter(o.why for o in window.logins if not o.ok))
    if ok:
        row.login_p50_ms, row.login_max_ms = statistics.median(ok), ok[-1]
    row.rss_idle_mib = statistics.median(window.idle_kb or [0]) / 1024
    peak_kb = max([*window.peak_kb, window.hwm_rose_to])  # VmHWM: a peak between samples
    row.rss_peak_mib = max(peak_kb / 1024, row.rss_idle_mib)

    levels = chunk_levels(call.wav)
    row.longest_gap_ms = longest_gap_ms(
        levels,
        (call.verified + SETTLE_S - call.start_of_wav, window.go - call.start_of_wav),
        (window.go - call.start_of_wav, window.end - call.start_of_wav),
    )
    if listener_stayed:  # else the recording ended early: a gap, not a stall
        recorded = len(levels) * CHUNK_MS / 1000
        row.playout_deficit_ms = max((stopped - call.start_of_wav) - recorded, 0.0) * 1000
    return row


async def run_row(opts: Options, name: str, template: Path, tmp: Path) -> Row:
    procs = Processes()
    try:
        return await measure(opts, name, template, tmp, procs)
    except (RuntimeError, BangorError, OSError, TimeoutError) as exc:
        # The bench goes on with the next attack: a broken row is a result too.
        row = Row(name, logins_total=REAL_LOGINS)
        row.server_alive = bool(procs.items) and procs.items[0].popen.poll() is None
        row.notes.append(f"row failed: {type(exc).__name__}: {exc}")
        return row
    finally:
        await asyncio.to_thread(procs.stop)


def make_template(path: Path) -> None:
    """A data directory with every account the bench uses (copied for each row)."""
    for user in USERS:
        run_command([BANGOR, "user", "add", user, "--data-dir", str(path)], stdin=PASSWORD + "\n")


# --- report ----------------------------------------------------------------------------------

HEADERS = (
    "attack",
    "real logins ok/total",
    "login p50/max ms",
    "longest gap ms",
    "RSS peak over idle MiB",
    "server CPU %",
    "bytes answered to unauth.",
    "issue 12 bar",
)


def cells(row: Row) -> tuple[str, ...]:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    answered = "-" if row.unauth_answered is None else str(row.unauth_answered)
    if row.stun_request_bytes:
        answered += f" (STUN {row.stun_answer_bytes}/{row.stun_request_bytes} B)"
    missed = row.failures()
    return (
        row.attack,
        f"{row.logins_ok}/{row.logins_total}",
        f"{ms(row.login_p50_ms)} / {ms(row.login_max_ms)}",
        ms(row.longest_gap_ms),
        f"{row.rss_over_idle_mib:.1f} (idle {row.rss_idle_mib:.0f})",
        f"{row.server_cpu_percent:.0f}",
        answered,
        "ok" if not missed else "MISSED: " + ", ".join(missed),
    )


def print_table(rows: list[Row]) -> None:
    table = [HEADERS, *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in table[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
    print()
    for r in rows:
        did = ", ".join(f"{k} {v}" for k, v in sorted(r.attack_counts.items()))
        heard = ", ".join(f"{k} {v}" for k, v in sorted(r.listener_events.items()))
        print(f"{r.attack}: " + "; ".join(filter(None, [
            f"attack: {did} (attacker CPU {r.attacker_cpu_percent:.0f} %)" if did else "",
            f"listener events {heard}" if heard else "",
            f"listener errors {r.listener_errors}",
            f"listener frames lost {r.listener_lost}, late {r.listener_late}, undecryptable "
            f"{r.listener_undecryptable} (whole call)",
            f"machine {r.busy_cores:.2f} cores busy, {r.other_cores:.2f} by others"
            + (f", steal {r.steal_percent:.0f} %" if r.steal_percent >= 1 else ""),
            f"lost logins: {r.login_failures}" if r.login_failures else "",
            f"listener playout fell {r.playout_deficit_ms:.0f} ms behind"
            if r.playout_deficit_ms > MAX_GAP_MS else "",
            "other work on the machine was busy meanwhile: gaps and latencies may be inflated "
            "by it" if r.other_cores > BUSY_OTHERS else "",
            *r.notes,
        ])), flush=True)  # fmt: skip


# --- command line -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description="A real two-member call and real logins while each attack runs in turn."
    )
    parser.add_argument(
        "--attack",
        action="append",
        choices=ROWS,
        metavar="NAME",
        help=f"run only this row (repeatable): {', '.join(ROWS)} (default: all)",
    )
    parser.add_argument(
        "-s", "--seconds", type=float, default=8.0, help="seconds of each attack (default 8)"
    )
    parser.add_argument(
        "-w",
        "--warmup",
        type=float,
        default=2.0,
        help="seconds the call settles before each attack; idle RSS is taken then (default 2)",
    )
    parser.add_argument(
        "--attacker-address",
        default=HOST,
        metavar="IP",
        help="loopback address the unauthenticated attackers send from (default 127.0.0.1, "
        "the real logins' own; e.g. 127.0.0.2 for an attacker elsewhere)",
    )
    defaults = Rates()
    parser.add_argument(
        "--handshake-rate",
        type=float,
        default=defaults.handshakes_per_s,
        help=f"new connections a second of the handshake flood (default "
        f"{defaults.handshakes_per_s:g})",
    )
    parser.add_argument(
        "--datagram-rate",
        type=float,
        default=defaults.datagrams_per_s,
        help=f"datagrams a second of the UDP garbage and STUN floods (default "
        f"{defaults.datagrams_per_s:g})",
    )
    parser.add_argument(
        "--churn-rate",
        type=float,
        default=defaults.churn_per_s,
        help="join+leave cycles a second at most (default 0: as fast as the server answers)",
    )
    parser.add_argument(
        "--peer-rate",
        type=float,
        default=defaults.peer_per_s,
        help="peer messages a second at most (default 0: as fast as TCP takes them)",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the server to the last CPU and everything else to the others",
    )
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON object")
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 300 or not 0.5 <= args.warmup <= 60:
        parser.error("--seconds must be 1..300 and --warmup 0.5..60")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((args.attacker_address, 0))
    except OSError as exc:
        parser.error(f"--attacker-address {args.attacker_address}: {exc.strerror or exc}")
    if (
        min(args.handshake_rate, args.datagram_rate) <= 0
        or min(args.churn_rate, args.peer_rate) < 0
    ):
        parser.error("rates must be positive (--churn-rate and --peer-rate may be 0)")
    rates = replace(
        defaults,
        handshakes_per_s=args.handshake_rate,
        datagrams_per_s=args.datagram_rate,
        churn_per_s=args.churn_rate,
        peer_per_s=args.peer_rate,
    )
    rows = tuple(r for r in ROWS if r in args.attack) if args.attack else ROWS
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, others = None, None
    if not args.no_pin and len(cpus) >= 2:
        server_cpu, others = cpus[-1], set(cpus[:-1])
    return Options(
        rows, args.seconds, args.warmup, args.attacker_address, rates, args.json, server_cpu, others
    )


async def run(opts: Options, rows: list[Row]) -> None:
    with tempfile.TemporaryDirectory(prefix="bangor-bench-abuse-") as tmp:
        template = Path(tmp) / "template"
        await asyncio.to_thread(make_template, template)
        for name in opts.rows:
            started = time.monotonic()
            rows.append(await run_row(opts, name, template, Path(tmp) / name))
            print(f"{name}: done in {time.monotonic() - started:.0f} s", file=sys.stderr)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the `finally`s that stop the processes


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    # The server owns a core, as it would its own machine: an attack that starves it
    # shows in the call, one that starves the members' processes here would not there.
    pin(0, opts.other_cpus)  # every process started from here on inherits it
    placed = (
        f"server on CPU {opts.server_cpu}, the call, attackers and bench on "
        f"{sorted(opts.other_cpus or ())}"
        if opts.server_cpu is not None
        else "not pinned"
    )
    header = (
        f"bangor: {BANGOR}; {os.cpu_count()} CPUs ({placed})\n"
        f"each attack {opts.seconds:g} s after a {opts.warmup:g} s settled call (+{TAIL:g} s "
        f"judged after it); attackers from {opts.attacker}; {REAL_LOGINS} real logins from "
        f"{HOST} per row\n"
        f"rates: {opts.rates.describe()}\n"
    )
    if not opts.json:
        print(header, flush=True)
    rows: list[Row] = []
    code = 0
    try:
        asyncio.run(run(opts, rows))
    except KeyboardInterrupt:
        print("bench/abuse.py: interrupted", file=sys.stderr)
        code = 130
    except (RuntimeError, OSError) as exc:
        print(f"bench/abuse.py: {exc}", file=sys.stderr)
        code = 1
    if opts.json:
        out = {
            "seconds": opts.seconds,
            "warmup": opts.warmup,
            "attacker_address": opts.attacker,
            "server_cpu": opts.server_cpu,
            "rates": asdict(opts.rates),
            "rows": [
                asdict(r) | {"rss_over_idle_mib": r.rss_over_idle_mib, "missed": r.failures()}
                for r in rows
            ],
        }
        print(json.dumps(out, indent=1))
    else:
        print_table(rows)
    return code


if __name__ == "__main__":
    sys.exit(main())
