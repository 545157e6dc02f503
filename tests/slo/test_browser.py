"""The SLO, uptime, status and report pages in headless Chromium (Debian's, through Playwright)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from tests.environment import CHROMIUM, require_chromium
from watchkeeper.dashboards.router import dashboards_router
from watchkeeper.dashboards.sample import serve
from watchkeeper.slo.router import SloState, slo_router

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def base_url(state: SloState) -> Iterator[str]:
    require_chromium()
    app = FastAPI()
    app.include_router(dashboards_router(lambda: state.engine, lambda: state.store))  # base.html, /static/wk
    app.include_router(slo_router(lambda: state))
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def page(base_url: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        context = browser.new_context(viewport={"width": 1300, "height": 900})
        pg = context.new_page()
        pg.set_default_timeout(20_000)
        errors: list[str] = []
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.on("requestfailed", lambda r: errors.append(f"failed: {r.url}"))
        pg.on("response", lambda r: errors.append(f"{r.status}: {r.url}") if r.status >= 400 else None)
        pg.errors = errors  # type: ignore[attr-defined]
        yield pg
        browser.close()


def _open(page: Any, url: str) -> None:
    page.errors.clear()
    page.goto(url)
    page.wait_for_load_state("networkidle")


def _shot(page: Any, name: str) -> None:
    """Screenshots for a human look when WK_SLO_SCREENSHOTS names a directory."""
    target = os.environ.get("WK_SLO_SCREENSHOTS")
    if target:
        page.screenshot(path=os.path.join(target, f"{name}.png"), full_page=True)


def test_slo_list_sorted_by_risk(page: Any, base_url: str) -> None:
    _open(page, f"{base_url}/slo")
    rows = page.locator("#slo-list tbody tr")
    assert [rows.nth(i).get_attribute("data-slo") for i in range(rows.count())] == [
        "checkout-latency",
        "checkout-availability",
    ]
    page.select_option("select[name=window]", "month")
    page.wait_for_url("**window=month")
    assert "calendar month" in page.inner_text("thead")
    assert page.errors == []


def test_slo_detail_charts(page: Any, base_url: str) -> None:
    _open(page, f"{base_url}/slo/checkout-availability")
    page.wait_for_selector("#budget-chart .main-svg")
    page.wait_for_selector("#burn-chart .main-svg")
    summary = page.inner_text("#slo-summary")  # 0.005 of 10 req/s failing: half the 0.1% allowed
    assert "Error budget left\t50.0%" in summary and "Burn rate now (last hour)\t0.50×" in summary
    # one bar per window, each the recorded ratio / the budget: 0.0005 / 0.001
    assert page.locator("#burn-chart .bars .point").count() == 7
    plot = json.loads(page.locator('script[data-wk-plot="burn-chart"]').inner_text())
    assert plot["traces"][0]["x"] == ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]
    assert plot["traces"][0]["y"] == pytest.approx([0.5] * 7)
    assert page.locator("#alert-rows li").count() == 4
    assert "14.4x the budget" in page.inner_text("#alert-rows")
    _shot(page, "slo-detail")
    assert page.errors == []


def test_uptime_page(page: Any, base_url: str) -> None:
    _open(page, f"{base_url}/uptime")
    page.wait_for_selector("#latency-chart .main-svg")
    head = [c.strip() for c in page.inner_text("#monitors thead tr").split("\t")]
    assert head[2:6] == ["24h", "7d", "30d", "90d"]
    cells = [c.strip() for c in page.inner_text("#monitors tbody tr").split("\t")]
    assert cells[0].startswith("api") and cells[1] == "up"
    # independent: results every 5 min for the last 2 days, 10 min down, 30 min maintenance
    day, two = (1440 - 30 - 10) / (1440 - 30), (2880 - 30 - 10) / (2880 - 30)
    assert cells[2:6] == [f"{day * 100:.3f}%", *[f"{two * 100:.3f}%"] * 3]
    assert cells[6:8] == ["88d 0h 0m", "30m"]  # not observed (before the first result), maintenance
    assert cells[8] == "2027-01-25 08:00 UTC (in 10d 0h 0m)"  # TLS certificate expiry
    assert page.locator("#monitors tbody td.bad").count() == 1  # under 14 days: marked
    assert "status 503" in page.inner_text("#incidents")
    _shot(page, "uptime")
    assert page.errors == []


def test_public_status_page(page: Any, base_url: str) -> None:
    _open(page, f"{base_url}/status/public")
    assert page.locator(".component .bars span").count() == 90
    text = page.inner_text("body")
    assert "Checkout API" in text and "10.1.2.3" not in text and "503" not in text
    # the maintenance is shown, in the list and on its day's bar, and left out of the figure
    assert page.inner_text("#maintenance") == "db upgrade: 2027-01-15 04:00 UTC, 30m"
    titles = [page.locator(".component .bars span").nth(i).get_attribute("title") for i in (86, 87, 88, 89)]
    today = (480 - 30 - 10) / (480 - 30)  # 00:00-08:00: 30 min maintenance, 10 min down
    assert titles == [  # calendar days in the page's time zone, today last
        "2027-01-12: no data",
        "2027-01-13: 100.00% (8h 0m not observed: not counted)",  # the probe started at 08:00
        "2027-01-14: 100.00%",
        f"2027-01-15: {today * 100:.2f}% (30m planned maintenance: not counted)",
    ]
    assert page.locator("script").count() == 0  # public page: no scripts, no internal endpoints
    _shot(page, "status")
    assert page.errors == []


def test_report_page(page: Any, base_url: str) -> None:
    _open(page, f"{base_url}/reports/weekly-slo")
    assert "met 99.95% against 99.9%" in page.inner_text("#summary")
    assert page.locator("#report-rows tbody tr").count() == 2
    assert page.errors == []


def test_business_report_page(page: Any, base_url: str) -> None:
    _open(page, f"{base_url}/reports/business")
    # signups by region: eu 100 -> 150, us 200 -> 190 (the fixture's gauges, 30 days apart)
    assert page.inner_text("#summary") == "signups: 340 (+13.3% vs the previous period)."
    rows = page.locator("#report-rows tbody tr")
    cells = [[c.strip() for c in rows.nth(i).inner_text().split("\t")] for i in range(rows.count())]
    assert cells == [
        ["signups", "", "340.0", "300.0", "13.33"],
        ["signups", "eu", "150.0", "100.0", "50.0"],
        ["signups", "us", "190.0", "200.0", "-5.0"],
    ]
    assert "Top mover: signups region=eu +50.0%" in page.inner_text("body")
    assert "change = (this - previous) / previous" in page.inner_text(".method")
    assert page.errors == []
    with page.expect_download() as download:  # (the browser reports a download as a failed load)
        page.click("text=CSV")
    assert download.value.suggested_filename == "business.csv"
