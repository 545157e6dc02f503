"""Sample data with every metric the built-in dashboards query, and a server that shows it.

``seed(storage, now_ms, hours=6)`` appends 15 s samples for the SDK's HTTP, cache, database and
business metrics, host/Redis/PostgreSQL exporters and watchkeeper's self-metrics (3 instances,
10 routes, 3 regions: about 1,240 series, 1.8 M samples for 6 h). ``make_app`` composes the
dashboards router with the Prometheus query API over an in-memory store; ``serve`` runs an app on
a real uvicorn on 127.0.0.1 in a thread. The browser tests and ``bench/dashboards.py`` use these;
a person can look at the UI without any other component:

    python -m watchkeeper.dashboards.sample --port 9471     # then open http://127.0.0.1:9471/
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from watchkeeper.dashboards.loader import BUILTIN_DIR
from watchkeeper.dashboards.router import DashboardOptions, dashboards_router
from watchkeeper.errors import WatchkeeperError
from watchkeeper.labels import Labels, from_dict
from watchkeeper.promql.api import query_router
from watchkeeper.promql.engine import Engine
from watchkeeper.tsdb.storage import Storage

STEP_MS = 15_000
INSTANCES = ("app-1:8000", "app-2:8000", "app-3:8000")
ROUTES = (
    "/players/{id}",
    "/players",
    "/sessions/{id}",
    "/sessions",
    "/discovery",
    "/statistics/{id}",
    "/health",
    "/login",
    "/logout",
    "/search",
)
STATUSES = ("200", "201", "404", "500")
REGIONS = ("eu-west", "us-east", "ap-south")
BUCKETS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf")
CACHES = ("session", "player", "discovery", "statistics")


@dataclass
class _Builder:
    times: np.ndarray
    rng: np.random.Generator
    labels: list[Labels]
    values: list[np.ndarray]
    step_ms: int = STEP_MS

    def add(self, name: str, values: np.ndarray, **labels: str) -> None:
        self.labels.append(from_dict({"__name__": name, **labels}))
        self.values.append(values)

    def counter(self, rate_per_s: float, burst_at: float | None = None) -> np.ndarray:
        n = len(self.times)
        daily = 1 + 0.3 * np.sin(np.linspace(0, 2 * np.pi, n))
        noise = self.rng.gamma(20, 1 / 20, n)
        rate = rate_per_s * daily * noise
        if burst_at is not None:
            start = int(n * burst_at)
            rate[start : start + n // 40] *= 8
        return np.cumsum(rate * self.step_ms / 1000)

    def gauge(self, level: float, spread: float) -> np.ndarray:
        walk = np.cumsum(self.rng.normal(0, spread / 10, len(self.times)))
        out: np.ndarray = np.clip(level + walk - walk.mean(), 0, None)
        return out

    def histogram(self, name: str, count: np.ndarray, median_s: float, **labels: str) -> None:
        for le in BUCKETS:
            bound = float(le)
            frac = 1.0 if le == "+Inf" else float(1 / (1 + (median_s / bound) ** 2.5))
            self.add(f"{name}_bucket", np.floor(count * frac), le=le, **labels)
        self.add(f"{name}_count", np.floor(count), **labels)
        self.add(f"{name}_sum", count * median_s * 1.3, **labels)


def build(
    now_ms: int, hours: float = 6.0, seed: int = 7, step_ms: int = STEP_MS
) -> tuple[np.ndarray, list[Labels], np.ndarray]:
    """Timestamps, labels of every series and a (series, time) value matrix."""
    start = now_ms - int(hours * 3_600_000)
    times = np.arange(start - start % step_ms, now_ms, step_ms, dtype=np.int64)
    b = _Builder(times, np.random.default_rng(seed), [], [], step_ms)
    for i, inst in enumerate(INSTANCES):
        common = {"job": "core-api", "instance": inst}
        region = REGIONS[i % len(REGIONS)]
        for r, route in enumerate(ROUTES):
            base = 20.0 / (r + 1)
            method = "POST" if route in ("/sessions", "/login") else "GET"
            for status, share in zip(STATUSES, (0.9, 0.05, 0.04, 0.01), strict=True):
                burst = 0.7 if status == "500" and route == "/discovery" else None
                b.add(
                    "http_requests_total",
                    b.counter(base * share, burst),
                    method=method,
                    route=route,
                    status=status,
                    region=region,
                    **common,
                )
            b.histogram(
                "http_request_duration_seconds",
                b.counter(base),
                0.02 * (1 + r % 4),
                method=method,
                route=route,
                region=region,
                **common,
            )
            b.add(
                "http_exceptions_total",
                b.counter(0.01 if r == 4 else 0.0005),
                route=route,
                exception="TimeoutError" if r == 4 else "ValueError",
                **common,
            )
        b.add("http_requests_in_progress", b.gauge(12, 4), method="GET", **common)
        for c, cache in enumerate(CACHES):
            hit = 0.95 - 0.04 * c
            b.add("cache_requests_total", b.counter(30 * hit), cache=cache, result="hit", **common)
            b.add("cache_requests_total", b.counter(30 * (1 - hit)), cache=cache, result="miss", **common)
            for op in ("get", "set"):
                b.histogram(
                    "cache_operation_duration_seconds", b.counter(10), 0.0008, cache=cache, op=op, **common
                )
            b.add(
                "cache_errors_total", b.counter(0.001), cache=cache, op="get", error="TimeoutError", **common
            )
        for op, table, med in (
            ("select", "players", 0.004),
            ("select", "sessions", 0.006),
            ("insert", "sessions", 0.01),
            ("update", "players", 0.012),
        ):
            b.histogram("db_query_duration_seconds", b.counter(15), med, operation=op, table=table, **common)
            b.add("db_errors_total", b.counter(0.002), operation=op, error="OperationalError", **common)
        for state, level in (("in_use", 6.0), ("idle", 4.0), ("overflow", 0.5)):
            b.add("db_pool_connections", b.gauge(level, 2), state=state, **common)
        node = {"job": "node", "instance": inst}
        for mode, share in (("idle", 0.6), ("user", 0.25), ("system", 0.1), ("iowait", 0.05)):
            b.add("node_cpu_seconds_total", b.counter(share), mode=mode, cpu="0", **node)
        b.add("node_memory_MemTotal_bytes", np.full(len(times), 8e9), **node)
        b.add("node_memory_MemAvailable_bytes", b.gauge(3e9, 3e8), **node)
        b.add("node_network_receive_bytes_total", b.counter(2e6), device="eth0", **node)
        b.add("node_network_transmit_bytes_total", b.counter(1.5e6), device="eth0", **node)
        b.add("node_load1", b.gauge(1.2, 0.5), **node)
        b.add("node_load5", b.gauge(1.0, 0.3), **node)
        b.add("process_resident_memory_bytes", b.gauge(2.5e8, 2e7), **common)
        b.add("active_sessions", b.gauge(400 + 200 * i, 50), region=region, **common)
        b.add("sessions_created_total", b.counter(2 + i), region=region, **common)
        for f, feature in enumerate(("search", "dark_mode", "invite", "replay")):
            b.add("feature_used_total", b.counter(3 / (f + 1)), feature=feature, region=region, **common)
        # the reference core API (watchkeeper/demo) names its business metrics coreapi_*
        b.add("coreapi_active_sessions", b.gauge(120 + 60 * i, 15), region=region, **common)
        b.add("coreapi_players_registered_total", b.counter(0.2 + 0.1 * i), region=region, **common)
        for s_, sport in enumerate(("football", "tennis", "padel")):
            b.add(
                "coreapi_sessions_created_total",
                b.counter(0.5 / (s_ + 1)),
                sport=sport,
                region=region,
                **common,
            )
            b.add(
                "coreapi_session_joins_total", b.counter(2.0 / (s_ + 1)), sport=sport, region=region, **common
            )
        for f, feature in enumerate(("discovery_by_distance", "discovery_by_time", "session_update")):
            b.add(
                "coreapi_feature_used_total",
                b.counter(1.5 / (f + 1)),
                feature=feature,
                region=region,
                **common,
            )
    redis = {"job": "redis", "instance": "redis:6379"}
    b.add("redis_memory_used_bytes", b.gauge(3e8, 2e7), **redis)
    b.add("redis_memory_used_rss_bytes", b.gauge(3.5e8, 2e7), **redis)
    b.add("redis_memory_max_bytes", np.full(len(times), 1e9), **redis)
    pg = {"job": "postgres", "instance": "db:5432"}
    for state, level in (("active", 5.0), ("idle", 15.0), ("idle in transaction", 1.0)):
        b.add("pg_stat_activity_count", b.gauge(level, 2), state=state, **pg)
    b.add("pg_stat_database_cache_hit_ratio", np.clip(b.gauge(0.995, 0.002), 0, 1), datname="core", **pg)
    wk = {"job": "watchkeeper", "instance": "localhost:9470"}
    b.add("watchkeeper_ingest_samples_total", b.counter(5000), **wk)
    b.add("watchkeeper_ingest_rejected_samples_total", b.counter(0.2), reason="out_of_order", **wk)
    b.add("watchkeeper_head_series", b.gauge(1600, 10), **wk)
    b.add("watchkeeper_chunks_written_total", b.counter(12), **wk)
    b.histogram("watchkeeper_wal_fsync_duration_seconds", b.counter(5), 0.002, **wk)
    for handler in ("/api/v1/query_range", "/api/v1/write"):
        b.histogram(
            "watchkeeper_http_request_duration_seconds",
            b.counter(10),
            0.01,
            handler=handler,
            method="POST",
            code="200",
            **wk,
        )
    return times, b.labels, np.vstack(b.values)


def seed(storage: Storage, now_ms: int, hours: float = 6.0, step_ms: int = STEP_MS) -> int:
    """Append the workload; returns the number of samples."""
    times, labels, values = build(now_ms, hours, step_ms=step_ms)
    refs = storage.series_refs(labels)
    batch = 120  # time-major batches: each series stays in time order, few calls
    for j in range(0, len(times), batch):
        block = values[:, j : j + batch]
        width = block.shape[1]
        storage.append(np.repeat(refs, width), np.tile(times[j : j + width], len(refs)), block.reshape(-1))
    return int(values.size)


_SHARED: dict[tuple[float, int], tuple[int, Storage]] = {}
SHARED_MAX_AGE_MS = 30_000


def shared_storage(hours: float = 6.0, step_ms: int = 60_000) -> Storage:
    """One seeded in-memory store per process (test sessions share it), ending at the current minute.
    A store seeded more than 30 s ago is seeded anew: its last sample is up to two steps before
    the minute it was seeded at, and `rate(...[5m])` at "now" needs two samples in its window, late
    in a long test session too."""
    now_ms = (int(time.time() * 1000) // 60_000) * 60_000
    built = _SHARED.get((hours, step_ms))
    if built is not None and now_ms - built[0] <= SHARED_MAX_AGE_MS:
        return built[1]
    storage = Storage.open(data_dir=None)
    seed(storage, now_ms, hours=hours, step_ms=step_ms)
    _SHARED[(hours, step_ms)] = (now_ms, storage)
    return storage


def make_app(
    storage: Storage, dashboards_dir: Path | None = None, extra_dirs: Sequence[Path] = (), **options: Any
) -> FastAPI:
    """The dashboards router + Prometheus query API over ``storage`` (what app.py will compose)."""
    engine = Engine(storage)
    app = FastAPI()

    @app.exception_handler(WatchkeeperError)
    async def _error(request: Request, exc: WatchkeeperError) -> JSONResponse:
        return JSONResponse({"status": "error", "error": str(exc)}, status_code=500)

    dirs = (BUILTIN_DIR, *extra_dirs, *([dashboards_dir] if dashboards_dir else []))
    app.include_router(query_router(lambda: engine, lambda: storage))
    app.include_router(
        dashboards_router(lambda: engine, lambda: storage, DashboardOptions(dirs=dirs, **options))
    )
    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` on a real uvicorn on 127.0.0.1 (a thread); yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m watchkeeper.dashboards.sample", description=__doc__)
    parser.add_argument("--port", type=int, default=9471)
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--dashboards-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    storage = Storage.open(data_dir=None)
    samples = seed(storage, int(time.time() * 1000), hours=args.hours)
    print(f"{storage.num_series} series, {samples:,} samples; http://127.0.0.1:{args.port}/")
    uvicorn.run(make_app(storage, args.dashboards_dir), host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
