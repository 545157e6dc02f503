"""The HTTP metric families of the middleware, on a prometheus-client registry.

Label children are bound once per (method, route, status) and kept, so a request costs two
increments and one histogram observation. Route label values are capped (``max_routes``), so even
a mount with path parameters cannot grow the series set without bound.

```python
metrics = PrometheusHttpMetrics(registry=CollectorRegistry())
series = metrics.series("GET", "/items/{item_id}", 200)
series.record(0.012, trace_id=None)
```
"""

from __future__ import annotations

import functools
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from watchkeeper.exporters.cardinality import LabelCap

DURATION_BUCKETS_SECONDS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
SIZE_BUCKETS_BYTES: tuple[float, ...] = (100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000)
WEBSOCKET_BUCKETS_SECONDS: tuple[float, ...] = (0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0)


class Series(Protocol):
    """One bound (method, route, status) series: a request count and a latency histogram."""

    def record(self, duration_seconds: float | None, trace_id: str | None) -> None:
        """Count one request; observe its duration unless None (long-lived streams)."""
        ...


class UpDown(Protocol):
    def inc(self) -> None: ...
    def dec(self) -> None: ...


class HttpMetrics(Protocol):
    """Where the middleware writes; prometheus-client here, OpenTelemetry in ``otlp.py``."""

    def series(self, method: str, route: str, status: int) -> Series: ...
    def in_progress(self, method: str) -> UpDown: ...
    def exception(self, route: str, exception: str) -> None: ...
    def sizes(self, method: str, route: str, request_bytes: int, response_bytes: int) -> None: ...
    def websocket(self, route: str, duration_seconds: float) -> None: ...


def _value_cells(count: Counter, duration: Histogram) -> tuple[Any, Any, list[Any], list[float]] | None:
    """The value cells behind bound children, for the hot path; None if this prometheus-client
    version lays them out differently (then the public API is used)."""
    try:
        cells = (count._value, duration._sum, list(duration._buckets), list(duration._upper_bounds))
    except AttributeError:
        return None
    if len(cells[2]) != len(cells[3]) or not all(
        callable(getattr(c, "inc", None)) for c in (*cells[:2], *cells[2])
    ):
        return None
    return cells


class _PromSeries:
    """A bound (method, route, status) series.

    Without an exemplar it increments prometheus-client's value cells directly (the same cells
    and locks ``Counter.inc``/``Histogram.observe`` use, minus four layers of checks that a bound
    child cannot fail); with one it goes through the public API, which stores exemplars.
    """

    __slots__ = ("_bounds", "_buckets", "_count", "_count_cell", "_duration", "_sum_cell")

    def __init__(self, count: Counter, duration: Histogram) -> None:
        self._count = count
        self._duration = duration
        cells = _value_cells(count, duration)
        if cells is None:
            self._count_cell = None
            self._sum_cell = None
            self._buckets: list[Any] = []
            self._bounds: list[float] = []
        else:
            self._count_cell, self._sum_cell, self._buckets, self._bounds = cells

    def record(self, duration_seconds: float | None, trace_id: str | None) -> None:
        if trace_id is None:
            if self._count_cell is not None:
                self._count_cell.inc(1)
                if duration_seconds is not None and self._sum_cell is not None:
                    self._sum_cell.inc(duration_seconds)
                    # Same bucket as Histogram.observe: the first upper bound >= the amount.
                    self._buckets[bisect_left(self._bounds, duration_seconds)].inc(1)
                return
            self._count.inc()
            if duration_seconds is not None:
                self._duration.observe(duration_seconds)
        else:
            exemplar = {"trace_id": trace_id}
            self._count.inc(1, exemplar)
            if duration_seconds is not None:
                self._duration.observe(duration_seconds, exemplar)


class _CellUpDown:
    """inc()/dec() straight on a gauge child's value cell."""

    __slots__ = ("dec", "inc")

    def __init__(self, cell: Any) -> None:
        self.inc = functools.partial(cell.inc, 1)
        self.dec = functools.partial(cell.inc, -1)


class PrometheusHttpMetrics:
    """The middleware's metric families on ``registry`` (prometheus-client's default if None)."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        buckets: Sequence[float] = DURATION_BUCKETS_SECONDS,
        max_routes: int = 500,
        body_sizes: bool = False,
        namespace: str = "",
    ) -> None:
        from prometheus_client import REGISTRY

        reg = REGISTRY if registry is None else registry
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests by method, route template and status code.",
            ("method", "route", "status"),
            namespace=namespace,
            registry=reg,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time from the request to the last response body chunk (background tasks excluded).",
            ("method", "route"),
            buckets=tuple(buckets),
            namespace=namespace,
            registry=reg,
        )
        self.requests_in_progress = Gauge(
            "http_requests_in_progress",
            "HTTP requests being served, by method.",
            ("method",),
            namespace=namespace,
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.exceptions = Counter(
            "http_exceptions_total",
            "Exceptions raised out of the application, by route template and exception type.",
            ("route", "exception"),
            namespace=namespace,
            registry=reg,
        )
        self.request_size: Histogram | None = None
        self.response_size: Histogram | None = None
        if body_sizes:
            self.request_size = Histogram(
                "http_request_size_bytes",
                "Request body size (opt-in).",
                ("method", "route"),
                buckets=SIZE_BUCKETS_BYTES,
                namespace=namespace,
                registry=reg,
            )
            self.response_size = Histogram(
                "http_response_size_bytes",
                "Response body size (opt-in).",
                ("method", "route"),
                buckets=SIZE_BUCKETS_BYTES,
                namespace=namespace,
                registry=reg,
            )
        self.websockets = Counter(
            "websocket_connections_total",
            "WebSocket connections by route template (not counted as HTTP requests).",
            ("route",),
            namespace=namespace,
            registry=reg,
        )
        self.websocket_duration = Histogram(
            "websocket_connection_duration_seconds",
            "WebSocket connection lifetime by route template.",
            ("route",),
            buckets=WEBSOCKET_BUCKETS_SECONDS,
            namespace=namespace,
            registry=reg,
        )
        self.routes = LabelCap(max_routes)
        self._exception_names = LabelCap(200)

    def series(self, method: str, route: str, status: int) -> Series:
        route = self.routes.fold(route)
        return _PromSeries(
            self.requests.labels(method, route, str(status)), self.duration.labels(method, route)
        )

    def in_progress(self, method: str) -> UpDown:
        child = self.requests_in_progress.labels(method)
        cell = getattr(child, "_value", None)
        if callable(getattr(cell, "inc", None)):
            return _CellUpDown(cell)
        return child

    def exception(self, route: str, exception: str) -> None:
        self.exceptions.labels(self.routes.fold(route), self._exception_names.fold(exception)).inc()

    def sizes(self, method: str, route: str, request_bytes: int, response_bytes: int) -> None:
        if self.request_size is None or self.response_size is None:
            return
        route = self.routes.fold(route)
        self.request_size.labels(method, route).observe(request_bytes)
        self.response_size.labels(method, route).observe(response_bytes)

    def websocket(self, route: str, duration_seconds: float) -> None:
        route = self.routes.fold(route)
        self.websockets.labels(route).inc()
        self.websocket_duration.labels(route).observe(duration_seconds)
