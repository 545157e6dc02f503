"""Alembic environment: runs on the connection the application hands over.

Migrations are run in code (`watchkeeper.tsdb.schema.migrate`), never from an ``alembic.ini`` on
disk: the caller puts an open SQLAlchemy connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through watchkeeper (a connection must be provided)")

context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
