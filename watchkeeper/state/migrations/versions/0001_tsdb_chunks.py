"""tsdb: series and chunk tables

Revision ID: 0001_tsdb
Revises:
Create Date: 2026-11-28

Both tables are keyed by what they are read by, and WITHOUT ROWID on SQLite so the primary key
*is* the b-tree (no second copy of the key, no rowid): the smallest file for the sample bytes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_tsdb"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tsdb_series",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("labels", sa.LargeBinary, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "tsdb_chunks",
        sa.Column("series_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("min_time", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("max_time", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("tsdb_chunks")
    op.drop_table("tsdb_series")
