"""The Content-Security-Policy in headless Chromium: an injected inline script does not run, and
every page of the UI (dashboards, explore, SLOs, uptime, status, reports) works under it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from tests.environment import CHROMIUM, require_chromium
from tests.slo.conftest import state  # noqa: F401  # the SLO pages' store, as tests/slo uses it
from watchkeeper.dashboards.sample import make_app, serve, shared_storage
from watchkeeper.security.headers import SecurityHeaders
from watchkeeper.slo.router import SloState, slo_router

from .conftest import PASSWORDS, users

REFERENCE_DIR = Path(__file__).parents[2] / "dashboards"
pytestmark = pytest.mark.browser

INJECTED = """<!doctype html><html><head><title>injected</title>
<script src="/static/wk/theme.js"></script></head><body>
<p id="hello">a page with an injected script</p>
<script>window.injectedInline = true;</script>
<img src="data:," onerror="window.injectedHandler = true" alt="">
<a id="js-link" href="javascript:window.injectedHref = true">link</a>
</body></html>"""


def injected_routes(app: FastAPI) -> None:
    @app.get("/test/injected", response_class=HTMLResponse)
    async def injected() -> str:
        return INJECTED


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def ui(state: SloState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # noqa: F811
    """The dashboards workload plus the SLO pages, behind the security headers."""
    app = make_app(
        shared_storage(hours=6, step_ms=60_000),
        dashboards_dir=tmp_path_factory.mktemp("dashboards"),
        extra_dirs=[REFERENCE_DIR],
        scrape_interval_ms=60_000,
        min_refresh_ms=1000,
        check_interval_seconds=0,
    )
    app.include_router(slo_router(lambda: state))
    injected_routes(app)
    app.add_middleware(SecurityHeaders)
    with serve(app) as base:
        yield base


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    messages: list[str] = []
    pg.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
    pg.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
    pg.messages = messages
    yield pg
    context.close()


def test_the_csp_blocks_an_injected_inline_script(page: Any, ui: str) -> None:
    page.goto(ui + "/test/injected")
    page.wait_for_load_state("load")
    page.click("#js-link")
    assert page.inner_text("#hello") == "a page with an injected script"
    ran = page.evaluate("() => [window.injectedInline, window.injectedHandler, window.injectedHref]")
    assert ran == [None, None, None]
    violations = [m for m in page.messages if "Content Security Policy" in m]
    assert any("inline script" in m for m in violations), page.messages
    assert any("inline event handler" in m for m in violations), page.messages


def test_without_the_headers_the_same_page_runs_the_script(page: Any) -> None:
    """The control: what the policy prevents does happen without it."""
    app = FastAPI()
    injected_routes(app)
    with serve(app) as base:
        page.goto(base + "/test/injected")
        page.wait_for_load_state("load")
        page.click("#js-link")  # a javascript: URL runs after the click returns
        page.wait_for_function("() => window.injectedHref === true", timeout=10_000)
        assert page.evaluate(
            "() => [window.injectedInline, window.injectedHandler, window.injectedHref]"
        ) == [
            True,
            True,
            True,
        ]


@pytest.mark.slow
def test_every_page_works_under_the_csp(page: Any, ui: str) -> None:
    pages: list[tuple[str, Callable[[Any], object]]] = [
        ("/dashboards", lambda p: p.fill("#dash-search", "cache")),
        ("/d/cache/cache", lambda p: p.wait_for_selector(".panel .main-svg")),
        ("/explore?expr=up", lambda p: p.wait_for_selector("#explore-form")),
        ("/silences", lambda p: None),
        (
            "/slo",
            lambda p: (p.select_option("select[name=window]", "month"), p.wait_for_url("**window=month")),
        ),
        ("/slo/checkout-availability", lambda p: p.wait_for_selector("#budget-chart .main-svg")),
        ("/uptime", lambda p: p.wait_for_selector("#latency-chart .main-svg")),
        ("/status/public", lambda p: None),
        ("/reports/weekly-slo", lambda p: None),
    ]
    for path, check in pages:
        page.messages.clear()
        page.goto(ui + path)
        page.wait_for_load_state("networkidle")
        check(page)
        page.wait_for_load_state("networkidle")
        errors = [m for m in page.messages if m.startswith(("error", "pageerror"))]
        assert errors == [], (path, errors)
    page.goto(ui + "/dashboards")
    page.fill("#dash-search", "infra")  # the list filter is wired from a data attribute now
    shown = "() => Array.from(document.querySelectorAll('#dash-list li')).filter(li => !li.hidden).length"
    assert page.evaluate(shown) == 1


@pytest.mark.slow
def test_log_in_and_create_a_silence_in_the_browser(page: Any, serve_with: Callable[..., str]) -> None:
    """The whole app: login form, session cookie, and the silence form's CSRF header, under the CSP."""
    base = serve_with(security={"users": users()})
    page.goto(base + "/silences")
    page.wait_for_url("**/login?next=*")
    page.fill("input[name=username]", "ed")
    page.fill("input[name=password]", PASSWORDS["ed"])
    page.click("button[type=submit]")
    page.wait_for_url("**/silences")
    page.click("details.new-silence > summary")
    page.fill("input[name=matchers]", '{alertname="Down"}')
    page.fill("input[name=createdBy]", "ed")
    page.fill("input[name=comment]", "maintenance")
    page.click("#silence-form button[type=submit]")
    page.wait_for_function(
        "() => document.getElementById('silence-status').textContent.startsWith('Created')"
    )
    errors = [m for m in page.messages if m.startswith(("error", "pageerror"))]
    assert errors == []
