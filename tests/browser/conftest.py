"""A real server (uvicorn on 127.0.0.1) with the dashboards workload, and headless Chromium.

Chromium is Debian's ``/usr/bin/chromium`` driven by Playwright (never ``playwright install``).
Without it the tests skip on a laptop and fail in CI (``CI`` set).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dashboards.conftest import storage  # noqa: F401  (the same seeded store as the unit tests)
from tests.dashboards.workload import make_app, serve
from watchkeeper.tsdb.storage import Storage

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).parent / "screenshots"


def _require_browser() -> None:
    missing = []
    if not shutil.which(CHROMIUM):
        missing.append(CHROMIUM)
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("the playwright package")
    if missing:
        message = f"{' and '.join(missing)} not installed"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set, so this is a failure)")
        pytest.skip(message)


@pytest.fixture(scope="session")
def server(storage: Storage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # noqa: F811
    _require_browser()
    dashboards_dir = tmp_path_factory.mktemp("dashboards")
    app = make_app(
        storage,
        dashboards_dir=dashboards_dir,
        scrape_interval_ms=60_000,
        min_refresh_ms=1000,
        check_interval_seconds=0,
    )
    with serve(app) as base:
        yield base


@pytest.fixture(scope="session")
def browser(server: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class PageWatch:
    """Console errors, page errors and every request URL of one page."""

    def __init__(self, page: Any, base: str) -> None:
        self.page, self.base = page, base
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on(
            "console",
            lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("request", lambda r: self.requests.append(r.url))

    def outside_requests(self) -> list[str]:
        return [
            u
            for u in self.requests
            if not (
                u.startswith(("http://127.0.0.1:", "http://localhost:")) or u.startswith(("data:", "blob:"))
            )
        ]

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def watched(browser: Any, server: str) -> Iterator[PageWatch]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    watch = PageWatch(page, server)
    yield watch
    context.close()
    assert watch.errors == [], watch.errors
    assert watch.outside_requests() == [], watch.outside_requests()
