from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from watchkeeper.tsdb.schema import MIGRATIONS_DIR, alembic_config, make_engine, migrate, sqlite_url


def test_migrations_ship_with_the_package() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert any(MIGRATIONS_DIR.glob("versions/*tsdb*.py"))


def test_sqlite_schema_is_compact_and_in_wal_mode(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url(tmp_path))
    migrate(engine)
    migrate(engine)  # idempotent
    with engine.connect() as conn:
        sql = dict(conn.execute(sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'table'")).all())
        assert "WITHOUT ROWID" in sql["tsdb_chunks"] and "WITHOUT ROWID" in sql["tsdb_series"]
        assert "PRIMARY KEY (series_id, min_time, max_time)" in sql["tsdb_chunks"]
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 1  # NORMAL
        applied = set(conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars())
    # Every head is applied (other packages' migrations branch off the tsdb one).
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    assert applied == heads and heads
    engine.dispose()
    assert (tmp_path / "watchkeeper.db").is_file()


@pytest.mark.postgres
def test_postgres_schema(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    migrate(engine)
    migrate(engine)
    insp = sa.inspect(engine)
    assert {"tsdb_series", "tsdb_chunks"} <= set(insp.get_table_names())
    pk = insp.get_pk_constraint("tsdb_chunks")["constrained_columns"]
    assert pk == ["series_id", "min_time", "max_time"]
    engine.dispose()
