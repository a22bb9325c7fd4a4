"""netem in user space, for kernels built without ``sch_netem``.

Run inside a network namespace by ``tests/netns.py``; an iptables rule there sends the
packets leaving one interface to NFQUEUE ``QUEUE`` (``-j NFQUEUE --queue-num QUEUE``),
and this process gives each its verdict: drop it (random loss), or accept it once its
delay has passed. Verdicts may be given in any order, so jitter reorders packets just as
``tc netem delay D J`` does (each packet draws its own delay, uniform in D +- J); with a
rate, packets also wait for the link to be free and leave in order.

Loss is random (each packet on its own) or, with a mean burst length above 1, bursty:
the Gilbert-Elliott model that ``tc netem loss gemodel P R 100% 0%`` runs, a two-state
Markov chain stepped once per packet, which loses every packet in its bad state and
none in its good one. Its two transition probabilities follow from the average loss
and the mean burst (``GilbertElliott``), as Wi-Fi and mobile links lose packets in runs.

Protocol on the standard streams, one line each: prints ``ready`` once bound to the
queue; reads JSON settings ``{"loss": 0.05, "delay": 0.04, "jitter": 0.03,
"rate": 0}`` (fractions, seconds, bit/s; 0 = no limit), optionally with ``"burst": 3``
(mean packets per loss burst; absent, 0 or 1: random loss) and ``"seed": 1`` (the loss
pattern's; absent: a fresh one), and prints ``ok`` once they apply. Exits at the end of
its input.

Only the nfnetlink_queue messages needed for that are spoken (linux/netfilter/
nfnetlink_queue.h), with the standard library alone.
"""

from __future__ import annotations

import heapq
import json
import os
import random
import select
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_PACKET = 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_PAYLOAD = 1, 2, 10
NF_DROP, NF_ACCEPT = 0, 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
COPY_RANGE = 64  # enough of each packet to read its IP length
QUEUE_MAXLEN = 4096

NLMSG = struct.Struct("=IHHII")
NLATTR = struct.Struct("=HH")
NFGENMSG = struct.Struct("!BBH")


def _attr(kind: int, payload: bytes) -> bytes:
    raw = NLATTR.pack(NLATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _attrs(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while len(data) >= NLATTR.size:
        length, kind = NLATTR.unpack_from(data)
        if length < NLATTR.size:
            break
        out[kind & 0x3FFF] = data[NLATTR.size : length]
        data = data[(length + 3) & ~3 :]
    return out


class Queue:
    """One bound NFQUEUE: read packets, send verdicts."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        self.sock.bind((0, 0))
        self._seq = 0
        self._config(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)))
        self._config(_attr(NFQA_CFG_PARAMS, struct.pack("!IB", COPY_RANGE, NFQNL_COPY_PACKET)))
        self._config(_attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN)))

    def _send(self, kind: int, flags: int, body: bytes) -> None:
        self._seq += 1
        header = NFGENMSG.pack(socket.AF_UNSPEC, 0, self.number)
        msg_type = (NFNL_SUBSYS_QUEUE << 8) | kind
        length = NLMSG.size + len(header) + len(body)
        self.sock.send(NLMSG.pack(length, msg_type, flags, self._seq, 0) + header + body)

    def _config(self, body: bytes) -> None:
        self._send(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, body)
        data = self.sock.recv(65536)
        _, kind, _, _, _ = NLMSG.unpack_from(data)
        if kind == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", data, NLMSG.size)
            if error:
                raise OSError(-error, f"NFQUEUE {self.number}: {os.strerror(-error)}")

    def verdict(self, packet_id: int, verdict: int) -> None:
        body = _attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))
        self._send(NFQNL_MSG_VERDICT, NLM_F_REQUEST, body)

    def packets(self) -> list[tuple[int, int]]:
        """(packet id, IP length) of each packet in one read from the socket."""
        data = self.sock.recv(1 << 20)
        out = []
        while len(data) >= NLMSG.size:
            length, kind, _, _, _ = NLMSG.unpack_from(data)
            if kind & 0xFF == NFQNL_MSG_PACKET and kind >> 8 == NFNL_SUBSYS_QUEUE:
                attrs = _attrs(data[NLMSG.size + NFGENMSG.size : length])
                (packet_id,) = struct.unpack_from("!I", attrs[NFQA_PACKET_HDR])
                out.append((packet_id, _ip_length(attrs.get(NFQA_PAYLOAD, b""))))
            data = data[(length + 3) & ~3 :]
        return out


def _ip_length(packet: bytes) -> int:
    if len(packet) >= 4 and packet[0] >> 4 == 4:
        return int.from_bytes(packet[2:4], "big")
    if len(packet) >= 6 and packet[0] >> 4 == 6:
        return 40 + int.from_bytes(packet[4:6], "big")
    return len(packet)


class GilbertElliott:
    """Bursty loss: a good state that loses nothing, a bad one that loses everything.

    ``p`` = P(good -> bad) and ``r`` = P(bad -> good) per packet; bursts are then
    geometric with mean ``1 / r`` packets and the long-run loss is ``p / (p + r)``.
    Given the average ``loss`` and the mean ``burst``: ``r = 1 / burst`` and
    ``p = r * loss / (1 - loss)``. A burst of 1 or less is random loss (Bernoulli), and
    so is a loss of 1 (everything).
    """

    def __init__(self, loss: float, burst: float, rng: random.Random) -> None:
        if not 0 <= loss <= 1:
            raise ValueError(f"loss must be in [0, 1], got {loss}")
        self.loss = loss
        self.bursty = burst > 1 and loss < 1  # all lost is one endless burst
        self.r = 1 / burst if self.bursty else 1.0
        self.p = self.r * loss / (1 - loss) if self.bursty else loss
        self.rng = rng
        # Start where the chain spends its time, so short runs are not biased.
        self.bad = self.bursty and rng.random() < loss

    def lose(self) -> bool:
        """Whether the next packet is lost."""
        if not self.bursty:
            return self.rng.random() < self.loss
        self.bad = self.rng.random() >= self.r if self.bad else self.rng.random() < self.p
        return self.bad


def main(number: int) -> None:
    queue = Queue(number)
    rng = random.Random()
    model = GilbertElliott(0.0, 0, rng)
    delay = jitter = rate = 0.0
    link_free = 0.0  # with a rate: when the link has sent what it holds
    due: list[tuple[float, int, int]] = []  # (time to accept, order, packet id)
    order = 0
    print("ready", flush=True)
    stdin = sys.stdin.fileno()
    inputs = [queue.sock, stdin]
    pending = b""
    while True:
        timeout = max(0.0, due[0][0] - time.monotonic()) if due else None
        readable, _, _ = select.select(inputs, [], [], timeout)
        if stdin in readable:
            chunk = os.read(stdin, 4096)
            if not chunk:
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line.strip():
                    settings = json.loads(line)
                    delay, jitter, rate = settings["delay"], settings["jitter"], settings["rate"]
                    if settings.get("seed") is not None:
                        rng = random.Random(settings["seed"])
                    model = GilbertElliott(settings["loss"], settings.get("burst", 0), rng)
                    print("ok", flush=True)
        if queue.sock in readable:
            now = time.monotonic()
            for packet_id, size in queue.packets():
                if model.loss and model.lose():
                    queue.verdict(packet_id, NF_DROP)
                    continue
                when = now + max(0.0, delay + rng.uniform(-jitter, jitter))
                if rate:
                    when = link_free = max(when, link_free) + size * 8 / rate
                order += 1
                heapq.heappush(due, (when, order, packet_id))
        now = time.monotonic()
        while due and due[0][0] <= now:
            queue.verdict(heapq.heappop(due)[2], NF_ACCEPT)


if __name__ == "__main__":
    main(int(sys.argv[1]))
