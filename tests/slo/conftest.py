"""Shared fixtures: a store with recorded SLO series, probe results and KPI gauges, and its state;
a local chat receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from watchkeeper.labels import from_dict
from watchkeeper.promql.engine import Engine
from watchkeeper.slo.config import SloConfig
from watchkeeper.slo.probes import ProbeResult, result_samples
from watchkeeper.slo.router import SloState
from watchkeeper.tsdb.storage import Storage

REPO = Path(__file__).parents[2]
MIN = 60_000
NOW = 1_800_000_000_000
SPEC = """
version: prometheus/v1
service: checkout
slos:
  - name: availability
    objective: 99.9
    sli:
      events:
        error_query: sum(rate(http_requests_total{job="checkout",code=~"5.."}[{{.window}}]))
        total_query: sum(rate(http_requests_total{job="checkout"}[{{.window}}]))
    alerting: {name: CheckoutErrors}
  - name: latency
    objective: 99
    sli:
      events:
        error_query: sum(rate(slow_total[{{.window}}]))
        total_query: sum(rate(all_total[{{.window}}]))
    alerting: {name: CheckoutSlow}
"""


def _record(store: Storage, name: str, slo_id: str, values: np.ndarray, ts: np.ndarray) -> None:
    ref = store.series_refs([from_dict({"__name__": name, "sloth_id": slo_id, "sloth_window": "5m"})])
    store.append(np.repeat(ref, len(ts)), ts, values)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> SloState:
    tmp_path = tmp_path_factory.mktemp("slo")
    (tmp_path / "checkout.yml").write_text(SPEC)
    config = SloConfig.model_validate(
        {
            "spec_files": ["*.yml"],
            "external_url": "http://wk.example",
            "probes": [
                {
                    "name": "api",
                    "url": "https://10.1.2.3:8443/internal/health",
                    "interval": "5m",
                    "component": "Checkout API",
                }
            ],
            "maintenance": [
                {
                    "name": "db upgrade",
                    "start": "2027-01-15T04:00:00+00:00",
                    "end": "2027-01-15T04:30:00+00:00",
                }
            ],
            "status_pages": [{"slug": "public", "title": "Shop status", "monitors": ["api"]}],
            "reports": [
                {
                    "name": "weekly-slo",
                    "kind": "slo",
                    "schedule": "0 9 * * mon",
                    "chat": {"name": "chat", "slack_configs": [{"api_url": "http://placeholder"}]},
                },
                {"name": "uptime", "kind": "uptime", "window": "30d"},
                {
                    "name": "business",
                    "kind": "business",
                    "window": "30d",
                    "kpis": [
                        {"name": "signups", "query": "sum by (region) (signups)", "breakdown_by": "region"}
                    ],
                },
            ],
        }
    )
    store = Storage.open(data_dir=None, retention_ms=400 * 1440 * MIN)
    # recorded 5m rates every 5 minutes for 10 days: checkout 10 req/s with 0.05% errors
    ts = np.arange(NOW - 10 * 1440 * MIN, NOW + 1, 5 * MIN, dtype=np.int64)
    _record(store, "slo:sli_total_events:rate5m", "checkout-availability", np.full(len(ts), 10.0), ts)
    _record(store, "slo:sli_error_events:rate5m", "checkout-availability", np.full(len(ts), 0.005), ts)
    # the burn-rate windows' ratios of the last 10 minutes (what the SLO page's burn chart shows)
    recent = ts[ts > NOW - 10 * MIN]
    for slo_id, ratio in (("checkout-availability", 0.0005), ("checkout-latency", 0.02)):
        for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
            ref = store.series_refs(
                [
                    from_dict(
                        {"__name__": f"slo:sli_error:ratio_rate{w}", "sloth_id": slo_id, "sloth_window": w}
                    )
                ]
            )
            store.append(np.repeat(ref, len(recent)), recent, np.full(len(recent), ratio))
    # latency: 2% slow, objective 99%: overspent
    _record(store, "slo:sli_total_events:rate5m", "checkout-latency", np.full(len(ts), 10.0), ts)
    _record(store, "slo:sli_error_events:rate5m", "checkout-latency", np.full(len(ts), 0.2), ts)
    # probe: up for the last 2 days except 08:30-08:40 (down) and a maintenance 08:00-08:30
    cfg = config.probes[0]
    batch: list[tuple[int, int, float]] = []
    for t in range(NOW - 2 * 1440 * MIN, NOW + 1, 5 * MIN):
        down = NOW - 2 * 3_600_000 <= t < NOW - 2 * 3_600_000 + 10 * MIN  # 10 min outage (2 probes)
        expiry = NOW / 1000 + 10 * 86400  # the certificate expires in 10 days
        r = ProbeResult(
            not down, 0.05, "status 503" if down else "", 503 if down else 200, cert_expiry_unix=expiry
        )
        samples = result_samples(cfg, r)
        refs = store.series_refs([lb for lb, _ in samples])
        batch += [(int(ref), t, v) for ref, (_, v) in zip(refs, samples, strict=True)]
    store.append(
        np.array([b[0] for b in batch]), np.array([b[1] for b in batch]), np.array([b[2] for b in batch])
    )
    # business KPI gauges: now and 30 days ago
    for region, before, after in (("eu", 100.0, 150.0), ("us", 200.0, 190.0)):
        ref = store.series_refs([from_dict({"__name__": "signups", "region": region})])
        store.append(np.repeat(ref, 2), np.array([NOW - 30 * 1440 * MIN, NOW]), np.array([before, after]))
    return SloState.load(
        config, store=store, engine=Engine(store), base_dir=tmp_path, clock=lambda: NOW / 1000
    )


class Chat:
    """What a local chat receiver (a real HTTP server on 127.0.0.1) was sent."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.event = threading.Event()


@pytest.fixture
def chat() -> Iterator[tuple[str, Chat]]:
    box = Chat()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            box.received.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            box.event.set()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", box
    httpd.shutdown()
    httpd.server_close()
