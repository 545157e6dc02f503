"""Cache metrics: hits, misses and operation latency, for any cache; and a Redis client wrapper.

```python
from watchkeeper.exporters import cache

cache.hit("session")
cache.miss("player")
with cache.timed("discovery", "get"):
    value = my_cache.get(key)

client = instrument_redis(redis.Redis(), name_from_key=lambda key: key.split(":", 1)[0])
client.get("session:42")     # cache_requests_total{cache="session",result="hit"|"miss"}
```
Metrics: ``cache_requests_total{cache,result}``, ``cache_operation_duration_seconds{cache,op}``,
``cache_errors_total{cache,op,error}``. Cache names are capped (``max_caches``; the rest fold into
``__other__``), so a key without the expected prefix cannot create a series per key.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from time import perf_counter
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram

from watchkeeper.exporters.cardinality import LabelCap
from watchkeeper.exporters.safety import dropped

OPERATION_BUCKETS_SECONDS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip

# Commands whose reply tells a hit from a miss: None (or an empty reply) is a miss.
READ_COMMANDS = frozenset({"GET", "GETEX", "GETDEL", "HGET", "HGETALL", "HMGET", "MGET", "EXISTS",
                           "LRANGE", "SMEMBERS", "ZRANGE", "JSON.GET"})  # fmt: skip
# Operations kept as the ``op`` label; anything else is "other" (the label set stays bounded).
KNOWN_OPS = READ_COMMANDS | frozenset({
    "SET", "SETEX", "SETNX", "MSET", "DEL", "UNLINK", "EXPIRE", "PEXPIRE", "TTL", "INCR", "INCRBY",
    "DECR", "HSET", "HDEL", "HINCRBY", "LPUSH", "RPUSH", "LPOP", "RPOP", "SADD", "SREM", "ZADD",
    "ZREM", "PUBLISH", "SCAN", "PING",
})  # fmt: skip


class CacheMetrics:
    """The cache metric families on one registry (prometheus-client's default if None)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, max_caches: int = 50) -> None:
        from prometheus_client import REGISTRY

        reg = REGISTRY if registry is None else registry
        self.requests = Counter(
            "cache_requests_total", "Cache lookups by cache and result (hit|miss).", ("cache", "result"),
            registry=reg,
        )  # fmt: skip
        self.duration = Histogram(
            "cache_operation_duration_seconds",
            "Cache operation latency by cache and operation.",
            ("cache", "op"),
            buckets=OPERATION_BUCKETS_SECONDS,
            registry=reg,
        )
        self.errors = Counter(
            "cache_errors_total", "Cache operations that raised, by cache, operation and error type.",
            ("cache", "op", "error"), registry=reg,
        )  # fmt: skip
        self.names = LabelCap(max_caches)
        self._results: dict[tuple[str, bool], Any] = {}
        self._durations: dict[tuple[str, str], Any] = {}

    def result(self, name: str, hit: bool, count: int = 1) -> None:
        """Count ``count`` lookups in cache ``name`` as hits or misses. Never raises."""
        try:
            child = self._results.get((name, hit))
            if child is None:
                child = self.requests.labels(self.names.fold(name), "hit" if hit else "miss")
                self._results[(name, hit)] = child
            child.inc(count)
        except Exception as exc:
            dropped("cache.result", exc)

    def hit(self, name: str, count: int = 1) -> None:
        self.result(name, True, count)

    def miss(self, name: str, count: int = 1) -> None:
        self.result(name, False, count)

    def observe(self, name: str, op: str, duration_seconds: float) -> None:
        try:
            child = self._durations.get((name, op))
            if child is None:
                child = self.duration.labels(self.names.fold(name), op)
                self._durations[(name, op)] = child
            child.observe(duration_seconds)
        except Exception as exc:
            dropped("cache.observe", exc)

    def error(self, name: str, op: str, exc: BaseException) -> None:
        try:
            self.errors.labels(self.names.fold(name), op, type(exc).__name__).inc()
        except Exception as err:
            dropped("cache.error", err)

    @contextmanager
    def timed(self, name: str, op: str) -> Iterator[None]:
        """Time the block as one ``op`` on cache ``name``; an exception is counted and re-raised."""
        start = perf_counter()
        try:
            yield
        except Exception as exc:
            self.error(name, op, exc)
            raise
        finally:
            self.observe(name, op, perf_counter() - start)


_default: CacheMetrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> CacheMetrics:
    """The process-wide cache metrics on the default registry, created on first use."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = CacheMetrics()
    return _default


def hit(name: str, count: int = 1) -> None:
    default_metrics().hit(name, count)


def miss(name: str, count: int = 1) -> None:
    default_metrics().miss(name, count)


def timed(name: str, op: str) -> Any:
    return default_metrics().timed(name, op)


def prefix_name(key: str) -> str:
    """Default cache name: the key prefix before the first ``:`` (``session:42`` → ``session``)."""
    prefix, sep, _ = key.partition(":")
    return prefix if sep and prefix else "default"


def _key_text(key: object) -> str:
    if isinstance(key, bytes):
        return key.decode("utf-8", "replace")
    return str(key)


def _is_miss(reply: object) -> bool:
    return reply is None or reply == 0 or reply == [] or reply == {} or reply == b"" or reply == set()


def _classify(
    metrics: CacheMetrics, name_from_key: Callable[[str], str], args: tuple[Any, ...]
) -> tuple[str, str, bool]:
    command = _key_text(args[0]).upper() if args else "?"
    name = name_from_key(_key_text(args[1])) if len(args) > 1 else "default"
    op = command.lower() if command in KNOWN_OPS else "other"
    return name, op, command in READ_COMMANDS


def _count(
    metrics: CacheMetrics, name_from_key: Callable[[str], str], args: tuple[Any, ...], name: str, reply: Any
) -> None:
    command = _key_text(args[0]).upper()
    if command == "MGET" and isinstance(reply, list):
        for key, value in zip(args[1:], reply, strict=False):
            metrics.result(name_from_key(_key_text(key)), value is not None)
    elif command == "HMGET" and isinstance(reply, list):
        hits = sum(1 for value in reply if value is not None)
        if hits:
            metrics.hit(name, hits)
        if len(reply) - hits:
            metrics.miss(name, len(reply) - hits)
    else:
        metrics.result(name, not _is_miss(reply))


C = TypeVar("C")


def instrument_redis(
    client: C,
    *,
    name_from_key: Callable[[str], str] = prefix_name,
    metrics: CacheMetrics | None = None,
) -> C:
    """Count hits/misses and time every command of a redis-py client (sync or asyncio).

    Wraps the client's ``execute_command`` in place and returns the client. Read commands (GET,
    MGET, HGET, ...) count a hit or a miss per key; every command is timed under ``op``. Pipelines
    and transactions are not measured.
    """
    cache_metrics = metrics or default_metrics()
    original = client.execute_command  # type: ignore[attr-defined]

    def prepare(args: tuple[Any, ...]) -> tuple[str, str, bool]:
        try:
            return _classify(cache_metrics, name_from_key, args)
        except Exception as exc:
            dropped("cache.redis", exc)
            return "default", "other", False

    def finish(args: tuple[Any, ...], name: str, op: str, read: bool, start: float, reply: Any) -> None:
        cache_metrics.observe(name, op, perf_counter() - start)
        if read:
            try:
                _count(cache_metrics, name_from_key, args, name, reply)
            except Exception as exc:
                dropped("cache.redis", exc)

    if inspect.iscoroutinefunction(original):

        async def execute_async(*args: Any, **options: Any) -> Any:
            name, op, read = prepare(args)
            start = perf_counter()
            try:
                reply = await original(*args, **options)
            except Exception as exc:
                cache_metrics.error(name, op, exc)
                cache_metrics.observe(name, op, perf_counter() - start)
                raise
            finish(args, name, op, read, start, reply)
            return reply

        client.execute_command = execute_async  # type: ignore[attr-defined]
    else:

        def execute(*args: Any, **options: Any) -> Any:
            name, op, read = prepare(args)
            start = perf_counter()
            try:
                reply = original(*args, **options)
            except Exception as exc:
                cache_metrics.error(name, op, exc)
                cache_metrics.observe(name, op, perf_counter() - start)
                raise
            finish(args, name, op, read, start, reply)
            return reply

        client.execute_command = execute  # type: ignore[attr-defined]
    return client
