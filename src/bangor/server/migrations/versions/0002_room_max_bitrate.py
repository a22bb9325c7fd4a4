"""Rooms get an optional cap on each member's Opus bitrate.

Revision ID: 0002
Revises: 0001
Create Date: 2025-06-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than taken from schema.py (and the wire limits): a migration must
# not change when the current code does.
_CHECK_NAME = "ck_rooms_max_bitrate"
_CHECK = "max_bitrate IS NULL OR max_bitrate BETWEEN 6000 AND 510000"


def upgrade() -> None:
    # Batch mode: SQLite cannot add a CHECK constraint in place, so there the table is
    # copied; PostgreSQL gets plain ALTER TABLE statements. Existing rooms get NULL (no cap).
    with op.batch_alter_table("rooms") as batch:
        batch.add_column(sa.Column("max_bitrate", sa.Integer, nullable=True))
        # op.f: the name is final; the naming convention must not prefix it again.
        batch.create_check_constraint(op.f(_CHECK_NAME), sa.text(_CHECK))


def downgrade() -> None:
    with op.batch_alter_table("rooms") as batch:
        batch.drop_constraint(op.f(_CHECK_NAME), type_="check")
        batch.drop_column("max_bitrate")
