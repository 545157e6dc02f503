"""Dashboards in a real browser: every built-in dashboard and an imported Grafana dashboard render
every panel with no console error and no request leaving localhost; time range, variables and
auto-refresh drive the URL and the panels. Screenshots go to tests/browser/screenshots/."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo

import httpx
import numpy as np
import pytest

from watchkeeper.dashboards.loader import BUILTIN_DIR, load_dirs
from watchkeeper.labels import from_dict

from .conftest import Sample, watching
from .pagewatch import PageWatch, assert_all_panels_drawn

pytestmark = [pytest.mark.slow, pytest.mark.browser]

REFERENCE_DIR = Path(__file__).parents[2] / "dashboards"
BUILTINS = sorted(load_dirs([BUILTIN_DIR, REFERENCE_DIR]).dashboards.values(), key=lambda d: d.uid)
GRAFANA_FIXTURE = Path(__file__).parents[1] / "dashboards" / "fixtures" / "grafana-api-service.json"


@pytest.mark.parametrize("uid", [d.uid for d in BUILTINS])
def test_builtin_dashboard_renders_every_panel(watched: PageWatch, server: str, uid: str) -> None:
    dashboard = next(d for d in BUILTINS if d.uid == uid)
    page = watched.page
    page.goto(f"{server}/d/{uid}/{dashboard.slug}")
    for row in page.query_selector_all("details.row:not([open])"):  # collapsed rows load on expand
        row.query_selector("summary").click()
    panels = assert_all_panels_drawn(page)
    assert len(panels) == len(dashboard.panels())
    watched.screenshot(f"dashboard-{uid}")


def test_imported_grafana_dashboard_renders(watched: PageWatch, server: str) -> None:
    r = httpx.post(
        f"{server}/api/dashboards/import?save=true&overwrite=true", content=GRAFANA_FIXTURE.read_bytes()
    )
    assert r.status_code == 200, r.text
    page = watched.page
    page.goto(server + r.json()["url"])
    page.click("details.row:not([open]) > summary")
    # its heatmap uses increase(...[$__interval]): one 60 s sample per window here, so no data
    panels = assert_all_panels_drawn(page, allow_empty=True)
    assert {p["type"] for p in panels} == {
        "stat",
        "gauge",
        "bargauge",
        "timeseries",
        "heatmap",
        "table",
        "text",
    }
    watched.screenshot("dashboard-imported-grafana")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _query(page: Any) -> dict[str, list[str]]:
    return parse_qs(urlparse(page.url).query)


def test_time_range_and_variables_update_url_and_panels(watched: PageWatch, server: str) -> None:
    page = watched.page
    page.goto(f"{server}/d/service-overview/service-overview?from=now-6h&to=now")
    assert_all_panels_drawn(page)
    before = page.get_attribute("#panel-5", "data-range")
    assert before is not None
    start, end = map(int, before.split("-"))
    assert end - start == 6 * 3_600_000

    page.click("#time-picker > summary")
    page.click(".quick button[data-from='now-1h']")
    page.wait_for_function(
        "() => { const r = document.querySelector('#panel-5').dataset.range.split('-');"
        " return r[1] - r[0] === 3600000; }"
    )
    assert _query(page)["from"] == ["now-1h"]
    assert page.inner_text("#time-label") == "now-1h → now"

    # shared crosshair: hovering one time series draws the hover on the others (and raises nothing)
    box = page.locator("#panel-5 .plot-area .nsewdrag").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function("() => document.querySelectorAll('#panel-6 .hoverlayer *').length > 0")
    page.mouse.move(5, 5)

    page.select_option("select[name='var-route']", ["/players", "/login"])
    page.wait_for_function("() => document.querySelector('#panel-5 .plot-area').data.length === 2")
    assert sorted(_query(page)["var-route"]) == ["/login", "/players"]
    names = page.evaluate("() => document.querySelector('#panel-5 .plot-area').data.map(t => t.name).sort()")
    assert names == ["/login", "/players"]

    page.click("#time-picker > summary")
    page.fill("#time-from", "now-2h")
    page.fill("#time-to", "now-1h")
    page.click("#time-form button[type=submit]")
    page.wait_for_function(
        "() => { const r = document.querySelector('#panel-5').dataset.range.split('-');"
        " return r[1] - r[0] === 3600000 && Date.now() - r[1] > 3000000; }"
    )
    assert _query(page)["to"] == ["now-1h"]

    # absolute times (as typed, or ISO 8601) go into the URL as epoch ms
    start_ms = (int(time.time()) // 60 - 180) * 60_000
    page.click("#time-picker > summary")
    page.fill("#time-from", _iso(start_ms))
    page.fill("#time-to", _iso(start_ms + 1_800_000))
    page.click("#time-form button[type=submit]")
    page.wait_for_function(
        f"() => document.querySelector('#panel-5').dataset.range === '{start_ms}-{start_ms + 1_800_000}'"
    )
    assert _query(page)["from"] == [str(start_ms)] and _query(page)["to"] == [str(start_ms + 1_800_000)]
    page.go_back()  # back to the relative range
    page.wait_for_function(
        "() => { const r = document.querySelector('#panel-5').dataset.range.split('-');"
        " return r[1] - r[0] === 3600000; }"
    )
    assert _query(page)["to"] == ["now-1h"]

    # the URL carries the whole state: a reload shows the same view
    page.reload()
    assert_all_panels_drawn(page)
    assert page.evaluate("() => document.querySelector('#panel-5 .plot-area').data.length") == 2
    watched.screenshot("dashboard-service-overview-2-routes")


def test_auto_refresh_refetches_panel_data(watched: PageWatch, server: str) -> None:
    page = watched.page
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url) if "/panels/" in r.url else None)
    page.goto(f"{server}/d/watchkeeper/watchkeeper-itself?refresh=1s")
    panels = len(assert_all_panels_drawn(page))
    assert panels == 8
    # the first load asks for each panel once (a slow machine may already be into the next round)
    assert len({url.split("?")[0] for url in fetched[:panels]}) == panels
    page.wait_for_function("() => window.wkStats.renders >= 24", timeout=15_000)
    assert len(fetched) >= 3 * panels
    # Plotly came once, from this server, and was not loaded again by the refreshes
    plotly = [u for u in watched.requests if "plotly" in u]
    assert len(plotly) == 1 and plotly[0].startswith(f"{server}/static/wk/plotly-"), plotly
    page.select_option("#refresh", "")
    assert "refresh" not in _query(page)


def test_panel_menu_view_inspect_and_csv(watched: PageWatch, server: str) -> None:
    page = watched.page
    page.goto(f"{server}/d/cache/cache")
    assert_all_panels_drawn(page)
    page.click("#panel-2 .menu > summary")
    page.click("#panel-2 [data-action=inspect]")
    assert "cache_requests_total" in page.inner_text("#inspector-body")
    inspector = page.inner_text("#inspector-body")
    assert "points" in inspector and "Server time " in inspector and " ms · " in inspector
    page.click("#inspector button")
    page.click("#panel-2 .menu > summary")
    with page.expect_download() as download:
        page.click("#panel-2 [data-action=csv]")
    assert download.value.suggested_filename == "cache-panel-2.csv"
    page.click("#panel-2 .menu > summary")
    page.click("#panel-2 [data-action=view]")
    assert _query(page)["viewPanel"] == ["2"]
    assert page.eval_on_selector("#panel-2", "el => el.classList.contains('fullscreen')")
    watched.screenshot("dashboard-cache-view-panel")
    page.keyboard.press("Escape")
    assert "viewPanel" not in _query(page)


def test_explore_runs_ad_hoc_promql(watched: PageWatch, server: str) -> None:
    page = watched.page
    page.goto(f"{server}/explore")
    page.fill("#expr", "sum by (region) (active_sessions)")
    page.click("#explore-form button[type=submit]")
    page.wait_for_function(
        "() => document.querySelector('#panel-graph').dataset.rendered"
        " && document.querySelector('#panel-table').dataset.rendered"
    )
    assert page.evaluate("() => document.querySelector('#panel-graph .plot-area').data.length") == 3
    assert page.locator("#panel-table tbody tr").count() == 3
    assert _query(page)["expr"] == ["sum by (region) (active_sessions)"]
    watched.screenshot("explore")


def test_home_alerts_and_dark_theme(watched: PageWatch, server: str) -> None:
    page = watched.page
    page.goto(f"{server}/dashboards")
    page.fill("#dash-search", "infra")
    visible = page.evaluate(
        "() => Array.from(document.querySelectorAll('#dash-list li')).filter(li => !li.hidden).length"
    )
    assert visible == 1
    watched.screenshot("home")
    page.goto(f"{server}/alerts")
    assert "not connected" in page.inner_text("main")
    watched.screenshot("alerts-unwired")
    page.goto(f"{server}/d/business/business?theme=dark")
    assert_all_panels_drawn(page)
    background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(17, 18, 23)"
    watched.screenshot("dashboard-business-dark")
    config = json.loads(page.inner_text("#wk-config"))
    assert config["uid"] == "business"


BUILDS = """
uid: builds
title: {title}
time: {{from: now-6h, to: now}}
variables:
  - {{name: build, type: query, query: 'label_values(wk_build_info, build)', multi: true, include_all: true}}
rows:
  - panels:
      - id: 1
        title: Builds
        queries: [{{expr: 'sum by (build) (wk_build_info{{build=~"$build"}})', legend: '{{{{build}}}}'}}]
"""

OPTIONS = (
    "() => Array.from(document.querySelector(\"select[name='var-build']\").options).map(o => o.value).join()"
)


def test_variable_options_follow_the_time_range_and_changed_files_reload(
    watched: PageWatch, sample: Sample
) -> None:
    now = int(time.time() * 1000) // 60_000 * 60_000
    old, new = sample.storage.series_refs(
        [from_dict({"__name__": "wk_build_info", "build": b}) for b in ("old", "new")]
    )
    old_t = np.arange(now - 5 * 3_600_000, now - 4 * 3_600_000, 60_000)
    new_t = np.arange(now - 1_200_000, now + 60_000, 60_000)
    sample.storage.append(
        np.r_[np.full(len(old_t), old), np.full(len(new_t), new)],
        np.r_[old_t, new_t],
        np.ones(len(old_t) + len(new_t)),
    )
    path = sample.dashboards_dir / "builds.yml"
    path.write_text(BUILDS.format(title="Builds"))
    page = watched.page
    page.goto(f"{sample.url}/d/builds/builds")
    assert_all_panels_drawn(page)
    assert page.evaluate(OPTIONS) == "$__all,new,old"

    page.click("#time-picker > summary")
    page.click(".quick button[data-from='now-1h']")
    page.wait_for_function(f"() => ({OPTIONS})() === '$__all,new'")
    page.wait_for_function(
        "() => document.querySelector('#panel-1 .plot-area').data.map(t => t.name).join() === 'new'"
    )
    page.go_back()
    page.wait_for_function(f"() => ({OPTIONS})() === '$__all,new,old'")

    # the file is re-read when it changes: a reload shows the new title
    path.write_text(BUILDS.format(title="Builds by version"))
    page.goto(f"{sample.url}/d/builds")
    assert page.inner_text("h1") == "Builds by version"
    assert page.url.split("?")[0].endswith("/d/builds/builds-by-version")
    watched.screenshot("dashboard-variable-follows-range")


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "America/Adak"])
def test_today_is_the_browsers_day(browser: Any, server: str, zone: str) -> None:
    with watching(browser, server, timezone_id=zone) as watch:
        page = watch.page
        page.goto(f"{server}/d/watchkeeper/watchkeeper-itself?from=now/d&to=now")
        assert_all_panels_drawn(page, allow_empty=True)
        start = int(page.get_attribute("#panel-5", "data-range").split("-")[0])  # type: ignore[union-attr]
    midnight = datetime.now(ZoneInfo(zone)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert start == int(midnight.timestamp() * 1000)


def test_a_phone_sees_one_panel_per_line_without_sideways_scrolling(browser: Any, server: str) -> None:
    with watching(browser, server, viewport={"width": 390, "height": 844}, is_mobile=True) as watch:
        page = watch.page
        page.goto(f"{server}/d/service-overview/service-overview")
        assert_all_panels_drawn(page)
        widths = page.evaluate(
            "() => Array.from(document.querySelectorAll('.panel[data-panel]'))"
            ".map(p => p.getBoundingClientRect().width / p.parentElement.getBoundingClientRect().width)"
        )
        assert min(widths) > 0.95, widths
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
        watch.screenshot("dashboard-service-overview-phone")


def test_panels_below_the_screen_are_fetched_when_scrolled_to(watched: PageWatch, server: str) -> None:
    page = watched.page
    page.set_viewport_size({"width": 1400, "height": 500})
    page.goto(f"{server}/d/service-overview/service-overview")
    page.wait_for_function("() => document.querySelector('#panel-1').dataset.rendered")
    below: list[str] = page.evaluate(
        "() => Array.from(document.querySelectorAll('.panel[data-panel]'))"
        ".filter(p => p.getBoundingClientRect().top > window.innerHeight + 250).map(p => p.dataset.panel)"
    )
    assert below, "the page fits on the screen"
    page.wait_for_timeout(500)  # let any request that would wrongly be made start
    asked = {u.split("/panels/")[1].split(".")[0] for u in watched.requests if "/panels/" in u}
    assert asked and not asked & set(below), (asked, below)
    page.evaluate("() => window.scrollTo(0, document.body.scrollHeight)")
    page.wait_for_function(f"() => document.querySelector('#panel-{below[-1]}').dataset.rendered")
    assert f"/d/service-overview/panels/{below[-1]}.json" in " ".join(watched.requests)
