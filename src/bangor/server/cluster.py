"""Several servers sharing one PostgreSQL database: which node serves which room.

A room lives on one node; nodes share a routing store (the ``nodes`` and ``placements``
tables), as open-source LiveKit's nodes share Redis. A room is claimed for the
least-loaded live node at its first join (``INSERT ... ON CONFLICT``); a node that gets a
join for a room another live node serves answers MOVED with that node's address. Nodes
write a heartbeat; a node not heard from for ``cluster_stale_after`` seconds is dead and
its rooms go to a live node at their next join, each move raising the placement's epoch.
A node serves a room only while the row holds its id and the epoch it claimed: at every
heartbeat it checks, and one that lost a room (it was paused, or cut off from the
database) sends its members away. Liveness is judged by the database's clock, so the
nodes' clocks need not agree.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field

from bangor.errors import StoreError, StoreUnavailableError
from bangor.server.database import Connection, Database
from bangor.settings import ServerSettings

log = logging.getLogger("bangor.server.cluster")

# Claims that lose a race to another node's claim are read again; this many times.
CLAIM_TRIES = 4
# A node is live while its heartbeat is fresh ($1: cluster_stale_after) and it is not
# draining; by the database's clock.
_LIVE = "(nodes.heartbeat > now() - $1::interval AND NOT nodes.draining)"


@dataclass(frozen=True)
class Beat:
    """What a heartbeat learned of the rooms this node serves."""

    lost: dict[str, str]  # room id -> the node that holds it now
    deleted: frozenset[str]  # rooms their owner deleted, through another node


@dataclass
class Cluster:
    """This node's view of the cluster: its id (the advertised HOST:PORT), the rooms it
    serves and the epoch it claimed each at."""

    db: Database
    node_id: str
    settings: ServerSettings
    # Heartbeats get a connection of their own: a burst of joins holding the store's
    # pool must not make a busy node look dead.
    beat_db: Database
    held: dict[str, int] = field(default_factory=dict)  # room id -> epoch we claimed
    draining: bool = False

    @classmethod
    def check(cls, db: Database) -> None:
        """A cluster needs a database every node reaches: PostgreSQL."""
        if db.dialect != "postgresql":
            raise StoreError("--cluster needs a PostgreSQL database (--db postgresql://...)")

    @property
    def _stale(self) -> datetime.timedelta:
        return datetime.timedelta(seconds=self.settings.cluster_stale_after)

    async def heartbeat(self, load: int, live_rooms: set[str]) -> Beat:
        """Say we are alive (and how many sessions we have); which of ``live_rooms`` we
        no longer hold, each with the node that holds it now, and which are deleted."""
        async with self.beat_db.write() as conn:
            await conn.execute(
                "INSERT INTO nodes (id, load, draining, heartbeat) VALUES ($1, $2, $3, now()) "
                "ON CONFLICT (id) DO UPDATE SET load = excluded.load, "
                "draining = excluded.draining, heartbeat = excluded.heartbeat",
                self.node_id,
                load,
                self.draining,
            )
            rows = await conn.fetch(
                "SELECT room_id, node_id, epoch FROM placements WHERE room_id = ANY($1::text[])",
                sorted(live_rooms),
            )
            present = await conn.fetch(
                "SELECT id FROM rooms WHERE id = ANY($1::text[])", sorted(live_rooms)
            )
        lost: dict[str, str] = {}
        for row in rows:
            room_id, node_id = str(row["room_id"]), str(row["node_id"])
            if node_id != self.node_id or row["epoch"] != self.held.get(room_id):
                lost[room_id] = node_id
                self.held.pop(room_id, None)
        deleted = frozenset(live_rooms - {str(row["id"]) for row in present})
        for room_id in deleted:
            self.held.pop(room_id, None)
        return Beat(lost, deleted)

    async def locate(self, room_id: str) -> str:
        """The node that serves ``room_id``: its placement's if that node is live (or is
        us), else the one we claim it for now. StoreUnavailableError: no live node."""
        for _ in range(CLAIM_TRIES):
            async with self.db.write() as conn:
                served, seen = await self._served(conn, room_id)
                if served is not None:
                    return served
                claimed = await self._claim(conn, room_id, seen)
            if claimed is not None:
                return claimed
        raise StoreUnavailableError(f"room {room_id} changes node too often; try again")

    async def _served(
        self, conn: Connection, room_id: str
    ) -> tuple[str | None, tuple[str, int] | None]:
        """The node serving ``room_id`` if it is live (or us), and the placement read
        (node, epoch): a claim may replace only that one."""
        row = await conn.fetchrow(
            f"SELECT placements.node_id, placements.epoch, {_LIVE} AS live "
            "FROM placements JOIN nodes ON placements.node_id = nodes.id "
            "WHERE placements.room_id = $2",
            self._stale,
            room_id,
        )
        if row is None:
            return None, None
        node_id, epoch, live = row[0], row[1], row[2]
        if node_id == self.node_id and not self.draining:
            self.held[room_id] = epoch  # ours, even if our heartbeat is late: nobody took it
            return self.node_id, None
        if live and node_id != self.node_id:
            return str(node_id), None
        return None, (str(node_id), int(epoch))

    async def _claim(
        self, conn: Connection, room_id: str, old: tuple[str, int] | None
    ) -> str | None:
        """Place the room on the least-loaded live node (rooms placed, then sessions),
        replacing ``old`` (the placement judged dead; None: there was none) unless another
        claim came first (then None: read again)."""
        target = await conn.fetchval(
            f"SELECT id FROM nodes WHERE {_LIVE} ORDER BY "
            "(SELECT count(*) FROM placements WHERE placements.node_id = nodes.id), "
            "load, id LIMIT 1",
            self._stale,
        )
        if target is None:
            raise StoreUnavailableError("no live server for this room")
        insert = "INSERT INTO placements (room_id, node_id, epoch) VALUES ($1, $2, 1) "
        returning = " RETURNING node_id, epoch"
        if old is None:
            row = await conn.fetchrow(f"{insert}ON CONFLICT DO NOTHING{returning}", room_id, target)
        else:
            # Only from the placement we saw: the epoch fences out a claim that raced us.
            row = await conn.fetchrow(
                f"{insert}ON CONFLICT (room_id) DO UPDATE SET node_id = excluded.node_id, "
                "epoch = placements.epoch + 1 "
                f"WHERE placements.node_id = $3 AND placements.epoch = $4{returning}",
                room_id,
                target,
                old[0],
                old[1],
            )
        if row is None:
            return None
        node_id, epoch = row[0], row[1]
        moved = f" from {old[0]}" if old is not None else ""
        log.info("room %s placed on %s%s (epoch %d)", room_id, node_id, moved, epoch)
        if node_id == self.node_id:
            self.held[room_id] = epoch
        return str(node_id)

    async def close(self) -> None:
        await self.beat_db.close()

    async def drain(self) -> None:
        """Stop taking rooms and give ours up: their next join places them elsewhere."""
        self.draining = True
        async with self.db.write() as conn:
            await conn.execute("UPDATE nodes SET draining = true WHERE id = $1", self.node_id)
            await conn.execute("DELETE FROM placements WHERE node_id = $1", self.node_id)
        self.held.clear()
