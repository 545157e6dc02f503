"""Alembic migrations, run in code by watchkeeper (see env.py)."""
