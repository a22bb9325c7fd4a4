"""WebTransport benchmark: server CPU per forwarded packet to browser members vs UDP members.

One room, one sender (an ordinary UDP member) and ``--listeners`` listeners that are
either all WebTransport sessions (aioquic clients standing in for browsers: the same
HTTP/3 datagrams Chromium gets) or all UDP members. The sender sends ``--rate`` hop-sealed
voice-sized packets a second for ``--duration`` seconds; every listener opens what it
gets with its own hop key. The server (``Server`` with ``--web``, on uvloop) runs in a
child process that reports its own ``time.process_time()`` and the relay's counters at
the start and the end of the sending, so the CPU per forwarded packet is the server's
alone: for UDP the relay and one ``sendto`` per listener; for WebTransport also QUIC
(packet protection, ACKs, congestion control) per datagram.

Run::

    .venv/bin/python bench/web.py                    # 4 listeners, 50 pps, 5 s, both kinds
    .venv/bin/python bench/web.py -l 8 --rate 100 -d 10

It ends by itself (every wait is bounded) and uses only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.webclient

from tests.webclient import WebClient, control_client, web_client

from bangor.client.control import ControlClient
from bangor.server.app import open_server
from bangor.server.store import database_url
from bangor.server.web import WebOptions, start_web
from bangor.settings import ServerSettings
from bangor.wire.media import HopOpener, HopSealer, PacketType, derive_media_keys

HOST = "127.0.0.1"


# --- the server, in a child process ---------------------------------------------------


async def serve_in_child(conn: Connection, data_dir: str) -> None:
    settings = ServerSettings(open=True)
    server = await open_server(Path(data_dir), database_url(Path(data_dir), None), settings)
    await server.start(HOST, 0)
    web = await start_web(server, WebOptions(HOST, 0))
    conn.send((server.address[1], web.port))
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def command() -> None:
        request = conn.recv()
        if request == "mark":
            stats = server.relay.stats
            conn.send(
                (
                    time.process_time(),
                    stats.forwarded,
                    stats.received,
                    stats.dropped_too_big,
                    web.endpoint.stats.dropped_queue_full,
                )
            )
        else:
            done.set()

    loop.add_reader(conn.fileno(), command)
    await done.wait()
    await server.close()


def child(conn: Connection, data_dir: str) -> None:
    uvloop.run(serve_in_child(conn, data_dir))


# --- members ----------------------------------------------------------------------------


@dataclass
class Member:
    control: ControlClient
    sealer: HopSealer
    opener: HopOpener
    received: int = 0

    @classmethod
    def of(cls, control: ControlClient) -> Member:
        welcome = control.welcome
        assert welcome is not None
        keys = derive_media_keys(welcome.media_secret)
        return cls(
            control,
            HopSealer(keys.client_to_server, welcome.session_id),
            HopOpener(keys.server_to_client, welcome.session_id),
        )

    def got(self, packet: bytes) -> None:
        header, _ = self.opener.open(packet)
        if header.type is PacketType.VOICE:
            self.received += 1


class Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.member: Member | None = None
        self.acked = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.member is not None
        header, _ = self.member.opener.open(data)
        if header.type is PacketType.KEEPALIVE_ACK:
            self.acked.set()
        elif header.type is PacketType.VOICE:
            self.member.received += 1


async def udp_member(port: int, name: str) -> tuple[Member, asyncio.DatagramTransport, Udp]:
    control = await ControlClient.connect(HOST, port)
    control.start()
    await control.login(name, "", name)
    member = Member.of(control)
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Udp, remote_addr=(HOST, port))
    protocol.member = member
    return member, transport, protocol


async def web_listen(browser: WebClient, member: Member) -> None:
    while True:
        member.got(await browser.datagrams.get())


async def run(
    kind: str, listeners: int, rate: float, duration: float, size: int
) -> dict[str, float]:
    parent, child_end = multiprocessing.Pipe()
    with tempfile.TemporaryDirectory() as data_dir:
        process = multiprocessing.get_context("spawn").Process(
            target=child, args=(child_end, data_dir), daemon=True
        )
        process.start()
        try:
            return await measure(parent, kind, listeners, rate, duration, size)
        finally:
            parent.send("stop")
            process.join(10)
            if process.is_alive():
                process.kill()


async def measure(
    conn: Connection, kind: str, listeners: int, rate: float, duration: float, size: int
) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    port, web_port = await loop.run_in_executor(None, conn.recv)
    sender, sender_udp, sender_protocol = await udp_member(port, "sender")
    room = await sender.control.create_room("bench")
    await sender.control.join_room(room.room_id)
    sender_udp.sendto(sender.sealer.seal(PacketType.KEEPALIVE, b"12345678"))
    await asyncio.wait_for(sender_protocol.acked.wait(), 5)
    members: list[Member] = []
    async with contextlib.AsyncExitStack() as stack:
        for i in range(listeners):
            if kind == "udp":
                member, transport, protocol = await udp_member(port, f"listener{i}")
                stack.callback(transport.close)
                await member.control.join_room(room.room_id)
                transport.sendto(member.sealer.seal(PacketType.KEEPALIVE, b"12345678"))
                await asyncio.wait_for(protocol.acked.wait(), 5)
            else:
                browser = await stack.enter_async_context(web_client(HOST, web_port))
                assert await browser.connect_session(f"{HOST}:{web_port}") == 200
                control = await control_client(browser)
                await control.login(f"listener{i}", "", f"listener{i}")
                member = Member.of(control)
                await control.join_room(room.room_id)
                browser.send_datagram(member.sealer.seal(PacketType.KEEPALIVE, b"12345678"))
                header, _ = member.opener.open(await browser.next_datagram())
                assert header.type is PacketType.KEEPALIVE_ACK
                task = loop.create_task(web_listen(browser, member))
                stack.callback(task.cancel)
            members.append(member)
        # Drain the joins' control traffic before measuring.
        while not sender.control.events.empty():
            sender.control.events.get_nowait()

        conn.send("mark")
        cpu0, fwd0, *_ = await loop.run_in_executor(None, conn.recv)
        count = int(rate * duration)
        payload = bytes(size)
        start = loop.time()
        for n in range(count):
            await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
            sender_udp.sendto(sender.sealer.seal(PacketType.VOICE, payload))
        expected = count * listeners
        deadline = loop.time() + 5
        while sum(m.received for m in members) < expected and loop.time() < deadline:
            await asyncio.sleep(0.01)
        conn.send("mark")
        cpu1, fwd1, _received, too_big, queue_full = await loop.run_in_executor(None, conn.recv)
        got = sum(m.received for m in members)
        for member in [sender, *members]:
            await member.control.close()
    sender_udp.close()
    forwarded = fwd1 - fwd0
    return {
        "sent": count,
        "forwarded": forwarded,
        "received": got,
        "loss %": 100.0 * (1 - got / expected) if expected else 0.0,
        "cpu s": cpu1 - cpu0,
        "cpu us/pkt": 1e6 * (cpu1 - cpu0) / forwarded if forwarded else float("nan"),
        "dropped too big": too_big,
        "dropped queue full": queue_full,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-l", "--listeners", type=int, default=4)
    parser.add_argument("--rate", type=float, default=50.0, help="packets/s from the sender")
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="seconds of sending")
    parser.add_argument("--payload-size", type=int, default=120, help="voice payload bytes")
    parser.add_argument("--kind", choices=["both", "udp", "web"], default="both")
    args = parser.parse_args()
    kinds = ["udp", "web"] if args.kind == "both" else [args.kind]
    results = {}
    for kind in kinds:
        results[kind] = asyncio.run(
            run(kind, args.listeners, args.rate, args.duration, args.payload_size)
        )
    print(
        f"one sender, {args.listeners} listeners, {args.rate:g} pps, {args.duration:g} s, "
        f"{args.payload_size}-byte payloads"
    )
    keys = list(next(iter(results.values())))
    print(f"{'':22}" + "".join(f"{kind:>14}" for kind in results))
    for key in keys:
        print(f"{key:22}" + "".join(f"{results[kind][key]:14.2f}" for kind in results))
    if len(results) == 2 and results["udp"]["cpu us/pkt"]:
        ratio = results["web"]["cpu us/pkt"] / results["udp"]["cpu us/pkt"]
        print(f"WebTransport / UDP CPU per forwarded packet: {ratio:.1f}x")


if __name__ == "__main__":
    main()
