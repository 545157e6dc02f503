"""OTLP/HTTP metrics: the real OpenTelemetry SDK and OTLP/HTTP exporter pushing to a running
watchkeeper, plus the conversion rules on hand-built requests (JSON, summaries, exponential)."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality as SdkTemporality
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from tests.collector.test_push import build_app, serve, values
from watchkeeper.collector.otlp import OtlpConverter, format_float, label_name, metric_name


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve(build_app(tmp_path_factory.mktemp("otlp"))) as url:
        yield url


def provider(url: str, *, delta: bool = False, gzip_body: bool = False, path: str = "/v1/metrics",
             instance: str = "i-1") -> MeterProvider:
    temporality: dict[type, SdkTemporality] | None = (
        {Counter: SdkTemporality.DELTA, Histogram: SdkTemporality.DELTA} if delta else None
    )
    exporter = OTLPMetricExporter(
        endpoint=url + path,
        compression=Compression.Gzip if gzip_body else Compression.NoCompression,
        preferred_temporality=temporality,
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    resource = Resource.create({"service.name": "api", "service.namespace": "shop",
                                "service.instance.id": instance, "deployment.environment": "test"})
    views = [View(instrument_name="payload.size", aggregation=ExponentialBucketHistogramAggregation())]
    return MeterProvider(metric_readers=[reader], resource=resource, views=views)


def test_sdk_push_counters_histograms_gauges_and_target_info(server: str) -> None:
    mp = provider(server, gzip_body=True)
    meter = mp.get_meter("shop.api", "1.0")
    requests = meter.create_counter("http.requests", unit="{request}")
    duration = meter.create_histogram("http.server.duration", unit="ms")
    in_flight = meter.create_up_down_counter("http.in_flight")
    size = meter.create_histogram("payload.size", unit="By")

    def temperature(options: CallbackOptions) -> list[Observation]:
        return [Observation(21.5, {"room": "a"})]

    meter.create_observable_gauge("room.temperature", [temperature], unit="Cel")
    meter.create_observable_gauge("disk.used", [lambda o: [Observation(0.25)]], unit="1")
    requests.add(3, {"http.route": "/a"})
    requests.add(1, {"http.route": "/b"})
    in_flight.add(2)
    for ms in (5, 20, 20, 300):
        duration.record(ms, {"http.route": "/a"})
    for n in (1, 3, 1000):
        size.record(n)
    assert mp.force_flush(10_000)
    mp.shutdown()
    ident = "instance=i-1,job=shop/api"
    assert values(server, "http_requests_total") == {
        f"http_route=/a,{ident}": 3.0, f"http_route=/b,{ident}": 1.0}
    assert values(server, "http_in_flight") == {ident: 2.0}
    assert values(server, "room_temperature_celsius") == {f"{ident},room=a": 21.5}
    assert values(server, "disk_used_ratio") == {ident: 0.25}
    assert values(server, "http_server_duration_milliseconds_count") == {f"http_route=/a,{ident}": 4.0}
    assert values(server, "http_server_duration_milliseconds_sum") == {f"http_route=/a,{ident}": 345.0}
    buckets = values(server, "http_server_duration_milliseconds_bucket")
    assert buckets[f"http_route=/a,{ident},le=25"] == 3.0
    assert buckets[f"http_route=/a,{ident},le=+Inf"] == 4.0
    q = values(server, "histogram_quantile(0.5, http_server_duration_milliseconds_bucket)")
    assert 10 < q[f"http_route=/a,{ident}"] <= 25
    size_buckets = values(server, "payload_size_bytes_bucket")
    assert size_buckets[f"{ident},le=+Inf"] == 3.0
    assert values(server, "payload_size_bytes_count") == {ident: 3.0}
    middle = values(server, "histogram_quantile(0.5, payload_size_bytes_bucket)")[ident]
    assert 2 <= middle <= 4.5  # the middle observation is 3: its exponential bucket, as a classic one
    info = query_one(server, "target_info")
    assert info["deployment_environment"] == "test" and info["job"] == "shop/api"
    assert "service_name" not in info and info["telemetry_sdk_language"] == "python"


def query_one(url: str, expr: str) -> dict[str, str]:
    r = httpx.get(url + "/api/v1/query", params={"query": expr}).json()["data"]["result"]
    assert len(r) == 1, r
    metric: dict[str, str] = r[0]["metric"]
    return metric


def test_sdk_delta_temporality_becomes_cumulative(server: str) -> None:
    mp = provider(server, delta=True, path="/api/v1/otlp/v1/metrics", instance="delta-1")
    meter = mp.get_meter("delta")
    jobs = meter.create_counter("jobs.processed")
    lat = meter.create_histogram("job.latency", unit="s")
    jobs.add(2)
    lat.record(0.2)
    assert mp.force_flush(10_000)
    time.sleep(0.01)
    jobs.add(3)
    lat.record(0.3)
    lat.record(7)
    assert mp.force_flush(10_000)
    mp.shutdown()
    ident = "instance=delta-1,job=shop/api"
    assert values(server, "jobs_processed_total") == {ident: 5.0}
    assert values(server, "job_latency_seconds_count") == {ident: 3.0}
    assert values(server, "job_latency_seconds_sum") == {ident: pytest.approx(7.5)}
    buckets = values(server, "job_latency_seconds_bucket")
    assert (buckets[f"{ident},le=5"], buckets[f"{ident},le=10"], buckets[f"{ident},le=+Inf"]) == (2, 3, 3)


def _request(data: dict[str, object]) -> ExportMetricsServiceRequest:
    message = ExportMetricsServiceRequest()
    json_format.ParseDict(data, message)
    return message


def _gauge_json(name: str, value: float, t_ns: int, **extra: object) -> dict[str, object]:
    return {"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
        "scopeMetrics": [{"metrics": [{"name": name, "gauge": {"dataPoints": [
            {"asDouble": value, "timeUnixNano": str(t_ns), "attributes": [
                {"key": "host.name", "value": {"stringValue": "h1"}},
                {"key": "1st", "value": {"intValue": "7"}}], **extra}]}}]}],
    }]}


def test_json_body_with_hex_exemplar_ids_and_json_response(server: str) -> None:
    now_ns = time.time_ns()
    body = _gauge_json("queue.size", 4, now_ns, exemplars=[
        {"asDouble": 4, "timeUnixNano": str(now_ns), "traceId": "5b8efff798038103d269b633813fc60c",
         "spanId": "eee19b7ec3c1b174"}])
    r = httpx.post(server + "/v1/metrics", content=json.dumps(body),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert values(server, "queue_size") == {"host_name=h1,job=json-svc,key_1st=7": 4.0}


@pytest.mark.parametrize("path", ["/v1/metrics", "/api/v1/otlp/v1/metrics"])
@pytest.mark.parametrize("as_json", [False, True], ids=["protobuf", "json"])
@pytest.mark.parametrize("gzipped", [False, True], ids=["identity", "gzip"])
def test_both_paths_take_protobuf_and_json_plain_or_gzipped(
    server: str, path: str, as_json: bool, gzipped: bool
) -> None:
    name = f"matrix.{path.count('/')}.{int(as_json)}.{int(gzipped)}"
    data = _gauge_json(name, 2.5, time.time_ns())
    body = json.dumps(data).encode() if as_json else _request(data).SerializeToString()
    headers = {"Content-Type": "application/json" if as_json else "application/x-protobuf"}
    if gzipped:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    r = httpx.post(server + path, content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == headers["Content-Type"]
    assert values(server, name.replace(".", "_")) == {"host_name=h1,job=json-svc,key_1st=7": 2.5}


def test_summary_becomes_quantile_sum_and_count_series(server: str) -> None:
    point = {"timeUnixNano": str(time.time_ns()), "count": "10", "sum": 4.5,
             "attributes": [{"key": "rpc.method", "value": {"stringValue": "Get"}}],
             "quantileValues": [{"quantile": 0.5, "value": 0.3}, {"quantile": 0.99, "value": 1.2}]}
    body = {"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "legacy"}}]},
        "scopeMetrics": [{"metrics": [
            {"name": "rpc.latency", "unit": "s", "summary": {"dataPoints": [point]}}]}],
    }]}
    r = httpx.post(server + "/v1/metrics", json=body)
    assert r.status_code == 200, r.text
    ident = "job=legacy,rpc_method=Get"
    quantiles = values(server, "rpc_latency_seconds")
    assert quantiles == {"job=legacy,quantile=0.5,rpc_method=Get": 0.3,
                         "job=legacy,quantile=0.99,rpc_method=Get": 1.2}
    assert values(server, "rpc_latency_seconds_sum") == {ident: 4.5}
    assert values(server, "rpc_latency_seconds_count") == {ident: 10.0}


def test_protobuf_response_reports_partial_success(server: str) -> None:
    now_ns = time.time_ns()
    req = _request(_gauge_json("ok.gauge", 1, now_ns))
    req.resource_metrics[0].scope_metrics[0].metrics.add(name="empty.metric")  # no data: rejected
    bad = req.resource_metrics[0].scope_metrics[0].metrics.add(name="bad.hist")
    p = bad.histogram.data_points.add(time_unix_nano=now_ns, count=1)
    p.explicit_bounds.extend([1.0, 2.0])
    p.bucket_counts.extend([1])  # needs 3 counts
    wide = req.resource_metrics[0].scope_metrics[0].metrics.add(name="bad.exp")
    wide.exponential_histogram.data_points.add(time_unix_nano=now_ns, count=1, scale=99)  # out of range
    r = httpx.post(server + "/v1/metrics", content=gzip.compress(req.SerializeToString()),
                   headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    resp = ExportMetricsServiceResponse.FromString(r.content)
    assert resp.partial_success.rejected_data_points == 3
    assert "no_data" in resp.partial_success.error_message
    assert "scale 99 is outside the range" in resp.partial_success.error_message
    metrics = httpx.get(server + "/metrics").text  # counted, by reason, in watchkeeper's own metrics
    for reason in ("no_data", "bad_histogram", "bad_exponential_histogram"):
        assert f'watchkeeper_ingest_rejected_samples_total{{reason="otlp_{reason}"}} 1.0' in metrics
    assert values(server, "ok_gauge") == {"host_name=h1,job=json-svc,key_1st=7": 1.0}


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"\xff\xff\xff", {"Content-Type": "application/x-protobuf"}, 400),
        (b"{not json", {"Content-Type": "application/json"}, 400),
        (b"[]", {"Content-Type": "application/json"}, 400),
        (b'{"resourceMetrics": 3}', {"Content-Type": "application/json"}, 400),
        (b"x", {"Content-Type": "text/plain"}, 415),
        (b"x", {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, 400),
    ],
)
def test_bad_bodies_are_4xx_with_a_message(
    server: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    r = httpx.post(server + "/v1/metrics", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.text.strip()


def test_summary_and_stale_points() -> None:
    req = ExportMetricsServiceRequest()
    m = req.resource_metrics.add().scope_metrics.add().metrics.add(name="rpc.duration", unit="s")
    p = m.summary.data_points.add(time_unix_nano=2_000_000, count=10, sum=4.5)
    p.quantile_values.add(quantile=0.5, value=0.3)
    p.quantile_values.add(quantile=0.99, value=1.2)
    g = req.resource_metrics[0].scope_metrics[0].metrics.add(name="gone")
    g.gauge.data_points.add(time_unix_nano=2_000_000, flags=1)
    batch = OtlpConverter().convert(req).batch
    from watchkeeper.collector.push import SampleBatch

    assert isinstance(batch, SampleBatch) and len(batch) == 5
    assert batch.values[:4] == [0.3, 1.2, 4.5, 10.0]
    assert batch.timestamps_ms == [2] * 5
    import math
    import struct

    assert struct.pack("<d", batch.values[4]) == struct.pack("<Q", 0x7FF0000000000002)
    assert math.isnan(batch.values[4])


def test_exponential_histogram_to_classic_buckets() -> None:
    req = ExportMetricsServiceRequest()
    m = req.resource_metrics.add().scope_metrics.add().metrics.add(name="x")
    cumulative = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    m.exponential_histogram.aggregation_temporality = cumulative
    p = m.exponential_histogram.data_points.add(time_unix_nano=10**6, count=6, sum=10, scale=0, zero_count=1)
    p.positive.offset = 0
    p.positive.bucket_counts.extend([1, 2])  # (1,2] and (2,4]
    p.negative.offset = 1
    p.negative.bucket_counts.extend([2])  # [-4,-2)
    conv = OtlpConverter()
    got = conv._exponential_buckets(p)
    assert got == [(-2.0, 2.0), (0.0, 1.0), (2.0, 1.0), (4.0, 2.0), (float("inf"), 0.0)]
    # too many buckets: downscaled until they fit
    p2 = m.exponential_histogram.data_points.add(time_unix_nano=10**6, count=1000, scale=8)
    p2.positive.offset = -500
    p2.positive.bucket_counts.extend([1] * 1000)
    small = OtlpConverter(max_exponential_buckets=20)._exponential_buckets(p2)
    assert not isinstance(small, str)
    assert len(small) <= 21 and sum(n for _, n in small) == 1000
    # too wide even at the smallest scale, or a scale out of range: rejected with a reason
    p3 = m.exponential_histogram.data_points.add(time_unix_nano=10**6, count=2, scale=-10)
    p3.positive.bucket_counts.extend([1])
    p3.negative.bucket_counts.extend([1])
    m.exponential_histogram.data_points.add(time_unix_nano=10**6, count=0, scale=99)
    result = OtlpConverter(max_exponential_buckets=1).convert(req)
    assert result.reasons == {"bad_exponential_histogram": 4}  # all but p2 (downscaled) and p
    assert "span more than" in result.message()
    assert "scale 99" in str(conv._exponential_buckets(m.exponential_histogram.data_points[3]))


@pytest.mark.parametrize(
    ("name", "unit", "kind", "expected"),
    [
        ("http.server.duration", "ms", "histogram", "http_server_duration_milliseconds"),
        ("requests", "1", "counter", "requests_total"),
        ("requests.total", "", "counter", "requests_total"),
        ("cpu.utilization", "1", "gauge", "cpu_utilization_ratio"),
        ("throughput", "By/s", "gauge", "throughput_bytes_per_second"),
        ("latency_seconds", "s", "histogram", "latency_seconds"),
        ("queue", "{items}", "gauge", "queue"),
        ("2xx.count", "", "counter", "_2xx_count_total"),
        ("weird..name__x", "", "gauge", "weird_name_x"),
    ],
)
def test_metric_names(name: str, unit: str, kind: str, expected: str) -> None:
    assert metric_name(name, unit, kind) == expected


def test_label_names_and_floats() -> None:
    assert label_name("k8s.pod.name") == "k8s_pod_name"
    assert label_name("__reserved") == "__reserved"
    assert [format_float(v) for v in (0.005, 1.0, 1e21, 2.5e-7, float("inf"))] == [
        "0.005", "1", "1000000000000000000000", "0.00000025", "+Inf"]


def test_colliding_attribute_names_are_joined(tmp_path: Path) -> None:
    req = _request(_gauge_json("g", 1, 10**6))
    dp = req.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[0]
    dp.attributes.add(key="host_name").value.string_value = "h2"
    batch = OtlpConverter().convert(req).batch
    assert b"h1;h2" in batch.keys[0] or b"h2;h1" in batch.keys[0]
