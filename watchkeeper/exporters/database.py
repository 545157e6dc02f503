"""SQLAlchemy metrics: query latency, pool use, errors, a slow-query log.

Statements are timed by wrapping the engine's dialect execute methods (not engine events, whose
dispatch costs more than the measurement); the pool is read at scrape time, or on pool events in
multiprocess mode.

```python
engine = sa.create_engine(url)
instrument_sqlalchemy(engine, slow_query_seconds=0.25)
```
Metrics: ``db_query_duration_seconds{operation,table}``, ``db_pool_connections{state}``
(``in_use|idle|overflow``), ``db_errors_total{operation,error}``. A query slower than the threshold
is logged (logger ``watchkeeper.exporters.slow_query``) with its *fingerprint* — literals replaced
by ``?``, whitespace collapsed — and never with its parameters.
"""

from __future__ import annotations

import functools
import logging
import re
import weakref
from collections.abc import Callable
from time import perf_counter
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from watchkeeper.exporters import multiprocess
from watchkeeper.exporters.cardinality import LabelCap
from watchkeeper.exporters.safety import dropped

slow_query_logger = logging.getLogger("watchkeeper.exporters.slow_query")

QUERY_BUCKETS_SECONDS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
OPERATIONS = frozenset(
    {"select", "insert", "update", "delete", "create", "drop", "alter", "begin", "commit", "rollback",
     "with", "truncate", "copy", "show", "set", "explain"}
)  # fmt: skip

_STRING = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w$])-?\d+(?:\.\d+)?(?:e[+-]?\d+)?\b", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
_IN_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")
_TABLE = re.compile(
    r"\b(?:from|into|update|join|table)\s+(?:if\s+(?:not\s+)?exists\s+)?((?:\"[^\"]+\"|[\w$]+)(?:\.(?:\"[^\"]+\"|[\w$]+))?)",
    re.IGNORECASE,
)


def fingerprint(statement: str) -> str:
    """The statement with literals replaced by ``?`` and whitespace collapsed (safe to log)."""
    text = _STRING.sub("?", statement)
    text = _NUMBER.sub("?", text)
    text = _IN_LIST.sub("(?+)", text)
    return _SPACE.sub(" ", text).strip()


def classify(statement: str) -> tuple[str, str]:
    """(operation, table) of a statement; ``other``/``unknown`` when they cannot be told."""
    head = statement.lstrip().split(None, 1)
    operation = head[0].lower() if head else "other"
    if operation not in OPERATIONS:
        operation = "other"
    match = _TABLE.search(statement)
    table = match.group(1).replace('"', "").lower() if match else "unknown"
    return operation, table


class DatabaseMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, max_tables: int = 200) -> None:
        from prometheus_client import REGISTRY

        reg = REGISTRY if registry is None else registry
        self.duration = Histogram(
            "db_query_duration_seconds", "Database query latency by operation and table.",
            ("operation", "table"), buckets=QUERY_BUCKETS_SECONDS, registry=reg,
        )  # fmt: skip
        self.pool = Gauge(
            "db_pool_connections", "Connection pool use by state (in_use|idle|overflow).", ("state",),
            registry=reg, multiprocess_mode="livesum",
        )  # fmt: skip
        self.errors = Counter(
            "db_errors_total", "Failed database statements by operation and error type.",
            ("operation", "error"), registry=reg,
        )  # fmt: skip
        self.tables = LabelCap(max_tables)
        self._children: dict[tuple[str, str], Any] = {}

    def observe(self, operation: str, table: str, duration_seconds: float) -> None:
        child = self._children.get((operation, table))
        if child is None:
            child = self.duration.labels(operation, self.tables.fold(table))
            self._children[(operation, table)] = child
        child.observe(duration_seconds)


_per_registry: weakref.WeakKeyDictionary[CollectorRegistry, DatabaseMetrics] = weakref.WeakKeyDictionary()


def _metrics_for(registry: CollectorRegistry | None) -> DatabaseMetrics:
    """One metric set per registry, so a second engine does not register the names twice.
    (``db_pool_connections`` then shows the pool of the engine instrumented last.)"""
    from prometheus_client import REGISTRY

    key = REGISTRY if registry is None else registry
    found = _per_registry.get(key)
    if found is None:
        found = _per_registry[key] = DatabaseMetrics(key)
    return found


def _read(state: Callable[[], tuple[int, int, int]], index: int) -> float:
    try:
        return float(state()[index])
    except Exception as exc:
        dropped("db.pool", exc)
        return float("nan")


def instrument_sqlalchemy(
    engine: Any,
    *,
    registry: CollectorRegistry | None = None,
    metrics: DatabaseMetrics | None = None,
    slow_query_seconds: float | None = 1.0,
) -> DatabaseMetrics:
    """Measure the statements and the pool of a SQLAlchemy ``Engine`` (or ``AsyncEngine``); returns
    the metrics."""
    from sqlalchemy import event

    db = metrics or _metrics_for(registry)
    sync_engine = getattr(engine, "sync_engine", engine)
    classified: dict[str, tuple[str, str]] = {}

    def classify_cached(statement: str) -> tuple[str, str]:
        found = classified.get(statement)
        if found is None:
            found = classify(statement)
            if len(classified) < 5000:
                classified[statement] = found
        return found

    def record(statement: str, elapsed: float) -> None:
        try:
            operation, table = classify_cached(statement)
            db.observe(operation, table, elapsed)
            if slow_query_seconds is not None and elapsed >= slow_query_seconds:
                slow_query_logger.warning(
                    "slow query: %.3f s %s on %s: %s", elapsed, operation, table, fingerprint(statement)
                )
        except Exception as exc:
            dropped("db.record", exc)

    def record_error(statement: str, error: Exception) -> None:
        try:
            db.errors.labels(classify_cached(statement)[0], type(error).__name__).inc()
        except Exception as exc:
            dropped("db.error", exc)

    def timed(execute: Callable[..., Any]) -> Callable[..., Any]:
        def timed_execute(cursor: Any, statement: str, *args: Any, **kwargs: Any) -> Any:
            start = perf_counter()
            try:
                result = execute(cursor, statement, *args, **kwargs)
            except Exception as error:
                record_error(statement, error)
                raise
            record(statement, perf_counter() - start)
            return result

        return timed_execute

    # The dialect's execute methods, wrapped on this engine's dialect object, rather than the
    # engine's cursor events: any engine event listener switches on SQLAlchemy's event dispatch for
    # every connection event, about 23 us per connect + query (bench/sdk_overhead.py --database).
    dialect = sync_engine.dialect
    for name in ("do_execute", "do_execute_no_params", "do_executemany"):
        setattr(dialect, name, timed(getattr(dialect, name)))

    pool = sync_engine.pool

    def pool_state(returning: bool = False) -> tuple[int, int, int]:
        """(in use, idle, overflow). ``returning``: inside a checkin event, which fires before the
        pool takes the connection back: it joins the idle ones unless the pool is full, and is
        closed otherwise (the overflow shrinks then, with no event after it)."""
        in_use = pool.checkedout() if hasattr(pool, "checkedout") else 0
        idle = pool.checkedin() if hasattr(pool, "checkedin") else 0
        size_of = getattr(pool, "size", None)  # a method of QueuePool, a number on SingletonThreadPool
        size = size_of() if callable(size_of) else None
        if returning:
            in_use = max(0, in_use - 1)
            idle = idle + 1 if size is None else min(idle + 1, size)
        if size is not None:  # QueuePool: connections beyond its size
            return in_use, idle, max(0, in_use + idle - size)
        return in_use, idle, max(0, pool.overflow()) if hasattr(pool, "overflow") else 0

    if not multiprocess.enabled():
        # Read at scrape time: exact, and free on the query path.
        for index, state in enumerate(("in_use", "idle", "overflow")):
            db.pool.labels(state).set_function(functools.partial(_read, pool_state, index))
        return db

    # Multiprocess mode keeps values in files, so the figures are pushed on pool events instead:
    # through children bound once, and only the figures that changed (each write is a file write
    # under a lock; a checkout or checkin changes two of the three).
    children = [db.pool.labels(state) for state in ("in_use", "idle", "overflow")]
    written: list[float | None] = [None, None, None]

    def update_pool(returning: bool = False) -> None:
        try:
            for index, value in enumerate(pool_state(returning)):
                if value != written[index]:
                    children[index].set(value)
                    written[index] = value
        except Exception as exc:
            dropped("db.pool", exc)

    event.listen(pool, "checkout", lambda *_: update_pool())
    event.listen(pool, "checkin", lambda *_: update_pool(returning=True))
    update_pool()
    return db
