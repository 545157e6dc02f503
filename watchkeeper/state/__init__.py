"""State that is not samples: SQLAlchemy models and the Alembic migrations (tsdb tables included)."""
