"""Room access: each room's join token (as a hash) and its banned accounts.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN (no batch copy on SQLite): existing rooms get NULL, no token
    # yet; they take any joiner until their owner rotates them (PROTOCOL.md 3.15).
    op.add_column("rooms", sa.Column("token_hash", sa.LargeBinary, nullable=True))
    op.create_table(
        "room_bans",
        sa.Column("room_id", sa.String(16), nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float),
        sa.ForeignKeyConstraint(
            ["room_id"],
            ["rooms.id"],
            name=op.f("fk_room_bans_room_id_rooms"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_room_bans_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("room_id", "user_id", name=op.f("pk_room_bans")),
    )


def downgrade() -> None:
    op.drop_table("room_bans")
    with op.batch_alter_table("rooms") as batch:
        batch.drop_column("token_hash")
