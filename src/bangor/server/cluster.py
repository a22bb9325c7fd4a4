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

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bangor.errors import StoreError, StoreUnavailableError
from bangor.server.schema import nodes, placements
from bangor.server.store import _db_errors
from bangor.settings import ServerSettings

log = logging.getLogger("bangor.server.cluster")

# Claims that lose a race to another node's claim are read again; this many times.
CLAIM_TRIES = 4


@dataclass
class Cluster:
    """This node's view of the cluster: its id (the advertised HOST:PORT), the rooms it
    serves and the epoch it claimed each at."""

    engine: AsyncEngine
    node_id: str
    settings: ServerSettings
    # Heartbeats get a connection of their own: a burst of joins holding the store's
    # pool must not make a busy node look dead.
    beat_engine: AsyncEngine
    held: dict[str, int] = field(default_factory=dict)  # room id -> epoch we claimed
    draining: bool = False

    @classmethod
    def check(cls, engine: AsyncEngine) -> None:
        """A cluster needs a database every node reaches: PostgreSQL."""
        if engine.dialect.name != "postgresql":
            raise StoreError("--cluster needs a PostgreSQL database (--db postgresql://...)")

    def _fresh(self) -> sa.ColumnElement[bool]:
        stale = datetime.timedelta(seconds=self.settings.cluster_stale_after)
        return sa.and_(nodes.c.heartbeat > sa.func.now() - stale, sa.not_(nodes.c.draining))

    async def heartbeat(self, load: int, live_rooms: set[str]) -> dict[str, str]:
        """Say we are alive (and how many sessions we have); the rooms among
        ``live_rooms`` we no longer hold, each with the node that holds it now."""
        row = {"id": self.node_id, "load": load, "draining": self.draining}
        stmt = insert(nodes).values(**row, heartbeat=sa.func.now())
        stmt = stmt.on_conflict_do_update(
            index_elements=[nodes.c.id],
            set_={"load": load, "draining": self.draining, "heartbeat": sa.func.now()},
        )
        async with _db_errors(), self.beat_engine.begin() as conn:
            await conn.execute(stmt)
            rows = (
                await conn.execute(
                    sa.select(placements.c.room_id, placements.c.node_id, placements.c.epoch).where(
                        placements.c.room_id.in_(sorted(live_rooms))
                    )
                )
            ).all()
        lost: dict[str, str] = {}
        for room_id, node_id, epoch in rows:
            if node_id != self.node_id or epoch != self.held.get(room_id):
                lost[room_id] = node_id
                self.held.pop(room_id, None)
        return lost

    async def locate(self, room_id: str) -> str:
        """The node that serves ``room_id``: its placement's if that node is live (or is
        us), else the one we claim it for now. StoreUnavailableError: no live node."""
        for _ in range(CLAIM_TRIES):
            async with _db_errors(), self.engine.begin() as conn:
                served, seen = await self._served(conn, room_id)
                if served is not None:
                    return served
                claimed = await self._claim(conn, room_id, seen)
            if claimed is not None:
                return claimed
        raise StoreUnavailableError(f"room {room_id} changes node too often; try again")

    async def _served(
        self, conn: AsyncConnection, room_id: str
    ) -> tuple[str | None, tuple[str, int] | None]:
        """The node serving ``room_id`` if it is live (or us), and the placement read
        (node, epoch): a claim may replace only that one."""
        row = (
            await conn.execute(
                sa.select(placements.c.node_id, placements.c.epoch, self._fresh().label("live"))
                .select_from(placements.join(nodes))
                .where(placements.c.room_id == room_id)
            )
        ).first()
        if row is None:
            return None, None
        node_id, epoch, live = row
        if node_id == self.node_id and not self.draining:
            self.held[room_id] = epoch  # ours, even if our heartbeat is late: nobody took it
            return self.node_id, None
        if live and node_id != self.node_id:
            return str(node_id), None
        return None, (str(node_id), int(epoch))

    async def _claim(
        self, conn: AsyncConnection, room_id: str, old: tuple[str, int] | None
    ) -> str | None:
        """Place the room on the least-loaded live node (rooms placed, then sessions),
        replacing ``old`` (the placement judged dead; None: there was none) unless another
        claim came first (then None: read again)."""
        count = (
            sa.select(sa.func.count())
            .where(placements.c.node_id == nodes.c.id)
            .scalar_subquery()
            .label("rooms")
        )
        target = (
            await conn.execute(
                sa.select(nodes.c.id)
                .where(self._fresh())
                .order_by(count, nodes.c.load, nodes.c.id)
                .limit(1)
            )
        ).scalar()
        if target is None:
            raise StoreUnavailableError("no live server for this room")
        stmt = insert(placements).values(room_id=room_id, node_id=target, epoch=1)
        if old is None:
            stmt = stmt.on_conflict_do_nothing()
        else:
            # Only from the placement we saw: the epoch fences out a claim that raced us.
            stmt = stmt.on_conflict_do_update(
                index_elements=[placements.c.room_id],
                set_={"node_id": target, "epoch": placements.c.epoch + 1},
                where=sa.and_(placements.c.node_id == old[0], placements.c.epoch == old[1]),
            )
        row = (await conn.execute(stmt.returning(placements.c.node_id, placements.c.epoch))).first()
        if row is None:
            return None
        node_id, epoch = row
        moved = f" from {old[0]}" if old is not None else ""
        log.info("room %s placed on %s%s (epoch %d)", room_id, node_id, moved, epoch)
        if node_id == self.node_id:
            self.held[room_id] = epoch
        return str(node_id)

    async def close(self) -> None:
        await self.beat_engine.dispose()

    async def drain(self) -> None:
        """Stop taking rooms and give ours up: their next join places them elsewhere."""
        self.draining = True
        async with _db_errors(), self.engine.begin() as conn:
            await conn.execute(
                sa.update(nodes).where(nodes.c.id == self.node_id).values(draining=True)
            )
            await conn.execute(sa.delete(placements).where(placements.c.node_id == self.node_id))
        self.held.clear()
