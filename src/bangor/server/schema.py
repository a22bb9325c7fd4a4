"""Table definitions of the account and room store (SQLAlchemy Core), for Alembic.

This metadata is what Alembic's autogenerate compares with; the migrations in
``migrations/versions`` are the authority on how a database gets to this shape, and
:mod:`bangor.server.tables` makes a new database in it. Only Alembic and the tests
import this module: the server itself queries in plain SQL (:mod:`bangor.server.store`).
"""

from __future__ import annotations

import sqlalchemy as sa

from bangor.server.tables import ROOM_ID_BYTES
from bangor.settings import MAX_BITRATE, MIN_BITRATE

# Fixed constraint names so migrations can refer to them on every backend.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),  # as typed at `user add` (NFKC)
    # The account's key: NFKC + case folded (bangor.text.user_key), unique, so `Alice`
    # logs in to `alice` (revision 0004). NULL only for a name that clashed with an older
    # one when 0004 came: it logs in under its exact spelling alone.
    sa.Column("name_key", sa.Text, nullable=True),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float),
    sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"),
    sa.Column("locked_until", sa.Float, nullable=False, server_default="0"),
    # An index, not a constraint: SQLite adds one without copying the table (0004).
    sa.Index(None, "name_key", unique=True),
)

rooms = sa.Table(
    "rooms",
    metadata,
    sa.Column("id", sa.String(2 * ROOM_ID_BYTES), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column(
        "owner_id",
        sa.Integer,
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("created_at", sa.Float),
    # Opus bit/s each member sends at most; NULL: no cap (revision 0002).
    sa.Column("max_bitrate", sa.Integer, nullable=True),
    # SHA-256 of the room's join token (revision 0005); NULL: none yet, anyone may join.
    sa.Column("token_hash", sa.LargeBinary, nullable=True),
    sa.UniqueConstraint("owner_id", "name"),
    sa.CheckConstraint(
        f"max_bitrate IS NULL OR max_bitrate BETWEEN {MIN_BITRATE} AND {MAX_BITRATE}",
        name="max_bitrate",
    ),
)

# Accounts the owner banned from a room (revision 0005).
room_bans = sa.Table(
    "room_bans",
    metadata,
    sa.Column(
        "room_id",
        sa.String(2 * ROOM_ID_BYTES),
        sa.ForeignKey("rooms.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column(
        "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("created_at", sa.Float),
)

# A cluster (``serve --cluster``, revision 0003): the nodes sharing this database and
# which node serves each room. Unused (empty) on a single server.
nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),  # the advertised HOST:PORT
    sa.Column("load", sa.Integer, nullable=False, server_default="0"),  # live sessions
    sa.Column("draining", sa.Boolean, nullable=False, server_default=sa.false()),
    # The database's clock, so that nodes' clocks need not agree.
    sa.Column("heartbeat", sa.DateTime(timezone=True), nullable=False),
)

placements = sa.Table(
    "placements",
    metadata,
    sa.Column(
        "room_id",
        sa.String(2 * ROOM_ID_BYTES),
        sa.ForeignKey("rooms.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("node_id", sa.Text, sa.ForeignKey("nodes.id", ondelete="CASCADE"), nullable=False),
    # Grows by one each time the room changes node: a node serves a room only while the
    # row still holds its node and the epoch it claimed (the fence).
    sa.Column("epoch", sa.BigInteger, nullable=False),
)
