"""SQLAlchemy metrics against the real PostgreSQL server."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from watchkeeper.exporters.database import classify, fingerprint, instrument_sqlalchemy


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SELECT * FROM players WHERE id = %(id)s", ("select", "players")),
        ("insert into public.sessions (id) values (1)", ("insert", "public.sessions")),
        ('UPDATE "Games" SET x = 1', ("update", "games")),
        ("DELETE FROM t", ("delete", "t")),
        ("CREATE TABLE IF NOT EXISTS scores (a int)", ("create", "scores")),
        ("VACUUM", ("other", "unknown")),
    ],
)
def test_classify(statement: str, expected: tuple[str, str]) -> None:
    assert classify(statement) == expected


def test_fingerprint_removes_literals() -> None:
    assert (
        fingerprint("SELECT *  FROM users\n WHERE email = 'a@b.c' AND age > 42 AND id IN (1, 2, 3)")
        == "SELECT * FROM users WHERE email = ? AND age > ? AND id IN (?+)"
    )


def assert_one_of_each(registry: CollectorRegistry, table: str, *, failed: tuple[str, str]) -> None:
    """One CREATE, one INSERT and one SELECT on ``table`` timed; one failed statement counted."""
    for operation in ("create", "insert", "select"):
        labels = {"operation": operation, "table": table}
        assert registry.get_sample_value("db_query_duration_seconds_count", labels) == 1, operation
    operation, error = failed
    assert registry.get_sample_value("db_errors_total", {"operation": operation, "error": error}) == 1


@pytest.mark.postgres
def test_queries_pool_errors_and_slow_log(postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    engine = sa.create_engine(postgres_url, pool_size=2, max_overflow=2)
    instrument_sqlalchemy(engine, registry=registry, slow_query_seconds=0.2)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE players (id int primary key, name text)"))
            conn.execute(sa.text("INSERT INTO players VALUES (1, 'secret-name')"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT name FROM players WHERE id = :id"), {"id": 1}).scalar() == (
                "secret-name"
            )
            assert registry.get_sample_value("db_pool_connections", {"state": "in_use"}) == 1
            with pytest.raises(sa.exc.ProgrammingError):
                conn.execute(sa.text("SELECT * FROM missing_table"))
        with (
            caplog.at_level(logging.WARNING, logger="watchkeeper.exporters.slow_query"),
            engine.connect() as conn,
        ):
            conn.execute(sa.text("SELECT pg_sleep(0.25), :token"), {"token": "hunter2"})
        held = [engine.connect() for _ in range(3)]  # pool_size 2 -> one overflow connection
        assert registry.get_sample_value("db_pool_connections", {"state": "in_use"}) == 3
        assert registry.get_sample_value("db_pool_connections", {"state": "overflow"}) == 1
        for conn in held:
            conn.close()
        assert registry.get_sample_value("db_pool_connections", {"state": "in_use"}) == 0
        assert registry.get_sample_value("db_pool_connections", {"state": "idle"}) == 2
        assert registry.get_sample_value("db_pool_connections", {"state": "overflow"}) == 0
    finally:
        engine.dispose()
    assert_one_of_each(registry, "players", failed=("select", "UndefinedTable"))
    slow = [r.getMessage() for r in caplog.records if r.name == "watchkeeper.exporters.slow_query"]
    assert len(slow) == 1
    assert "pg_sleep" in slow[0] and "hunter2" not in slow[0] and "secret-name" not in slow[0]


def test_two_engines_on_one_registry_share_the_query_metrics() -> None:
    registry = CollectorRegistry()
    first = sa.create_engine("sqlite://")
    second = sa.create_engine("sqlite://")
    assert instrument_sqlalchemy(first, registry=registry) is instrument_sqlalchemy(second, registry=registry)
    for engine in (first, second):
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    # SQLite's in-memory pool (SingletonThreadPool) has none of QueuePool's counters but a number
    # for its size: the pool gauges still read as numbers, not as a dropped measurement (NaN)
    assert registry.get_sample_value("db_pool_connections", {"state": "overflow"}) == 0
    assert (
        registry.get_sample_value(
            "db_query_duration_seconds_count", {"operation": "select", "table": "unknown"}
        )
        == 2
    )


def test_pool_figures_in_multiprocess_mode_follow_checkouts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Multiprocess mode pushes the pool figures into the worker's files on pool events."""
    from prometheus_client import values

    from watchkeeper.exporters import multiprocess

    monkeypatch.setattr(values, "ValueClass", values.MutexValue)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "mp"))
    multiprocess.enable(str(tmp_path / "mp"))
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", pool_size=2, max_overflow=2)
    try:
        instrument_sqlalchemy(engine, registry=CollectorRegistry())

        def pool() -> dict[str, float | None]:
            registry = multiprocess.scrape_registry(str(tmp_path / "mp"))
            return {
                state: registry.get_sample_value("db_pool_connections", {"state": state})
                for state in ("in_use", "idle", "overflow")
            }

        held = [engine.connect() for _ in range(3)]
        assert pool() == {"in_use": 3, "idle": 0, "overflow": 1}
        held.pop().close()
        assert pool() == {"in_use": 2, "idle": 1, "overflow": 1}
        for conn in held:
            conn.close()
        # the last one found the pool full and was closed: no overflow left
        assert pool() == {"in_use": 0, "idle": 2, "overflow": 0}
    finally:
        engine.dispose()
        values.ValueClass.close_all_files()  # type: ignore[attr-defined]


def test_executemany_and_statements_without_parameters_are_measured() -> None:
    registry = CollectorRegistry()
    engine = sa.create_engine("sqlite://")
    instrument_sqlalchemy(engine, registry=registry)
    try:
        with engine.begin() as conn:
            # no_parameters: SQLAlchemy calls the dialect's do_execute_no_params
            conn.execution_options(no_parameters=True).exec_driver_sql(
                "CREATE TABLE scores (id INT, pts INT)"
            )
            rows = [{"id": i, "pts": i * 10} for i in range(3)]
            conn.execute(sa.text("INSERT INTO scores VALUES (:id, :pts)"), rows)  # do_executemany
            with pytest.raises(sa.exc.OperationalError):
                conn.execute(sa.text("INSERT INTO nowhere VALUES (:id)"), [{"id": 1}, {"id": 2}])
            assert conn.execute(sa.text("SELECT sum(pts) FROM scores")).scalar() == 30
    finally:
        engine.dispose()
    assert_one_of_each(registry, "scores", failed=("insert", "OperationalError"))
