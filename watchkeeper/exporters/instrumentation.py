"""``instrument(app)``: the three-line entry point, and the one export switch.

```python
from watchkeeper.exporters import ExportConfig, instrument

app = FastAPI()
instrument(app)                                              # /metrics, this process
instrument(app, export=ExportConfig(multiprocess_dir="/tmp/wk"))   # /metrics, all workers
instrument(app, export=ExportConfig(mode="otlp", otlp_endpoint="http://collector:4318/v1/metrics"))
```
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry

from watchkeeper.exporters import multiprocess
from watchkeeper.exporters.exemplars import trace_id_reader
from watchkeeper.exporters.exposition import MetricsEndpoint
from watchkeeper.exporters.http_metrics import (
    DURATION_BUCKETS_SECONDS,
    HttpMetrics,
    PrometheusHttpMetrics,
)
from watchkeeper.exporters.middleware import DEFAULT_EXCLUDED_PATHS, ASGIApp, MetricsMiddleware
from watchkeeper.exporters.otlp_push import RegistryPusher
from watchkeeper.exporters.safety import dropped

A = TypeVar("A")


@dataclass(frozen=True, slots=True)
class ExportConfig:
    """How metrics leave the process: ``mode="prometheus"`` (pull) or ``mode="otlp"`` (push).

    ``multiprocess_dir`` turns on prometheus-client's multiprocess mode (several workers behind one
    ``/metrics``); it must be set before any metric is created, i.e. before ``instrument``.
    """

    mode: Literal["prometheus", "otlp"] = "prometheus"
    metrics_path: str | None = "/metrics"
    multiprocess_dir: str | None = None
    otlp_endpoint: str = "http://127.0.0.1:4318/v1/metrics"
    otlp_headers: Mapping[str, str] = field(default_factory=dict)
    export_interval_millis: int = 15_000
    service_name: str = "app"

    def __post_init__(self) -> None:
        if self.mode not in ("prometheus", "otlp"):
            raise ValueError(f"unknown export mode {self.mode!r}; use 'prometheus' or 'otlp'")


# One metric set per registry, so instrumenting two apps (or one twice) never registers the same
# names twice (prometheus-fastapi-instrumentator#269, starlette_exporter#23).
_per_registry: weakref.WeakKeyDictionary[CollectorRegistry, PrometheusHttpMetrics] = (
    weakref.WeakKeyDictionary()
)


def http_metrics_for(
    registry: CollectorRegistry, *, buckets: Sequence[float], body_sizes: bool, max_routes: int
) -> PrometheusHttpMetrics:
    metrics = _per_registry.get(registry)
    if metrics is None:
        metrics = PrometheusHttpMetrics(
            registry=registry, buckets=buckets, body_sizes=body_sizes, max_routes=max_routes
        )
        _per_registry[registry] = metrics
    return metrics


_pushers: weakref.WeakKeyDictionary[CollectorRegistry, RegistryPusher] = weakref.WeakKeyDictionary()


def pusher_for(registry: CollectorRegistry, config: ExportConfig) -> RegistryPusher:
    """The one OTLP pusher of ``registry`` (created on first use, started later per process)."""
    pusher = _pushers.get(registry)
    if pusher is None:
        pusher = RegistryPusher(
            registry,
            endpoint=config.otlp_endpoint,
            headers=config.otlp_headers,
            service_name=config.service_name,
            export_interval_millis=config.export_interval_millis,
        )
        _pushers[registry] = pusher
    return pusher


def instrument(
    app: A,
    *,
    export: ExportConfig | None = None,
    registry: CollectorRegistry | None = None,
    metrics: HttpMetrics | None = None,
    exclude_paths: Iterable[str] = DEFAULT_EXCLUDED_PATHS,
    buckets: Sequence[float] = DURATION_BUCKETS_SECONDS,
    body_sizes: bool = False,
    exemplars: bool = True,
    group_unmatched: bool = True,
    max_routes: int = 500,
) -> A:
    """Measure every HTTP request of ``app`` and export the metrics; returns ``app``.

    A Starlette/FastAPI app gets the middleware added (outermost of the user middleware, inside
    Starlette's error handler, so an unhandled exception is counted as a 500); any other ASGI
    callable is wrapped and the wrapper returned. Set-up failures are logged and leave the app
    unmeasured rather than broken.
    """
    config = export or ExportConfig()
    options: dict[str, Any] = {
        "exclude_paths": exclude_paths,
        "metrics_path": config.metrics_path,
        "body_sizes": body_sizes,
        "group_unmatched": group_unmatched,
    }
    try:
        if config.mode == "otlp":
            # Push: the same cheap prometheus-client hot path, exported as OTLP by a per-process
            # thread (otlp_push.py). ``metrics=OtlpHttpMetrics(...)`` records OTel instruments instead.
            if metrics is None:
                target = REGISTRY if registry is None else registry
                metrics = http_metrics_for(
                    target, buckets=buckets, body_sizes=body_sizes, max_routes=max_routes
                )
                options["pusher"] = pusher_for(target, config)
            options["metrics_path"] = None
        else:
            if config.multiprocess_dir is not None:
                multiprocess.enable(config.multiprocess_dir)
                options["endpoint"] = MetricsEndpoint(
                    encode=functools.partial(multiprocess.exposition, config.multiprocess_dir)
                )
            else:
                options["endpoint"] = MetricsEndpoint(REGISTRY if registry is None else registry)
                if exemplars:
                    options["trace_id"] = trace_id_reader()
            if metrics is None:
                metrics = http_metrics_for(
                    REGISTRY if registry is None else registry,
                    buckets=buckets,
                    body_sizes=body_sizes,
                    max_routes=max_routes,
                )
        options["metrics"] = metrics
    except Exception as exc:
        dropped("instrument", exc)
        return app
    add_middleware = getattr(app, "add_middleware", None)
    if callable(add_middleware):
        add_middleware(MetricsMiddleware, **options)
        return app
    wrapped: Any = MetricsMiddleware(_as_asgi(app), **options)
    return wrapped  # type: ignore[no-any-return]


def _as_asgi(app: object) -> ASGIApp:
    if not callable(app):
        raise TypeError(f"{app!r} is not an ASGI application")
    return app
