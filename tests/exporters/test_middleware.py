"""The ASGI middleware, measured through real FastAPI/Starlette apps and a fresh registry per test."""

from __future__ import annotations

import asyncio
import logging
import random
import string
from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import APIRouter, BackgroundTasks, FastAPI, HTTPException, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from watchkeeper.exporters import instrument
from watchkeeper.exporters.http_metrics import DURATION_BUCKETS_SECONDS

ROUTE = "/items/{item_id}"


def make_app(
    registry: CollectorRegistry, seen_by_background: list[float | None] | None = None, **options: object
) -> FastAPI:
    app = FastAPI()
    seen_by_background = [] if seen_by_background is None else seen_by_background
    api = APIRouter(prefix="/api")
    v2 = APIRouter(prefix="/v2")

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        if item_id == 0:
            raise HTTPException(status_code=404, detail="no such item")
        return {"item_id": item_id}

    @app.get("/fail")
    async def fail() -> JSONResponse:
        return JSONResponse({"error": "down"}, status_code=500)

    @app.get("/boom/{kind}")
    async def boom(kind: str) -> None:
        raise RuntimeError(f"boom {kind}")

    @app.get("/slow-stream")
    async def slow_stream(background: BackgroundTasks) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                await asyncio.sleep(0.05)
                yield b"chunk\n"

        async def after_response() -> None:
            # What the histogram held when the background task began: the request's latency must
            # already be recorded, so the task's own time is not part of it.
            seen_by_background.append(
                registry.get_sample_value(
                    "http_request_duration_seconds_count", {"method": "GET", "route": "/slow-stream"}
                )
            )
            await asyncio.sleep(0.2)

        background.add_task(after_response)
        return StreamingResponse(chunks(), background=background)

    @app.get("/events")
    async def events() -> StreamingResponse:
        async def stream() -> AsyncIterator[bytes]:
            for i in range(2):
                await asyncio.sleep(0.02)
                yield f"data: {i}\n\n".encode()

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/in-progress")
    async def in_progress() -> dict[str, float | None]:
        return {"value": registry.get_sample_value("http_requests_in_progress", {"method": "GET"})}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/echo")
    async def echo(body: dict[str, str]) -> dict[str, str]:
        return body

    @app.websocket("/ws/{room}")
    async def ws(websocket: WebSocket, room: str) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        await websocket.send_text(f"{room}:{text}")
        await websocket.close()

    @v2.get("/things/{thing}")
    async def thing(thing: str) -> dict[str, str]:
        return {"thing": thing}

    api.include_router(v2)
    app.include_router(api)

    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app.mount("/sub", Starlette(routes=[Route("/hello/{name}", hello)]))
    instrument(app, registry=registry, **options)  # type: ignore[arg-type]
    return app


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def client(registry: CollectorRegistry) -> Iterator[TestClient]:
    with TestClient(make_app(registry), raise_server_exceptions=False) as test_client:
        yield test_client


def requests_total(registry: CollectorRegistry, method: str, route: str, status: str) -> float | None:
    return registry.get_sample_value(
        "http_requests_total", {"method": method, "route": route, "status": status}
    )


def duration(registry: CollectorRegistry, suffix: str, method: str, route: str, **extra: str) -> float | None:
    return registry.get_sample_value(
        f"http_request_duration_seconds_{suffix}", {"method": method, "route": route, **extra}
    )


def label_sets(registry: CollectorRegistry, sample_name: str) -> list[dict[str, str]]:
    return [
        dict(sample.labels)
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == sample_name
    ]


def test_normal_requests_count_latency_and_in_progress(
    client: TestClient, registry: CollectorRegistry
) -> None:
    assert client.get("/items/1").status_code == 200
    assert client.get("/items/2").status_code == 200
    assert requests_total(registry, "GET", ROUTE, "200") == 2
    assert duration(registry, "count", "GET", ROUTE) == 2
    total = duration(registry, "sum", "GET", ROUTE)
    assert total is not None and 0 < total < 1
    # Buckets are 5 ms … 10 s, cumulative, and every fast request is in the first one.
    buckets = [
        sample.labels["le"]
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "http_request_duration_seconds_bucket" and sample.labels["route"] == ROUTE
    ]
    assert buckets == [str(b) for b in DURATION_BUCKETS_SECONDS] + ["+Inf"]
    assert duration(registry, "bucket", "GET", ROUTE, le="+Inf") == 2
    assert registry.get_sample_value("http_requests_in_progress", {"method": "GET"}) == 0
    # Only the documented label sets exist: the raw path never appears.
    assert label_sets(registry, "http_requests_total") == [{"method": "GET", "route": ROUTE, "status": "200"}]


def test_in_progress_counts_the_running_request(client: TestClient, registry: CollectorRegistry) -> None:
    assert client.get("/in-progress").json() == {"value": 1.0}
    assert registry.get_sample_value("http_requests_in_progress", {"method": "GET"}) == 0


def test_unmatched_404_and_405_share_one_route(client: TestClient, registry: CollectorRegistry) -> None:
    assert client.get("/no/such/path").status_code == 404
    assert client.get("/another-missing").status_code == 404
    assert client.post("/items/1").status_code == 405
    assert requests_total(registry, "GET", "__unmatched__", "404") == 2
    assert requests_total(registry, "POST", "__unmatched__", "405") == 1
    assert requests_total(registry, "POST", ROUTE, "405") is None
    assert duration(registry, "count", "GET", "__unmatched__") == 2


def test_404_raised_by_a_matched_route_keeps_its_template(
    client: TestClient, registry: CollectorRegistry
) -> None:
    assert client.get("/items/0").status_code == 404
    assert requests_total(registry, "GET", ROUTE, "404") == 1
    assert requests_total(registry, "GET", "__unmatched__", "404") is None


def test_500_response_is_counted_without_an_exception(
    client: TestClient, registry: CollectorRegistry
) -> None:
    assert client.get("/fail").status_code == 500
    assert requests_total(registry, "GET", "/fail", "500") == 1
    assert label_sets(registry, "http_exceptions_total") == []


def test_raised_exception_counts_500_and_the_exception(
    client: TestClient, registry: CollectorRegistry
) -> None:
    assert client.get("/boom/a").status_code == 500
    assert client.get("/boom/b").status_code == 500
    assert requests_total(registry, "GET", "/boom/{kind}", "500") == 2
    assert (
        registry.get_sample_value(
            "http_exceptions_total", {"route": "/boom/{kind}", "exception": "RuntimeError"}
        )
        == 2
    )
    assert registry.get_sample_value("http_requests_in_progress", {"method": "GET"}) == 0


def test_streaming_latency_runs_to_the_last_chunk_not_the_background(registry: CollectorRegistry) -> None:
    seen_by_background: list[float | None] = []
    with TestClient(make_app(registry, seen_by_background)) as client:
        response = client.get("/slow-stream")
    assert response.text == "chunk\n" * 3
    # Recorded once the last chunk was sent and before the background task started ...
    assert seen_by_background == [1.0]
    # ... and after the three 50 ms chunks (sleeps only ever last longer, so this bound is safe).
    observed = duration(registry, "sum", "GET", "/slow-stream")
    assert observed is not None and observed >= 0.15, observed
    assert duration(registry, "bucket", "GET", "/slow-stream", le="0.1") == 0


def test_server_sent_events_are_counted_but_not_timed(
    client: TestClient, registry: CollectorRegistry
) -> None:
    assert "data: 1" in client.get("/events").text
    assert requests_total(registry, "GET", "/events", "200") == 1
    assert duration(registry, "count", "GET", "/events") == 0


def test_websocket_is_timed_separately_not_as_http(client: TestClient, registry: CollectorRegistry) -> None:
    with client.websocket_connect("/ws/lobby") as websocket:
        websocket.send_text("hello")
        assert websocket.receive_text() == "lobby:hello"
    assert registry.get_sample_value("websocket_connections_total", {"route": "/ws/{room}"}) == 1
    assert (
        registry.get_sample_value("websocket_connection_duration_seconds_count", {"route": "/ws/{room}"}) == 1
    )
    assert label_sets(registry, "http_requests_total") == []
    assert label_sets(registry, "http_requests_in_progress") == []


def test_included_routers_and_mounts_report_the_full_template(
    client: TestClient, registry: CollectorRegistry
) -> None:
    assert client.get("/api/v2/things/x").status_code == 200
    assert client.get("/sub/hello/bob").status_code == 200
    assert client.get("/sub/nothing").status_code == 404
    assert requests_total(registry, "GET", "/api/v2/things/{thing}", "200") == 1
    assert requests_total(registry, "GET", "/sub/hello/{name}", "200") == 1
    assert requests_total(registry, "GET", "__unmatched__", "404") == 1


def test_excluded_paths_are_not_measured_and_metrics_are_served(
    client: TestClient, registry: CollectorRegistry
) -> None:
    assert client.get("/health").status_code == 200
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert label_sets(registry, "http_requests_total") == []
    assert "http_requests_total" in response.text


def test_excluded_paths_are_configurable(registry: CollectorRegistry) -> None:
    with TestClient(make_app(registry, exclude_paths=("/fail",))) as client:
        assert client.get("/fail").status_code == 500
        assert client.get("/health").status_code == 200  # no longer excluded
        assert client.get("/metrics").status_code == 200  # served, never measured
    expected = [{"method": "GET", "route": "/health", "status": "200"}]
    assert label_sets(registry, "http_requests_total") == expected


def test_cardinality_is_bounded_under_random_paths_and_methods(
    client: TestClient, registry: CollectorRegistry
) -> None:
    rng = random.Random(7)
    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    for _ in range(300):
        path = "/" + "/".join(
            "".join(rng.choices(string.ascii_lowercase + string.digits, k=rng.randint(1, 12)))
            for _ in range(rng.randint(1, 4))
        )
        if rng.random() < 0.3:
            path = f"/items/{rng.randint(1, 10**9)}"
        method = (
            rng.choice(methods) if rng.random() < 0.6 else "".join(rng.choices(string.ascii_uppercase, k=6))
        )
        client.request(method, path)
    sets = label_sets(registry, "http_requests_total")
    assert {s["route"] for s in sets} <= {"__unmatched__", ROUTE}
    assert {s["method"] for s in sets} <= {*methods, "_OTHER"}
    assert "_OTHER" in {s["method"] for s in sets}
    assert len(sets) <= 30
    in_progress_methods = {s["method"] for s in label_sets(registry, "http_requests_in_progress")}
    assert in_progress_methods <= {*methods, "_OTHER"}
    assert (
        sum(s.value for m in registry.collect() for s in m.samples if s.name == "http_requests_total") == 300
    )


def test_route_label_values_are_capped(registry: CollectorRegistry) -> None:
    async def ok(request: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route(f"/r{i}", ok) for i in range(6)])
    instrument(app, registry=registry, max_routes=3)
    with TestClient(app) as client:
        for i in range(6):
            assert client.get(f"/r{i}").status_code == 200
    routes = sorted(s["route"] for s in label_sets(registry, "http_requests_total"))
    assert routes == ["/r0", "/r1", "/r2", "__other__"]
    assert requests_total(registry, "GET", "__other__", "200") == 3


def test_body_sizes_are_opt_in(registry: CollectorRegistry) -> None:
    with TestClient(make_app(registry, body_sizes=True)) as client:
        assert client.post("/echo", json={"a": "bcd"}).json() == {"a": "bcd"}
    labels = {"method": "POST", "route": "/echo"}
    assert registry.get_sample_value("http_request_size_bytes_sum", labels) == len(b'{"a":"bcd"}')
    assert registry.get_sample_value("http_response_size_bytes_sum", labels) == len(b'{"a":"bcd"}')
    other = CollectorRegistry()
    with TestClient(make_app(other)) as client:
        client.post("/echo", json={"a": "b"})
    assert other.get_sample_value("http_request_size_bytes_count", labels) is None


def test_exemplars_carry_the_active_trace_id_in_openmetrics_only(registry: CollectorRegistry) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    inner = make_app(registry)
    trace_ids: list[str] = []

    async def traced(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await inner(scope, receive, send)
            return
        with tracer.start_as_current_span("request") as span:
            trace_ids.append(f"{span.get_span_context().trace_id:032x}")
            await inner(scope, receive, send)

    with TestClient(traced) as client:
        assert client.get("/items/5").status_code == 200
        openmetrics = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
        text = client.get("/metrics")
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert f'# {{trace_id="{trace_ids[0]}"}}' in openmetrics.text
    assert "trace_id" not in text.text
    bucket_lines = [line for line in openmetrics.text.splitlines() if "trace_id" in line]
    assert any(line.startswith("http_request_duration_seconds_bucket") for line in bucket_lines)
    assert any(line.startswith("http_requests_total") for line in bucket_lines)


def test_metrics_endpoint_gzips_when_asked(client: TestClient) -> None:
    client.get("/items/1")
    response = client.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert 'http_requests_total{method="GET",route="/items/{item_id}",status="200"} 1.0' in response.text
    plain = client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers


class _Exploding:
    """A metric backend where everything raises, as a broken registry or exporter would."""

    def __getattr__(self, name: str) -> object:
        raise RuntimeError(f"broken metrics backend: {name}")


def test_a_broken_metrics_backend_never_breaks_a_request(caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    instrument(app, metrics=_Exploding())  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="watchkeeper.exporters"), TestClient(app) as client:
        for i in range(5):
            assert client.get(f"/items/{i}").json() == {"item_id": i}
        assert client.get("/missing").status_code == 404
    warnings = [r for r in caplog.records if "dropping measurements" in r.getMessage()]
    assert 1 <= len(warnings) <= 2  # once per hook (binding, in-progress), not once per request


class _BrokenRegistry(CollectorRegistry):
    def register(self, collector: object) -> None:
        raise ValueError("Duplicated timeseries in CollectorRegistry")


class _UnscrapableRegistry(CollectorRegistry):
    def collect(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("collector failed")


def test_a_registry_that_refuses_registration_leaves_the_app_working() -> None:
    app = FastAPI()

    @app.get("/ok")
    async def ok() -> dict[str, bool]:
        return {"ok": True}

    assert instrument(app, registry=_BrokenRegistry()) is app
    with TestClient(app) as client:
        assert client.get("/ok").json() == {"ok": True}


def test_a_registry_that_fails_to_collect_fails_only_the_scrape() -> None:
    registry = _UnscrapableRegistry()
    app = make_app(registry)
    with TestClient(app) as client:
        assert client.get("/items/3").json() == {"item_id": 3}
        assert client.get("/metrics").status_code == 500


def test_instrumenting_twice_on_one_registry_shares_the_metrics(registry: CollectorRegistry) -> None:
    first, second = make_app(registry), make_app(registry)
    with TestClient(first) as a, TestClient(second) as b:
        a.get("/items/1")
        b.get("/items/1")
    assert requests_total(registry, "GET", ROUTE, "200") == 2


def test_a_plain_asgi_app_is_wrapped(registry: CollectorRegistry) -> None:
    async def raw(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    wrapped = instrument(raw, registry=registry)
    assert wrapped is not raw
    client = TestClient(wrapped)  # no lifespan: this bare app only speaks HTTP
    assert client.get("/anything/123").status_code == 204
    assert client.get("/metrics").status_code == 200
    # No router, so no template: the raw path must not leak into the labels.
    assert label_sets(registry, "http_requests_total") == [
        {"method": "GET", "route": "__unmatched__", "status": "204"}
    ]


def test_bucket_boundaries_match_prometheus_client() -> None:
    """The hot path's bucket choice equals Histogram.observe's (an amount equal to a bound is in it)."""
    from prometheus_client import generate_latest

    from watchkeeper.exporters.http_metrics import PrometheusHttpMetrics

    fast, public = CollectorRegistry(), CollectorRegistry()
    series = PrometheusHttpMetrics(registry=fast).series("GET", "/r", 200)
    reference = PrometheusHttpMetrics(registry=public)
    amounts = [0.0, 0.005, 0.0050001, 0.1, 0.3, 10.0, 11.0, 1e9]
    for amount in amounts:
        series.record(amount, None)
        reference.requests.labels("GET", "/r", "200").inc()
        reference.duration.labels("GET", "/r").observe(amount)

    def without_created(registry: CollectorRegistry) -> list[str]:
        return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]

    assert without_created(fast) == without_created(public)
    assert (
        fast.get_sample_value(
            "http_request_duration_seconds_bucket", {"method": "GET", "route": "/r", "le": "0.005"}
        )
        == 2
    )


def test_bound_series_are_reused_across_requests(registry: CollectorRegistry) -> None:
    """One cached series per (method, status, route): FastAPI's per-route objects are stable."""
    from watchkeeper.exporters.middleware import MetricsMiddleware

    app = make_app(registry)
    with TestClient(app) as client:
        for i in range(1, 101):
            client.get(f"/api/v2/things/{i}")
            client.get(f"/items/{i}")
            client.get(f"/sub/hello/{i}")
            client.get(f"/missing/{i}")
        layer = app.middleware_stack
        while not isinstance(layer, MetricsMiddleware):
            layer = layer.app  # type: ignore[union-attr]
        assert len(layer._series) == 4
    assert requests_total(registry, "GET", "/api/v2/things/{thing}", "200") == 100
