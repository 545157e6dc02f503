"""watchkeeper's own metrics, in a registry per app (so tests and several apps never share counters).

>>> metrics = SelfMetrics()
>>> metrics.ingest_samples.inc(3)
>>> b"watchkeeper_ingest_samples_total 3.0" in metrics.exposition()[0]
True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


class StoreStats(Protocol):
    """The part of `tsdb.storage.TsdbStats` the metrics read."""

    @property
    def num_series(self) -> int: ...
    @property
    def chunks_written_total(self) -> int: ...


class _StoreCollector:
    """Head series and chunks written, read from the store at scrape time."""

    def __init__(self, stats: Callable[[], StoreStats | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        if stats is None:
            return
        yield GaugeMetricFamily(
            "watchkeeper_head_series", "Series in the head of the store.", value=stats.num_series
        )
        yield CounterMetricFamily(
            "watchkeeper_chunks_written", "Chunks persisted by the store.", value=stats.chunks_written_total
        )


class SelfMetrics:
    """The metrics of one watchkeeper app and its registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.ingest_samples = Counter(
            "watchkeeper_ingest_samples", "Samples accepted by the ingest endpoints.", registry=r
        )
        self.ingest_bytes = Counter(
            "watchkeeper_ingest_bytes",
            "Request body bytes received by the ingest endpoints (as sent).",
            registry=r,
        )
        self.ingest_rejected = Counter(
            "watchkeeper_ingest_rejected_samples",
            "Samples refused by the ingest endpoints, by reason.",
            ["reason"],
            registry=r,
        )
        self.wal_fsync = Histogram(
            "watchkeeper_wal_fsync_duration_seconds",
            "Duration of write-ahead-log fsyncs.",
            buckets=_FSYNC_BUCKETS,
            registry=r,
        )
        self.http_duration = Histogram(
            "watchkeeper_http_request_duration_seconds",
            "HTTP request latency by route template, method and status code.",
            ["handler", "method", "code"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )

    def watch_store(self, stats: Callable[[], StoreStats | None]) -> None:
        """Expose the store's head series and chunks written (read at each scrape)."""
        self.registry.register(_StoreCollector(stats))

    def reject(self, reason: str, count: int) -> None:
        if count:
            self.ingest_rejected.labels(reason).inc(count)

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """(body, content type) of the metrics in the format the `Accept` header asks for."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class HttpMetricsMiddleware:
    """Pure ASGI middleware timing each request, labelled by the matched route's template
    (``/api/v1/label/{name}/values``), never the raw path, so label cardinality stays bounded."""

    def __init__(self, app: ASGIApp, metrics: SelfMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            handler = getattr(route, "path", None) or "other"
            self.metrics.http_duration.labels(handler, scope["method"], str(status)).observe(
                time.perf_counter() - start
            )
