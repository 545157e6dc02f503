"""rules: persisted alert state and alert history

Revision ID: 0002_rules
Revises: 0001_tsdb
Create Date: 2026-11-28

``rules_alert_state`` holds every pending, firing and recently resolved alert instance (one row
each, keyed by a hash of group, rule and labels) so that a restart restores it exactly;
``rules_alert_history`` is append-only, one row per state transition.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_rules"
down_revision = "0001_tsdb"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rules_alert_state",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("group_key", sa.Text, nullable=False),
        sa.Column("rule_key", sa.Text, nullable=False),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("annotations", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("active_at_ms", sa.BigInteger, nullable=False),
        sa.Column("fired_at_ms", sa.BigInteger),
        sa.Column("resolved_at_ms", sa.BigInteger),
        sa.Column("keep_firing_since_ms", sa.BigInteger),
        sa.Column("last_sent_ms", sa.BigInteger),
        sa.Column("valid_until_ms", sa.BigInteger),
        sa.Column("value", sa.Float),
    )
    op.create_index("ix_rules_alert_state_group", "rules_alert_state", ["group_key"])
    op.create_table(
        "rules_alert_history",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
        sa.Column("group_key", sa.Text, nullable=False),
        sa.Column("alertname", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.String(16), nullable=False),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("from_state", sa.String(16), nullable=False),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("value", sa.Float),
    )
    op.create_index("ix_rules_alert_history_at", "rules_alert_history", ["at_ms"])
    op.create_index("ix_rules_alert_history_fp", "rules_alert_history", ["fingerprint", "at_ms"])


def downgrade() -> None:
    op.drop_table("rules_alert_history")
    op.drop_table("rules_alert_state")
