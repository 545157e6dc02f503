"""The watchkeeper server: `create_app(settings)` builds the FastAPI app.

The store opens in the background when the app starts (a WAL replay can take a while), so
``/-/healthy`` answers at once and ``/-/ready`` turns from 503 to 200 when the store is open.
Shutdown (uvicorn handles SIGTERM) persists the head and closes the store.

>>> import uvicorn
>>> from watchkeeper.config import Settings
>>> uvicorn.run(create_app(Settings.load()), port=9470)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from watchkeeper import __version__
from watchkeeper.collector.limits import Limits
from watchkeeper.collector.remote_write import RemoteWriteIngester
from watchkeeper.collector.router import ingest_router
from watchkeeper.config import Settings
from watchkeeper.errors import IngestError, QueryError, StorageError, WatchkeeperError
from watchkeeper.promql.api import query_router
from watchkeeper.promql.engine import Engine
from watchkeeper.selfmetrics import HttpMetricsMiddleware, SelfMetrics, StoreStats
from watchkeeper.tsdb.api import status_router
from watchkeeper.tsdb.storage import Storage

log = logging.getLogger("watchkeeper.app")


class NotReady(StorageError):
    """The store is not open yet (or failed to open)."""


@dataclass
class AppState:
    """What the routes of one app share. `storage` is None until the store is open."""

    settings: Settings
    metrics: SelfMetrics
    storage: Storage | None = None
    engine: Engine | None = None
    ingester: RemoteWriteIngester | None = None
    startup_error: BaseException | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def require_storage(self) -> Storage:
        if self.storage is None:
            raise NotReady(self.not_ready_reason())
        return self.storage

    def require_engine(self) -> Engine:
        if self.engine is None:
            raise NotReady(self.not_ready_reason())
        return self.engine

    def require_ingester(self) -> RemoteWriteIngester:
        if self.ingester is None:
            raise NotReady(self.not_ready_reason())
        return self.ingester

    def not_ready_reason(self) -> str:
        if self.startup_error is not None:
            return f"the store failed to open: {self.startup_error}"
        return "the store is still opening (replaying its write-ahead log)"

    def store_stats(self) -> StoreStats | None:
        return self.storage.stats() if self.storage is not None else None


def limits_from(settings: Settings) -> Limits:
    lim = settings.limits
    return Limits(
        max_body_bytes=lim.max_body_bytes,
        max_labels_per_series=lim.max_labels_per_series,
        max_label_name_length=lim.max_label_name_length,
        max_label_value_length=lim.max_label_value_length,
        max_series_per_request=lim.max_series_per_request,
        max_active_series=lim.max_active_series,
    )


def _open_storage(state: AppState) -> None:
    s = state.settings
    started = time.monotonic()
    storage = Storage.open(
        data_dir=s.data_dir,
        database_url=s.database_url,
        retention_ms=s.retention_ms,
        out_of_order_window_ms=s.out_of_order_window_ms,
        wal_fsync=s.wal_fsync,
        on_wal_fsync=state.metrics.wal_fsync.observe,
    )
    state.engine = Engine(
        storage,
        lookback_ms=s.query_lookback_delta_ms,
        max_samples=s.query_max_samples,
        timeout_seconds=s.query_timeout_seconds,
    )
    state.ingester = RemoteWriteIngester(storage, limits_from(s), state.metrics)
    state.storage = storage
    log.info(
        "store open",
        extra={
            "data_dir": str(s.data_dir),
            "series": storage.num_series,
            "seconds": round(time.monotonic() - started, 3),
        },
    )


async def _start(state: AppState) -> None:
    try:
        await anyio.to_thread.run_sync(_open_storage, state)
    except Exception as exc:
        state.startup_error = exc
        log.exception("the store failed to open; the server stays up but not ready")
        return
    state.tasks.append(asyncio.create_task(_retention_loop(state)))


async def _retention_loop(state: AppState) -> None:
    """Delete data older than the retention period, every `retention_interval`."""
    interval = state.settings.retention_interval_seconds
    while True:
        await asyncio.sleep(interval)
        storage, ingester = state.storage, state.ingester
        if storage is None or ingester is None:
            continue
        now_ms = int(time.time() * 1000)
        try:
            # exclusive: retention may remove series whose refs the ingester has cached
            removed = await anyio.to_thread.run_sync(
                ingester.exclusive, partial(storage.apply_retention, now_ms)
            )
        except Exception:
            log.exception("retention failed")
            continue
        log.info("retention applied", extra={"chunks_deleted": removed})


def _shutdown_storage(state: AppState) -> None:
    storage = state.storage
    if storage is None:
        return
    state.storage = state.engine = state.ingester = None
    started = time.monotonic()
    try:
        storage.flush_head()
    finally:
        storage.close()
    log.info("store closed", extra={"seconds": round(time.monotonic() - started, 3)})


def create_app(settings: Settings, *, metrics: SelfMetrics | None = None) -> FastAPI:
    """The watchkeeper FastAPI app for `settings`; nothing is opened until it starts."""
    state = AppState(settings=settings, metrics=metrics or SelfMetrics())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opener = asyncio.create_task(_start(state))
        try:
            yield
        finally:
            await opener
            for task in state.tasks:
                task.cancel()
            for task in state.tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await anyio.to_thread.run_sync(_shutdown_storage, state)

    app = FastAPI(title="watchkeeper", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.watchkeeper = state
    state.metrics.watch_store(state.store_stats)
    app.add_middleware(HttpMetricsMiddleware, metrics=state.metrics)
    app.add_exception_handler(WatchkeeperError, _error_handler)  # type: ignore[arg-type]

    @app.get("/-/healthy", response_class=PlainTextResponse)
    async def healthy() -> str:
        return "watchkeeper is Healthy.\n"

    @app.get("/-/ready", response_class=PlainTextResponse)
    async def ready() -> Response:
        if state.storage is None:
            return PlainTextResponse(
                f"watchkeeper is not ready: {state.not_ready_reason()}.\n", status_code=503
            )
        return PlainTextResponse("watchkeeper is Ready.\n")

    @app.get("/metrics")
    async def self_metrics(request: Request) -> Response:
        body, content_type = state.metrics.exposition(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    app.include_router(ingest_router(state.require_ingester))
    app.include_router(status_router(state.require_storage))
    app.include_router(query_router(state.require_engine, state.require_storage))
    return app


async def _error_handler(request: Request, exc: WatchkeeperError) -> Response:
    """One mapping of the exception tree to HTTP: ingest errors as plain text (as Prometheus answers
    remote-write), everything else as the Prometheus API's JSON error body."""
    if isinstance(exc, IngestError):
        headers = {}
        retry_after = getattr(exc, "retry_after_seconds", None)
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        if exc.status >= 500:
            log.error("ingest failed", extra={"path": request.url.path, "error": str(exc)})
        return PlainTextResponse(str(exc) + "\n", status_code=exc.status, headers=headers)
    if isinstance(exc, QueryError):
        status, error_type = exc.status, exc.error_type
    elif isinstance(exc, NotReady):
        status, error_type = 503, "unavailable"
    else:
        status, error_type = 500, "internal"
        log.error("request failed", extra={"path": request.url.path, "error": repr(exc)})
    if request.url.path == "/api/v1/write":
        return PlainTextResponse(str(exc) + "\n", status_code=status)
    return JSONResponse({"status": "error", "errorType": error_type, "error": str(exc)}, status_code=status)
