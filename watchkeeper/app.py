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
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from watchkeeper import __version__
from watchkeeper.alerting.api import alertmanager_router, silence_json
from watchkeeper.alerting.runner import wall_ms
from watchkeeper.alerting.service import AlertingService
from watchkeeper.backup.job import backup_router, schedule_backups
from watchkeeper.collector.auth import IngestAuth
from watchkeeper.collector.extra_routes import collector_router
from watchkeeper.collector.limits import Limits
from watchkeeper.collector.remote_write import AppendedSamples, RemoteWriteIngester
from watchkeeper.collector.router import ingest_router
from watchkeeper.collector.scrape import ScrapeManager
from watchkeeper.collector.targets import default_scrape_configs
from watchkeeper.config import Settings
from watchkeeper.dashboards.adapters import (
    AlertmanagerSilences,
    PrometheusAlerts,
    PrometheusRules,
    PrometheusTargets,
    stored_history,
)
from watchkeeper.dashboards.loader import BUILTIN_DIR
from watchkeeper.dashboards.router import DashboardOptions, dashboards_router
from watchkeeper.errors import IngestError, QueryError, StorageError, WatchkeeperError
from watchkeeper.exporters.builtin import BuiltinExporters
from watchkeeper.forwarding.queue import Forwarders
from watchkeeper.promql.api import query_router
from watchkeeper.promql.cache import CachedEngine, QueryCache, store_namespace
from watchkeeper.promql.cache import connect as connect_query_cache
from watchkeeper.promql.engine import Engine
from watchkeeper.replication import Replicator
from watchkeeper.rules.api import alerts_data, rules_data, rules_router
from watchkeeper.rules.manager import RuleManager
from watchkeeper.rules.notify import DispatcherSink
from watchkeeper.rules.service import RulesService
from watchkeeper.security.stack import SecurityStack, install_security
from watchkeeper.selfmetrics import HttpMetricsMiddleware, SelfMetrics, StoreStats
from watchkeeper.slo.probes import ProbeManager
from watchkeeper.slo.reports import schedule_reports
from watchkeeper.slo.router import SloState, load_slo, slo_router
from watchkeeper.tsdb.api import status_router
from watchkeeper.tsdb.schema import make_engine, migrate, sqlite_url
from watchkeeper.tsdb.storage import Storage

log = logging.getLogger("watchkeeper.app")
T = TypeVar("T")


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
    scrape_manager: ScrapeManager | None = None
    alerting: AlertingService | None = None
    rules: RulesService | None = None
    slo: SloState | None = None
    probes: ProbeManager | None = None
    forwarders: Forwarders | None = None
    replicator: Replicator | None = None
    query_cache: QueryCache | None = None
    security: SecurityStack | None = None
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

    def require_query_engine(self) -> Engine | CachedEngine:
        """The engine, with range queries through the results cache when there is one."""
        engine = self.require_engine()
        return engine if self.query_cache is None else CachedEngine(engine, self.query_cache)

    def require_ingester(self) -> RemoteWriteIngester:
        if self.ingester is None:
            raise NotReady(self.not_ready_reason())
        return self.ingester

    def require_alerting(self) -> AlertingService:
        if self.alerting is None:
            raise NotReady(self.not_ready_reason())
        return self.alerting

    def require_rules(self) -> RuleManager:
        if self.rules is None:
            raise NotReady(self.not_ready_reason())
        return self.rules.manager

    def require_slo(self) -> SloState:
        if self.slo is None:
            raise NotReady(self.not_ready_reason())
        return self.slo

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
        malloc_tuning=s.malloc_tuning_applies,
        select_cache_bytes=s.select_cache_bytes,
        on_wal_fsync=state.metrics.wal_fsync.observe,
    )
    state.engine = Engine(
        storage,
        lookback_ms=s.query_lookback_delta_ms,
        max_samples=s.query_max_samples,
        timeout_seconds=s.query_timeout_seconds,
    )
    if s.redis_url and s.query_cache.enabled:
        state.query_cache = connect_query_cache(
            s.redis_url, s.query_cache, namespace=store_namespace(s.database_url, s.data_dir),
            out_of_order_window_ms=s.out_of_order_window_ms, registry=state.metrics.registry,
        )
    state.ingester = RemoteWriteIngester(storage, limits_from(s), state.metrics)
    if s.replication.enabled:  # applies the other replicas' samples through an ingester of its own
        state.replicator = Replicator.start(s.replication, redis_url=s.redis_url, data_dir=s.data_dir,
                                            ingester=RemoteWriteIngester(storage, limits_from(s)),
                                            registry=state.metrics.registry)
    if state.forwarders is not None:
        state.forwarders.apply(s.remote_write, flush_deadline_seconds=s.remote_write_flush_deadline_seconds)
    state.ingester.after_append = _after_append(state)
    if state.replicator is not None:  # ready only once the other replicas' writes are applied
        state.replicator.catch_up(s.replication.catch_up_timeout_seconds)
    _start_services(state, storage, state.engine)
    state.storage = storage
    log.info(
        "store open",
        extra={
            "data_dir": str(s.data_dir),
            "series": storage.num_series,
            "seconds": round(time.monotonic() - started, 3),
        },
    )


def _start_services(state: AppState, storage: Storage, engine: Engine) -> None:
    """Alerting (dispatcher + outbox), SLOs (their generated rules) and rule evaluation, on the
    store's database."""
    s = state.settings
    state.slo, rules_config = load_slo(s.slo, s.rules_config(), store=storage, engine=engine,
                                       base_dir=s.config_dir, rules_dir=s.data_dir / s.slo.rules_dir)
    database = make_engine(s.database_url or sqlite_url(s.data_dir))
    migrate(database)  # a no-op after the store's own open; cheap
    state.alerting = AlertingService.start(
        s.alerting, database=database, registry=state.metrics.registry, redis_url=s.redis_url,
        lease_ms=s.leader_lease_ms,
    )
    state.rules = RulesService.start(
        rules_config,
        storage=storage,
        engine=engine,
        database=database,
        sink=DispatcherSink(state.alerting.dispatcher),
        base_dir=s.config_dir,
        registry=state.metrics.registry,
        is_leader=state.alerting.leadership.is_leader,
    )
    _schedule_reports(state, s, storage, engine)
    schedule_backups(state.rules.scheduler.scheduler, s, registry=state.metrics.registry,
                     is_leader=state.alerting.leadership.is_leader)
    state.probes = ProbeManager(s.slo.probes, storage, max_concurrency=s.slo.max_probe_concurrency)


def _schedule_reports(state: AppState, s: Settings, storage: Storage, engine: Engine) -> None:
    """The scheduled SLO/uptime/business reports of `s` (start-up and reload)."""
    assert state.rules is not None and state.alerting is not None
    schedule_reports(
        state.rules.scheduler.scheduler,
        s.slo,
        store=storage,
        engine=engine,
        specs=lambda: state.require_slo().specs,  # the specs of the last reload
        receivers={r.name: r for r in s.alerting.receivers},
        is_leader=state.alerting.leadership.is_leader,
    )


def _stop_services(state: AppState) -> None:
    rules, alerting = state.rules, state.alerting
    state.rules = state.alerting = None
    if rules is not None:
        rules.stop()
    if alerting is not None:
        alerting.stop()


async def _start(state: AppState) -> None:
    try:
        await anyio.to_thread.run_sync(_open_storage, state)
    except Exception as exc:
        state.startup_error = exc
        log.exception("the store failed to open; the server stays up but not ready")
        return
    state.tasks.append(asyncio.create_task(_retention_loop(state)))
    if state.scrape_manager is not None:
        await state.scrape_manager.start()
    if state.probes is not None:
        await state.probes.start()


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
    if state.forwarders is not None:  # ingest has stopped: send what is queued
        state.forwarders.stop(deadline_seconds=state.settings.remote_write_flush_deadline_seconds)
    if state.replicator is not None:  # publish what is queued, stop applying before the store closes
        state.replicator.stop()
    _stop_services(state)
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
    state.forwarders = Forwarders(state.metrics.registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opener = asyncio.create_task(_start(state))
        _on_sighup(state)
        try:
            yield
        finally:
            await opener
            if state.scrape_manager is not None:
                await state.scrape_manager.stop()
            if state.probes is not None:
                await state.probes.stop()
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

    exporters = BuiltinExporters(settings.exporters)

    @app.get("/metrics")
    async def self_metrics(request: Request, exporter: str | None = None) -> Response:
        if exporter is not None:  # a built-in exporter's scrape job (watchkeeper.exporters.builtin)
            status, headers, payload = await exporters.render(
                exporter,
                accept=request.headers.get("accept", ""),
                accept_encoding=request.headers.get("accept-encoding", ""),
            )
            return Response(payload, status_code=status, headers=dict(headers))
        body, content_type = state.metrics.exposition(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    @app.post("/-/reload", response_class=PlainTextResponse)
    async def reload_endpoint() -> str:
        await reload(state)
        return "configuration reloaded\n"

    auth = IngestAuth(settings.ingest_auth, bind_host=settings.host)
    scrape_configs = settings.scrape_configs
    if scrape_configs is None:
        scrape_configs = default_scrape_configs(settings.host, settings.port)
    own_jobs = exporters.scrape_configs(settings.host, settings.port, settings.scrape_interval)
    scrape_configs = [*scrape_configs, *own_jobs]
    state.scrape_manager = ScrapeManager(scrape_configs, state.require_ingester)
    app.include_router(ingest_router(state.require_ingester, auth=auth))
    app.include_router(
        collector_router(state.require_ingester, auth=auth, get_scrape=lambda: state.scrape_manager)
    )
    app.include_router(status_router(state.require_storage))
    app.include_router(query_router(state.require_engine, state.require_storage, lambda: state.query_cache))
    app.include_router(rules_router(state.require_rules))
    app.include_router(alertmanager_router(lambda: state.require_alerting().dispatcher))
    dashboards = _dashboard_options(state)
    app.include_router(dashboards_router(state.require_query_engine, state.require_storage, dashboards))
    app.include_router(slo_router(state.require_slo))
    app.include_router(backup_router(settings, ready=state.require_storage))
    state.security = install_security(app, settings, auth)
    return app


def _on_sighup(state: AppState) -> None:
    """SIGHUP reloads the configuration, as it does for Prometheus (main thread only)."""

    def handler() -> None:
        async def run() -> None:
            try:
                await reload(state)
            except WatchkeeperError as exc:
                log.error("reload failed", extra={"error": str(exc)})

        state.tasks.append(asyncio.create_task(run()))

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, handler)


async def reload(state: AppState) -> None:
    """Re-read the config file and apply what can change at run time: `reload_config` (off the
    event loop), then the uptime probes (their tasks live on the loop)."""
    new = await anyio.to_thread.run_sync(reload_config, state)
    if state.probes is not None and state.slo is not None:
        await state.probes.apply(state.slo.config.probes)
    log.info("configuration reloaded", extra={"config_file": str(new.config_file)})


def reload_config(state: AppState) -> Settings:
    """Re-read the config file and apply what can change at run time (security, ingest limits,
    alerting, remote-write, rules, SLO specs and report schedules); returns the new settings.
    An invalid file raises `ConfigError` and changes nothing."""
    s = state.settings
    new = s.reloaded()
    if state.security is not None:
        state.security.reload(new)
    if state.ingester is not None:
        state.ingester.limits = limits_from(new)
    if state.alerting is not None:
        state.alerting.reload(new.alerting)
    if state.forwarders is not None:
        deadline = new.remote_write_flush_deadline_seconds
        state.forwarders.apply(new.remote_write, flush_deadline_seconds=deadline)
        if state.ingester is not None:
            state.ingester.after_append = _after_append(state)
    if state.rules is not None and state.slo is not None:  # SLO specs reload with the rule files
        slo, rules_config = load_slo(new.slo, new.rules_config(), store=state.slo.store,
                                     engine=state.slo.engine, base_dir=new.config_dir,
                                     rules_dir=new.data_dir / new.slo.rules_dir)
        if state.rules.reload(rules_config):
            state.slo = slo
            _schedule_reports(state, new, state.slo.store, state.slo.engine)
        else:
            log.error("rule files are invalid; the previous rules stay loaded")
    return new


def _after_append(state: AppState) -> Callable[[AppendedSamples], None] | None:
    """What the ingester calls after each append: remote-write out, then replication."""
    forward = state.forwarders.sink() if state.forwarders is not None else None
    return forward if state.replicator is None else state.replicator.hook(forward)


def _dashboard_options(state: AppState) -> DashboardOptions:
    """The dashboards UI reads the other components through the same data as their APIs."""

    def silences() -> list[dict[str, Any]]:
        now = wall_ms()
        return [silence_json(x, now) for x in state.require_alerting().dispatcher.silences()]

    def optional(make: Callable[[], T]) -> Callable[[], T | None]:
        return lambda: make() if state.storage is not None else None

    s = state.settings
    return DashboardOptions(
        dirs=(BUILTIN_DIR, s.dashboards_dir),
        scrape_interval_ms=s.scrape_interval_ms,
        min_refresh_ms=s.dashboards_min_refresh_ms,
        get_rules=optional(lambda: PrometheusRules(lambda: rules_data(state.require_rules()))),
        get_alerts=optional(
            lambda: PrometheusAlerts(
                lambda: alerts_data(state.require_rules()),
                history=stored_history(lambda: state.require_rules().alert_store),
            )
        ),
        get_silences=optional(lambda: AlertmanagerSilences(silences)),
        get_targets=lambda: (
            PrometheusTargets(state.scrape_manager.targets_api) if state.scrape_manager is not None else None
        ),
    )


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
