"""Real network namespaces for tests: hosts, routers, links, NAT and netem.

A test builds a topology inside a ``Network`` (a context manager) and runs real
processes in it; leaving the ``with`` block kills every process in its namespaces and
deletes them, and with them their veths, routes, iptables rules and queues::

    with Network() as net:
        router = net.router("net")
        server, alice = net.namespace("server"), net.namespace("alice")
        server_ip = net.attach(server, router, "10.99.0.0/24")  # 10.99.0.2, via .1
        alice_ip = net.attach(alice, router, "10.99.1.0/24")
        net.netem(alice, "net", loss_pct=5, delay_ms=40, jitter_ms=30)
        proc = net.popen(alice, ["bangor", "join", ...])

Names: namespaces are ``bgt-<pid>-<n>-<role>``, unique per process and run; the ones
a dead process left behind (a crash, a kill -9) are removed by the next ``Network``.
Veths are made directly inside their namespaces and named after the namespace at the
other end (in ``alice``, the device towards ``net`` is called ``net``), so they never
clash with anything in the root namespace and vanish with their namespaces.

Impairment: ``netem`` shapes the packets *leaving* one interface, like ``tc netem``
(which is what it runs where the kernel has ``sch_netem``); to impair both directions
of a link, call it on both ends. Jitter is netem's: each packet draws its own delay,
uniform in delay +- jitter, so packets sent 20 ms apart with 30 ms of jitter often
arrive out of order. That is harsher than most real paths (Wi-Fi mostly queues, and
so delays without reordering), and deliberately so: the jitter buffer must put voice
back in order anyway. With a rate, packets also queue for the link and stay in order.

Kernels built without ``sch_netem`` (this project's CI machines among them) get the
same behaviour from ``tests/usernetem.py``: an iptables NFQUEUE rule on the interface's
egress hands each packet to a small process in the namespace that drops it or accepts
it after its delay. ``BANGOR_NETEM=tc|nfqueue`` forces one or the other.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import itertools
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

PREFIX = "bgt-"
_STALE = re.compile(rf"^{PREFIX}(\d+)-")
_names = itertools.count()
_ours: set[str] = set()  # namespaces this process made and has not deleted yet
USERNETEM = Path(__file__).with_name("usernetem.py")
KILL_TIMEOUT = 5.0


def _ip(*args: str) -> None:
    _check(["ip", *args])


def _check(args: Sequence[str], stdin: str | None = None) -> str:
    result = subprocess.run(list(args), input=stdin, capture_output=True, text=True, timeout=30)
    if result.returncode:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result.stdout


@functools.cache
def netns_available() -> str | None:
    """None if this machine lets us make network namespaces, else the reason it doesn't."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables"), ("tc", "iproute2")):
        if shutil.which(tool) is None:
            return f"no `{tool}` command (apt-get install {package})"
    name = f"{PREFIX}{os.getpid()}-probe"
    result = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if result.returncode:
        return f"`ip netns add` fails here: {result.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


@functools.cache
def netem_backend() -> str:
    """``tc`` where the kernel has ``sch_netem``, else ``nfqueue`` (``tests/usernetem.py``)."""
    forced = os.environ.get("BANGOR_NETEM")
    if forced:
        if forced not in ("tc", "nfqueue"):
            raise ValueError(f"BANGOR_NETEM={forced!r}: use tc or nfqueue")
        return forced
    return "tc" if tc_netem_works() else "nfqueue"


@functools.cache
def tc_netem_works() -> bool:
    with Network() as net:
        ns = net.namespace("probe")
        probe = ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]
        return subprocess.run(ns.cmd(*probe), capture_output=True).returncode == 0


def _pids(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _kill_all(pids: Sequence[int]) -> None:
    """SIGKILL these processes and wait (on pidfds, not by polling) until they are gone."""
    fds = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            fds.append(os.pidfd_open(pid))
            os.kill(pid, signal.SIGKILL)
    for fd in fds:
        select.select([fd], [], [], KILL_TIMEOUT)  # readable once the process has exited
        os.close(fd)


def _delete(name: str) -> None:
    _kill_all(_pids(name))
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    _ours.discard(name)


def remove_stale() -> list[str]:
    """Delete our namespaces whose process is gone (left by a crash); returns their names."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    stale = []
    for line in out.splitlines():
        name = line.split(" ", 1)[0]
        match = _STALE.match(name)
        if not match or name in _ours:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or not _alive(pid):
            _delete(name)
            stale.append(name)
    return stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Namespace:
    name: str
    role: str

    def cmd(self, *args: str) -> list[str]:
        """``args`` run inside this namespace (``ip netns exec`` execs, so pids match)."""
        return ["ip", "netns", "exec", self.name, *args]


class _UserNetem:
    """One ``usernetem.py`` process, fed by an NFQUEUE rule on ``dev``'s egress."""

    def __init__(self, net: Network, ns: Namespace, dev: str, queue: int) -> None:
        self.proc = net.popen(
            ns,
            [sys.executable, str(USERNETEM), str(queue)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._expect("ready")
        rule = ["-o", dev, "-j", "NFQUEUE", "--queue-num", str(queue)]
        net.run(ns, ["iptables", "-t", "mangle", "-A", "POSTROUTING", *rule])

    def _expect(self, word: str) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()  # the process answers or exits
        if line != word:
            status = self.proc.poll()
            raise RuntimeError(f"usernetem: expected {word!r}, got {line!r} (exit {status})")

    def configure(
        self,
        loss: float,
        delay: float,
        jitter: float,
        rate: float,
        burst: float = 0.0,
        seed: int | None = None,
    ) -> None:
        assert self.proc.stdin is not None
        settings = {"loss": loss, "delay": delay, "jitter": jitter, "rate": rate}
        settings |= {"burst": burst, "seed": seed}
        self.proc.stdin.write(json.dumps(settings) + "\n")
        self.proc.stdin.flush()
        self._expect("ok")


class Network:
    """Namespaces, links and processes of one test; ``close()`` removes them all."""

    def __init__(self) -> None:
        remove_stale()
        self.namespaces: list[Namespace] = []
        self.procs: list[subprocess.Popen[Any]] = []
        self._emulators: dict[tuple[str, str], _UserNetem] = {}
        self._queues = itertools.count(1)

    def __enter__(self) -> Network:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- building -------------------------------------------------------------------

    def namespace(self, role: str) -> Namespace:
        """A new namespace with ``lo`` up and nothing else."""
        ns = Namespace(f"{PREFIX}{os.getpid()}-{next(_names)}-{role}", role)
        _ip("netns", "add", ns.name)
        _ours.add(ns.name)
        self.namespaces.append(ns)
        _ip("-n", ns.name, "link", "set", "dev", "lo", "up")
        return ns

    def router(self, role: str) -> Namespace:
        """A namespace that forwards IPv4 between its links."""
        ns = self.namespace(role)
        self.run(ns, ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
        return ns

    def link(
        self,
        a: Namespace,
        b: Namespace,
        a_addr: str,
        b_addr: str,
        *,
        a_dev: str | None = None,
        b_dev: str | None = None,
    ) -> tuple[str, str]:
        """A veth pair between ``a`` and ``b`` with addresses (CIDR); returns the devices.

        Each end is named after the other namespace's role unless told otherwise.
        """
        a_dev, b_dev = a_dev or b.role[:15], b_dev or a.role[:15]
        peer = ["peer", "name", b_dev, "netns", b.name]
        _ip("link", "add", "name", a_dev, "netns", a.name, "type", "veth", *peer)
        for ns, dev, addr in ((a, a_dev, a_addr), (b, b_dev, b_addr)):
            _ip("-n", ns.name, "addr", "add", addr, "dev", dev)
            _ip("-n", ns.name, "link", "set", "dev", dev, "up")
        return a_dev, b_dev

    def attach(self, host: Namespace, router: Namespace, subnet: str) -> str:
        """Link ``host`` (.2) to ``router`` (.1) on ``subnet``, default route via the router.

        Returns the host's address.
        """
        net = ipaddress.ip_network(subnet)
        host_ip, router_ip = str(net[2]), str(net[1])
        self.link(host, router, f"{host_ip}/{net.prefixlen}", f"{router_ip}/{net.prefixlen}")
        self.route(host, "default", router_ip)
        return host_ip

    def route(self, ns: Namespace, dest: str, via: str) -> None:
        _ip("-n", ns.name, "route", "add", dest, "via", via)

    def masquerade(self, ns: Namespace, out_dev: str, *, random_fully: bool = False) -> None:
        """NAT everything that leaves ``out_dev`` behind its address (a home router).

        ``random_fully``: a new random source port for every mapping (--random-fully), as
        symmetric-ish NATs do; otherwise Linux keeps the port when it is free.
        """
        rule = ["-t", "nat", "-A", "POSTROUTING", "-o", out_dev, "-j", "MASQUERADE"]
        self.run(ns, ["iptables", *rule, *(["--random-fully"] if random_fully else [])])
        # Like every home router, drop what arrives unasked for the router itself. Without
        # this, a peer's first hole-punching packet (before our own went out) leaves a
        # conntrack entry that takes our mapping's port, so the NAT moves us to another.
        drop = ["-A", "INPUT", "-i", out_dev, "-m", "conntrack", "--ctstate", "NEW,INVALID"]
        self.run(ns, ["iptables", *drop, "-j", "DROP"])

    def netem(
        self,
        ns: Namespace,
        dev: str,
        *,
        loss_pct: float = 0.0,
        delay_ms: float = 0.0,
        jitter_ms: float = 0.0,
        rate_kbit: float = 0.0,
        burst: float = 0.0,
        seed: int | None = None,
    ) -> None:
        """Set (or change, at any time) the impairment of packets leaving ``dev`` in ``ns``.

        Random loss, delay +- jitter (uniform), and a rate limit (0: none). All zero: a
        clean link again. With ``burst`` > 1 the loss comes in bursts of that many
        packets on average (Gilbert-Elliott, see ``tests/usernetem.py``), still
        ``loss_pct`` in all; ``seed`` fixes the loss pattern (user-space netem only).
        """
        if netem_backend() == "tc":
            args = ["tc", "qdisc", "replace", "dev", dev, "root", "netem", "limit", "10000"]
            args += ["delay", f"{delay_ms}ms", f"{jitter_ms}ms"]
            if burst > 1 and loss_pct:
                # netem's gemodel: P(good -> bad), P(bad -> good), loss in bad, in good.
                r = 100 / burst
                p = r * loss_pct / (100 - loss_pct)
                args += ["loss", "gemodel", f"{p}%", f"{r}%", "100%", "0%"]
            else:
                args += ["loss", f"{loss_pct}%"]
            if rate_kbit:
                args += ["rate", f"{rate_kbit}kbit"]
            self.run(ns, args)
            return
        key = (ns.name, dev)
        if key not in self._emulators:
            self._emulators[key] = _UserNetem(self, ns, dev, next(self._queues))
        self._emulators[key].configure(
            loss_pct / 100, delay_ms / 1000, jitter_ms / 1000, rate_kbit * 1000, burst, seed
        )

    # --- running --------------------------------------------------------------------

    def popen(self, ns: Namespace, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``args`` in ``ns``; it is stopped (SIGTERM, then SIGKILL) by ``close()``."""
        proc: subprocess.Popen[Any] = subprocess.Popen(ns.cmd(*args), **kwargs)
        self.procs.append(proc)
        return proc

    def run(self, ns: Namespace, args: Sequence[str], stdin: str | None = None) -> str:
        """Run ``args`` in ``ns`` to completion; its stdout. Raises if it fails."""
        return _check(ns.cmd(*args), stdin)

    def close(self) -> None:
        """Stop every process, then delete every namespace (with its links and rules)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(KILL_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        for ns in self.namespaces:
            _delete(ns.name)  # anything still running in it is killed first
        self.namespaces.clear()
        self.procs.clear()
        self._emulators.clear()
