"""The watchkeeper SDK for instrumented applications, and the infrastructure exporters.

```python
from watchkeeper.exporters import instrument

app = FastAPI()
instrument(app)          # http_requests_total, http_request_duration_seconds, ... on /metrics
```
See ``docs/sdk.md`` for cache, database and business metrics, multi-worker export and OTLP push.
"""

from __future__ import annotations

from watchkeeper.exporters import business, cache
from watchkeeper.exporters.business import BusinessMetrics
from watchkeeper.exporters.cache import CacheMetrics, instrument_redis
from watchkeeper.exporters.database import DatabaseMetrics, instrument_sqlalchemy
from watchkeeper.exporters.exposition import MetricsEndpoint, render
from watchkeeper.exporters.http_metrics import PrometheusHttpMetrics
from watchkeeper.exporters.instrumentation import ExportConfig, instrument
from watchkeeper.exporters.middleware import MetricsMiddleware
from watchkeeper.exporters.otlp import OtlpHttpMetrics, OtlpPipeline

__all__ = [
    "BusinessMetrics",
    "CacheMetrics",
    "DatabaseMetrics",
    "ExportConfig",
    "MetricsEndpoint",
    "MetricsMiddleware",
    "OtlpHttpMetrics",
    "OtlpPipeline",
    "PrometheusHttpMetrics",
    "business",
    "cache",
    "instrument",
    "instrument_redis",
    "instrument_sqlalchemy",
    "render",
]
