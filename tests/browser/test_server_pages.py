"""The UI of a real `watchkeeper serve` process (its security headers and Content-Security-Policy,
rule evaluation, alerting, the scrape manager): /alerts shows the rule manager's firing and pending
alerts and their history, its Silence button leads to a silence created through the Alertmanager
API, /targets shows the scrape targets, /rules the rule groups, and a built-in dashboard draws the
server's own metrics. Screenshots go to tests/browser/screenshots/ (server-*.png)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Server

from .conftest import watching
from .pagewatch import PageWatch, assert_all_panels_drawn

pytestmark = [pytest.mark.slow, pytest.mark.browser]

RULES = """
groups:
  - name: ui-check
    interval: 1s
    rules:
      - alert: TargetUp
        expr: up == 1
        labels: {severity: page}
        annotations: {summary: "{{ $labels.instance }} answers its scrapes"}
      - alert: PendingLong
        expr: vector(2)
        for: 1h
      - record: job:up:sum
        expr: sum by (job) (up)
"""

CONFIG = """
rule_files: [rules.yml]
scrape_interval: 1s
scrape_configs:
  - job_name: watchkeeper
    scrape_interval: 1s
    static_configs: [{{targets: ["127.0.0.1:{port}"]}}]
alerting:
  route: {{receiver: nobody}}
  receivers: [{{name: nobody}}]
log_format: text
"""


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.2)


def scrapes(server: Server) -> int:
    series = server.raw_samples('up{job="watchkeeper"}', int(time.time() * 1000), "1m")
    return sum(len(samples) for samples in series.values())


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("serve")
    config = root / "watchkeeper.yml"
    server = Server(root / "data", extra_args=["--config", str(config)])
    (root / "rules.yml").write_text(RULES)
    config.write_text(CONFIG.format(port=server.port))
    server.start()
    try:
        api = server.client

        def alerts() -> dict[str, str]:
            return {
                a["labels"]["alertname"]: a["state"]
                for a in api.get("/api/v1/alerts").json()["data"]["alerts"]
            }

        wait_for("TargetUp firing", lambda: alerts().get("TargetUp") == "firing")
        wait_for("PendingLong pending", lambda: alerts().get("PendingLong") == "pending")
        # a few self-scrapes, so rates over the dashboard's windows have samples
        wait_for("five self-scrapes", lambda: scrapes(server) >= 5)
        yield server
    finally:
        server.close()


@pytest.fixture
def watch(browser: Any, real_server: Server) -> Iterator[PageWatch]:
    with watching(browser, real_server.url) as w:
        yield w


def section(page: Any, heading: str) -> str:
    """The text of the table after an <h2> starting with ``heading``."""
    text: str = page.evaluate(
        """h => { const e = Array.from(document.querySelectorAll('main h2'))
                     .find(x => x.textContent.trim().startsWith(h));
                   const next = e && e.nextElementSibling; return next ? next.innerText : ''; }""",
        heading,
    )
    return text


def test_alerts_page_shows_rule_state_and_history_and_its_silence_button_works(
    watch: PageWatch, real_server: Server
) -> None:
    page = watch.page
    page.goto(f"{real_server.url}/alerts")
    firing, pending, history = section(page, "Firing"), section(page, "Pending"), section(page, "History")
    assert "TargetUp" in firing and f"127.0.0.1:{real_server.port} answers its scrapes" in firing
    assert "PendingLong" in pending and "PendingLong" not in firing
    assert "pending → firing" in history and "inactive → pending" in history
    watch.screenshot("server-alerts")

    page.click("tr:has-text('TargetUp') >> text=Silence")
    page.wait_for_url("**/silences?matchers=*")
    prefilled = page.input_value("#silence-form input[name=matchers]")
    assert 'alertname="TargetUp"' in prefilled and 'job="watchkeeper"' in prefilled
    page.fill("#silence-form input[name=duration]", "30m")
    page.fill("#silence-form input[name=createdBy]", "sre on call")
    page.fill("#silence-form input[name=comment]", "checked from the browser test")
    page.click("#silence-form button[type=submit]")
    page.wait_for_url(f"{real_server.url}/silences")
    page.wait_for_selector("table.data td:has-text('sre on call')")
    row = page.inner_text("table.data tbody tr")
    assert 'alertname="TargetUp"' in row and "active" in row
    watch.screenshot("server-silences")

    (silence,) = httpx.get(f"{real_server.url}/api/v2/silences").json()
    assert silence["createdBy"] == "sre on call" and silence["status"]["state"] == "active"
    assert {m["name"]: m["value"] for m in silence["matchers"]}["alertname"] == "TargetUp"
    ends_in = _epoch(silence["endsAt"]) - _epoch(silence["startsAt"])
    assert 29 * 60 <= ends_in <= 31 * 60


def _epoch(rfc3339: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def test_targets_and_rules_pages_show_the_servers_own(watch: PageWatch, real_server: Server) -> None:
    page = watch.page
    page.goto(f"{real_server.url}/targets")
    main = page.inner_text("main")
    assert "1/1 up" in main and f"http://127.0.0.1:{real_server.port}/metrics" in main
    assert "not connected" not in main
    watch.screenshot("server-targets")

    page.goto(f"{real_server.url}/rules")
    main = page.inner_text("main")
    assert "ui-check" in main and "rules.yml" in main
    for rule in ("TargetUp", "PendingLong", "job:up:sum", "sum by (job) (up)"):
        assert rule in main, rule
    assert "err" not in page.eval_on_selector_all("main td", "cells => cells.map(c => c.textContent.trim())")
    watch.screenshot("server-rules")


def test_the_watchkeeper_dashboard_draws_the_servers_own_metrics(
    watch: PageWatch, real_server: Server
) -> None:
    page = watch.page
    page.goto(f"{real_server.url}/d/watchkeeper/watchkeeper-itself?from=now-5m&to=now")
    panels = assert_all_panels_drawn(page, allow_empty=True)
    # nothing was rejected, so "Rejected samples by reason" (6) is the one panel without series
    assert {p["id"] for p in panels if p["status"] == "No data"} <= {"6"}
    assert len(panels) == 8
    watch.screenshot("server-dashboard-watchkeeper")

    # dashboards annotated with alerts (service overview, errors) mark TargetUp's firing
    params = {"from": "now-5m", "to": "now"}
    regions = httpx.get(f"{real_server.url}/d/errors/annotations.json", params=params).json()["regions"]
    (up,) = [r for r in regions if r["text"].startswith("TargetUp ")]
    assert 'job="watchkeeper"' in up["text"] and up["start_ms"] < up["end_ms"]
