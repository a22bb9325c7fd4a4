"""Cluster benchmark: 50 rooms spread over three nodes sharing one PostgreSQL database.

Three servers in this process (open mode, so no password hashing skews the times) on
127.0.0.1, 127.0.0.2 and 127.0.0.3, each ``--cluster`` with its own advertised address,
over a fresh database made for the run and dropped after it. Every member of every room
logs in at a node picked at random (seeded) and follows MOVED to the room's node, as
``bangor join`` does. Printed:

- rooms and members per node once everyone is in (placement by fewest rooms);
- join times (TCP connect at the entry node to ``joined`` at the room's node, with the
  redirect when there was one): p50, p95, max; and how many joins were sent on;
- failover: one node is stopped without a word (its tasks cancelled, no draining, as a
  ``kill -9`` would: its clients see their connections close), and its members come back
  through a live node every ``--retry`` seconds until it takes them: the time until the
  last is back, and where its rooms went. This is bounded below by the stale timeout
  (``--stale-after``); the real processes' number (with the client's back-off) is printed
  by ``tests/integration/test_cluster.py``.

Run::

    .venv/bin/python bench/cluster.py                  # 50 rooms x 3 members
    .venv/bin/python bench/cluster.py --rooms 50 --members 4 --stale-after 5

Needs PostgreSQL on 127.0.0.1:5432 (trust auth; BANGOR_TEST_PG_* as for the tests).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import asyncpg

from bangor.client.control import ControlClient
from bangor.errors import BangorError, MovedError
from bangor.server.app import Server, open_server
from bangor.settings import ServerSettings

PG_HOST = os.environ.get("BANGOR_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BANGOR_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("BANGOR_TEST_PG_USER", "postgres")


async def pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def join(
    by_address: dict[tuple[str, int], Server], entry: Server, user: str, room: str
) -> tuple[ControlClient, Server, bool]:
    """Log in at ``entry`` and join ``room``, following one MOVED: the client, the node
    it landed on, and whether it was sent on."""
    client = await ControlClient.connect(*entry.address)
    client.start()
    await client.login(user, "", user)
    try:
        await client.join_room(room)
        return client, entry, False
    except MovedError as exc:
        await client.close()
        node = by_address[(exc.host, exc.port)]
    client = await ControlClient.connect(*node.address)
    client.start()
    await client.login(user, "", user)
    await client.join_room(room)
    return client, node, True


def kill(server: Server) -> None:
    """Stop a node as kill -9 would: no goodbye, no draining, its heartbeat stops."""
    assert server.tcp is not None and server.udp is not None
    server.tcp.close()
    server.udp.close()
    for task in list(server.tasks):
        task.cancel()


async def run(args: argparse.Namespace) -> None:
    name = f"bangor_bench_{secrets.token_hex(6)}"
    await pg_admin(f'CREATE DATABASE "{name}"')
    url = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    settings = ServerSettings(
        open=True,
        open_max_users=100_000,
        open_max_new_names_per_address=100_000,
        open_max_rooms=100_000,
        max_rooms_per_user=args.rooms,
        max_sessions=10_000,
        cluster_stale_after=args.stale_after,
    )
    nodes: list[Server] = []
    clients: list[ControlClient] = []
    rng = random.Random(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in (1, 2, 3):
                server = await open_server(Path(tmp), url, settings)
                nodes.append(server)
                await server.start(f"127.0.0.{n}", 0)
                await server.join_cluster("{}:{}".format(*server.address))
            by_address = {s.address: s for s in nodes}
            owner = await nodes[0].store.open_user("owner")
            rooms = [
                (await nodes[0].store.create_room(owner, f"room{i}", args.rooms)).id
                for i in range(args.rooms)
            ]
            times: list[float] = []
            sent_on = 0
            members: dict[str, list[tuple[str, Server]]] = {}
            for i, room in enumerate(rooms):
                for m in range(args.members):
                    user = f"u{i}m{m}"
                    started = time.perf_counter()
                    client, node, moved = await join(by_address, rng.choice(nodes), user, room)
                    times.append(time.perf_counter() - started)
                    sent_on += moved
                    clients.append(client)
                    members.setdefault(room, []).append((user, node))
            print(f"{args.rooms} rooms x {args.members} members over 3 nodes")
            for node in nodes:
                placed = sum(1 for r in rooms if members[r][0][1] is node)
                sessions = sum(len(room.members) for room in node.rooms._rooms.values())
                print(f"  node {node.address[0]}: {placed:3d} rooms, {sessions:4d} members")
            ms = sorted(t * 1000 for t in times)
            print(
                f"  join: p50 {statistics.median(ms):.1f} ms, "
                f"p95 {ms[int(len(ms) * 0.95)]:.1f} ms, max {ms[-1]:.1f} ms; "
                f"{sent_on}/{len(ms)} sent on by MOVED"
            )

            # Failover: the node with the most rooms goes away without a word.
            victim = max(nodes, key=lambda s: len(s.rooms))
            lost = [r for r in rooms if members[r][0][1] is victim]
            live = [s for s in nodes if s is not victim]
            killed = time.perf_counter()
            kill(victim)
            back: Counter[tuple[str, int]] = Counter()

            async def come_back(room: str, user: str) -> None:
                while True:
                    try:
                        client, node, _ = await join(by_address, rng.choice(live), user, room)
                    except (BangorError, OSError):
                        await asyncio.sleep(args.retry)
                        continue
                    clients.append(client)
                    back[node.address] += 1
                    return

            await asyncio.gather(
                *(come_back(room, f"{user}x") for room in lost for user, _ in members[room])
            )
            took = time.perf_counter() - killed
            moved_to = ", ".join(f"{host}: {n} members" for (host, _), n in sorted(back.items()))
            print(
                f"  failover: node {victim.address[0]} killed with {len(lost)} rooms; all "
                f"{sum(back.values())} members back in {took:.2f} s "
                f"(stale after {args.stale_after:g} s, retry every {args.retry:g} s); {moved_to}"
            )
    finally:
        for client in clients:
            await client.close()
        for server in nodes:
            if server.tcp is not None and server.tcp.is_serving():
                await server.close()
            else:
                await server.store.close()
        await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--stale-after", type=float, default=ServerSettings.cluster_stale_after)
    parser.add_argument("--retry", type=float, default=0.25)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
