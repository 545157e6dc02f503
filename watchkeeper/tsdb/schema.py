"""The SQL tables of the store (SQLAlchemy Core), engines for SQLite and PostgreSQL, migrations.

One schema serves both backends::

    tsdb_series(id BIGINT PK, labels BYTEA)                       -- labels as in the WAL encoding
    tsdb_chunks(series_id, min_time, max_time BIGINT, data BYTEA)  -- PK (series_id, min_time, max_time)

SQLite tables are WITHOUT ROWID (the primary key is the b-tree), the file runs in WAL journal mode
with ``synchronous=NORMAL``. The schema is created and upgraded by Alembic, in code, at open:

>>> engine = make_engine("sqlite:///data/watchkeeper.db")   # doctest: +SKIP
>>> migrate(engine)                                          # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import watchkeeper.state

metadata = sa.MetaData()

series_table = sa.Table(
    "tsdb_series",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("labels", sa.LargeBinary, nullable=False),
    sqlite_with_rowid=False,
)

chunks_table = sa.Table(
    "tsdb_chunks",
    metadata,
    sa.Column("series_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("min_time", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("max_time", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sqlite_with_rowid=False,
)

MIGRATIONS_DIR = Path(watchkeeper.state.__file__).parent / "migrations"


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'watchkeeper.db'}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> sa.Engine:
    """An engine for the store: SQLite gets its pragmas on every connection."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def migrate(engine: sa.Engine) -> None:
    """Bring the database schema up to date (every Alembic head)."""
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")
