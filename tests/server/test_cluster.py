"""Rooms across several servers, in process: three nodes on 127.0.0.1..3 over one
PostgreSQL database (placement, MOVED, the epoch fence). The processes, kill -9 and
SIGSTOP are in tests/integration/test_cluster.py."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bangor.client.control import ControlClient
from bangor.errors import (
    AuthError,
    CloseCode,
    MovedError,
    RefusedError,
    ServerGoneError,
    StoreError,
)
from bangor.server.app import Server, open_server
from bangor.server.cluster import Cluster
from bangor.server.store import database_url
from bangor.settings import ServerSettings

pytestmark = pytest.mark.postgres

# Heartbeats only when a test asks (Server.beat): a node's liveness is what the test sets.
SETTINGS = ServerSettings(open=True, cluster_heartbeat=3600.0, cluster_stale_after=5.0)


@pytest.fixture
async def cluster(pg_url: str, tmp_path: Path) -> AsyncIterator[list[Server]]:
    async def reset() -> None:
        # The module shares its database: every test starts with no nodes and no rooms.
        if started:
            async with started[0].store.db.write() as conn:
                await conn.execute("DELETE FROM placements")
                await conn.execute("DELETE FROM nodes")

    started: list[Server] = []
    try:
        for n in (1, 2, 3):
            # One data directory: the same server.key on every node, as the cluster needs.
            server = await open_server(tmp_path / "data", pg_url, SETTINGS)
            started.append(server)
            await server.start(f"127.0.0.{n}", 0)
        await reset()
        for server in started:
            await server.join_cluster("{}:{}".format(*server.address))
        yield started
    finally:
        for server in started:
            await server.close()


async def login(server: Server, user: str) -> ControlClient:
    client = await ControlClient.connect(*server.address)
    client.start()
    await client.login(user, "", user)
    return client


def node_of(servers: list[Server], location: str) -> Server:
    (found,) = [s for s in servers if s.cluster is not None and s.cluster.node_id == location]
    return found


async def enter(
    servers: list[Server], entry: Server, user: str, room: str
) -> tuple[Server, ControlClient]:
    """Join ``room`` through ``entry``, following MOVED once; the node that took us, and
    the client in the room."""
    client = await login(entry, user)
    try:
        await client.join_room(room)
        return entry, client
    except MovedError as exc:
        await client.close()
        target = node_of(servers, f"{exc.host}:{exc.port}")
        client = await login(target, user)
        joined = await client.join_room(room)
        assert joined.room_id == room
        return target, client


async def join_anywhere(servers: list[Server], entry: Server, user: str, room: str) -> Server:
    """:func:`enter`, the node alone."""
    return (await enter(servers, entry, user, room))[0]


async def test_rooms_spread_over_nodes_and_joins_land_on_the_rooms_node(
    cluster: list[Server],
) -> None:
    a, b, c = cluster
    owner = await a.store.open_user("owner")
    rooms = [(await a.store.create_room(owner, f"r{i}", 20)).id for i in range(6)]
    # Every join enters at node C; each room is placed on the node with fewest rooms.
    served = [await join_anywhere(cluster, c, f"u{i}", room) for i, room in enumerate(rooms)]
    assert Counter(s.address for s in served) == {s.address: 2 for s in cluster}
    # A second member of a room, entering at another node, lands on the same one.
    for entry in (a, b):
        assert await join_anywhere(cluster, entry, f"v{entry.address[0]}", rooms[0]) is served[0]
    assert served[0].rooms.get(rooms[0]) is not None
    assert len(served[0].rooms.get(rooms[0]).members) == 3  # type: ignore[union-attr]


async def test_a_node_taken_for_dead_loses_its_room_and_sends_its_members_on(
    cluster: list[Server],
) -> None:
    a, _, c = cluster
    owner = await a.store.open_user("owner")
    room = (await a.store.create_room(owner, "fenced", 20)).id
    alice = await login(a, "alice")
    await alice.join_room(room)  # placed on A: the node with the smallest id
    assert a.cluster is not None and a.cluster.held == {room: 1}
    await stale(a)  # A pauses: its heartbeat goes stale in the database
    # bob enters at C: the room moves to a live node, one epoch on.
    taker = await join_anywhere(cluster, c, "bob", room)
    assert taker is not a
    assert taker.cluster is not None and taker.cluster.held == {room: 2}
    # A comes back: its first heartbeat finds the room gone, and alice is sent on.
    await a.beat(a.cluster)
    assert a.cluster.held == {}
    assert a.rooms.get(room) is None
    while not isinstance(ended := await asyncio.wait_for(alice.events.get(), 5), Exception):
        pass  # bob's member_joined never came: he joined elsewhere
    assert isinstance(ended, MovedError)
    assert (ended.host, ended.port) == taker.address
    # Alive again, A serves the room no more: a join there is sent on too.
    with pytest.raises(MovedError):
        await (await login(a, "carol")).join_room(room)


async def test_a_room_deleted_through_another_node_ends_its_call_there(
    cluster: list[Server],
) -> None:
    a, b, _ = cluster
    owner = await a.store.open_user("owner")
    room = (await a.store.create_room(owner, "gone", 20)).id
    here, alice = await enter(cluster, b, "alice", room)
    # The owner deletes it through a node that does not serve it: nobody there to tell.
    manager = await login(a if here is not a else b, "owner")
    await manager.delete_room(room)
    assert here.rooms.get(room) is not None  # the room's node has not heard yet
    assert here.cluster is not None
    await here.beat(here.cluster)  # its next heartbeat
    assert here.rooms.get(room) is None and room not in here.cluster.held
    while not isinstance(ended := await asyncio.wait_for(alice.events.get(), 5), Exception):
        pass
    assert isinstance(ended, RefusedError) and ended.code == CloseCode.REMOVED
    assert "deleted by its owner" in str(ended)
    await manager.leave()


async def test_a_claim_replaces_only_the_placement_it_judged_dead(cluster: list[Server]) -> None:
    a, b, c = cluster
    assert a.cluster is not None and b.cluster is not None and c.cluster is not None
    owner = await a.store.open_user("owner")
    room = (await a.store.create_room(owner, "raced", 20)).id
    assert await a.cluster.locate(room) == a.cluster.node_id
    await stale(a)
    async with b.store.db.write() as conn:
        served, seen = await b.cluster._served(conn, room)
    assert served is None and seen == (a.cluster.node_id, 1)
    # C moves the room first; B's claim, from what it read, must not take it from C's pick.
    winner = await c.cluster.locate(room)
    async with b.store.db.write() as conn:
        assert await b.cluster._claim(conn, room, seen) is None
    assert await b.cluster.locate(room) == winner


async def stale(server: Server) -> None:
    """Make ``server`` look paused: its heartbeat an hour old."""
    assert server.cluster is not None
    async with server.store.db.write() as conn:
        await conn.execute(
            "UPDATE nodes SET heartbeat = now() - interval '1 hour' WHERE id = $1",
            server.cluster.node_id,
        )


async def test_a_node_that_stops_gives_its_rooms_up_and_asks_its_members_back(
    cluster: list[Server],
) -> None:
    a, _, c = cluster
    owner = await a.store.open_user("owner")
    room = (await a.store.create_room(owner, "drained", 20)).id
    alice = await login(a, "alice")
    await alice.join_room(room)
    await a.close()  # SIGTERM: draining
    while not isinstance(ended := await asyncio.wait_for(alice.events.get(), 5), Exception):
        pass
    assert isinstance(ended, ServerGoneError) and ended.restart_in  # come back soon
    async with c.store.db.read() as conn:
        assert await conn.fetchval(
            "SELECT draining FROM nodes WHERE id = $1",
            a.cluster.node_id,  # type: ignore[union-attr]
        )
    # Back through the invite's node: the room is placed on a node still serving.
    assert await join_anywhere(cluster, c, "alice", room) is not a


async def test_a_removed_account_is_ended_on_the_node_that_holds_it(
    cluster: list[Server],
) -> None:
    a, b, _ = cluster
    owner = await a.store.open_user("owner")
    room = (await a.store.create_room(owner, "notified", 20)).id
    await b.store.open_user("erin")
    erin = await login(b, "erin")
    await join_anywhere(cluster, b, "frank", room)
    # `bangor user remove erin` against the shared database (here through node A's store):
    # PostgreSQL's NOTIFY reaches node B, which ends her session.
    await a.store.remove_user("erin")
    while not isinstance(ended := await asyncio.wait_for(erin.events.get(), 5), Exception):
        pass
    assert isinstance(ended, AuthError) and "removed" in str(ended)


async def test_no_live_node_is_busy_and_sqlite_is_refused(
    cluster: list[Server], tmp_path: Path
) -> None:
    a = cluster[0]
    assert a.cluster is not None
    await a.cluster.drain()  # draining, and the others silent: nobody may take a room
    async with a.store.db.write() as conn:
        await conn.execute("UPDATE nodes SET heartbeat = now() - interval '1 hour'")
    owner = await a.store.open_user("owner")
    room = (await a.store.create_room(owner, "nowhere", 20)).id
    client = await login(a, "dana")
    with pytest.raises(Exception) as caught:
        await client.join_room(room)
    assert getattr(caught.value, "code", None) == CloseCode.BUSY or "unavailable" in str(
        caught.value
    )
    lone = await open_server(tmp_path / "lone", database_url(tmp_path / "lone", None), SETTINGS)
    try:
        with pytest.raises(StoreError, match="PostgreSQL"):
            Cluster.check(lone.store.db)
    finally:
        await lone.store.close()
