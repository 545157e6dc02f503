"""Remote-write out: what forwarding costs the ingest path, and how fast the queue sends.

    python bench/forwarding.py [--series 2000] [--requests 100] [--shards 4] [--prometheus]

In one process: an in-memory store and the ingest core take `--requests` remote-write requests
of `--series` series x 1 sample (the shape Prometheus sends), first with no ``remote_write``, then
with one queue sending to a receiver in another process -- a discard server that answers 204
without decoding (the sender's own cost), or a real Prometheus with ``--prometheus``. Prints the
ingest rate without and with forwarding, and the rate at which the queue got every sample sent
(acknowledged), from the first request to the last acknowledgement.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.collector.encode import body  # noqa: E402
from watchkeeper.collector.limits import Limits  # noqa: E402
from watchkeeper.collector.remote_write import RemoteWriteIngester  # noqa: E402
from watchkeeper.forwarding.config import RemoteWriteConfig  # noqa: E402
from watchkeeper.forwarding.queue import Forwarders  # noqa: E402
from watchkeeper.tsdb.storage import Storage  # noqa: E402

DISCARD = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_receiver(use_prometheus: bool, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    if use_prometheus:
        (tmp / "prometheus.yml").write_text("scrape_configs: []\n")
        cmd = [
            "prometheus",
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-remote-write-receiver",
            "--log.level=warn",
        ]
        ready = f"http://127.0.0.1:{port}/-/ready"
    else:
        cmd = [sys.executable, "-c", DISCARD, str(port)]
        ready = ""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if ready:
                if httpx.get(ready, timeout=1).status_code == 200:
                    break
            else:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
        except (OSError, httpx.TransportError):
            time.sleep(0.05)
    else:
        proc.kill()
        raise SystemExit("the receiver did not start")
    return proc, f"http://127.0.0.1:{port}/api/v1/write"


def workload(series: int, requests: int) -> list[bytes]:
    start_ms = time.time_ns() // 1_000_000 - requests * 15_000 - 60_000
    return [
        body(
            [
                ([("__name__", "bench_requests_total"), ("instance", f"host{i % 100}"), ("pod", f"p{i}")],
                 [(start_ms + 15_000 * r, float(r * series + i))])
                for i in range(series)
            ]
        )
        for r in range(requests)
    ]


def run(bodies: list[bytes], config: RemoteWriteConfig | None, total: int) -> tuple[float, float | None]:
    """(ingest samples/s, forwarded samples/s or None)."""
    storage = Storage.open(data_dir=None)
    ingester = RemoteWriteIngester(storage, Limits())
    registry = CollectorRegistry()
    forwarders = Forwarders(registry)
    if config is not None:
        forwarders.apply([config])
        ingester.after_append = forwarders.sink()
    first = time.perf_counter()
    ingester.ingest(bodies[0])  # series created outside the ingest timing
    started = time.perf_counter()
    for b in bodies[1:]:
        ingester.ingest(b)
    ingest_s = time.perf_counter() - started
    sent_rate = None
    if config is not None:
        labels = {"remote_name": config.remote_name, "url": config.url}
        deadline = time.monotonic() + 120
        while (registry.get_sample_value("watchkeeper_remote_storage_samples_total", labels) or 0) < total:
            if time.monotonic() > deadline:
                raise SystemExit("not every sample was sent within 120 s")
            time.sleep(0.005)
        sent_rate = total / (time.perf_counter() - first)
    forwarders.stop(deadline_seconds=10)
    storage.close()
    per_request = total / len(bodies)
    return per_request * (len(bodies) - 1) / ingest_s, sent_rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--prometheus", action="store_true", help="send to a real Prometheus (on PATH)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each, alternating; the best counts")
    args = ap.parse_args()
    bodies = workload(args.series, args.requests)
    total = args.series * args.requests
    tmp = Path(tempfile.mkdtemp(prefix="wk-bench-fwd-"))
    proc, url = start_receiver(args.prometheus, tmp)
    try:
        config = RemoteWriteConfig.model_validate(
            {
                "url": url,
                "name": "bench",
                # a short deadline: the last, partial batch of each shard would otherwise wait 5 s
                "queue_config": {"max_shards": args.shards, "capacity": total, "batch_send_deadline": "50ms"},
            }
        )
        base = with_fw = sent = 0.0
        for _ in range(args.repeat):  # alternating, best of each: the machine may be shared
            base = max(base, run(bodies, None, total)[0])
            rate, forwarded = run(bodies, config, total)
            with_fw, sent = max(with_fw, rate), max(sent, forwarded or 0.0)
    finally:
        proc.terminate()
        proc.wait(20)
        shutil.rmtree(tmp, ignore_errors=True)
    receiver = "Prometheus 2.x" if args.prometheus else "discard server"
    print(f"workload: {args.requests} requests x {args.series} series x 1 sample")
    print(f"queue: {args.shards} shards -> {receiver}")
    print(f"ingest without remote_write: {base:12,.0f} samples/s")
    print(f"ingest with remote_write:    {with_fw:12,.0f} samples/s  ({with_fw / base:.2f}x)")
    print(f"forwarded (acknowledged):    {sent:12,.0f} samples/s  (first request to last 2xx)")
    print(f"best of {args.repeat} runs each")


if __name__ == "__main__":
    main()
