"""OTLP ingest rate next to remote-write's, for the same samples, in process and over HTTP.

    python bench/otlp_ingest.py [--requests 200] [--memory]

The batch is what an instrumented service's OpenTelemetry SDK exports every interval: one
resource (service.name/namespace/instance.id + 6 more attributes), 40 counters x 25 attribute
sets, 20 gauges x 25, 10 explicit histograms x 25 (15 buckets), 2 exponential histograms x 5
(cumulative, protobuf). Each round advances the timestamps by 15 s. The same samples (after
conversion) are encoded as a remote-write request and ingested through `RemoteWriteIngester`, so
the two rates compare the two decoders on identical data into the same kind of store.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cramjam
import httpx
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from watchkeeper.collector.limits import Limits
from watchkeeper.collector.otlp import OtlpConverter, decode_otlp
from watchkeeper.collector.push import append_samples
from watchkeeper.collector.remote_write import RemoteWriteIngester
from watchkeeper.tsdb.storage import Storage

T0_NS = time.time_ns() - 3 * 3600 * 10**9


def build_request(round_no: int) -> bytes:
    t = T0_NS + round_no * 15 * 10**9
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    for k, v in {"service.name": "api", "service.namespace": "shop", "service.instance.id": "pod-7f9c",
                 "host.name": "node-3", "cloud.region": "eu-west-1", "k8s.pod.name": "api-7f9c",
                 "k8s.namespace.name": "prod", "telemetry.sdk.language": "python",
                 "telemetry.sdk.version": "1.45"}.items():
        rm.resource.attributes.add(key=k).value.string_value = v
    sm = rm.scope_metrics.add()
    sm.scope.name = "shop.api"

    def attrs(point: object, j: int) -> None:
        a = point.attributes  # type: ignore[attr-defined]
        a.add(key="http.route").value.string_value = f"/api/v1/r{j % 5}"
        method = ("GET", "POST", "PUT", "DELETE", "PATCH")[j // 5]
        a.add(key="http.request.method").value.string_value = method
        a.add(key="http.response.status_code").value.int_value = 200

    for i in range(40):
        m = sm.metrics.add(name=f"app.events.{i}", unit="{event}")
        m.sum.is_monotonic = True
        m.sum.aggregation_temporality = 2
        for j in range(25):
            dp = m.sum.data_points.add(start_time_unix_nano=T0_NS, time_unix_nano=t, as_int=round_no * 10 + j)
            attrs(dp, j)
    for i in range(20):
        m = sm.metrics.add(name=f"app.level.{i}", unit="By")
        for j in range(25):
            attrs(m.gauge.data_points.add(time_unix_nano=t, as_double=1000.5 + j), j)
    bounds = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
    for i in range(10):
        m = sm.metrics.add(name=f"http.server.duration.{i}", unit="s")
        m.histogram.aggregation_temporality = 2
        for j in range(25):
            p = m.histogram.data_points.add(start_time_unix_nano=T0_NS, time_unix_nano=t,
                                            count=15 * (round_no + 1), sum=1.5 * (round_no + 1))
            p.explicit_bounds.extend(bounds)
            p.bucket_counts.extend([round_no + 1] * 15)
            attrs(p, j)
    for i in range(2):
        m = sm.metrics.add(name=f"payload.size.{i}", unit="By")
        m.exponential_histogram.aggregation_temporality = 2
        for j in range(5):
            p = m.exponential_histogram.data_points.add(start_time_unix_nano=T0_NS, time_unix_nano=t,
                                                        count=20 * (round_no + 1), sum=5e4, scale=3)
            p.positive.offset = 40
            p.positive.bucket_counts.extend([round_no + 1] * 20)
            attrs(p, j)
    return bytes(req.SerializeToString())


def open_store(memory: bool, tmp: Path, name: str) -> Storage:
    return Storage.open(data_dir=None if memory else tmp / name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--memory", action="store_true", help="in-memory stores instead of SQLite + WAL")
    args = p.parse_args()
    bodies = [build_request(i) for i in range(args.requests)]
    with tempfile.TemporaryDirectory(prefix="wk-otlp-bench-") as tmp_s:
        tmp = Path(tmp_s)
        # OTLP: decode + convert + append (through the remote-write core, as the route does)
        store = open_store(args.memory, tmp, "otlp")
        ingester = RemoteWriteIngester(store, Limits())
        conv = OtlpConverter()
        batches = []
        decode_s = convert_s = append_s = 0.0
        cpu0 = time.process_time()
        wall0 = time.perf_counter()
        for body in bodies:  # stages timed in this thread's CPU time (robust to a loaded machine)
            t0 = time.thread_time()
            msg = decode_otlp(body, False)
            t1 = time.thread_time()
            batch = conv.convert(msg).batch
            t2 = time.thread_time()
            report = append_samples(ingester, batch)
            t3 = time.thread_time()
            assert not report.rejected, report.message()
            batches.append(batch)
            decode_s, convert_s, append_s = decode_s + t1 - t0, convert_s + t2 - t1, append_s + t3 - t2
        total = time.perf_counter() - wall0
        otlp_cpu = time.process_time() - cpu0
        stages = decode_s + convert_s + append_s
        store.close()
        samples = sum(len(b) for b in batches)
        rw_bodies = [bytes(cramjam.snappy.compress_raw(b.write_request())) for b in batches]
        print(f"batch: {samples // len(bodies)} samples per request ({len(bodies[0]):,} protobuf bytes), "
              f"{len(bodies)} requests, store={'memory' if args.memory else 'sqlite+wal'}, "
              f"load average {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
        print(f"OTLP in process:         {samples / total:>10,.0f} samples/s  "
              f"({samples / otlp_cpu:,.0f} per CPU second; of the request thread's CPU: decode "
              f"{decode_s / stages:.0%}, convert {convert_s / stages:.0%} = {samples / convert_s:,.0f} "
              f"samples per CPU second, append via remote-write core {append_s / stages:.0%})")
        # remote-write: the same samples, already encoded
        store = open_store(args.memory, tmp, "rw")
        ingester = RemoteWriteIngester(store, Limits())
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        for body in rw_bodies:
            ingester.ingest(body)
        rw = time.perf_counter() - t0
        rw_cpu = time.process_time() - cpu0
        store.close()
        print(f"remote-write in process: {samples / rw:>10,.0f} samples/s  "
              f"({samples / rw_cpu:,.0f} per CPU second)")
        print(f"OTLP / remote-write in process: {rw / total:.2f} (wall), {rw_cpu / otlp_cpu:.2f} (CPU)")
        # over HTTP, one request at a time, against the full app
        otlp_http = http_rate("otlp", bodies, samples, tmp)
        rw_http = http_rate("remote-write", rw_bodies, samples, tmp)
        print(f"OTLP / remote-write over HTTP: {otlp_http / rw_http:.2f}")


def http_rate(kind: str, reqs: list[bytes], samples: int, tmp: Path) -> float:
    """Samples/s of `reqs` posted one at a time to a full app (SQLite + WAL fsync) on loopback."""
    import socket
    import threading

    import uvicorn

    from watchkeeper.app import create_app
    from watchkeeper.config import Settings

    path, headers = {
        "otlp": ("/v1/metrics", {"Content-Type": "application/x-protobuf"}),
        "remote-write": ("/api/v1/write",
                         {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}),
    }[kind]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # no self-scrape: only the benchmark's requests reach the store
    overrides = {"data_dir": tmp / f"http-{kind}", "port": port, "scrape_configs": []}
    settings = Settings.load(None, overrides=overrides)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, ws="none"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        while True:
            try:
                if client.get("/-/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        t0 = time.perf_counter()
        for body in reqs:
            r = client.post(path, content=body, headers=headers)
            assert r.status_code < 300, r.text
        elapsed = time.perf_counter() - t0
    server.should_exit = True
    thread.join(30)
    rate = samples / elapsed
    print(f"{kind + ' over HTTP:':<24} {rate:>10,.0f} samples/s  "
          "(full app, SQLite + WAL fsync, one request at a time)")
    return rate


if __name__ == "__main__":
    main()
