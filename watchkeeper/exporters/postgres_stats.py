"""A PostgreSQL exporter: connections by state, transactions, cache hit ratio, deadlocks, the
longest open transaction, database sizes and replication lag (when there is replication).

```python
registry.register(PostgresCollector("postgresql://postgres@127.0.0.1:5432/postgres"))
```
Each scrape opens one connection (psycopg), runs the read-only queries below and closes it; when
the server cannot be reached only ``pg_up 0`` is exported. Names follow postgres_exporter.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from watchkeeper.exporters.safety import dropped

ACTIVITY_SQL = """
SELECT coalesce(state, 'unknown'), count(*)
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
GROUP BY 1
"""
DATABASE_SQL = """
SELECT datname, numbackends, xact_commit, xact_rollback, blks_hit, blks_read, deadlocks,
       CASE WHEN has_database_privilege(datname, 'CONNECT') THEN pg_database_size(datname) END
FROM pg_stat_database
WHERE datname IS NOT NULL AND datname NOT IN ('template0', 'template1')
"""
LONGEST_TRANSACTION_SQL = """
SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0)
FROM pg_stat_activity
WHERE xact_start IS NOT NULL AND backend_type = 'client backend' AND pid <> pg_backend_pid()
"""
RECOVERY_SQL = """
SELECT pg_is_in_recovery(),
       extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())
"""
REPLICATION_SQL = """
SELECT coalesce(application_name, ''), coalesce(client_addr::text, ''),
       coalesce(extract(epoch FROM replay_lag), 0),
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)
FROM pg_stat_replication
"""
STATES = ("active", "idle", "idle in transaction", "idle in transaction (aborted)", "fastpath function call",
          "disabled")  # fmt: skip


def activity_metrics(rows: Sequence[Sequence[Any]]) -> Iterator[Metric]:
    counts = {state: 0.0 for state in STATES}
    for state, count in rows:
        counts[str(state)] = float(count)
    family = GaugeMetricFamily("pg_stat_activity_count", "Client connections by state.", labels=["state"])
    for state, count in counts.items():
        family.add_metric([state], count)
    yield family


def database_metrics(rows: Sequence[Sequence[Any]]) -> Iterator[Metric]:
    labels = ["datname"]
    backends = GaugeMetricFamily("pg_stat_database_numbackends", "Connections per database.", labels=labels)
    commits = CounterMetricFamily("pg_stat_database_xact_commit", "Committed transactions.", labels=labels)
    rollbacks = CounterMetricFamily(
        "pg_stat_database_xact_rollback", "Rolled back transactions.", labels=labels
    )
    hits = CounterMetricFamily(
        "pg_stat_database_blks_hit", "Block reads served by the buffer cache.", labels=labels
    )
    reads = CounterMetricFamily(
        "pg_stat_database_blks_read", "Block reads that missed the cache.", labels=labels
    )
    deadlocks = CounterMetricFamily("pg_stat_database_deadlocks", "Deadlocks detected.", labels=labels)
    ratio = GaugeMetricFamily(
        "pg_stat_database_cache_hit_ratio",
        "blks_hit / (blks_hit + blks_read) since stats reset.",
        labels=labels,
    )
    size = GaugeMetricFamily("pg_database_size_bytes", "Disk space used by the database.", labels=labels)
    for datname, numbackends, commit, rollback, hit, read, deadlock, size_bytes in rows:
        name = [str(datname)]
        backends.add_metric(name, float(numbackends))
        commits.add_metric(name, float(commit))
        rollbacks.add_metric(name, float(rollback))
        hits.add_metric(name, float(hit))
        reads.add_metric(name, float(read))
        deadlocks.add_metric(name, float(deadlock))
        total = float(hit) + float(read)
        ratio.add_metric(name, float(hit) / total if total else 1.0)
        if size_bytes is not None:
            size.add_metric(name, float(size_bytes))
    yield from (backends, commits, rollbacks, hits, reads, deadlocks, ratio, size)


class PostgresCollector:
    """Scrapes one PostgreSQL server per collect; ``pg_up 0`` when it cannot be reached."""

    def __init__(
        self, dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres", *, timeout_seconds: float = 3.0
    ) -> None:
        self.dsn = dsn.replace("postgresql+psycopg://", "postgresql://", 1)
        self.timeout_seconds = timeout_seconds

    def collect(self) -> Iterator[Metric]:
        import psycopg

        try:
            with psycopg.connect(
                self.dsn, connect_timeout=max(1, int(self.timeout_seconds)), autocommit=True
            ) as conn:
                conn.execute(f"SET statement_timeout = {int(self.timeout_seconds * 1000)}")
                families = list(self._query(conn))
        except Exception as exc:
            dropped("exporter.postgres", exc)
            yield GaugeMetricFamily("pg_up", "1 when the last scrape reached PostgreSQL.", value=0)
            return
        yield GaugeMetricFamily("pg_up", "1 when the last scrape reached PostgreSQL.", value=1)
        yield from families

    def _query(self, conn: Any) -> Iterator[Metric]:
        yield from activity_metrics(conn.execute(ACTIVITY_SQL).fetchall())
        yield from database_metrics(conn.execute(DATABASE_SQL).fetchall())
        longest = conn.execute(LONGEST_TRANSACTION_SQL).fetchone()
        yield GaugeMetricFamily(
            "pg_longest_transaction_seconds", "Age of the oldest open transaction.", value=float(longest[0])
        )
        in_recovery, replay_lag = conn.execute(RECOVERY_SQL).fetchone()
        if in_recovery:
            yield GaugeMetricFamily(
                "pg_replication_lag_seconds", "Time since the last replayed transaction (replica).",
                value=float(replay_lag or 0),
            )  # fmt: skip
            return
        replicas = conn.execute(REPLICATION_SQL).fetchall()
        if replicas:
            lag = GaugeMetricFamily(
                "pg_stat_replication_replay_lag_seconds", "Replay lag per replica (primary).",
                labels=["application_name", "client_addr"],
            )  # fmt: skip
            lag_bytes = GaugeMetricFamily(
                "pg_stat_replication_replay_lag_bytes", "WAL bytes not yet replayed per replica.",
                labels=["application_name", "client_addr"],
            )  # fmt: skip
            for application, address, seconds, wal_bytes in replicas:
                lag.add_metric([application, address], float(seconds))
                lag_bytes.add_metric([application, address], float(wal_bytes or 0))
            yield lag
            yield lag_bytes
