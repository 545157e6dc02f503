"""Probes against a local HTTP(S) server; uptime checked against durations computed here."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from watchkeeper.labels import Matcher, MatchOp
from watchkeeper.slo.config import ProbeConfig
from watchkeeper.slo.probes import ProbeManager, check_response
from watchkeeper.slo.uptime import MaintenanceWindow
from watchkeeper.slo.views import monitor_view
from watchkeeper.tsdb.storage import Storage

MIN = 60_000


class _State:
    status = 200
    body = '{"status": "ok", "db": {"ok": true}}'
    delay = 0.0
    requests: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []


@pytest.fixture
def server() -> Iterator[tuple[str, type[_State]]]:
    state: type[_State] = type("S", (_State,), {"requests": []})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            state.requests.append((self.command, dict(self.headers), self.rfile.read(length)))
            time.sleep(state.delay)
            data = state.body.encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_POST = do_HEAD = do_GET

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    httpd.shutdown()
    httpd.server_close()


def test_uptime_with_incident_prober_gap_degraded_and_maintenance(server: tuple[str, type[_State]]) -> None:
    url, state = server
    cfg = ProbeConfig(
        name="checkout",
        url=url + "/health",
        keyword='"ok"',
        degraded_after="150ms",
        interval="5m",
        timeout="2s",
    )
    t0 = 1_800_000_000_000  # 2027-01-15
    # maintenance from minute 130 to 150: the service is down then, and it must not count
    maint = MaintenanceWindow(
        name="db upgrade",
        start=dt.datetime.fromtimestamp((t0 + 130 * MIN) / 1000, dt.UTC),
        end=dt.datetime.fromtimestamp((t0 + 150 * MIN) / 1000, dt.UTC),
    )
    store = Storage.open(data_dir=None)
    now = [0.0]
    manager = ProbeManager([cfg], store, clock=lambda: now[0])

    async def run() -> None:
        for minute in range(0, 180, 5):
            if 70 <= minute < 90:
                continue  # watchkeeper itself was down: no probes at all
            state.status = 500 if 60 <= minute < 70 or 130 <= minute < 150 else 200
            state.delay = 0.3 if 90 <= minute < 120 else 0.0
            now[0] = (t0 + minute * MIN) / 1000
            await manager.run_probe(cfg)
        await manager.stop()

    asyncio.run(run())
    end = t0 + 180 * MIN
    view = monitor_view(store, cfg, maintenance=[maint], now_ms=end, days=1)
    d = view.summaries[1].durations_ms
    # independent accounting, in minutes of the 3 hours:
    up = (60 - 0) + (130 - 120) + (180 - 150)  # healthy and fast
    degraded = 120 - 90  # answered, slower than 150 ms
    down = 70 - 60  # HTTP 500
    unknown = 90 - 70  # no probe ran
    maintenance = 150 - 130
    before = 24 * 60 - 180  # the day before the first probe: nothing observed
    assert {k: v // MIN for k, v in d.items()} == {
        "up": up,
        "degraded": degraded,
        "down": down,
        "unknown": unknown + before,
        "maintenance": maintenance,
    }
    assert view.summaries[1].uptime == pytest.approx((up + degraded) / (up + degraded + down))
    assert view.summaries[1].uptime != pytest.approx(
        (up + degraded + unknown) / (up + degraded + down + unknown)
    )
    [incident] = view.incidents
    assert (incident.start_ms, incident.end_ms, incident.cause) == (
        t0 + 60 * MIN,
        t0 + 70 * MIN,
        "status 500",
    )
    assert view.maintenance == [(t0 + 130 * MIN, t0 + 150 * MIN, "db upgrade")]
    assert view.state == "up"
    # the probe_* series are in the store, as blackbox_exporter names them
    names = {
        dict(s.labels)["__name__"]
        for s in store.select([Matcher(MatchOp.EQUAL, "probe", "checkout")], 0, end)
    }
    assert {
        "probe_success",
        "probe_duration_seconds",
        "probe_http_status_code",
        "probe_http_duration_seconds",
        "probe_failure_info",
        "probe_degraded",
    } <= names


@pytest.mark.parametrize(
    ("kwargs", "status", "body", "cause"),
    [
        ({}, 200, "", ""),
        ({}, 503, "", "status 503"),
        ({"expected_status": [503]}, 503, "", ""),
        ({"keyword": "ok"}, 200, "fine", "keyword 'ok' missing"),
        ({"regex": r"version \d+"}, 200, "version 12", ""),
        ({"regex": r"version \d+"}, 200, "version x", r"regex 'version \\d+' did not match"),
        (
            {"json_path": "db.ok", "json_equals": True},
            200,
            '{"db": {"ok": false}}',
            "json db.ok is False, expected True",
        ),
        ({"json_path": "checks.0.ok", "json_equals": True}, 200, '{"checks": [{"ok": true}]}', ""),
        ({"json_path": "db.ok"}, 200, "not json", "json db.ok missing"),
    ],
)
def test_response_conditions(kwargs: dict[str, Any], status: int, body: str, cause: str) -> None:
    cfg = ProbeConfig(name="x", url="http://x", **kwargs)
    assert check_response(cfg, status, body) == cause


def test_tcp_probe_up_and_down(server: tuple[str, type[_State]]) -> None:
    url, _ = server
    port = url.rsplit(":", 1)[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    store = Storage.open(data_dir=None)
    up = ProbeConfig(name="tcp-up", type="tcp", target=f"127.0.0.1:{port}")
    down = ProbeConfig(name="tcp-down", type="tcp", target=f"127.0.0.1:{closed}")
    manager = ProbeManager([up, down], store)

    async def run() -> dict[str, Any]:
        try:
            return await manager.run_once()
        finally:
            await manager.stop()

    results = asyncio.run(run())
    assert results["tcp-up"].success and not results["tcp-down"].success
    assert results["tcp-down"].cause.startswith("connect failed")


def test_https_certificate_expiry(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "10",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"https://127.0.0.1:{httpd.server_address[1]}/"
        trusted = ProbeConfig(name="tls", url=url, ca_file=str(cert))
        untrusted = ProbeConfig(name="tls-default", url=url)
        store = Storage.open(data_dir=None)
        manager = ProbeManager([trusted, untrusted], store)

        async def run() -> dict[str, Any]:
            try:
                return await manager.run_once()
            finally:
                await manager.stop()

        results = asyncio.run(run())
    finally:
        httpd.shutdown()
        httpd.server_close()
    ok = results["tls"]
    assert ok.success and ok.cert_expiry_unix is not None
    assert ok.cert_expiry_unix - time.time() == pytest.approx(10 * 86400, abs=3600)
    assert "tls" in ok.phases and "connect" in ok.phases
    assert not results["tls-default"].success  # self-signed: refused without the CA
    series = store.select([Matcher(MatchOp.EQUAL, "__name__", "probe_ssl_earliest_cert_expiry")], 0, 2**62)
    assert [dict(s.labels)["probe"] for s in series] == ["tls"]
    assert json.dumps(ok.phases)


def test_manager_runs_probes_on_schedule(server: tuple[str, type[_State]]) -> None:
    url, _ = server
    cfg = ProbeConfig(name="sched", url=url, interval="1s", timeout="1s")
    store = Storage.open(data_dir=None)
    manager = ProbeManager([cfg], store)

    def results() -> list[int]:
        found = store.select([Matcher(MatchOp.EQUAL, "__name__", "probe_success")], 0, 2**62)
        return found[0].timestamps_ms.tolist() if found else []

    async def run() -> None:
        await manager.start()
        deadline = time.monotonic() + 60
        while len(results()) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await manager.stop()

    asyncio.run(run())
    ts = results()
    assert len(ts) >= 3
    # a fixed schedule: the k-th run starts no earlier than k intervals after the first (a late run
    # is followed by an earlier one, never by drift); how much later depends on the machine
    assert all(t - ts[0] >= k * 1000 - 20 for k, t in enumerate(ts))
    [series] = store.select([Matcher(MatchOp.EQUAL, "__name__", "probe_success")], 0, 2**62)
    assert series.values.tolist() == [1.0] * len(series.values)


def test_method_headers_body_and_timeout(server: tuple[str, type[_State]]) -> None:
    url, state = server
    post = ProbeConfig(
        name="post",
        url=url + "/api/check",
        method="POST",
        headers={"Authorization": "Bearer probe-token", "X-Probe": "watchkeeper"},
        body='{"ping": 1}',
        expected_status=[201],
        timeout="2s",
    )
    head = ProbeConfig(name="head", url=url + "/", method="HEAD", timeout="2s")
    slow = ProbeConfig(name="slow", url=url + "/slow", timeout="200ms", interval="1s")
    store = Storage.open(data_dir=None)
    manager = ProbeManager([post, head, slow], store)

    async def run() -> dict[str, Any]:
        try:
            state.status = 201
            first = {"post": await manager.run_probe(post)}
            state.status = 200
            first["head"] = await manager.run_probe(head)
            state.delay = 2.0
            first["slow"] = await manager.run_probe(slow)
            return first
        finally:
            await manager.stop()

    results = asyncio.run(run())
    method, headers, body = state.requests[0]
    assert (method, headers["Authorization"], headers["X-Probe"], body) == (
        "POST",
        "Bearer probe-token",
        "watchkeeper",
        b'{"ping": 1}',
    )
    assert results["post"].success and results["post"].status_code == 201
    assert state.requests[1][0] == "HEAD" and results["head"].success
    assert not results["slow"].success and results["slow"].cause == "timeout after 200ms"
