"""The core API's cache: Redis when configured, this process's memory otherwise.

Keys and TTLs (seconds, from `CoreApiSettings`): ``session:{id}`` 300, ``player:{id}`` 600,
``discovery:{normalised params}`` 120, ``statistics:{playerId}`` 60. Invalidation:

- a session is updated -> ``session:{id}``, ``statistics:{p}`` of its players, the discovery
  results that list it, and, when its sport, region, time or status changed, the results of the
  searches that would list it now (below);
- a session is created -> the results of the searches that would list it;
- a player joins or leaves -> ``session:{id}`` is replaced by the new state (written only if no
  newer state is cached: a session's ``updated_at_ms`` grows with every write, and
  ``version:session:{id}`` keeps the cached one's), and that player's ``statistics:{p}`` dropped
  (discovery results keep their player count for at most their 2 min TTL);
- a player changes -> ``player:{id}`` and ``session:{s}`` of the sessions it is in.

Discovery keys are found through tags written next to each discovery entry --
``discovery-tags:{sport|*}:{region|*}`` by its parameters, ``discovery-tags:session:{id}`` by each
session it lists -- so invalidation never scans the keyspace. A tag is a sorted set scored by
the entry's *cutoff*: the start time of the last session it lists when the result is full
(``limit`` rows; results are ordered by start time), +inf otherwise. A session starting at ``t``
can only enter the results whose cutoff is >= ``t``, so a new game next week does not drop the
searches that list tonight's games (the searches the traffic repeats most).

Values are the answer's JSON bytes, gzip-compressed when at least ``gzip_minimum_size_bytes``
and gzip is on (`ApiCache.encode`, `is_gzip`).

```python
cache = ApiCache(MemoryBackend(CacheMetrics(registry)), settings)
await cache.put(cache.session_key(7), b'{"id": 7}', cache.session_ttl)
await cache.get(cache.session_key(7))     # b'{"id": 7}'; counted as a hit of cache "session"
```
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from watchkeeper.demo.repository import DiscoveryQuery
from watchkeeper.demo.settings import CoreApiSettings
from watchkeeper.exporters.cache import CacheMetrics, prefix_name

TAGS = "discovery-tags"
log = logging.getLogger("watchkeeper.demo.cache")


class CacheBackend(Protocol):
    metrics: CacheMetrics | None

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None: ...
    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_seconds: int) -> None: ...
    async def set_if_newer(self, key: str, value: bytes, version: int, ttl_seconds: int) -> bool: ...
    async def delete(self, keys: Iterable[str]) -> None: ...
    async def tag_many(self, tags: Iterable[str], key: str, score: float, ttl_seconds: int) -> None: ...
    async def pop_tagged(self, tags: Mapping[str, float]) -> list[str]: ...
    async def close(self) -> None: ...


class MemoryBackend:
    """A dict with expiry times; counts hits and misses itself (Redis gets `instrument_redis`)."""

    def __init__(self, metrics: CacheMetrics | None, *, clock: Any = time.monotonic) -> None:
        self.metrics = metrics
        self.clock = clock
        self.values: dict[str, tuple[float, bytes]] = {}
        self.tags: dict[str, dict[str, float]] = {}
        self.versions: dict[str, int] = {}

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

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_seconds: int) -> None:
        for key, value in items:
            await self.set(key, value, ttl_seconds)

    async def set_if_newer(self, key: str, value: bytes, version: int, ttl_seconds: int) -> bool:
        if self.versions.get(key, -1) > version:  # the same state may be written again (after expiry)
            return False
        self.versions[key] = version
        await self.set(key, value, ttl_seconds)
        return True

    async def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.values.pop(key, None)
            self.versions.pop(key, None)

    async def tag_many(self, tags: Iterable[str], key: str, score: float, ttl_seconds: int) -> None:
        for tag in tags:
            self.tags.setdefault(tag, {})[key] = score

    async def pop_tagged(self, tags: Mapping[str, float]) -> list[str]:
        out: set[str] = set()
        for tag, min_score in tags.items():
            members = self.tags.get(tag, {})
            gone = [k for k, score in members.items() if score >= min_score]
            for k in gone:
                del members[k]
            out.update(gone)
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
        self.metrics = metrics
        self._set_if_newer = self.client.register_script(_SET_IF_NEWER)
        if metrics is not None:
            instrument_redis(self.client, metrics=metrics)

    async def get(self, key: str) -> bytes | None:
        value = await self.client.get(key)
        return value if value is None else bytes(value)

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        await self.client.set(key, value, ex=ttl_seconds)

    async def set_if_newer(self, key: str, value: bytes, version: int, ttl_seconds: int) -> bool:
        done = await self._set_if_newer(keys=[key, _version_key(key)], args=[value, version, ttl_seconds])
        return bool(done)

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_seconds: int) -> None:
        for start in range(0, len(items), 500):  # one round trip per 500 keys
            async with self.client.pipeline(transaction=False) as pipe:
                for key, value in items[start : start + 500]:
                    pipe.set(key, value, ex=ttl_seconds)
                await pipe.execute()

    async def delete(self, keys: Iterable[str]) -> None:
        keys = [k for key in keys for k in (key, _version_key(key))]
        if keys:
            await self.client.delete(*keys)

    async def tag_many(self, tags: Iterable[str], key: str, score: float, ttl_seconds: int) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for tag in tags:
                pipe.zadd(tag, {key: score})
                pipe.expire(tag, ttl_seconds)
            await pipe.execute()

    async def pop_tagged(self, tags: Mapping[str, float]) -> list[str]:
        async with self.client.pipeline(transaction=True) as pipe:
            for tag, min_score in tags.items():
                pipe.zrangebyscore(tag, _score(min_score), "+inf")
                pipe.zremrangebyscore(tag, _score(min_score), "+inf")
            replies = await pipe.execute()
        keys: set[str] = set()
        for members in replies[::2]:
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
        # compress once when caching, not on every hit (the GZip middleware passes encoded bodies on)
        self.compress_from_bytes = (
            settings.gzip_minimum_size_bytes if settings.gzip_enabled and settings.cache_gzip else None
        )
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

    async def get(self, key: str, prefetched: tuple[str, bytes | None] | None = None) -> bytes | None:
        """The cached value; None when absent, disabled or the cache is unreachable (then the API
        reads the database: a cache outage slows the API down but does not fail it).

        ``prefetched``: (key, value) already read from the backend for this request (the rate
        limiter's script reads it in the same round trip); used, and counted as this lookup's hit
        or miss, when its key is ``key``."""
        if not self.enabled:
            return None
        if prefetched is not None and prefetched[0] == key:
            if self.backend.metrics is not None:
                self.backend.metrics.result(prefix_name(key), prefetched[1] is not None)
            return prefetched[1]
        try:
            return await self.backend.get(key)
        except Exception as exc:
            self._failed("get", exc)
            return None

    async def put_session(self, row: Mapping[str, Any], value: bytes) -> bytes:
        """Store a session's answer unless the cache holds a newer state of it (its
        ``updated_at_ms`` orders its states: a join's answer racing an older read of the same
        session does not lose to it). Returns the stored form."""
        stored = self.encode(value)
        if self.enabled:
            try:
                key = self.session_key(int(row["id"]))
                await self.backend.set_if_newer(key, stored, int(row["updated_at_ms"]), self.session_ttl)
            except Exception as exc:
                self._failed("set", exc)
        return stored

    async def put_many(self, items: Sequence[tuple[str, bytes]], ttl_seconds: int) -> int:
        """Store several values (`encode`d) with one TTL, in few round trips: cache warming."""
        if self.enabled and items:
            try:
                await self.backend.set_many([(k, self.encode(v)) for k, v in items], ttl_seconds)
            except Exception as exc:
                self._failed("set", exc)
        return len(items)

    def encode(self, value: bytes) -> bytes:
        """What is stored for ``value``: gzip-compressed when large enough (see `is_gzip`)."""
        if self.enabled and self.compress_from_bytes is not None and len(value) >= self.compress_from_bytes:
            return zlib.compress(value, 6, wbits=31)  # a gzip member, as gzip.compress(mtime=0)
        return value

    async def put(self, key: str, value: bytes, ttl_seconds: int) -> bytes:
        """Store ``value``; returns the stored form (`encode`), to answer with."""
        stored = self.encode(value)
        if self.enabled:
            try:
                await self.backend.set(key, stored, ttl_seconds)
            except Exception as exc:
                self._failed("set", exc)
        return stored

    def _failed(self, op: str, exc: Exception) -> None:
        if op not in self._logged:
            self._logged.add(op)
            log.warning("cache %s failed, serving from the database: %r", op, exc)

    async def put_discovery(
        self, query: DiscoveryQuery, value: bytes, rows: Sequence[Mapping[str, Any]]
    ) -> bytes:
        """Cache a search result, tagged by its parameters' (sport, region) and by every session
        it lists, so invalidation can find it; scored by its cutoff (module docstring). Returns
        the stored form."""
        if not self.enabled:
            return value
        stored = self.encode(value)
        key = query.cache_key
        tags = [_tag(query.sport, query.region)] + [_session_tag(int(r["id"])) for r in rows]
        cutoff = float(rows[-1]["starts_at_ms"]) if rows and len(rows) >= query.limit else math.inf
        try:
            # tag before the value: an invalidation racing this put then finds the key
            await self.backend.tag_many(tags, key, cutoff, self.discovery_ttl)
            await self.backend.set(key, stored, self.discovery_ttl)
        except Exception as exc:
            self._failed("set", exc)
        return stored

    async def session_changed(
        self, session_id: int, placement: tuple[str, str, int] | None, player_ids: Iterable[int]
    ) -> None:
        """A session was created or updated: its key, its players' statistics and the discovery
        results that list it; with ``placement`` (sport, region, start time: it is new, or open
        and its sport, region, time or status changed), also the results of the searches that
        would list it now. Where it was before needs nothing more: a result that listed it is
        found by its session tag, one that did not is not changed by its leaving."""
        if not self.enabled:
            return
        try:
            tags = {_session_tag(session_id): -math.inf}
            if placement is not None:
                sport, region, starts_at_ms = placement
                for s in (sport, None):
                    for r in (region, None):
                        tags[_tag(s, r)] = float(starts_at_ms)
            keys = await self.backend.pop_tagged(tags)
            keys += [self.session_key(session_id)] + [self.statistics_key(p) for p in player_ids]
            await self.backend.delete(keys)
        except Exception as exc:
            self._failed("invalidate", exc)

    async def membership_changed(self, session: Mapping[str, Any], value: bytes, player_id: int) -> None:
        """A player joined or left: the session's entry becomes its new state (``value``, written
        only if newer: `put_session`), so its many readers do not all go to the database; that
        player's statistics are dropped. Discovery entries are left to expire (their player
        counts may lag by up to the discovery TTL), so the busiest write does not empty the
        search cache."""
        if self.enabled:
            try:
                await self.backend.delete([self.statistics_key(player_id)])
            except Exception as exc:
                self._failed("invalidate", exc)
            await self.put_session(session, value)

    async def player_changed(self, player_id: int, session_ids: Iterable[int]) -> None:
        if self.enabled:
            await self.backend.delete(
                [self.player_key(player_id)] + [self.session_key(s) for s in session_ids]
            )

    async def close(self) -> None:
        await self.backend.close()


def is_gzip(stored: bytes) -> bool:
    """A stored value `ApiCache.encode` compressed (JSON never starts with gzip's magic)."""
    return stored[:2] == b"\x1f\x8b"


_SET_IF_NEWER = """
local known = tonumber(redis.call('GET', KEYS[2]) or '-1')
if known > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
return 1
"""


def _version_key(key: str) -> str:
    return f"version:{key}"


def _tag(sport: str | None, region: str | None) -> str:
    return f"{TAGS}:{sport or '*'}:{region or '*'}"


def _session_tag(session_id: int) -> str:
    return f"{TAGS}:session:{session_id}"


def _score(value: float) -> str | float:
    return "-inf" if value == -math.inf else "+inf" if value == math.inf else value
