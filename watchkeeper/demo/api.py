"""The reference core API: players, game sessions, discovery and statistics.

```python
from watchkeeper.demo import CoreApiSettings, coreapi_app
app = coreapi_app(CoreApiSettings(database_url="sqlite:///./data/coreapi.db", redis_url=None))
```

Reads go cache first (`ApiCache`); a hit returns the cached bytes untouched (large ones are
cached gzip-compressed and go out as they are to clients that accept gzip). With Redis, the rate
limiter's script reads the request's cache key on its way (`cache_prefetch`), so a cached read
costs one Redis round trip. Database work runs in worker threads. Middleware, outermost first:
the SDK's metrics, rate limiting, gzip.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import anyio.to_thread
import orjson
import sqlalchemy as sa
from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import Scope

from watchkeeper.demo import repository as repo
from watchkeeper.demo.cache import ApiCache, CacheBackend, MemoryBackend, RedisBackend, is_gzip
from watchkeeper.demo.ratelimit import (
    PREFETCHED,
    Limiter,
    MemoryLimiter,
    RateLimitMiddleware,
    RedisLimiter,
)
from watchkeeper.demo.schemas import Membership, PlayerIn, PlayerPatch, SessionIn, SessionPatch
from watchkeeper.demo.settings import REGIONS, SPORTS, CoreApiSettings, Region, Sport
from watchkeeper.exporters import (
    BusinessMetrics,
    CacheMetrics,
    ExportConfig,
    instrument,
    instrument_sqlalchemy,
    multiprocess,
)

log = logging.getLogger("watchkeeper.demo")
T = TypeVar("T")
WARM_LIMIT = 2000
#: a change to one of these can make a session match searches it did not match before
PLACEMENT_FIELDS = ("sport", "region", "starts_at_ms", "lat", "lon", "status")


def now_ms() -> int:
    return int(time.time() * 1000)


def _json(value: Any) -> bytes:
    # SQLAlchemy's column names are a str subclass, which orjson takes only with this option
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


@dataclass
class Metrics:
    """The core API's business metrics (by region, as the product team reads them)."""

    active_sessions: Any
    sessions_created: Any
    joins: Any
    players_registered: Any
    business: BusinessMetrics

    @classmethod
    def on(cls, registry: CollectorRegistry) -> Metrics:
        b = BusinessMetrics(registry)
        return cls(
            active_sessions=b.gauge(
                "coreapi_active_sessions", "Open game sessions", ("region",), multiprocess_mode="max"
            ),  # every worker sets the DB's count
            sessions_created=b.counter(
                "coreapi_sessions_created", "Game sessions created", ("sport", "region")
            ),
            joins=b.counter("coreapi_session_joins", "Players joining a game session", ("sport", "region")),
            players_registered=b.counter("coreapi_players_registered", "Players registered", ("region",)),
            business=b,
        )

    def feature(self, feature: str, region: str | None) -> None:
        self.business.event("coreapi_feature_used", feature=feature, region=region or "any")


@dataclass
class CoreApi:
    settings: CoreApiSettings
    engine: sa.Engine
    cache: ApiCache
    metrics: Metrics
    registry: CollectorRegistry
    redis: Any = None

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(lambda: fn(self.engine, *args, **kwargs))


def coreapi_app(
    settings: CoreApiSettings | None = None, *, registry: CollectorRegistry | None = None
) -> FastAPI:
    """Build the core API; tables are created (and seeded, if asked) at start-up."""
    settings = settings or CoreApiSettings()
    registry = registry if registry is not None else CollectorRegistry()
    app = FastAPI(title="core API", docs_url="/docs", redoc_url=None, lifespan=_lifespan)
    if settings.instrument and settings.metrics_multiprocess_dir is not None:
        # before any metric exists: prometheus-client picks its value class at metric creation
        multiprocess.enable(settings.metrics_multiprocess_dir)
    engine = repo.make_engine(settings.database_url)
    if settings.instrument:
        instrument_sqlalchemy(engine, registry=registry, slow_query_seconds=settings.slow_query_seconds)
    cache_metrics = CacheMetrics(registry) if settings.instrument else None
    redis_client: Any = None
    backend: CacheBackend
    if settings.redis_url:
        backend = RedisBackend(settings.redis_url, cache_metrics)
        redis_client = backend.client
    else:
        backend = MemoryBackend(cache_metrics)
    core = CoreApi(
        settings, engine, ApiCache(backend, settings), Metrics.on(registry), registry, redis_client
    )
    app.state.core = core

    if settings.gzip_enabled:
        app.add_middleware(GZipMiddleware, minimum_size=settings.gzip_minimum_size_bytes)
    if settings.rate_limit_enabled:
        limiter: Limiter
        if redis_client is not None:
            limiter = RedisLimiter(
                redis_client,
                limit=settings.rate_limit_requests,
                window_seconds=settings.rate_limit_window_seconds,
            )
        else:
            limiter = MemoryLimiter(
                limit=settings.rate_limit_requests, window_seconds=settings.rate_limit_window_seconds
            )
        prefetch = settings.cache_enabled and settings.cache_prefetch and redis_client is not None
        app.add_middleware(RateLimitMiddleware, limiter=limiter, prefetch=_cache_key if prefetch else None)
    if settings.fault_injection:
        app.middleware("http")(_faults)
    if settings.instrument:  # added last: outermost, so 429s, injected faults and gzip time are measured
        export = ExportConfig(multiprocess_dir=settings.metrics_multiprocess_dir)
        instrument(app, registry=registry, export=export)

    @app.exception_handler(repo.CoreApiError)
    async def _domain_error(request: Request, exc: repo.CoreApiError) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    _routes(app, core)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory: ``uvicorn --factory watchkeeper.demo.api:app_from_env`` (``COREAPI_*``)."""
    return coreapi_app(CoreApiSettings())


async def _faults(request: Request, call_next: Callable[[Request], Any]) -> Response:
    latency = request.headers.get("x-demo-latency-ms")
    if latency and latency.isdigit():
        await asyncio.sleep(min(int(latency), 30_000) / 1000)
    if request.headers.get("x-demo-fault") == "error":
        return JSONResponse({"detail": "injected fault"}, status_code=500)
    response: Response = await call_next(request)
    return response


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    core: CoreApi = app.state.core
    await anyio.to_thread.run_sync(repo.create_schema, core.engine)
    if core.settings.seed_players:
        await core.db(repo.seed, num_players=core.settings.seed_players, now_ms=now_ms())
    if core.settings.cache_enabled and core.settings.cache_warming:
        started = time.monotonic()
        count = await warm(core)
        log.info("cache warmed", extra={"entries": count, "seconds": round(time.monotonic() - started, 3)})
    refresher = asyncio.create_task(_refresh_active_sessions(core))
    try:
        yield
    finally:
        refresher.cancel()
        await core.cache.close()
        core.engine.dispose()


async def _refresh_active_sessions(core: CoreApi, interval_seconds: float = 15.0) -> None:
    while True:
        try:
            counts = await core.db(repo.active_sessions_by_region)
            for region, n in counts.items():
                core.metrics.active_sessions.set(n, region=region)
        except Exception:
            log.exception("cannot count active sessions")
        await asyncio.sleep(interval_seconds)


async def warm(core: CoreApi) -> int:
    """Load the hot set: the soonest open sessions, the first players, the statistics of the
    players in those sessions, the default discovery per sport and region. Returns the number of
    entries written."""
    sessions, players, stats = await core.db(repo.warm_rows, limit=WARM_LIMIT, now_ms=now_ms())
    cache = core.cache
    count = await cache.put_many(
        [(cache.session_key(r["id"]), _json(r)) for r in sessions], cache.session_ttl
    )
    count += await cache.put_many([(cache.player_key(r["id"]), _json(r)) for r in players], cache.player_ttl)
    count += await cache.put_many(
        [(cache.statistics_key(r["player_id"]), _json(r)) for r in stats], cache.statistics_ttl
    )
    for sport in SPORTS:
        for region in REGIONS:
            q = repo.DiscoveryQuery.normalised(sport=sport, region=region)
            rows = await core.db(repo.discover, q, now_ms=now_ms())
            await core.cache.put_discovery(q, _json(rows), rows)
            count += 1
    return count


_DISCOVERY_PARAMS: dict[str, Callable[[str], Any]] = {
    "sport": str,
    "region": str,
    "starts_after_ms": int,
    "starts_before_ms": int,
    "lat": float,
    "lon": float,
    "radius_km": float,
    "limit": int,
}


def _cache_key(scope: Scope) -> str | None:
    """The cache key a GET is about to read (the rate limiter prefetches it), or None. Invalid
    input gives a key the handler will not ask for (it answers 422), or None: never a wrong hit."""
    if scope["method"] != "GET":
        return None
    parts = scope["path"].split("/")
    try:
        if len(parts) == 3 and parts[1] == "sessions":
            return ApiCache.session_key(int(parts[2]))
        if len(parts) == 3 and parts[1] == "players":
            return ApiCache.player_key(int(parts[2]))
        if len(parts) == 4 and parts[1] == "players" and parts[3] == "statistics":
            return ApiCache.statistics_key(int(parts[2]))
        if scope["path"] == "/discovery":
            query = parse_qsl(scope["query_string"].decode("latin-1"))
            params = {k: _DISCOVERY_PARAMS[k](v) for k, v in query if k in _DISCOVERY_PARAMS}
            return repo.DiscoveryQuery.normalised(**params).cache_key
    except (ValueError, OverflowError):  # e.g. radius_km=inf: the handler refuses it
        return None
    return None


def _prefetched(request: Request) -> tuple[str, bytes | None] | None:
    value: tuple[str, bytes | None] | None = request.scope.get(PREFETCHED)
    return value


def _placement(row: dict[str, Any]) -> tuple[str, str, int] | None:
    """Where an open session shows up in discovery: (sport, region, start time)."""
    return (row["sport"], row["region"], int(row["starts_at_ms"])) if row["status"] == "open" else None


def _answer(stored: bytes, request: Request, cache_state: str) -> Response:
    """A cached (or just cached) body; a compressed one goes out as it is to a client that accepts
    gzip, decompressed to one that does not."""
    headers = {"x-cache": cache_state}
    if is_gzip(stored):
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers.update({"content-encoding": "gzip", "vary": "Accept-Encoding"})
        else:
            stored = gzip.decompress(stored)
    return Response(stored, media_type="application/json", headers=headers)


def _fresh(body: bytes, status_code: int = 200) -> Response:
    return Response(body, status_code=status_code, media_type="application/json", headers={"x-cache": "miss"})


def _routes(app: FastAPI, core: CoreApi) -> None:
    cache, metrics = core.cache, core.metrics

    async def read_through(
        request: Request,
        key: str,
        load: Callable[[], Awaitable[Any]],
        store: Callable[[Any], Awaitable[bytes]],
    ) -> Response:
        """A cached read: the stored body on a hit; on a miss `load` from the database and `store`
        (which caches the row and returns the body to send)."""
        hit = await cache.get(key, _prefetched(request))
        if hit is not None:
            return _answer(hit, request, "hit")
        return _answer(await store(await load()), request, "miss")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/players", status_code=201)
    async def create_player(body: PlayerIn) -> Response:
        row = await core.db(
            repo.create_player, name=body.name, region=body.region, skill=body.skill, now_ms=now_ms()
        )
        metrics.players_registered.inc(region=body.region)
        data = _json(row)
        await cache.put(cache.player_key(row["id"]), data, cache.player_ttl)
        return _fresh(data, 201)

    @app.get("/players/{player_id}")
    async def get_player(player_id: int, request: Request) -> Response:
        key = cache.player_key(player_id)
        return await read_through(request, key, lambda: core.db(repo.get_player, player_id),
                                  lambda row: cache.put(key, _json(row), cache.player_ttl))

    @app.patch("/players/{player_id}")
    async def update_player(player_id: int, body: PlayerPatch) -> Response:
        changes = body.model_dump(exclude_none=True)
        row, session_ids = await core.db(repo.update_player, player_id, changes, now_ms=now_ms())
        await cache.player_changed(player_id, session_ids)
        metrics.feature("profile_update", row["region"])
        return _fresh(_json(row))

    @app.get("/players/{player_id}/statistics")
    async def player_statistics(player_id: int, request: Request) -> Response:
        key = cache.statistics_key(player_id)
        return await read_through(request, key, lambda: core.db(repo.statistics, player_id, now_ms=now_ms()),
                                  lambda row: cache.put(key, _json(row), cache.statistics_ttl))

    @app.post("/sessions", status_code=201)
    async def create_session(body: SessionIn) -> Response:
        row = await core.db(repo.create_session, body.model_dump(), now_ms=now_ms())
        await cache.session_changed(row["id"], _placement(row), [body.host_id])
        metrics.sessions_created.inc(sport=row["sport"], region=row["region"])
        metrics.active_sessions.inc(region=row["region"])
        data = _json(row)
        await cache.put_session(row, data)
        return _fresh(data, 201)

    @app.get("/sessions/{session_id}")
    async def get_session(session_id: int, request: Request) -> Response:
        return await read_through(request, cache.session_key(session_id),
                                  lambda: core.db(repo.get_session, session_id),
                                  lambda row: cache.put_session(row, _json(row)))

    @app.patch("/sessions/{session_id}")
    async def update_session(session_id: int, body: SessionPatch) -> Response:
        before, after = await core.db(
            repo.update_session, session_id, body.model_dump(exclude_none=True), now_ms=now_ms()
        )
        moved = any(before[f] != after[f] for f in PLACEMENT_FIELDS)
        players = {p["id"] for p in before["players"]} | {p["id"] for p in after["players"]}
        await cache.session_changed(after["id"], _placement(after) if moved else None, sorted(players))
        metrics.feature("session_update", after["region"])
        return _fresh(_json(after))

    @app.post("/sessions/{session_id}/join")
    async def join(session_id: int, body: Membership) -> Response:
        row = await core.db(repo.join_session, session_id, body.player_id, now_ms=now_ms())
        data = _json(row)
        await cache.membership_changed(row, data, body.player_id)
        metrics.joins.inc(sport=row["sport"], region=row["region"])
        return _fresh(data)

    @app.post("/sessions/{session_id}/leave")
    async def leave(session_id: int, body: Membership) -> Response:
        row = await core.db(repo.leave_session, session_id, body.player_id, now_ms=now_ms())
        data = _json(row)
        await cache.membership_changed(row, data, body.player_id)
        return _fresh(data)

    @app.get("/discovery")
    async def discovery(
        request: Request,
        sport: Sport | None = None,
        region: Region | None = None,
        starts_after_ms: int | None = Query(None, gt=0),
        starts_before_ms: int | None = Query(None, gt=0),
        lat: float | None = Query(None, ge=-90, le=90),
        lon: float | None = Query(None, ge=-180, le=180),
        radius_km: float | None = Query(None, gt=0, le=500),
        limit: int = Query(20, ge=1, le=100),
    ) -> Response:
        q = repo.DiscoveryQuery.normalised(
            sport=sport,
            region=region,
            starts_after_ms=starts_after_ms,
            starts_before_ms=starts_before_ms,
            lat=lat,
            lon=lon,
            radius_km=radius_km,
            limit=limit,
        )
        if q.radius_km is not None:
            metrics.feature("discovery_by_distance", region)
        if q.starts_after_ms is not None or q.starts_before_ms is not None:
            metrics.feature("discovery_by_time", region)
        return await read_through(request, q.cache_key, lambda: core.db(repo.discover, q, now_ms=now_ms()),
                                  lambda rows: cache.put_discovery(q, _json(rows), rows))
