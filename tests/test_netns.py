"""The network-namespace harness itself: packets cross it, netem shapes them, NAT maps
them, and nothing is left behind."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.netns import PREFIX, Namespace, Network, netns_available

pytestmark = pytest.mark.skipif(netns_available() is not None, reason=str(netns_available()))

PORT = 9000
# Echoes each datagram back with the address it came from; prints "up" once bound.
ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("up", flush=True)
while True:
    data, addr = s.recvfrom(2048)
    s.sendto(data + f" {addr[0]}:{addr[1]}".encode(), addr)
"""
# Sends COUNT numbered datagrams 5 ms apart, collects the echoes until all are back or
# 1 s passes without one, prints what came back as JSON (see Echoes).
PROBE = """
import json, socket, sys, threading, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((host, port))
sent, rtt, order, seen_as = {}, {}, [], set()
def receive():
    s.settimeout(1.0)
    try:
        while True:
            data = s.recv(2048)
            now = time.monotonic()
            seq, addr = data.decode().split()
            rtt[seq] = round((now - sent[int(seq)]) * 1000, 1)
            order.append(int(seq))
            seen_as.add(addr)
            if len(order) == count:
                break
    except TimeoutError:
        pass
thread = threading.Thread(target=receive)
for seq in range(count):
    sent[seq] = time.monotonic()
    s.send(str(seq).encode())
    if seq == 0:
        thread.start()
    time.sleep(0.005)
thread.join()
print(json.dumps({"rtt_ms": rtt, "order": order, "seen_as": sorted(seen_as)}))
"""


@dataclass
class Lab:
    net: Network
    router: Namespace
    a: Namespace
    b: Namespace
    b_ip: str


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Network() as net:
        router = net.router("r")
        a, b = net.namespace("a"), net.namespace("b")
        net.attach(a, router, "10.99.1.0/24")
        b_ip = net.attach(b, router, "10.99.2.0/24")
        echo = net.popen(
            b, [sys.executable, "-c", ECHO, b_ip, str(PORT)], stdout=subprocess.PIPE, text=True
        )
        assert echo.stdout is not None and echo.stdout.readline() == "up\n"
        yield Lab(net, router, a, b, b_ip)


@dataclass
class Echoes:
    rtt_ms: dict[int, float]  # by sequence number, for those that came back
    order: list[int]  # sequence numbers in the order they came back
    seen_as: list[str]  # the source addresses ("ip:port") the echo server saw

    @classmethod
    def parse(cls, out: str) -> Echoes:
        raw = json.loads(out)
        return cls({int(k): v for k, v in raw["rtt_ms"].items()}, raw["order"], raw["seen_as"])


def probe(net: Network, ns: Namespace, host: str, count: int) -> Echoes:
    return Echoes.parse(net.run(ns, [sys.executable, "-c", PROBE, host, str(PORT), str(count)]))


def test_udp_crosses_the_router(lab: Lab) -> None:
    result = probe(lab.net, lab.a, lab.b_ip, 20)
    assert len(result.rtt_ms) == 20
    assert len(result.seen_as) == 1 and result.seen_as[0].startswith("10.99.1.2:")  # no NAT


def test_netem_full_loss_blocks_and_can_be_lifted(lab: Lab) -> None:
    lab.net.netem(lab.a, "r", loss_pct=100)
    assert probe(lab.net, lab.a, lab.b_ip, 20).rtt_ms == {}
    lab.net.netem(lab.a, "r")  # changed in place: a clean link again
    assert len(probe(lab.net, lab.a, lab.b_ip, 20).rtt_ms) == 20


def test_netem_loss_delay_and_jitter(lab: Lab) -> None:
    # Only a -> b is impaired (netem shapes what leaves the router towards b).
    lab.net.netem(lab.router, "b", loss_pct=20, delay_ms=40, jitter_ms=30)
    result = probe(lab.net, lab.a, lab.b_ip, 500)
    rtts = list(result.rtt_ms.values())
    # 500 packets at 20 % loss: 400 +- 9 arrive; 4.4 standard deviations either side.
    assert 360 <= len(rtts) <= 440, len(rtts)
    assert min(rtts) >= 9 and max(rtts) <= 90, (min(rtts), max(rtts))
    mean = sum(rtts) / len(rtts)
    assert 35 <= mean <= 48, mean  # uniform over 10..70 ms, plus a little processing
    # Jitter larger than the spacing reorders, as netem does (see tests/netns.py).
    assert sum(1 for x, y in itertools.pairwise(result.order) if y < x) > 50


def test_netem_rate_queues_packets_in_order(lab: Lab) -> None:
    # 50 datagrams of about 30 bytes (IP) 5 ms apart through 20 kbit/s: 12 ms each on
    # the wire, so they queue; the last one waits about 50 * (12 - 5) = 350 ms.
    lab.net.netem(lab.a, "r", rate_kbit=20)
    result = probe(lab.net, lab.a, lab.b_ip, 50)
    assert len(result.rtt_ms) == 50
    assert result.order == sorted(result.order)
    assert 250 <= max(result.rtt_ms.values()) <= 600, result.rtt_ms


def test_masquerade_hides_the_home_network() -> None:
    with Network() as net:
        internet = net.router("inet")
        home = net.router("home")
        pc, server = net.namespace("pc"), net.namespace("server")
        server_ip = net.attach(server, internet, "203.0.113.0/24")
        wan_ip = net.attach(home, internet, "198.51.100.0/24")  # the home router's WAN
        net.attach(pc, home, "192.168.1.0/24")
        net.masquerade(home, "inet")
        echo = net.popen(
            server,
            [sys.executable, "-c", ECHO, server_ip, str(PORT)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert echo.stdout is not None and echo.stdout.readline() == "up\n"
        result = probe(net, pc, server_ip, 5)
        assert len(result.rtt_ms) == 5
        assert [a.split(":")[0] for a in result.seen_as] == [wan_ip]


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.startswith(PREFIX)}


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip() for line in out.stdout.splitlines()}


def test_teardown_leaves_nothing_behind() -> None:
    before_ns, before_links = namespaces(), root_links()
    with Network() as net:
        router = net.router("r")
        a = net.namespace("a")
        net.attach(a, router, "10.99.1.0/24")
        net.netem(a, "r", loss_pct=10, delay_ms=5)
        sleeper = net.popen(a, ["sleep", "600"])
        stray = subprocess.Popen(a.cmd("sleep", "600"))  # started behind the harness's back
        assert namespaces() - before_ns == {router.name, a.name}
    assert sleeper.returncode is not None
    assert stray.wait(5) == -9  # killed with its namespace
    assert namespaces() == before_ns
    assert root_links() == before_links


def test_namespaces_of_dead_processes_are_removed() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{PREFIX}{dead.pid}-0-crashed"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    with Network():
        assert stale not in namespaces()
