"""Cache metrics and the Redis wrapper, against the real Redis server."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from watchkeeper.exporters.cache import CacheMetrics, instrument_redis


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_hit_miss_and_timing_context() -> None:
    registry = CollectorRegistry()
    metrics = CacheMetrics(registry)
    metrics.hit("session")
    metrics.hit("session")
    metrics.miss("player")
    with metrics.timed("discovery", "get"):
        pass
    with pytest.raises(KeyError), metrics.timed("discovery", "get"):
        raise KeyError("x")
    assert value(registry, "cache_requests_total", cache="session", result="hit") == 2
    assert value(registry, "cache_requests_total", cache="player", result="miss") == 1
    assert value(registry, "cache_operation_duration_seconds_count", cache="discovery", op="get") == 2
    assert value(registry, "cache_errors_total", cache="discovery", op="get", error="KeyError") == 1


def test_cache_names_are_capped() -> None:
    registry = CollectorRegistry()
    metrics = CacheMetrics(registry, max_caches=2)
    for name in ("a", "b", "c", "d"):
        metrics.hit(name)
    assert value(registry, "cache_requests_total", cache="__other__", result="hit") == 2


@pytest.mark.redis
def test_instrument_redis_counts_hits_and_misses_by_key_prefix(redis_url: str) -> None:
    import redis

    registry = CollectorRegistry()
    client = instrument_redis(redis.Redis.from_url(redis_url), metrics=CacheMetrics(registry))
    try:
        client.set("session:1", "alice")
        client.set("player:7", "bob")
        assert client.get("session:1") == b"alice"
        assert client.get("session:2") is None
        assert client.get("player:7") == b"bob"
        assert client.mget(["statistics:a", "player:7", "discovery:z"]) == [None, b"bob", None]
        client.hset("statistics:daily", mapping={"joins": 3})
        assert client.hget("statistics:daily", "joins") == b"3"
        assert client.hget("statistics:daily", "nope") is None
        with pytest.raises(redis.ResponseError):
            client.incr("session:1")  # not an integer: the error is counted and re-raised
    finally:
        client.close()
    assert value(registry, "cache_requests_total", cache="session", result="hit") == 1
    assert value(registry, "cache_requests_total", cache="session", result="miss") == 1
    assert value(registry, "cache_requests_total", cache="player", result="hit") == 2
    assert value(registry, "cache_requests_total", cache="statistics", result="miss") == 2
    assert value(registry, "cache_requests_total", cache="statistics", result="hit") == 1
    assert value(registry, "cache_requests_total", cache="discovery", result="miss") == 1
    assert value(registry, "cache_operation_duration_seconds_count", cache="session", op="get") == 2
    assert value(registry, "cache_operation_duration_seconds_count", cache="session", op="set") == 1
    assert value(registry, "cache_errors_total", cache="session", op="incrby", error="ResponseError") == 1
    # SET is timed but is not a lookup.
    assert value(registry, "cache_requests_total", cache="player", result="miss") is None


@pytest.mark.redis
def test_instrument_redis_asyncio_client(redis_url: str) -> None:
    import redis.asyncio

    registry = CollectorRegistry()

    async def run() -> None:
        client = instrument_redis(redis.asyncio.Redis.from_url(redis_url), metrics=CacheMetrics(registry))
        try:
            await client.set("session:9", "x")
            assert await client.get("session:9") == b"x"
            assert await client.get("session:10") is None
        finally:
            await client.aclose()

    asyncio.run(run())
    assert value(registry, "cache_requests_total", cache="session", result="hit") == 1
    assert value(registry, "cache_requests_total", cache="session", result="miss") == 1
    assert value(registry, "cache_operation_duration_seconds_count", cache="session", op="get") == 2


def test_module_level_api_uses_the_default_registry() -> None:
    from prometheus_client import REGISTRY

    from watchkeeper.exporters import cache

    labels = {"cache": "wk_module_api_test", "result": "hit"}
    before = REGISTRY.get_sample_value("cache_requests_total", labels) or 0
    cache.hit("wk_module_api_test")
    cache.hit("wk_module_api_test", 2)
    with cache.timed("wk_module_api_test", "get"):
        pass
    assert REGISTRY.get_sample_value("cache_requests_total", labels) == before + 3
    timed = {"cache": "wk_module_api_test", "op": "get"}
    assert (REGISTRY.get_sample_value("cache_operation_duration_seconds_count", timed) or 0) >= 1
