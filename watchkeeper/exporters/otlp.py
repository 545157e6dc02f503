"""OTLP push of the HTTP metrics with ``opentelemetry-sdk``, one exporter per worker process.

The SDK's periodic reader runs a thread, and threads do not survive ``fork()``
(opentelemetry-python#2767). So nothing is started at import or configuration time: the
``MeterProvider`` is built on the first measurement *in the process that makes it*, and a fork
handler forgets the parent's provider in the child, which then builds its own (with its own
``service.instance.id``). Instrument names follow the OTLP→Prometheus translation, so
``http_requests`` arrives as ``http_requests_total`` and ``http_request_duration`` (unit ``s``) as
``http_request_duration_seconds``.

```python
pipeline = OtlpPipeline(endpoint="http://127.0.0.1:4318/v1/metrics", service_name="api")
instrument(app, metrics=OtlpHttpMetrics(pipeline))
```
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from watchkeeper.exporters.cardinality import LabelCap
from watchkeeper.exporters.http_metrics import DURATION_BUCKETS_SECONDS, WEBSOCKET_BUCKETS_SECONDS


@dataclass(frozen=True, slots=True)
class _Instruments:
    requests: Any
    duration: Any
    in_progress: Any
    exceptions: Any
    request_size: Any
    response_size: Any
    websockets: Any
    websocket_duration: Any


class OtlpPipeline:
    """A per-process ``MeterProvider`` pushing OTLP/HTTP protobuf to ``endpoint``."""

    def __init__(
        self,
        *,
        endpoint: str = "http://127.0.0.1:4318/v1/metrics",
        headers: Mapping[str, str] | None = None,
        service_name: str = "app",
        export_interval_millis: int = 15_000,
        buckets: Sequence[float] = DURATION_BUCKETS_SECONDS,
        reader_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.headers = dict(headers or {})
        self.service_name = service_name
        self.export_interval_millis = export_interval_millis
        self.buckets = tuple(buckets)
        self._reader_factory = reader_factory
        self._lock = threading.Lock()
        self._provider: Any = None
        self._instruments: _Instruments | None = None
        self.pid: int | None = None
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        # The parent's reader thread does not exist here; never call into the inherited provider.
        self._lock = threading.Lock()
        self._provider = None
        self._instruments = None
        self.pid = None

    def instruments(self) -> _Instruments:
        instruments = self._instruments
        if instruments is None:
            instruments = self._start()
        return instruments

    def _start(self) -> _Instruments:
        with self._lock:
            if self._instruments is not None:
                return self._instruments
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.resources import Resource

            pid = os.getpid()
            resource = Resource.create(
                {
                    "service.name": self.service_name,
                    "service.instance.id": f"{socket.gethostname()}-{pid}",
                    "process.pid": pid,
                }
            )
            provider = MeterProvider(metric_readers=[self._reader()], resource=resource)
            meter = provider.get_meter("watchkeeper.exporters")
            self._instruments = _Instruments(
                requests=meter.create_counter("http_requests", "1", "HTTP requests"),
                duration=meter.create_histogram(
                    "http_request_duration",
                    "s",
                    "Time to the last response body chunk",
                    explicit_bucket_boundaries_advisory=self.buckets,
                ),
                in_progress=meter.create_up_down_counter("http_requests_in_progress", "1"),
                exceptions=meter.create_counter("http_exceptions", "1"),
                request_size=meter.create_histogram("http_request_size", "By"),
                response_size=meter.create_histogram("http_response_size", "By"),
                websockets=meter.create_counter("websocket_connections", "1"),
                websocket_duration=meter.create_histogram(
                    "websocket_connection_duration",
                    "s",
                    explicit_bucket_boundaries_advisory=WEBSOCKET_BUCKETS_SECONDS,
                ),
            )
            self._provider = provider
            self.pid = pid
            return self._instruments

    def _reader(self) -> Any:
        if self._reader_factory is not None:
            return self._reader_factory()
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        exporter = OTLPMetricExporter(endpoint=self.endpoint, headers=self.headers)
        return PeriodicExportingMetricReader(exporter, export_interval_millis=self.export_interval_millis)

    def force_flush(self, timeout_millis: int = 10_000) -> bool:
        provider = self._provider
        return bool(provider.force_flush(timeout_millis)) if provider is not None else True

    def shutdown(self) -> None:
        provider, self._provider, self._instruments = self._provider, None, None
        if provider is not None:
            provider.shutdown()


class _OtelSeries:
    __slots__ = ("_attrs", "_pipeline", "_route_attrs")

    def __init__(self, pipeline: OtlpPipeline, attrs: dict[str, str], route_attrs: dict[str, str]) -> None:
        self._pipeline = pipeline
        self._attrs = attrs
        self._route_attrs = route_attrs

    def record(self, duration_seconds: float | None, trace_id: str | None) -> None:
        instruments = self._pipeline.instruments()
        instruments.requests.add(1, self._attrs)
        if duration_seconds is not None:
            instruments.duration.record(duration_seconds, self._route_attrs)


class _OtelUpDown:
    __slots__ = ("_attrs", "_pipeline")

    def __init__(self, pipeline: OtlpPipeline, attrs: dict[str, str]) -> None:
        self._pipeline = pipeline
        self._attrs = attrs

    def inc(self) -> None:
        self._pipeline.instruments().in_progress.add(1, self._attrs)

    def dec(self) -> None:
        self._pipeline.instruments().in_progress.add(-1, self._attrs)


class OtlpHttpMetrics:
    """The middleware's metrics as OpenTelemetry instruments (see :class:`http_metrics.HttpMetrics`).

    Exemplars are left to the SDK (its default ``trace_based`` filter links the active span).
    """

    def __init__(self, pipeline: OtlpPipeline, *, max_routes: int = 500) -> None:
        self.pipeline = pipeline
        self.routes = LabelCap(max_routes)

    def series(self, method: str, route: str, status: int) -> _OtelSeries:
        route = self.routes.fold(route)
        return _OtelSeries(
            self.pipeline,
            {"method": method, "route": route, "status": str(status)},
            {"method": method, "route": route},
        )

    def in_progress(self, method: str) -> _OtelUpDown:
        return _OtelUpDown(self.pipeline, {"method": method})

    def exception(self, route: str, exception: str) -> None:
        attrs = {"route": self.routes.fold(route), "exception": exception}
        self.pipeline.instruments().exceptions.add(1, attrs)

    def sizes(self, method: str, route: str, request_bytes: int, response_bytes: int) -> None:
        instruments = self.pipeline.instruments()
        attrs = {"method": method, "route": self.routes.fold(route)}
        instruments.request_size.record(request_bytes, attrs)
        instruments.response_size.record(response_bytes, attrs)

    def websocket(self, route: str, duration_seconds: float) -> None:
        instruments = self.pipeline.instruments()
        attrs = {"route": self.routes.fold(route)}
        instruments.websockets.add(1, attrs)
        instruments.websocket_duration.record(duration_seconds, attrs)
