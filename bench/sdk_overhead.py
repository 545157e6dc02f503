"""In-process per-request overhead of watchkeeper's ``instrument(app)`` against the peers, in one run.

Each variant is the same minimal FastAPI app (``GET /items/{item_id}`` returning a small dict),
called in-process with ``await app(scope, receive, send)`` — no server, no socket — so the figure
is the CPU cost the instrumentation adds to one request. Every (round, variant) runs in a fresh
subprocess (no provider or registry state leaks between variants); the order rotates per round;
each run checks that all responses were 200 and that the variant's backend counted every request.

    python bench/sdk_overhead.py                   # 3 rounds, 2000 warm-up + 20000 timed calls
    python bench/sdk_overhead.py --rounds 5 --calls 50000
    python bench/sdk_overhead.py --variants bare,watchkeeper

Variants: bare; watchkeeper (``instrument(app)``, Prometheus registry); watchkeeper_otlp (the default
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
import json
import statistics
import subprocess
import sys
import time
from typing import Any

VARIANTS = ("bare", "watchkeeper", "watchkeeper_otlp", "watchkeeper_otel", "pfi", "se", "otel", "native")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
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
