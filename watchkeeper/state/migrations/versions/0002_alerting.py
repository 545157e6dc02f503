"""alerting: silences, notification log, notification outbox

Revision ID: 0002_alerting
Revises: 0001_tsdb
Create Date: 2026-11-28

See watchkeeper/alerting/store.py for what each table holds.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_alerting"
down_revision = "0001_tsdb"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "alerting_silences",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("matchers", sa.Text, nullable=False),
        sa.Column("starts_at_ms", sa.BigInteger, nullable=False),
        sa.Column("ends_at_ms", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "alerting_nflog",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("group_key", sa.Text, nullable=False),
        sa.Column("integration", sa.String(255), nullable=False),
        sa.Column("firing", sa.Text, nullable=False),
        sa.Column("resolved", sa.Text, nullable=False),
        sa.Column("notified_at_ms", sa.BigInteger, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "alerting_outbox",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(64), nullable=False, unique=True),
        sa.Column("receiver", sa.String(255), nullable=False),
        sa.Column("integration", sa.String(255), nullable=False),
        sa.Column("group_key", sa.Text, nullable=False),
        sa.Column("notification", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_ms", sa.BigInteger, nullable=False),
        sa.Column("lease_until_ms", sa.BigInteger, nullable=True),
        sa.Column("created_at_ms", sa.BigInteger, nullable=False),
        sa.Column("first_active_at_ms", sa.BigInteger, nullable=True),
        sa.Column("sent_at_ms", sa.BigInteger, nullable=True),
        sa.Column("last_status", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_index("alerting_outbox_due", "alerting_outbox", ["state", "next_attempt_ms"])


def downgrade() -> None:
    op.drop_index("alerting_outbox_due", table_name="alerting_outbox")
    op.drop_table("alerting_outbox")
    op.drop_table("alerting_nflog")
    op.drop_table("alerting_silences")
