"""In-process per-request overhead of watchkeeper's ``instrument(app)`` against the peers, in one run.

Each variant is the same minimal FastAPI app (``GET /items/{item_id}`` returning a small dict),
called in-process with ``await app(scope, receive, send)`` — no server, no socket — so the figure
is the CPU cost the instrumentation adds to one request. Every (round, variant) runs in a fresh
subprocess (no provider or registry state leaks between variants); the order rotates per round;
each run checks that all responses were 200 and that the variant's backend counted every request.

    python bench/sdk_overhead.py                   # 3 rounds, 2000 warm-up + 20000 timed calls
    python bench/sdk_overhead.py --rounds 5 --calls 50000
    python bench/sdk_overhead.py --variants bare,watchkeeper
    python bench/sdk_overhead.py --scrape          # multiprocess /metrics: render time, event-loop lag
    python bench/sdk_overhead.py --database        # instrument_sqlalchemy per query (SQLite in memory)

Variants: bare; watchkeeper (``instrument(app)``, Prometheus registry); watchkeeper_mp (the same
in prometheus-client's multiprocess mode: values in memory-mapped files); watchkeeper_otlp (the default
``ExportConfig(mode="otlp")`` push: the same registry hot path, exporter replaced by a no-op);
watchkeeper_otel (the middleware writing OpenTelemetry instruments, ``OtlpHttpMetrics``); pfi
(prometheus-fastapi-instrumentator ``Instrumentator().instrument(app).expose(app)``); se
(starlette_exporter ``PrometheusMiddleware`` + ``handle_metrics``); otel (contrib
``FastAPIInstrumentor.instrument_app``, in-memory reader); native (``FastAPI(telemetry=...)``).
Needs the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

VARIANTS = (
    "bare", "watchkeeper", "watchkeeper_mp", "watchkeeper_otlp", "watchkeeper_otel",
    "pfi", "se", "otel", "native",
)  # fmt: skip
PEERS = ("pfi", "se", "otel", "native")


def build(variant: str) -> tuple[Any, Any]:
    """The app for ``variant`` and a function returning how many requests its backend counted."""
    from fastapi import FastAPI

    if variant == "native":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        app = FastAPI(telemetry={"meter_provider": MeterProvider([reader]), "tracing": False})
    else:
        app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id, "ok": 1}

    if variant == "bare":
        return app, lambda: None
    if variant == "watchkeeper":
        from prometheus_client import CollectorRegistry

        from watchkeeper.exporters import instrument

        registry = CollectorRegistry()
        instrument(app, registry=registry)

        def counted() -> float | None:
            return registry.get_sample_value(
                "http_requests_total", {"method": "GET", "route": "/items/{item_id}", "status": "200"}
            )

        return app, counted
    if variant == "watchkeeper_mp":
        from watchkeeper.exporters import ExportConfig, instrument, multiprocess

        directory = tempfile.mkdtemp(prefix="wk-bench-mp-")
        atexit.register(shutil.rmtree, directory, True)
        instrument(app, export=ExportConfig(multiprocess_dir=directory))
        return app, lambda: multiprocess.scrape_registry(directory).get_sample_value(
            "http_requests_total", {"method": "GET", "route": "/items/{item_id}", "status": "200"}
        )
    if variant == "watchkeeper_otlp":
        from prometheus_client import CollectorRegistry

        from watchkeeper.exporters import ExportConfig, instrument
        from watchkeeper.exporters.instrumentation import _pushers
        from watchkeeper.exporters.otlp_push import RegistryPusher

        class NullExporter:
            def export(self, data: Any, **kwargs: Any) -> None:
                return None

            def shutdown(self, **kwargs: Any) -> None:
                return None

        registry = CollectorRegistry()
        # The default push path, with the network exporter replaced by a no-op.
        _pushers[registry] = RegistryPusher(registry, exporter_factory=NullExporter)
        instrument(app, registry=registry, export=ExportConfig(mode="otlp"))

        def counted_push() -> float | None:
            return registry.get_sample_value(
                "http_requests_total", {"method": "GET", "route": "/items/{item_id}", "status": "200"}
            )

        return app, counted_push
    if variant == "watchkeeper_otel":
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        from watchkeeper.exporters import ExportConfig, OtlpHttpMetrics, OtlpPipeline, instrument

        reader = InMemoryMetricReader()
        pipeline = OtlpPipeline(reader_factory=lambda: reader)
        instrument(app, export=ExportConfig(mode="otlp"), metrics=OtlpHttpMetrics(pipeline))
        return app, lambda: _otel_count(reader, "http_requests")
    if variant == "pfi":
        from prometheus_client import REGISTRY
        from prometheus_fastapi_instrumentator import Instrumentator

        Instrumentator().instrument(app).expose(app)
        return app, lambda: REGISTRY.get_sample_value(
            "http_requests_total", {"method": "GET", "handler": "/items/{item_id}", "status": "2xx"}
        )
    if variant == "se":
        from prometheus_client import REGISTRY
        from starlette_exporter import PrometheusMiddleware, handle_metrics

        app.add_middleware(PrometheusMiddleware)
        app.add_route("/metrics", handle_metrics)
        return app, lambda: REGISTRY.get_sample_value(
            "starlette_requests_total",
            {"method": "GET", "path": "/items/{item_id}", "status_code": "200", "app_name": "starlette"},
        )
    if variant == "otel":
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        FastAPIInstrumentor.instrument_app(app, meter_provider=MeterProvider([reader]))
        return app, lambda: _otel_count(reader, "http.server.duration")
    if variant == "native":
        return app, lambda: _otel_count(reader, "http.server.request.duration")
    raise SystemExit(f"unknown variant {variant}")


def _otel_count(reader: Any, name: str) -> float:
    total = 0.0
    data = reader.get_metrics_data()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    total += getattr(point, "count", None) or getattr(point, "value", 0)
    return total


async def _drive(app: Any, calls: int) -> tuple[float, float, int]:
    body = {"type": "http.request", "body": b"", "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return body

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    def scope() -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/items/42",
            "raw_path": b"/items/42",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"), (b"accept", b"*/*")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }

    start_cpu, start_wall = time.thread_time(), time.perf_counter()
    for _ in range(calls):
        await app(scope(), receive, send)
    elapsed_cpu, elapsed_wall = time.thread_time() - start_cpu, time.perf_counter() - start_wall
    bad = sum(1 for s in statuses if s != 200)
    return elapsed_cpu, elapsed_wall, bad


def run_one(variant: str, warmup: int, calls: int) -> dict[str, Any]:
    app, counted = build(variant)

    async def main() -> tuple[float, float, int]:
        await _drive(app, warmup)
        return await _drive(app, calls)

    elapsed_cpu, elapsed_wall, bad = asyncio.run(main())
    count = counted()
    if bad:
        raise SystemExit(f"{variant}: {bad} non-200 responses")
    if count is not None and int(count) != warmup + calls:
        raise SystemExit(f"{variant}: backend counted {count}, expected {warmup + calls}")
    return {
        "variant": variant,
        "us_per_request": elapsed_cpu / calls * 1e6,
        "wall_us_per_request": elapsed_wall / calls * 1e6,
        "counted": count,
    }


def fill_worker(directory: str, scale: int) -> None:
    """A worker holding the demo core API's metric set (HTTP, cache, database, business metrics;
    about 500 file entries per worker at ``scale`` 1) in multiprocess mode, alive until stdin closes."""
    from watchkeeper.exporters import multiprocess

    multiprocess.enable(directory)
    from watchkeeper.exporters import BusinessMetrics, CacheMetrics, DatabaseMetrics, PrometheusHttpMetrics

    http = PrometheusHttpMetrics()
    for i in range(10 * scale):
        for status in (200, 404):
            http.series("GET", f"/api/resource{i}/{{id}}", status).record(0.012, None)
    http.in_progress("GET").inc()
    cache = CacheMetrics()
    for name in ("session", "player", "discovery", "statistics"):
        cache.hit(name)
        cache.miss(name)
        for op in ("get", "set", "del"):
            cache.observe(name, op, 0.0004)
    database = DatabaseMetrics()
    for i in range(5 * scale):
        for operation in ("select", "insert"):
            database.observe(operation, f"table{i}", 0.002)
    business = BusinessMetrics()
    sessions = business.counter("sessions_created", labels=("region", "sport"))
    joins = business.counter("session_joins", labels=("region", "sport"))
    active = business.gauge("active_sessions", labels=("region",), multiprocess_mode="max")
    for region in ("eu-west", "eu-north", "us-east", "us-west", "ap-south", "sa-east"):
        active.set(7, region=region)
        for sport in ("football", "tennis", "padel"):
            sessions.inc(region=region, sport=sport)
            joins.inc(3, region=region, sport=sport)
    print("ready", flush=True)
    sys.stdin.read()


OPENMETRICS = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4"


async def _loop_lag(endpoint: Any, renders: int) -> tuple[list[float], list[float], list[float]]:
    """Event-loop lag (how late a 1 ms sleep wakes up) while idle and while ``/metrics`` renders."""
    idle: list[float] = []
    during: list[float] = []
    walls: list[float] = []
    state = {"busy": False, "stop": False}

    async def ticker() -> None:
        while not state["stop"]:
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            (during if state["busy"] else idle).append(time.perf_counter() - start - 0.001)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {"type": "http", "method": "GET", "path": "/metrics",
             "headers": [(b"accept", OPENMETRICS.encode()), (b"accept-encoding", b"gzip")]}  # fmt: skip
    task = asyncio.create_task(ticker())
    for _ in range(renders):
        await asyncio.sleep(0.05)
        state["busy"] = True
        start = time.perf_counter()
        await endpoint(scope, receive, send)
        walls.append(time.perf_counter() - start)
        state["busy"] = False
    state["stop"] = True
    await task
    if statuses != [200] * renders:
        raise SystemExit(f"/metrics answered {sorted(set(statuses))}")
    return idle, during, walls


def _quantiles_ms(values: list[float]) -> str:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3  # noqa: E731
    return f"{pick(0.5):.2f} / {pick(0.99):.2f} / {ordered[-1] * 1e3:.2f}"


def scrape_cost(workers: int, renders: int, scale: int) -> int:
    """Multiprocess ``/metrics``, prometheus-client's merge and encoders against watchkeeper's
    (``multiprocess.exposition``): CPU per render, and the event-loop lag of the serving worker."""
    import functools

    from watchkeeper.exporters import multiprocess
    from watchkeeper.exporters.exposition import MetricsEndpoint, render

    directory = tempfile.mkdtemp(prefix="wk-bench-scrape-")
    command = [sys.executable, __file__, "--fill-worker", directory, "--scale", str(scale)]
    fillers = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(workers)
    ]
    try:
        for filler in fillers:
            if filler.stdout is None or filler.stdout.readline().strip() != "ready":
                raise SystemExit("a worker failed to start")
        multiprocess.enable(directory)
        registry = multiprocess.scrape_registry(directory)
        samples = sum(len(metric.samples) for metric in registry.collect())
        ways = {
            "prometheus-client": lambda accept: render(registry, accept=accept, accept_encoding="gzip"),
            "watchkeeper": lambda accept: multiprocess.exposition(directory, accept),
        }
        cpu: dict[tuple[str, str], list[float]] = {}
        for _ in range(renders):
            for way, encode in ways.items():
                for name, accept in (("text", ""), ("OpenMetrics", OPENMETRICS)):
                    start = time.thread_time()
                    encode(accept)
                    cpu.setdefault((way, name), []).append(time.thread_time() - start)
        endpoints = {
            "prometheus-client": MetricsEndpoint(registry),
            "watchkeeper": MetricsEndpoint(encode=functools.partial(multiprocess.exposition, directory)),
        }
        lags = {way: asyncio.run(_loop_lag(endpoint, renders)) for way, endpoint in endpoints.items()}
    finally:
        for filler in fillers:
            if filler.stdin is not None:
                filler.stdin.close()
            filler.wait(10)
            if filler.stdout is not None:
                filler.stdout.close()
        shutil.rmtree(directory, ignore_errors=True)
    print(f"multiprocess /metrics: {workers} live workers, {samples} samples after the merge, "
          f"{renders} renders")  # fmt: skip
    print("| merge + encode | text CPU ms | OpenMetrics CPU ms | /metrics wall ms | loop lag while idle "
          "p50/p99/max ms | loop lag during /metrics p50/p99/max ms |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for way in ways:
        idle, during, walls = lags[way]
        text, openmetrics = (statistics.median(cpu[way, name]) * 1e3 for name in ("text", "OpenMetrics"))
        print(f"| {way} | {text:.2f} | {openmetrics:.2f} | {statistics.median(walls) * 1e3:.2f} "
              f"| {_quantiles_ms(idle)} | {_quantiles_ms(during)} |")  # fmt: skip
    return 0


DATABASE_VARIANTS = ("bare", "noop_listeners", "instrumented", "instrumented_mp")


def database_one(variant: str, calls: int) -> float:
    """CPU µs of one connect + parameterised SELECT + close on SQLite, for ``variant``."""
    import sqlalchemy as sa
    from prometheus_client import CollectorRegistry

    if variant == "instrumented_mp":
        from watchkeeper.exporters import multiprocess

        directory = tempfile.mkdtemp(prefix="wk-bench-db-")
        atexit.register(shutil.rmtree, directory, True)
        multiprocess.enable(directory)
    from watchkeeper.exporters import instrument_sqlalchemy

    engine = sa.create_engine("sqlite://")
    if variant == "noop_listeners":  # what SQLAlchemy's event dispatch costs by itself
        for name in ("before_cursor_execute", "after_cursor_execute", "handle_error"):
            sa.event.listen(engine, name, lambda *args: None)
    elif variant.startswith("instrumented"):
        instrument_sqlalchemy(engine, registry=CollectorRegistry())
    with engine.connect() as conn:
        conn.execute(sa.text("CREATE TABLE t (id INT, v TEXT)"))
    query = sa.text("SELECT v FROM t WHERE id = :id")

    def once() -> None:
        with engine.connect() as conn:
            conn.execute(query, {"id": 1}).scalar()

    for _ in range(calls // 10):
        once()
    start = time.thread_time()
    for _ in range(calls):
        once()
    return (time.thread_time() - start) / calls * 1e6


def database_cost(rounds: int, calls: int) -> int:
    """``instrument_sqlalchemy`` per query against bare SQLAlchemy and no-op listeners."""
    results: dict[str, list[float]] = {v: [] for v in DATABASE_VARIANTS}
    for round_index in range(rounds):
        shift = round_index % len(DATABASE_VARIANTS)
        for variant in DATABASE_VARIANTS[shift:] + DATABASE_VARIANTS[:shift]:
            out = subprocess.run(
                [sys.executable, __file__, "--database-child", variant, "--calls", str(calls)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            results[variant].append(float(out.stdout.strip().splitlines()[-1]))
    bare = statistics.median(results["bare"])
    print(f"SQLite in memory, connect + SELECT + close; {rounds} rounds x {calls} calls, median CPU µs")
    print("| variant | CPU µs/query | added µs |\n|---|---|---|")
    for variant, values in results.items():
        median = statistics.median(values)
        added = "–" if variant == "bare" else f"{median - bare:+.1f}"
        print(f"| {variant} | {median:.1f} | {added} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--scrape", action="store_true", help="measure the multiprocess /metrics instead")
    parser.add_argument("--workers", type=int, default=2, help="--scrape: live worker processes")
    parser.add_argument("--renders", type=int, default=50, help="--scrape: renders per measure")
    parser.add_argument("--scale", type=int, default=1, help="--scrape: series multiplier")
    parser.add_argument("--fill-worker", help=argparse.SUPPRESS)
    parser.add_argument("--database", action="store_true", help="measure instrument_sqlalchemy instead")
    parser.add_argument("--database-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fill_worker:
        fill_worker(args.fill_worker, args.scale)
        return 0
    if args.scrape:
        return scrape_cost(args.workers, args.renders, args.scale)
    if args.database_child:
        print(database_one(args.database_child, args.calls))
        return 0
    if args.database:
        return database_cost(args.rounds, args.calls)
    if args.child:
        print(json.dumps(run_one(args.child, args.warmup, args.calls)))
        return 0

    variants = [v for v in args.variants.split(",") if v]
    results: dict[str, list[float]] = {v: [] for v in variants}
    walls: dict[str, list[float]] = {v: [] for v in variants}
    for round_index in range(args.rounds):
        order = variants[round_index % len(variants) :] + variants[: round_index % len(variants)]
        for variant in order:
            out = subprocess.run(
                [sys.executable, __file__, "--child", variant, "--warmup", str(args.warmup),
                 "--calls", str(args.calls)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if out.returncode != 0:
                print(f"{variant} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                return 1
            measured = json.loads(out.stdout.strip().splitlines()[-1])
            results[variant].append(measured["us_per_request"])
            walls[variant].append(measured["wall_us_per_request"])
            print(f"round {round_index + 1} {variant:17s} {results[variant][-1]:8.1f} µs CPU "
                  f"{walls[variant][-1]:8.1f} µs wall", file=sys.stderr)  # fmt: skip

    medians = {v: statistics.median(xs) for v, xs in results.items()}
    wall = {v: statistics.median(xs) for v, xs in walls.items()}
    bare = medians.get("bare")
    print(f"in-process, {args.rounds} rounds x {args.calls} calls; median CPU µs/request of the event-loop "
          f"thread (robust to other load on the box), wall-clock alongside")  # fmt: skip
    print(
        "| variant | CPU µs/request | added µs | ratio vs bare | wall µs/request | wall added µs "
        "| CPU rounds |"
    )
    print("|---|---|---|---|---|---|---|")
    for v in variants:
        peer = bare is not None and v != "bare"
        added = f"{medians[v] - bare:+.1f}" if peer and bare is not None else "–"
        ratio = f"×{medians[v] / bare:.2f}" if peer and bare is not None else "–"
        wall_added = f"{wall[v] - wall['bare']:+.1f}" if peer and "bare" in wall else "–"
        rounds = ", ".join(f"{x:.1f}" for x in results[v])
        print(f"| {v} | {medians[v]:.1f} | {added} | {ratio} | {wall[v]:.1f} | {wall_added} | {rounds} |")
    if bare is not None and "watchkeeper" in medians:
        peers = [medians[p] - bare for p in PEERS if p in medians]
        if peers:
            ours = medians["watchkeeper"] - bare
            print(f"\nwatchkeeper adds {ours:.1f} µs; cheapest peer adds {min(peers):.1f} µs "
                  f"(ratio {ours / min(peers):.2f}; target ≤ 0.5)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
