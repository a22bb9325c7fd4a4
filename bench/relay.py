"""Relay benchmark: what the Bangor UDP relay costs per forwarded packet, against a floor.

What it measures, in one run:

1. **Bangor**: a real ``bangor serve`` process on 127.0.0.1 with ``--senders + --listeners``
   real accounts, logged in through the Python client API (``ControlClient``), all in one
   room. A load generator (a separate process) holds one UDP socket per member, sends one
   KEEPALIVE from each so the relay learns the address, then each sender sends
   ``VoiceFrame(seq, opus_like_bytes)`` payloads hop-sealed with its session key. Every
   member opens what the relay forwards to it (its own hop key), so the whole path is
   real: hop open + replay check, routing, one seal and one ``sendto`` per recipient.
2. **Floor**: a bare uvloop ``DatagramProtocol`` in a child process that sends each
   datagram, unchanged, to the fixed list of the source's N-1 fellow members (one dict
   lookup by source address, no crypto, no replay window, no room table). The same load
   generator drives it with the same packet sizes and counts (senders prefix their own
   session id so the datagrams listeners get are byte-for-byte the size the relay sends).

The send timestamp (``time.perf_counter_ns``, one clock for the whole machine) rides in
the first 8 bytes of the Opus-like bytes, so every receiver computes the latency the
path added: seal + sendto in the generator, the relay, and the receive in the generator.
The relay's (and the floor's) CPU time comes from ``/proc/PID/task/*/schedstat``
(nanoseconds, all threads) and its memory from ``/proc/PID/status`` (VmRSS, VmHWM).

With two or more CPUs the server (and later the floor) is pinned to the last CPU and
the load generator and this script to the first, so the relay under test owns a core.

Paced mode (default) sends ``--rate`` packets/s per sender with evenly spread phases.
``--max-rate`` sends back to back instead, bounded by ``--window`` packets in flight
(sent but not yet seen by a reference listener) so the kernel does not just drop what
the relay cannot take: the forwarded packets/s is then the relay's ceiling, and its
latency is mostly queueing (about ``--window / 2`` packets' worth of relay work).

Run::

    .venv/bin/python bench/relay.py                      # 4 senders + 4 listeners, 10 s
    .venv/bin/python bench/relay.py --max-rate -d 5      # throughput ceiling
    .venv/bin/python bench/relay.py -s 8 -l 8 --rate 50 --payload-size 120

It always ends by itself (every wait is bounded), kills what it started, removes its
temporary directory, and uses only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import cast

import uvloop
from procfs import HOST, free_port, memory_kb, pin

from bangor.client.control import ControlClient
from bangor.errors import PacketError
from bangor.wire.media import (
    HEADER_SIZE,
    TAG_SIZE,
    HopOpener,
    HopSealer,
    PacketType,
    derive_media_keys,
)
from bangor.wire.voice import VoiceFrame, pack_relayed

Address = tuple[str, int]

BANGOR = str(Path(sys.executable).parent / "bangor")
PASSWORD = "bench password, not a secret"
START_TIMEOUT = 20.0  # server ready line, logins, child processes reporting ready
REGISTER_TIMEOUT = 2.0  # per try, waiting for the KEEPALIVE answer
REGISTER_TRIES = 3
DRAIN_TIMEOUT = 2.0  # after the last send, wait at most this long for stragglers
DRAIN_QUIET = 0.2  # ... or stop early once nothing arrived for this long
FLOW_TIMEOUT = 0.05  # max-rate: a full window with no progress for this long is written off
BURST = 16  # max-rate: packets sent per event-loop turn before receivers get a turn
RCVBUF = 1 << 20  # load generator sockets: room for bursts from the relay
MAX_SAMPLES = 2_000_000  # latency samples kept (memory bound)
MIN_PAYLOAD = 12  # voice seq (4) + send timestamp (8)
MAX_PAYLOAD = 1200  # the relay's default max_media_payload

VOICE = int(PacketType.VOICE)
_SESSION = struct.Struct(">I")
# Forwarded payload: sender session id, then VoiceFrame's header (seq, packet, info; no
# copies), then the send time that starts its Opus-like bytes.
_STAMP = struct.Struct(">IIHBQ")
_TIME = struct.Struct(">Q")


# --- what the main process hands the load generator, and what it gets back -------------


@dataclass(frozen=True)
class MemberSpec:
    """One synthetic client: its hop keys and whether it talks."""

    session_id: int
    send_key: bytes  # seals what it sends (client-to-server hop key)
    open_keys: dict[int, bytes]  # header session id -> key that opens what it receives
    sender: bool


@dataclass(frozen=True)
class LoadSpec:
    target: Address
    target_pid: int
    members: list[MemberSpec]
    relayed: bool  # True: the relay prefixes the sender id; False (floor): senders do
    rate: float
    duration: float
    payload_size: int
    max_rate: bool
    window: int
    sample_every: int
    cpu: int | None
    target_core: int | None


@dataclass
class LoadResult:
    sent: int
    expected: int  # forwarded packets all members should get (each sender's to N-1 others)
    received: int
    listener_expected: int
    listener_received: int
    bad: int  # forwarded datagrams that did not open or parse
    wall: float  # seconds from the first send to the last
    target_cpu: float  # seconds of CPU the relay (or floor) used, first send to drain end
    self_cpu: float  # the load generator's own CPU seconds over the same span
    span: float  # seconds from the first send to the end of the drain
    latency_us: tuple[float, float, float]  # p50, p99, max
    samples: int
    rss_kb: int
    hwm_kb: int
    relay_core: CoreTimes | None  # what the relay's CPU did meanwhile (when pinned)
    load_core: CoreTimes | None


@dataclass(frozen=True)
class CoreTimes:
    """Seconds one CPU spent, from /proc/stat, over the measured span."""

    busy: float  # user + nice + system
    softirq: float  # mostly loopback packet delivery
    steal: float  # the hypervisor ran someone else

    @property
    def tasks(self) -> float:
        """Time in tasks: without IRQ time accounting, softirq is charged to the task."""
        return self.busy + self.softirq

    def __sub__(self, other: CoreTimes) -> CoreTimes:
        return CoreTimes(
            self.busy - other.busy, self.softirq - other.softirq, self.steal - other.steal
        )


# --- /proc --------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """CPU time of every live thread of ``pid`` (schedstat: nanoseconds, user + system)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with (
            contextlib.suppress(FileNotFoundError, ProcessLookupError),
            open(f"/proc/{pid}/task/{task}/schedstat") as f,
        ):
            total += int(f.read().split()[0])
    return total / 1e9


def core_times(cpu: int | None) -> CoreTimes | None:
    if cpu is None:
        return None
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name == f"cpu{cpu}":
                user, nice, system, _idle, _iowait, _irq, softirq, steal = map(int, fields[:8])
                tick = os.sysconf("SC_CLK_TCK")
                return CoreTimes((user + nice + system) / tick, softirq / tick, steal / tick)
    return None


def percentiles_us(samples_ns: list[int]) -> tuple[float, float, float]:
    if not samples_ns:
        return (float("nan"),) * 3
    ordered = sorted(samples_ns)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] / 1000

    return rank(0.50), rank(0.99), ordered[-1] / 1000


# --- load generator (child process) ---------------------------------------------------------


class Flow:
    """Max-rate window: packets a reference receiver has yet to see."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.outstanding = 0
        self.written_off = 0
        self.waiter: asyncio.Future[None] | None = None

    def arrived(self) -> None:
        self.outstanding -= 1
        waiter = self.waiter
        if waiter is not None and self.outstanding <= self.window // 2:
            self.waiter = None
            waiter.set_result(None)

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        timer = loop.call_later(FLOW_TIMEOUT, self._expire, waiter)
        await waiter
        timer.cancel()

    def _expire(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():  # lost packets never arrive: stop waiting for them
            self.written_off += max(self.outstanding, 0)
            self.outstanding = 0
            self.waiter = None
            waiter.set_result(None)


class Member(asyncio.DatagramProtocol):
    """One synthetic client's UDP socket: sends (if a sender), receives, measures."""

    def __init__(
        self,
        spec: MemberSpec,
        relayed: bool,
        payload_size: int,
        sample_every: int,
        latencies: list[int],
    ) -> None:
        self.spec = spec
        self.sealer = HopSealer(spec.send_key, spec.session_id)
        self.openers = {sid: HopOpener(key, sid) for sid, key in spec.open_keys.items()}
        self.relayed = relayed
        self.filler = os.urandom(payload_size - MIN_PAYLOAD)  # opaque, like SFrame output
        self.sample_every = sample_every
        self.latencies = latencies
        self.transport: asyncio.DatagramTransport | None = None
        self.answered: asyncio.Future[None] | None = None
        self.flow: Flow | None = None  # set on the max-rate reference receiver
        self.seq = 0
        self.sent = 0
        self.received = 0
        self.bad = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def send_voice(self) -> None:
        assert self.transport is not None
        seq = self.seq
        self.seq = seq + 1
        frame = VoiceFrame(seq, _TIME.pack(time.perf_counter_ns()) + self.filler).serialize()
        if not self.relayed:
            frame = pack_relayed(self.spec.session_id, frame)
        self.transport.sendto(self.sealer.seal(PacketType.VOICE, frame))
        self.sent += 1

    def datagram_received(self, data: bytes, addr: Address) -> None:
        now = time.perf_counter_ns()
        if len(data) < HEADER_SIZE + TAG_SIZE:
            self.bad += 1
            return
        if data[1] != VOICE:  # the answer to our KEEPALIVE
            if self.answered is not None and not self.answered.done():
                self.answered.set_result(None)
            return
        self.received += 1
        if self.flow is not None:
            self.flow.arrived()
        if self.received % self.sample_every:
            return
        opener = self.openers.get(_SESSION.unpack_from(data, 2)[0])
        if opener is None:
            self.bad += 1
            return
        try:
            _, payload = opener.open(data)
            *_, stamp = _STAMP.unpack_from(payload)
        except (PacketError, struct.error):
            self.bad += 1
            return
        if len(self.latencies) < MAX_SAMPLES:
            self.latencies.append(now - stamp)

    def error_received(self, exc: Exception) -> None:
        self.bad += 1

    async def register(self) -> None:
        """Send KEEPALIVEs until the relay (or floor) answers: it now knows our address."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        for _ in range(REGISTER_TRIES):
            self.answered = loop.create_future()
            self.transport.sendto(self.sealer.seal(PacketType.KEEPALIVE, b"bench"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.answered, REGISTER_TIMEOUT)
                return
        raise RuntimeError(f"no answer to KEEPALIVE from session {self.spec.session_id:08x}")


async def paced(member: Member, start: float, phase: float, period: float, count: int) -> None:
    for i in range(count):
        delay = start + phase + i * period - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        member.send_voice()


async def flat_out(senders: list[Member], reference: Member, flow: Flow, end: float) -> None:
    turn = 0
    while time.perf_counter() < end:
        room = flow.window - flow.outstanding
        if room <= 0:
            await flow.wait()
            continue
        for _ in range(min(room, BURST)):
            member = senders[turn]
            turn = (turn + 1) % len(senders)
            member.send_voice()
            if member is not reference:
                flow.outstanding += 1
        await asyncio.sleep(0)  # let the receivers run


async def drain(members: list[Member], expected: int) -> None:
    deadline = time.perf_counter() + DRAIN_TIMEOUT
    last, quiet_since = -1, time.perf_counter()
    while time.perf_counter() < deadline:
        got = sum(m.received for m in members)
        if got >= expected:
            return
        if got != last:
            last, quiet_since = got, time.perf_counter()
        elif time.perf_counter() - quiet_since > DRAIN_QUIET:
            return
        await asyncio.sleep(0.01)


async def run_load(spec: LoadSpec) -> LoadResult:
    loop = asyncio.get_running_loop()
    latencies: list[int] = []
    members: list[Member] = []
    try:
        for member_spec in spec.members:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            sock.bind((HOST, 0))
            sock.connect(spec.target)
            _, member = await loop.create_datagram_endpoint(
                lambda s=member_spec: Member(  # type: ignore[misc]
                    s, spec.relayed, spec.payload_size, spec.sample_every, latencies
                ),
                sock=sock,
            )
            members.append(member)
        for member in members:
            await member.register()
        senders = [m for m in members if m.spec.sender]
        listeners = [m for m in members if not m.spec.sender]

        cpu0, self0 = cpu_seconds(spec.target_pid), cpu_seconds(os.getpid())
        relay_core0, load_core0 = core_times(spec.target_core), core_times(spec.cpu)
        start = time.perf_counter()
        if spec.max_rate:
            reference = listeners[0] if listeners else members[0]
            flow = reference.flow = Flow(spec.window)
            await flat_out(senders, reference, flow, start + spec.duration)
        else:
            period = 1 / spec.rate
            count = round(spec.rate * spec.duration)
            await asyncio.gather(
                *(
                    paced(m, start, i * period / len(senders), period, count)
                    for i, m in enumerate(senders)
                )
            )
        wall = time.perf_counter() - start
        sent = sum(m.sent for m in senders)
        expected = sent * (len(members) - 1)
        await drain(members, expected)
        span = time.perf_counter() - start
        cpu1, self1 = cpu_seconds(spec.target_pid), cpu_seconds(os.getpid())
        relay_core1, load_core1 = core_times(spec.target_core), core_times(spec.cpu)
        rss, hwm = memory_kb(spec.target_pid)
        return LoadResult(
            sent=sent,
            expected=expected,
            received=sum(m.received for m in members),
            listener_expected=sent * len(listeners),
            listener_received=sum(m.received for m in listeners),
            bad=sum(m.bad for m in members),
            wall=wall,
            target_cpu=cpu1 - cpu0,
            self_cpu=self1 - self0,
            span=span,
            latency_us=percentiles_us(latencies),
            samples=len(latencies),
            rss_kb=rss,
            hwm_kb=hwm,
            relay_core=relay_core1 - relay_core0 if relay_core0 and relay_core1 else None,
            load_core=load_core1 - load_core0 if load_core0 and load_core1 else None,
        )
    finally:
        for member in members:
            if member.transport is not None:
                member.transport.close()


def loadgen_main(spec: LoadSpec, conn: Connection) -> None:
    """Child process entry: run the load, send back a LoadResult or an error string."""
    try:
        pin(0, spec.cpu)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result: LoadResult | str = runner.run(
                asyncio.wait_for(run_load(spec), spec.duration + START_TIMEOUT + DRAIN_TIMEOUT)
            )
    except BaseException as exc:
        result = f"load generator failed: {exc!r}"
    conn.send(result)
    conn.close()


# --- the floor (child process) ---------------------------------------------------------------


class Fanout(asyncio.DatagramProtocol):
    """Bare fan-out: each datagram goes, unchanged, to the source's N-1 fixed peers."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.routes: dict[Address, list[Address]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        routes = self.routes.get(addr)
        if routes is None:  # registration: learn the address and echo, as the relay acks
            self.routes[addr] = []
            for source in self.routes:
                self.routes[source] = [a for a in self.routes if a != source]
            assert self.transport is not None
            self.transport.sendto(data, addr)
            return
        sendto = self.transport.sendto  # type: ignore[union-attr]
        for dest in routes:
            sendto(data, dest)


def floor_main(conn: Connection, cpu: int | None, lifetime: float) -> None:
    """Child process entry: serve the fan-out until the pipe says stop (or ``lifetime``)."""
    pin(0, cpu)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Fanout, local_addr=(HOST, 0))
        stop = asyncio.Event()
        loop.add_reader(conn.fileno(), stop.set)
        conn.send(transport.get_extra_info("sockname")[1])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), lifetime)
        transport.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve())


# --- main process: the Bangor server, logins, children -------------------------------------


@dataclass
class Options:
    senders: int
    listeners: int
    rate: float
    duration: float
    payload_size: int
    max_rate: bool
    window: int
    sample_every: int
    relay_cpu: int | None
    load_cpu: int | None


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    port: int
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    ready: threading.Event = field(default_factory=threading.Event)
    tracebacks: int = 0

    def pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if "listening on" in line:
                self.ready.set()
            if "Traceback" in line:
                self.tracebacks += 1
        self.ready.set()  # the process ended: stop waiting

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def add_user(data_dir: Path, name: str) -> None:
    result = subprocess.run(
        [BANGOR, "user", "add", name, "--data-dir", str(data_dir)],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"bangor user add {name} failed: {result.stderr.strip()}")


def start_server(data_dir: Path, cpu: int | None) -> ServerProcess:
    port = free_port()
    proc = subprocess.Popen(
        [BANGOR, "serve", "--host", HOST, "--port", str(port), "--data-dir", str(data_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = ServerProcess(proc, port)
    threading.Thread(target=server.pump, daemon=True).start()
    if not server.ready.wait(START_TIMEOUT) or proc.poll() is not None:
        server.stop()
        raise RuntimeError("server did not start: " + " | ".join(server.lines))
    pin(proc.pid, cpu)
    return server


async def login_all(port: int, names: Sequence[str]) -> list[ControlClient]:
    clients: list[ControlClient] = []
    try:
        for name in names:
            client = await ControlClient.connect(HOST, port)
            clients.append(client)
            client.start()
            await asyncio.wait_for(client.login(name, PASSWORD, name), START_TIMEOUT)
    except BaseException:
        await close_all(clients)
        raise
    return clients


async def close_all(clients: Sequence[ControlClient]) -> None:
    for client in clients:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.leave(), 3.0)


async def run_child(
    target: Callable[..., None], args: tuple[object, ...], timeout: float
) -> object:
    """Run ``target(*args, conn)`` in a spawned process; return what it sends back."""
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=target, args=(*args, theirs), daemon=True)
    proc.start()
    theirs.close()
    try:
        if not await asyncio.to_thread(ours.poll, timeout):
            raise RuntimeError(f"{target.__name__} did not answer in time")
        return ours.recv()
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def load_spec(
    opts: Options, target: Address, pid: int, members: list[MemberSpec], relayed: bool
) -> LoadSpec:
    return LoadSpec(
        target=target,
        target_pid=pid,
        members=members,
        relayed=relayed,
        rate=opts.rate,
        duration=opts.duration,
        payload_size=opts.payload_size,
        max_rate=opts.max_rate,
        window=opts.window,
        sample_every=opts.sample_every,
        cpu=opts.load_cpu,
        target_core=opts.relay_cpu,
    )


def child_timeout(opts: Options) -> float:
    return opts.duration + DRAIN_TIMEOUT + 2 * START_TIMEOUT


async def bench_bangor(opts: Options, tmp: Path) -> LoadResult:
    data_dir = tmp / "server"
    names = [f"bench{i}" for i in range(opts.senders + opts.listeners)]
    for name in names:
        await asyncio.to_thread(add_user, data_dir, name)
    server = await asyncio.to_thread(start_server, data_dir, opts.relay_cpu)
    try:
        clients = await login_all(server.port, names)
        try:
            room = await asyncio.wait_for(clients[0].create_room("bench"), START_TIMEOUT)
            members = []
            for i, client in enumerate(clients):
                joined = await asyncio.wait_for(client.join_room(room.room_id), START_TIMEOUT)
                assert client.welcome is not None
                keys = derive_media_keys(client.welcome.media_secret)
                sid = joined.you.session_id
                members.append(
                    MemberSpec(
                        sid,
                        keys.client_to_server,
                        {sid: keys.server_to_client},
                        sender=i < opts.senders,
                    )
                )
            spec = load_spec(opts, (HOST, server.port), server.proc.pid, members, relayed=True)
            result = await run_child(loadgen_main, (spec,), child_timeout(opts))
        finally:
            await close_all(clients)
    finally:
        await asyncio.to_thread(server.stop)
    if server.tracebacks:
        print("warning: the server logged a traceback:", *server.lines, sep="\n  ")
    if isinstance(result, str):
        raise RuntimeError(result)
    return cast(LoadResult, result)


async def bench_floor(opts: Options) -> LoadResult:
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(
        target=floor_main, args=(theirs, opts.relay_cpu, child_timeout(opts)), daemon=True
    )
    proc.start()
    theirs.close()
    try:
        if not await asyncio.to_thread(ours.poll, START_TIMEOUT):
            raise RuntimeError("the floor process did not start")
        port = cast(int, ours.recv())
        assert proc.pid is not None
        keys = {secrets.randbits(31) + 1: os.urandom(32) for _ in range(opts.senders)}
        keys |= {secrets.randbits(31) + 1: os.urandom(32) for _ in range(opts.listeners)}
        sids = list(keys)
        members = [
            MemberSpec(
                sid,
                keys[sid],
                {other: keys[other] for other in sids[: opts.senders] if other != sid},
                sender=i < opts.senders,
            )
            for i, sid in enumerate(sids)
        ]
        spec = load_spec(opts, (HOST, port), proc.pid, members, relayed=False)
        result = await run_child(loadgen_main, (spec,), child_timeout(opts))
    finally:
        with contextlib.suppress(OSError):
            ours.send("stop")
        await asyncio.to_thread(proc.join, 5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    if isinstance(result, str):
        raise RuntimeError(result)
    return cast(LoadResult, result)


# --- report ----------------------------------------------------------------------------------


def report(opts: Options, bangor: LoadResult, floor: LoadResult) -> None:
    n = opts.senders + opts.listeners
    mode = (
        f"max rate, window {opts.window}"
        if opts.max_rate
        else f"{opts.rate:g} packets/s per sender"
    )
    size_in = HEADER_SIZE + opts.payload_size + TAG_SIZE
    print(
        f"Bangor relay benchmark: 1 room, {opts.senders} senders + {opts.listeners} listeners "
        f"({n} members), {mode}, {opts.duration:g} s\n"
        f"payload {opts.payload_size} B: datagrams {size_in} B to the relay "
        f"({size_in + 4} B to the floor), {size_in + 4} B forwarded; "
        f"latency sampled 1 in {opts.sample_every}; CPUs: relay {opts.relay_cpu}, "
        f"load {opts.load_cpu}\n"
    )

    def per_k(r: LoadResult) -> float:
        return 1000 * r.target_cpu * 1000 / max(r.received, 1)

    def loss(received: int, expected: int) -> str:
        return f"{100 * (1 - received / expected):.2f} %" if expected else "n/a"

    rows: list[tuple[str, str, str, str]] = []

    def row(name: str, fmt: str, b: float, f: float, ratio: bool = False) -> None:
        rows.append((name, format(b, fmt), format(f, fmt), f"{b / f:.2f}x" if ratio and f else ""))

    row("packets sent", "d", bangor.sent, floor.sent)
    row("forwarded, expected (all members)", "d", bangor.expected, floor.expected)
    row("forwarded, received (all members)", "d", bangor.received, floor.received)
    rows.append(
        (
            "loss (all members)",
            loss(bangor.received, bangor.expected),
            loss(floor.received, floor.expected),
            "",
        )
    )
    row("forwarded, received (listeners)", "d", bangor.listener_received, floor.listener_received)
    rows.append(
        (
            "loss (listeners)",
            loss(bangor.listener_received, bangor.listener_expected),
            loss(floor.listener_received, floor.listener_expected),
            "",
        )
    )
    row("bad datagrams", "d", bangor.bad, floor.bad)
    row(
        "forwarded packets/s",
        ",.0f",
        bangor.received / bangor.wall,
        floor.received / floor.wall,
        ratio=True,
    )
    row("relay CPU s", ".3f", bangor.target_cpu, floor.target_cpu)
    row(
        "relay CPU % of one core",
        ".1f",
        100 * bangor.target_cpu / bangor.span,
        100 * floor.target_cpu / floor.span,
    )
    row("relay CPU ms per 1000 forwarded", ".2f", per_k(bangor), per_k(floor), ratio=True)
    for label, i in (("p50", 0), ("p99", 1), ("max", 2)):
        row(f"latency {label} us", ".0f", bangor.latency_us[i], floor.latency_us[i], ratio=i < 2)
    row("latency samples", "d", bangor.samples, floor.samples)
    row("relay RSS MiB (end)", ".1f", bangor.rss_kb / 1024, floor.rss_kb / 1024)
    row("relay RSS MiB (peak, VmHWM)", ".1f", bangor.hwm_kb / 1024, floor.hwm_kb / 1024)
    row(
        "load generator CPU % of one core",
        ".1f",
        100 * bangor.self_cpu / bangor.span,
        100 * floor.self_cpu / floor.span,
    )

    if bangor.relay_core and floor.relay_core and bangor.load_core and floor.load_core:
        row(
            "relay core: in softirq % (inside the above)",
            ".1f",
            100 * bangor.relay_core.softirq / bangor.span,
            100 * floor.relay_core.softirq / floor.span,
        )
        row(
            "relay core: other tasks % (ticks, approx.)",
            ".1f",
            100 * max(bangor.relay_core.tasks - bangor.target_cpu, 0) / bangor.span,
            100 * max(floor.relay_core.tasks - floor.target_cpu, 0) / floor.span,
        )
        row(
            "relay core: steal %",
            ".1f",
            100 * bangor.relay_core.steal / bangor.span,
            100 * floor.relay_core.steal / floor.span,
        )
        row(
            "load core: steal %",
            ".1f",
            100 * bangor.load_core.steal / bangor.span,
            100 * floor.load_core.steal / floor.span,
        )

    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  {'bangor':>12}  {'floor':>12}  {'bangor/floor':>12}")
    for name, b, f, ratio in rows:
        print(f"{name:{width}}  {b:>12}  {f:>12}  {ratio:>12}")
    for name, r in (("bangor", bangor), ("floor", floor)):
        if r.self_cpu / r.span > 0.9:
            print(
                f"warning: the load generator was saturated during the {name} run; "
                "its numbers are a lower bound on the relay's capacity"
            )
        cores = [c for c in (r.relay_core, r.load_core) if c is not None]
        if any(c.steal / r.span > 0.05 for c in cores):
            print(f"warning: the hypervisor stole over 5 % of a core during the {name} run")
        if r.relay_core and (r.relay_core.tasks - r.target_cpu) / r.span > 0.05:
            print(f"warning: other processes used the relay's core during the {name} run")


# --- command line ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description="Benchmark the Bangor UDP relay against a bare uvloop fan-out floor."
    )
    parser.add_argument("-s", "--senders", type=int, default=4, help="members who talk")
    parser.add_argument("-l", "--listeners", type=int, default=4, help="members who only listen")
    parser.add_argument(
        "-r",
        "--rate",
        type=float,
        default=50.0,
        help="packets/s per sender in paced mode (default 50: 20 ms frames)",
    )
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds of sending")
    parser.add_argument(
        "-p",
        "--payload-size",
        type=int,
        default=80,
        help="opaque voice payload bytes per packet (VoiceFrame, default 80)",
    )
    parser.add_argument(
        "--max-rate",
        action="store_true",
        help="send as fast as the relay keeps up (throughput ceiling)",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=32,
        help="max-rate: packets in flight to the reference listener",
    )
    parser.add_argument(
        "--sample-every",
        type=int,
        default=None,
        help="open 1 in K forwarded packets for latency (default 1; 8 "
        "with --max-rate so receiving stays cheap)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    args = parser.parse_args(argv)
    if args.senders < 1 or args.listeners < 0 or args.senders + args.listeners < 2:
        parser.error("need at least 1 sender and 2 members")
    if args.senders + args.listeners > 16:
        parser.error("the server allows at most 16 members per room")
    if not MIN_PAYLOAD < args.payload_size <= MAX_PAYLOAD:
        parser.error(f"--payload-size must be {MIN_PAYLOAD + 1}..{MAX_PAYLOAD}")
    if args.rate <= 0 or not 0 < args.duration <= 600 or args.window < 2:
        parser.error("--rate, --duration (at most 600) and --window (at least 2) out of range")
    sample_every = args.sample_every or (8 if args.max_rate else 1)
    cpus = sorted(os.sched_getaffinity(0))
    relay_cpu = load_cpu = None
    if not args.no_pin and len(cpus) >= 2:
        relay_cpu, load_cpu = cpus[-1], cpus[0]
    return Options(
        args.senders,
        args.listeners,
        args.rate,
        args.duration,
        args.payload_size,
        args.max_rate,
        args.window,
        max(sample_every, 1),
        relay_cpu,
        load_cpu,
    )


async def run(opts: Options) -> None:
    with tempfile.TemporaryDirectory(prefix="bangor-bench-") as tmp:
        bangor = await bench_bangor(opts, Path(tmp))
    floor = await bench_floor(opts)
    report(opts, bangor, floor)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    pin(0, opts.load_cpu)
    budget = 2 * child_timeout(opts) + 60 + 2 * (opts.senders + opts.listeners)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            runner.run(asyncio.wait_for(run(opts), budget))
        except (RuntimeError, TimeoutError, OSError) as exc:
            print(f"bench/relay.py: {exc or type(exc).__name__}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("bench/relay.py: interrupted", file=sys.stderr)
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
