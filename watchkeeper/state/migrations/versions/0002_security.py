"""security: API tokens, stored as SHA-256 hashes

Revision ID: 0002_security
Revises: 0001_tsdb
Create Date: 2026-11-28

``api_tokens`` holds the tokens made by ``watchkeeper tokens create``: a name, the token's hex
SHA-256 (the token itself is shown once and never stored), its scopes (comma-separated), the ingest
tenant, and when it was created and revoked.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_security"
down_revision = "0001_tsdb"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("scopes", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(200)),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("revoked_ms", sa.BigInteger),
    )


def downgrade() -> None:
    op.drop_table("api_tokens")
