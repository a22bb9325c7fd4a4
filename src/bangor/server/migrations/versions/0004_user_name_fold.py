"""User names are case-insensitive: each account gets a unique folded key.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

``users.name_key`` is the name after NFKC and case folding; a unique index makes
``Alice`` and ``alice`` one account from now on. Names that already differ only in case
stay separate accounts, never silently one: the oldest (lowest id) gets the key, so any
spelling logs in to it except the others' exact ones; the others keep a NULL key and log
in under their exact spelling only. ``bangor user list`` and the server's start name
them until one is removed (the store then gives its key to the one left).
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("bangor.server.store")

# Spelled out rather than taken from bangor.text: a migration must not change when the
# current code does.
_INDEX = "ix_users_name_key"


def _key(name: str) -> str:
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def upgrade() -> None:
    # Plain ALTER TABLE, no batch copy: on SQLite dropping the old users table would
    # cascade to every room (foreign keys are on).
    op.add_column("users", sa.Column("name_key", sa.Text, nullable=True))
    users = sa.table(
        "users",
        sa.column("id", sa.Integer),
        sa.column("name", sa.Text),
        sa.column("name_key", sa.Text),
    )
    conn = op.get_bind()
    first: dict[str, str] = {}  # key -> the oldest name that has it
    for user_id, name in conn.execute(sa.select(users.c.id, users.c.name).order_by(users.c.id)):
        key = _key(name)
        if key in first:
            log.warning(
                "user names %r and %r differ only in case: both stay, %r logs in only as "
                "spelled; remove one (bangor user remove NAME) to make them one",
                first[key],
                name,
                name,
            )
            continue
        first[key] = name
        conn.execute(users.update().where(users.c.id == user_id).values(name_key=key))
    op.create_index(_INDEX, "users", ["name_key"], unique=True)


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="users")
    with op.batch_alter_table("users", recreate="never") as batch:
        batch.drop_column("name_key")
