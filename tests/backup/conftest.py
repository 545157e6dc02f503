"""A watchkeeper deployment with data worth backing up: history with persisted chunks and head
samples, a firing alert whose notification went out, a silence; a writer that keeps writing; and
the answers (PromQL and alerting APIs) two servers must agree on."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.alerting.conftest import FakeService, service
from tests.integration.conftest import Server, make_server

__all__ = ["make_server", "service"]

STEP_MS = 10_000
HISTORY = 400  # samples per series: three persisted chunks and an open one
SERIES = 20

RULES = """
groups:
  - name: backup
    interval: 1s
    rules:
      - alert: BackupTestAlert
        expr: wk_backup_gauge > 0
        labels: {severity: page}
        annotations: {summary: "gauge is {{ $value }}"}
"""

QUERIES = [
    "wk_backup_hist",
    "rate(wk_backup_counter[2m])",
    "sum by (job) (wk_backup_hist)",
    "max_over_time(wk_backup_live[1m])",
    "count(wk_backup_live) + count(wk_backup_hist)",
]


def now_ms() -> int:
    return int(time.time() * 1000)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`watchkeeper ARGS` in a subprocess (as an operator runs it)."""
    return subprocess.run([sys.executable, "-m", "watchkeeper.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def write_config(directory: Path, receiver_url: str, extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rules.yml").write_text(RULES)
    path = directory / "watchkeeper.yml"
    path.write_text(f"""
scrape_configs: []
rule_files: ["rules.yml"]
alerting:
  route: {{receiver: hook, group_by: [alertname], group_wait: 0s, group_interval: 1m, repeat_interval: 4h}}
  receivers: [{{name: hook, webhook_configs: [{{url: "{receiver_url}/hook"}}]}}]
  outbox: {{poll_interval: 200ms}}
{extra}
""")
    return path


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def load_history(server: Server, end_ms: int) -> None:
    """`HISTORY` samples of `SERIES` gauges and counters, ending at `end_ms`, in time order."""
    start = end_ms - (HISTORY - 1) * STEP_MS
    for first in range(0, HISTORY, 100):
        items = []
        for i in range(SERIES):
            job = f"job{i % 3}"
            ts = [start + k * STEP_MS for k in range(first, min(first + 100, HISTORY))]
            items.append(([("__name__", "wk_backup_hist"), ("job", job), ("i", str(i))],
                          [(t, float((t // STEP_MS + i) % 17)) for t in ts]))
            items.append(([("__name__", "wk_backup_counter"), ("job", job), ("i", str(i))],
                          [(t, float((t - start) // 1000 * (i + 1))) for t in ts]))
        items.append(([("__name__", "wk_backup_gauge")], [(t, 1.0) for t in ts]))
        r = server.write(items)
        assert r.status_code == 204, r.text


def prepare(server: Server) -> str:
    """History, a silence (matching another alert), and the alert firing with its notification
    sent. Returns the silence id."""
    load_history(server, now_ms() - 1000)
    r = server.client.post("/api/v2/silences", json={
        "matchers": [{"name": "alertname", "value": "Other", "isRegex": False}],
        "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
        "createdBy": "test", "comment": "kept across a restore"})
    assert r.status_code == 200, r.text
    wait_for("the alert to fire", lambda: any(
        a["state"] == "firing" for a in server.client.get("/api/v1/alerts").json()["data"]["alerts"]))
    wait_for("the notification to be sent", lambda: any(
        n["state"] == "sent" for n in server.client.get("/api/v2/notifications").json()))
    silence_id: str = r.json()["silenceID"]
    return silence_id


class LiveWriter:
    """Writes `wk_backup_live` (and keeps the alert's gauge fresh) from one thread, timestamps
    strictly increasing, so every sample up to `acked_ms` has been acknowledged."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.first_ms = now_ms()
        self.acked_ms = 0
        self.written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LiveWriter:
        self._thread.start()
        # two seconds of writes: queries end on a whole second, the frontier floored
        wait_for("live writes", lambda: self.written >= 5 and self.acked_ms - self.first_ms > 2000)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        last = 0
        while not self._stop.is_set():
            ts = max(last + 1, now_ms())
            items = [([("__name__", "wk_backup_live"), ("w", str(i))], [(ts, float(ts % 1000 + i))])
                     for i in range(5)]
            items.append(([("__name__", "wk_backup_gauge")], [(ts, 1.0)]))
            if self.server.write(items).status_code == 204:
                self.acked_ms = last = ts
                self.written += 1
            time.sleep(0.02)


def answers(server: Server, end_ms: int) -> dict[str, Any]:
    """Range queries over the ~hour before `end_ms` (whole seconds; `end` is a step), and the
    alerting state."""
    end = end_ms // 1000
    out: dict[str, Any] = {}
    for q in QUERIES:
        r = server.client.get("/api/v1/query_range",
                              params={"query": q, "start": end - 15 * 270, "end": end, "step": 15})
        assert r.status_code == 200, r.text
        out[q] = sorted(r.json()["data"]["result"], key=lambda s: sorted(s["metric"].items()))
    alerts = server.client.get("/api/v1/alerts").json()["data"]["alerts"]
    out["alerts"] = sorted((a["labels"], a["state"], a["activeAt"], a["value"]) for a in alerts)
    out["silences"] = sorted(server.client.get("/api/v2/silences").json(), key=lambda s: s["id"])
    out["notifications"] = sorted(server.client.get("/api/v2/notifications").json(), key=lambda n: n["id"])
    return out


@pytest.fixture
def deployment(tmp_path: Path, service: FakeService,
               make_server: Callable[..., Server]) -> Iterator[Callable[..., Server]]:
    """Factory: a server with `write_config`'s config (+ `extra` YAML, `env`), started."""

    def make(extra: str = "", env: dict[str, str] | None = None, start: bool = True) -> Server:
        config = write_config(tmp_path / "config", service.url, extra)
        return make_server(env=env, start=start, extra_args=["--config", str(config)])

    yield make
