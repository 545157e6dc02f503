"""OTLP push of a prometheus-client registry: the cheap hot path, pushed instead of scraped.

Recording through OpenTelemetry instruments costs about as much per request as the peers do
(attribute hashing on every call; see ``bench/sdk_overhead.py``, variant ``watchkeeper_otlp``). So
the default push keeps the prometheus-client hot path and, once per interval, converts the
registry to OTLP data (``registry_to_metrics_data``, a pure function) and hands it to
``opentelemetry-exporter-otlp-proto-http``'s exporter.

Fork-safe: the export thread starts in the process that serves requests (on ASGI lifespan start-up
or the first request), never at configuration time; after ``fork()`` the child forgets the parent's
thread and starts its own, with its own ``service.instance.id``. At interpreter exit each process
pushes once more.

```python
pusher = RegistryPusher(registry, endpoint="http://127.0.0.1:4318/v1/metrics", service_name="api")
pusher.ensure_started()
```
"""

from __future__ import annotations

import atexit
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric as PromMetric

from watchkeeper.exporters.safety import dropped


def registry_to_metrics_data(
    families: Iterable[PromMetric],
    *,
    resource: Any,
    start_time_unix_nano: int,
    time_unix_nano: int,
    scope_name: str = "watchkeeper.exporters",
) -> Any:
    """Cumulative OTLP ``MetricsData`` for prometheus-client metric families.

    Counters become monotonic sums named without ``_total`` (``http_requests``), gauges gauges,
    histograms explicit-bucket histograms under their full name; the OTLP→Prometheus translation
    gives the original names back. Summaries, info and state sets are skipped; ``_created``
    samples become the start time.
    """
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        Gauge,
        Histogram,
        HistogramDataPoint,
        Metric,
        MetricsData,
        NumberDataPoint,
        ResourceMetrics,
        ScopeMetrics,
        Sum,
    )
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    cumulative = AggregationTemporality.CUMULATIVE
    metrics: list[Any] = []
    for family in families:
        if family.type == "counter":
            created = {
                _key(s.labels): int(s.value * 1e9) for s in family.samples if s.name.endswith("_created")
            }
            points = [
                NumberDataPoint(
                    attributes=dict(s.labels),
                    start_time_unix_nano=created.get(_key(s.labels), start_time_unix_nano),
                    time_unix_nano=time_unix_nano,
                    value=s.value,
                )
                for s in family.samples
                if s.name.endswith("_total")
            ]
            if points:
                metrics.append(
                    Metric(
                        name=family.name,
                        description=family.documentation,
                        unit="",
                        data=Sum(data_points=points, aggregation_temporality=cumulative, is_monotonic=True),
                    )
                )
        elif family.type in ("gauge", "unknown"):
            gauge_points = [
                NumberDataPoint(
                    attributes=dict(s.labels),
                    start_time_unix_nano=start_time_unix_nano,
                    time_unix_nano=time_unix_nano,
                    value=s.value,
                )
                for s in family.samples
            ]
            if gauge_points:
                metrics.append(
                    Metric(
                        name=family.name, description=family.documentation, unit="",
                        data=Gauge(data_points=gauge_points),
                    )
                )  # fmt: skip
        elif family.type == "histogram":
            series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
            for s in family.samples:
                labels = {k: v for k, v in s.labels.items() if k != "le"}
                entry = series.setdefault(_key(labels), {"labels": labels, "buckets": [], "sum": 0.0})
                if s.name.endswith("_bucket"):
                    entry["buckets"].append((float(s.labels["le"]), s.value))
                elif s.name.endswith("_sum"):
                    entry["sum"] = s.value
            histogram_points = []
            for entry in series.values():
                buckets = sorted(entry["buckets"])
                if not buckets:
                    continue
                counts, previous = [], 0.0
                for _, cumulative_count in buckets:
                    counts.append(int(cumulative_count - previous))
                    previous = cumulative_count
                histogram_points.append(
                    HistogramDataPoint(
                        attributes=entry["labels"],
                        start_time_unix_nano=start_time_unix_nano,
                        time_unix_nano=time_unix_nano,
                        count=int(buckets[-1][1]),
                        sum=entry["sum"],
                        bucket_counts=counts,
                        explicit_bounds=[le for le, _ in buckets if le != float("inf")],
                        min=None,  # type: ignore[arg-type]  # unknown: left unset in the protobuf
                        max=None,  # type: ignore[arg-type]
                    )
                )
            if histogram_points:
                metrics.append(
                    Metric(
                        name=family.name, description=family.documentation, unit="",
                        data=Histogram(data_points=histogram_points, aggregation_temporality=cumulative),
                    )
                )  # fmt: skip
    scope = ScopeMetrics(scope=InstrumentationScope(scope_name), metrics=metrics, schema_url="")
    return MetricsData(
        resource_metrics=[ResourceMetrics(resource=resource, scope_metrics=[scope], schema_url="")]
    )


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k != "le"))


class RegistryPusher:
    """Pushes ``registry`` as OTLP every ``export_interval_millis`` from a per-process thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        endpoint: str = "http://127.0.0.1:4318/v1/metrics",
        headers: Mapping[str, str] | None = None,
        service_name: str = "app",
        export_interval_millis: int = 15_000,
        exporter_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.registry = registry
        self.endpoint = endpoint
        self.headers = dict(headers or {})
        self.service_name = service_name
        self.export_interval_millis = export_interval_millis
        self._exporter_factory = exporter_factory
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._exporter: Any = None
        self._resource: Any = None
        self._start_time_unix_nano = 0
        self.pid: int | None = None
        os.register_at_fork(after_in_child=self._forget)
        atexit.register(self.shutdown)

    @property
    def running(self) -> bool:
        return self.pid is not None

    def _forget(self) -> None:
        # The parent's thread does not exist in the child; start afresh on first use.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._exporter = None
        self.pid = None

    def ensure_started(self) -> None:
        if self.pid is not None:
            return
        with self._lock:
            if self.pid is not None:
                return
            try:
                self._start()
            except Exception as exc:
                dropped("otlp.start", exc)

    def _start(self) -> None:
        from opentelemetry.sdk.resources import Resource

        pid = os.getpid()
        self._resource = Resource.create(
            {
                "service.name": self.service_name,
                "service.instance.id": f"{socket.gethostname()}-{pid}",
                "process.pid": pid,
            }
        )
        self._exporter = self._make_exporter()
        self._start_time_unix_nano = time.time_ns()
        self._thread = threading.Thread(target=self._run, name="watchkeeper-otlp-push", daemon=True)
        self.pid = pid
        self._thread.start()

    def _make_exporter(self) -> Any:
        if self._exporter_factory is not None:
            return self._exporter_factory()
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=self.endpoint, headers=self.headers)

    def _run(self) -> None:
        while not self._stop.wait(self.export_interval_millis / 1000):
            self.push()

    def push(self) -> bool:
        """Export the registry once now (from this process); False when it failed."""
        exporter = self._exporter
        if exporter is None or self.pid != os.getpid():
            return False
        try:
            data = registry_to_metrics_data(
                self.registry.collect(),
                resource=self._resource,
                start_time_unix_nano=self._start_time_unix_nano,
                time_unix_nano=time.time_ns(),
            )
            result = exporter.export(data)
            return bool(getattr(result, "name", "SUCCESS") == "SUCCESS")
        except Exception as exc:
            dropped("otlp.push", exc)
            return False

    def shutdown(self) -> None:
        """Stop the thread and push one last time (registered with ``atexit``)."""
        if self.pid != os.getpid():
            return
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        self.push()
        try:
            self._exporter.shutdown()
        except Exception as exc:
            dropped("otlp.shutdown", exc)
        self.pid = None
