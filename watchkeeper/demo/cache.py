"""The core API's cache: Redis when configured, this process's memory otherwise.

Keys and TTLs (seconds, from `CoreApiSettings`): ``session:{id}`` 300, ``player:{id}`` 600,
``discovery:{normalised params}`` 120, ``statistics:{playerId}`` 60. Invalidation:

- a session is updated -> ``session:{id}``, ``statistics:{p}`` of its players, the discovery
  results that list it, and, when its sport, region, time, place or status changed, the results
  of every search that could list it now or before (same sport or region, or neither);
- a session is created -> the results of every search that could list it;
- a player joins or leaves -> ``session:{id}`` and that player's ``statistics:{p}`` (discovery
  results keep their player count for at most their 2 min TTL);
- a player changes -> ``player:{id}`` and ``session:{s}`` of the sessions it is in.

Discovery keys are found through tag sets written next to each discovery entry --
``discovery-tags:{sport|*}:{region|*}`` by its parameters, ``discovery-tags:session:{id}`` by each
session it lists -- so invalidation never scans the keyspace.

```python
cache = ApiCache(MemoryBackend(CacheMetrics(registry)), settings)
await cache.put(cache.session_key(7), b'{"id": 7}', cache.session_ttl)
await cache.get(cache.session_key(7))     # b'{"id": 7}'; counted as a hit of cache "session"
```
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

from watchkeeper.demo.repository import DiscoveryQuery
from watchkeeper.demo.settings import CoreApiSettings
from watchkeeper.exporters.cache import CacheMetrics, prefix_name

TAGS = "discovery-tags"
log = logging.getLogger("watchkeeper.demo.cache")


class CacheBackend(Protocol):
    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None: ...
    async def delete(self, keys: Iterable[str]) -> None: ...
    async def tag_many(self, tags: Iterable[str], key: str, ttl_seconds: int) -> None: ...
    async def pop_tagged(self, tags: Iterable[str]) -> list[str]: ...
    async def close(self) -> None: ...


class MemoryBackend:
    """A dict with expiry times; counts hits and misses itself (Redis gets `instrument_redis`)."""

    def __init__(self, metrics: CacheMetrics | None, *, clock: Any = time.monotonic) -> None:
        self.metrics = metrics
        self.clock = clock
        self.values: dict[str, tuple[float, bytes]] = {}
        self.tags: dict[str, set[str]] = {}

    async def get(self, key: str) -> bytes | None:
        entry = self.values.get(key)
        if entry is not None and entry[0] <= self.clock():
            del self.values[key]
            entry = None
        if self.metrics is not None:
            self.metrics.result(prefix_name(key), entry is not None)
        return None if entry is None else entry[1]

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        now = self.clock()
        if len(self.values) > 100_000:  # bound memory: drop what has expired
            self.values = {k: v for k, v in self.values.items() if v[0] > now}
        self.values[key] = (now + ttl_seconds, value)

    async def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.values.pop(key, None)

    async def tag_many(self, tags: Iterable[str], key: str, ttl_seconds: int) -> None:
        for tag in tags:
            self.tags.setdefault(tag, set()).add(key)

    async def pop_tagged(self, tags: Iterable[str]) -> list[str]:
        out: set[str] = set()
        for tag in tags:
            out |= self.tags.pop(tag, set())
        return sorted(out)

    async def close(self) -> None:
        self.values.clear()


class RedisBackend:
    """redis.asyncio, measured by the SDK's `instrument_redis` (hits/misses by key prefix)."""

    def __init__(self, url: str, metrics: CacheMetrics | None) -> None:
        import redis.asyncio as redis

        from watchkeeper.exporters import instrument_redis

        # a blocking pool waits for a free connection instead of failing under bursts
        pool = redis.BlockingConnectionPool.from_url(url, max_connections=100, timeout=10, socket_timeout=5)
        self.client: Any = redis.Redis(connection_pool=pool)
        if metrics is not None:
            instrument_redis(self.client, metrics=metrics)

    async def get(self, key: str) -> bytes | None:
        value = await self.client.get(key)
        return value if value is None else bytes(value)

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        await self.client.set(key, value, ex=ttl_seconds)

    async def delete(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys:
            await self.client.delete(*keys)

    async def tag_many(self, tags: Iterable[str], key: str, ttl_seconds: int) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for tag in tags:
                pipe.sadd(tag, key)
                pipe.expire(tag, ttl_seconds)
            await pipe.execute()

    async def pop_tagged(self, tags: Iterable[str]) -> list[str]:
        tags = list(tags)
        async with self.client.pipeline(transaction=True) as pipe:
            for tag in tags:
                pipe.smembers(tag)
            pipe.delete(*tags)
            replies = await pipe.execute()
        keys: set[str] = set()
        for members in replies[:-1]:
            keys.update(m.decode() if isinstance(m, bytes) else str(m) for m in members)
        return sorted(keys)

    async def close(self) -> None:
        await self.client.aclose()


class ApiCache:
    """Keys, TTLs and invalidation rules over a backend; ``enabled=False`` makes it a no-op."""

    def __init__(self, backend: CacheBackend, settings: CoreApiSettings) -> None:
        self.backend = backend
        self.enabled = settings.cache_enabled
        self.session_ttl = settings.session_ttl_seconds
        self.player_ttl = settings.player_ttl_seconds
        self.discovery_ttl = settings.discovery_ttl_seconds
        self.statistics_ttl = settings.statistics_ttl_seconds
        self._logged: set[str] = set()

    @staticmethod
    def session_key(session_id: int) -> str:
        return f"session:{session_id}"

    @staticmethod
    def player_key(player_id: int) -> str:
        return f"player:{player_id}"

    @staticmethod
    def statistics_key(player_id: int) -> str:
        return f"statistics:{player_id}"

    @staticmethod
    def discovery_key(query: DiscoveryQuery) -> str:
        return query.cache_key

    async def get(self, key: str) -> bytes | None:
        """The cached value; None when absent, disabled or the cache is unreachable (then the API
        reads the database: a cache outage slows the API down but does not fail it)."""
        if not self.enabled:
            return None
        try:
            return await self.backend.get(key)
        except Exception as exc:
            self._failed("get", exc)
            return None

    async def put(self, key: str, value: bytes, ttl_seconds: int) -> None:
        if self.enabled:
            try:
                await self.backend.set(key, value, ttl_seconds)
            except Exception as exc:
                self._failed("set", exc)

    def _failed(self, op: str, exc: Exception) -> None:
        if op not in self._logged:
            self._logged.add(op)
            log.warning("cache %s failed, serving from the database: %r", op, exc)

    async def put_discovery(self, query: DiscoveryQuery, value: bytes, session_ids: Iterable[int]) -> None:
        """Cache a search result, tagged by its parameters' (sport, region) and by every session
        it lists, so invalidation can find it."""
        if not self.enabled:
            return
        key = query.cache_key
        tags = [_tag(query.sport, query.region)] + [_session_tag(s) for s in session_ids]
        try:
            # tag before the value: an invalidation racing this put then finds the key
            await self.backend.tag_many(tags, key, self.discovery_ttl)
            await self.backend.set(key, value, self.discovery_ttl)
        except Exception as exc:
            self._failed("set", exc)

    async def session_changed(
        self,
        session_id: int,
        placements: Iterable[tuple[str, str]],
        player_ids: Iterable[int],
        *,
        placement_changed: bool = True,
    ) -> None:
        """A session was created or updated: its key, its players' statistics and the discovery
        results that list it; when it may now match other searches (``placement_changed``: new,
        or sport, region, time, place or status changed), also the results of the searches
        that could list it. ``placements``: (sport, region) before and after."""
        if not self.enabled:
            return
        try:
            tags = {_session_tag(session_id)}
            if placement_changed:
                tags |= {
                    _tag(s, r) for sport, region in placements for s in (sport, None) for r in (region, None)
                }
            keys = await self.backend.pop_tagged(sorted(tags))
            keys += [self.session_key(session_id)] + [self.statistics_key(p) for p in player_ids]
            await self.backend.delete(keys)
        except Exception as exc:
            self._failed("invalidate", exc)

    async def membership_changed(self, session_id: int, player_id: int) -> None:
        """A player joined or left: the session and that player's statistics. Discovery entries
        are left to expire (their player counts may lag by up to the discovery TTL), so the busiest
        write does not empty the search cache."""
        if self.enabled:
            try:
                await self.backend.delete([self.session_key(session_id), self.statistics_key(player_id)])
            except Exception as exc:
                self._failed("invalidate", exc)

    async def player_changed(self, player_id: int, session_ids: Iterable[int]) -> None:
        if self.enabled:
            await self.backend.delete(
                [self.player_key(player_id)] + [self.session_key(s) for s in session_ids]
            )

    async def close(self) -> None:
        await self.backend.close()


def _tag(sport: str | None, region: str | None) -> str:
    return f"{TAGS}:{sport or '*'}:{region or '*'}"


def _session_tag(session_id: int) -> str:
    return f"{TAGS}:session:{session_id}"
