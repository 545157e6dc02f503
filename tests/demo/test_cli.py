"""``watchkeeper demo`` end to end: one command, and watchkeeper answers queries about the core API."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def query(port: int, promql: str) -> list[dict[str, object]]:
    r = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": promql}, timeout=5)
    r.raise_for_status()  # 503 while the store is still opening: the caller polls again
    result: list[dict[str, object]] = r.json()["data"]["result"]
    return result


@pytest.mark.slow
def test_demo_serves_live_core_api_metrics_and_injected_errors(tmp_path: Path) -> None:
    wk, core = free_port(), free_port()
    argv = [
        "--port",
        str(wk),
        "--coreapi-port",
        str(core),
        "--data-dir",
        str(tmp_path),
        "--users",
        "20",
        "--error-rate",
        "0.5",
        "--scrape-interval",
        "1s",
        "--duration",
        "25",
    ]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from watchkeeper.demo.cli import demo_main; sys.exit(demo_main())",
            *argv,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        errors: list[dict[str, object]] = []
        joins: list[dict[str, object]] = []
        while time.monotonic() < deadline and not (errors and joins):
            time.sleep(1)
            try:
                errors = query(wk, 'sum(http_requests_total{job="coreapi",status="500"})')
                joins = query(wk, "sum(coreapi_session_joins_total) or sum(coreapi_active_sessions)")
            except httpx.HTTPError:
                continue
        assert errors and float(errors[0]["value"][1]) > 0, "injected 500s reach watchkeeper"  # type: ignore[index]
        assert joins, "business metrics reach watchkeeper"
        assert query(wk, 'up{job="coreapi"}')[0]["value"][1] == "1"  # type: ignore[index]
        alerts: list[str] = []
        while time.monotonic() < deadline + 15 and "CoreApiHighErrorRate" not in alerts:
            time.sleep(1)
            r = httpx.get(f"http://127.0.0.1:{wk}/api/v1/alerts", timeout=5)
            if r.status_code != 200:
                continue
            data = r.json()["data"]["alerts"]
            alerts = [a["labels"]["alertname"] for a in data]
        assert "CoreApiHighErrorRate" in alerts, "the demo's alert rules see the injected errors"
        assert httpx.get(f"http://127.0.0.1:{core}/health").status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "watchkeeper demo: watchkeeper on" in out


def test_demo_refuses_a_bad_error_rate(capsys: pytest.CaptureFixture[str]) -> None:
    from watchkeeper.demo.cli import demo_main

    assert demo_main(["--error-rate", "2"]) == 2
    assert "--error-rate" in capsys.readouterr().err
