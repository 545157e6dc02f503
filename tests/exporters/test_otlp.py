"""OTLP push through the real OpenTelemetry SDK to a local OTLP/HTTP receiver; fork safety."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket

pytest.importorskip("opentelemetry.sdk.metrics")
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)


class Receiver:
    """Decoded OTLP metric points: (pid, metric name, attributes, value or count)."""

    def __init__(self) -> None:
        self.points: list[tuple[int, str, dict[str, str], float]] = []
        self.lock = threading.Lock()

    def add(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        for rm in request.resource_metrics:
            resource = {a.key: a.value for a in rm.resource.attributes}
            pid = resource["process.pid"].int_value
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    for point in getattr(metric, kind).data_points:
                        attrs = {a.key: a.value.string_value for a in point.attributes}
                        value = (
                            float(point.count)
                            if kind == "histogram"
                            else float(point.as_int if point.HasField("as_int") else point.as_double)
                        )
                        with self.lock:
                            self.points.append((pid, metric.name, attrs, value))

    def latest(self, pid: int, name: str, **attrs: str) -> float | None:
        found = [v for p, n, a, v in self.points if p == pid and n == name and a == attrs]
        return found[-1] if found else None


@pytest.fixture
def receiver() -> Iterator[tuple[str, Receiver]]:
    sink = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            sink.add(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/metrics", sink
    server.shutdown()
    server.server_close()


SWITCH_APP = textwrap.dedent(
    """
    import os, sys
    from fastapi import FastAPI
    from starlette.testclient import TestClient
    from watchkeeper.exporters import ExportConfig, instrument

    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int):
        return {"item_id": item_id}

    instrument(app, export=ExportConfig(mode="otlp", otlp_endpoint=sys.argv[1], service_name="shop"))
    with TestClient(app) as client:
        for i in range(3):
            assert client.get(f"/items/{i}").status_code == 200
        assert client.get("/nowhere").status_code == 404
        assert client.get("/metrics").status_code == 404   # push mode: nothing is served
    print(os.getpid())
    """
)


def test_export_switch_otlp_pushes_the_http_metrics(receiver: tuple[str, Receiver]) -> None:
    url, sink = receiver
    out = subprocess.run([sys.executable, "-c", SWITCH_APP, url], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split()[-1])
    assert sink.latest(pid, "http_requests", method="GET", route="/items/{item_id}", status="200") == 3
    assert sink.latest(pid, "http_requests", method="GET", route="__unmatched__", status="404") == 1
    assert sink.latest(pid, "http_request_duration_seconds", method="GET", route="/items/{item_id}") == 3
    assert sink.latest(pid, "http_requests_in_progress", method="GET") == 0


FORK_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from watchkeeper.exporters import OtlpHttpMetrics, OtlpPipeline

    pipeline = OtlpPipeline(endpoint=sys.argv[1], export_interval_millis=60_000)
    metrics = OtlpHttpMetrics(pipeline)
    series = metrics.series("GET", "/r", 200)
    series.record(0.01, None)                  # starts the parent's provider and reader thread
    parent_pid = pipeline.pid
    child = os.fork()
    if child == 0:
        try:
            series.record(0.01, None)
            series.record(0.02, None)
            ok = pipeline.pid is not None and pipeline.pid == os.getpid() and pipeline.force_flush(10_000)
        except BaseException:
            ok = False
        os._exit(0 if ok else 3)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    assert pipeline.pid == parent_pid
    assert pipeline.force_flush(10_000)
    print(parent_pid, child)
    """
)


def test_each_forked_worker_starts_its_own_exporter(receiver: tuple[str, Receiver]) -> None:
    url, sink = receiver
    out = subprocess.run([sys.executable, "-c", FORK_SCRIPT, url], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    parent, child = (int(v) for v in out.stdout.split()[-2:])
    labels = {"method": "GET", "route": "/r", "status": "200"}
    assert sink.latest(child, "http_requests", **labels) == 2  # its own requests, nothing inherited
    assert sink.latest(parent, "http_requests", **labels) == 1


PUSHER_FORK_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from prometheus_client import CollectorRegistry, Counter
    from watchkeeper.exporters.otlp_push import RegistryPusher

    registry = CollectorRegistry()
    jobs = Counter("jobs", "Jobs.", registry=registry)
    pusher = RegistryPusher(registry, endpoint=sys.argv[1], export_interval_millis=200)
    pusher.ensure_started()
    parent_pid = pusher.pid
    child = os.fork()
    if child == 0:
        ok = pusher.pid is None          # the parent's thread is not ours
        pusher.ensure_started()
        jobs.inc(5)
        time.sleep(0.8)                  # only the child's own thread can push in this window
        os._exit(0 if ok and pusher.pid == os.getpid() else 3)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    assert pusher.pid == parent_pid
    print(parent_pid, child)
    """
)


def test_registry_pusher_runs_its_own_thread_in_a_forked_child(receiver: tuple[str, Receiver]) -> None:
    url, sink = receiver
    out = subprocess.run(
        [sys.executable, "-c", PUSHER_FORK_SCRIPT, url], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    parent, child = (int(v) for v in out.stdout.split()[-2:])
    assert sink.latest(child, "jobs") == 5
    assert sink.latest(parent, "jobs") == 0  # pushed at the parent's exit; the child's jobs are not in it


def test_registry_to_metrics_data_converts_every_family() -> None:
    from opentelemetry.sdk.resources import Resource
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    from watchkeeper.exporters.otlp_push import registry_to_metrics_data

    registry = CollectorRegistry()
    Counter("hits", "Hits.", ["cache"], registry=registry).labels("a").inc(3)
    Gauge("depth", "Depth.", registry=registry).set(7)
    latency = Histogram("lat_seconds", "Latency.", buckets=(0.1, 1.0), registry=registry)
    for value in (0.05, 0.5, 0.7, 5.0):
        latency.observe(value)
    data = registry_to_metrics_data(
        registry.collect(), resource=Resource.create({}), start_time_unix_nano=1, time_unix_nano=2
    )
    metrics = {m.name: m for m in data.resource_metrics[0].scope_metrics[0].metrics}
    assert set(metrics) == {"hits", "depth", "lat_seconds"}
    (hits,) = metrics["hits"].data.data_points
    assert (dict(hits.attributes), hits.value, metrics["hits"].data.is_monotonic) == ({"cache": "a"}, 3, True)
    assert metrics["depth"].data.data_points[0].value == 7
    (hist,) = metrics["lat_seconds"].data.data_points
    assert list(hist.bucket_counts) == [1, 2, 1]
    assert list(hist.explicit_bounds) == [0.1, 1.0]
    assert (hist.count, hist.sum) == (4, 6.25)


def _points(reader: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "count", None)
                    if value is None or metric.name in (
                        "http_requests",
                        "http_exceptions",
                        "websocket_connections",
                    ):
                        value = getattr(point, "value", value)
                    out[(metric.name, tuple(sorted(point.attributes.items())))] = float(value)
    return out


def test_otel_instruments_record_every_http_metric() -> None:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from starlette.testclient import TestClient

    from watchkeeper.exporters import ExportConfig, OtlpHttpMetrics, OtlpPipeline, instrument

    reader = InMemoryMetricReader()
    pipeline = OtlpPipeline(reader_factory=lambda: reader)
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.get("/boom")
    async def boom() -> None:
        raise KeyError("x")

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    instrument(app, export=ExportConfig(mode="otlp"), metrics=OtlpHttpMetrics(pipeline), body_sizes=True)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.get("/items/1")
        client.get("/items/2")
        client.get("/missing")
        client.get("/boom")
        with client.websocket_connect("/ws"):
            pass
    points = _points(reader)
    assert (
        points[("http_requests", (("method", "GET"), ("route", "/items/{item_id}"), ("status", "200")))] == 2
    )
    assert points[("http_requests", (("method", "GET"), ("route", "__unmatched__"), ("status", "404")))] == 1
    assert points[("http_requests", (("method", "GET"), ("route", "/boom"), ("status", "500")))] == 1
    assert points[("http_request_duration", (("method", "GET"), ("route", "/items/{item_id}")))] == 2
    assert points[("http_exceptions", (("exception", "KeyError"), ("route", "/boom")))] == 1
    assert points[("http_requests_in_progress", (("method", "GET"),))] == 0
    assert points[("websocket_connections", (("route", "/ws"),))] == 1
    assert points[("http_response_size", (("method", "GET"), ("route", "/items/{item_id}")))] == 2
    pipeline.shutdown()


class _CapturingExporter:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[Any] = []
        self.fail = fail
        self.shut = False

    def export(self, data: Any, **kwargs: Any) -> Any:
        if self.fail:
            raise ConnectionError("collector down")
        self.batches.append(data)
        return None

    def shutdown(self, **kwargs: Any) -> None:
        self.shut = True


def test_registry_pusher_pushes_and_pushes_again_at_shutdown() -> None:
    from prometheus_client import CollectorRegistry, Counter

    from watchkeeper.exporters.otlp_push import RegistryPusher

    registry = CollectorRegistry()
    jobs = Counter("jobs", "Jobs.", registry=registry)
    exporter = _CapturingExporter()
    pusher = RegistryPusher(registry, exporter_factory=lambda: exporter, export_interval_millis=3_600_000)
    assert not pusher.running and not pusher.push()
    pusher.ensure_started()
    assert pusher.running
    jobs.inc(4)
    assert pusher.push()
    jobs.inc(1)
    pusher.shutdown()
    assert not pusher.running and exporter.shut
    values = [
        point.value
        for batch in exporter.batches
        for metric in batch.resource_metrics[0].scope_metrics[0].metrics
        if metric.name == "jobs"
        for point in metric.data.data_points
    ]
    assert values == [4, 5]


def test_registry_pusher_survives_a_failing_collector(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from prometheus_client import CollectorRegistry, Counter

    from watchkeeper.exporters.otlp_push import RegistryPusher

    registry = CollectorRegistry()
    Counter("jobs", "Jobs.", registry=registry).inc()
    pusher = RegistryPusher(
        registry, exporter_factory=lambda: _CapturingExporter(fail=True), export_interval_millis=3_600_000
    )
    pusher.ensure_started()
    with caplog.at_level(logging.WARNING, logger="watchkeeper.exporters"):
        assert not pusher.push()
        assert not pusher.push()
    pusher.shutdown()
    assert len([r for r in caplog.records if "otlp.push" in r.getMessage()]) <= 1
