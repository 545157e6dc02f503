"""Shared fixtures: real PostgreSQL and Redis servers on loopback.

A test that needs a server it cannot reach is skipped on a laptop and *fails* in CI (``CI`` set),
so a missing service can never turn into a silently green run.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest

from tests.environment import unavailable

POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_server(name: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    unavailable(f"{name} is not reachable at {host}:{port}")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of a fresh, empty PostgreSQL database, dropped after the test."""
    require_server("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
    import sqlalchemy as sa

    admin = sa.create_engine(
        f"postgresql+psycopg://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/test", isolation_level="AUTOCOMMIT"
    )
    name = f"wk_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def redis_url() -> str:
    """The URL of the real Redis server (database 15, flushed before the test)."""
    require_server("Redis", REDIS_HOST, REDIS_PORT)
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/15"
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url
