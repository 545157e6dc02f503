"""The core API's tables (SQLAlchemy Core) and the indexes its queries use.

- discovery filters on sport, region and start time, then on a latitude band:
  ``ix_sessions_discovery (status, sport, region, starts_at)`` and ``ix_sessions_lat (lat)``;
- statistics and invalidation read a player's sessions: ``ix_session_players_player``;
- the primary key ``(session_id, player_id)`` serves a session's roster and makes a join idempotent.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

players = sa.Table(
    "players",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(80), nullable=False),
    sa.Column("region", sa.String(20), nullable=False),
    sa.Column("skill", sa.Integer, nullable=False, server_default="1000"),
    sa.Column("created_at_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
    sa.Index("ix_players_region", "region"),
)

sessions = sa.Table(
    "game_sessions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("title", sa.String(120), nullable=False),
    sa.Column("sport", sa.String(20), nullable=False),
    sa.Column("region", sa.String(20), nullable=False),
    sa.Column("host_id", sa.Integer, sa.ForeignKey("players.id"), nullable=False),
    sa.Column("starts_at_ms", sa.BigInteger, nullable=False),
    sa.Column("duration_minutes", sa.Integer, nullable=False),
    sa.Column("lat", sa.Float, nullable=False),
    sa.Column("lon", sa.Float, nullable=False),
    sa.Column("max_players", sa.Integer, nullable=False),
    sa.Column("player_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("status", sa.String(10), nullable=False, server_default="open"),
    sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
    sa.Index("ix_sessions_discovery", "status", "sport", "region", "starts_at_ms"),
    sa.Index("ix_sessions_lat", "lat"),
    sa.Index("ix_sessions_host", "host_id"),
)

session_players = sa.Table(
    "session_players",
    metadata,
    sa.Column("session_id", sa.Integer, sa.ForeignKey("game_sessions.id"), primary_key=True),
    sa.Column("player_id", sa.Integer, sa.ForeignKey("players.id"), primary_key=True),
    sa.Column("joined_at_ms", sa.BigInteger, nullable=False),
    sa.Index("ix_session_players_player", "player_id"),
)
