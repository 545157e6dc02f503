"""A real server (uvicorn on 127.0.0.1) with the dashboards workload, and headless Chromium.

Chromium is Debian's ``/usr/bin/chromium`` driven by Playwright (never ``playwright install``).
Without it the tests skip on a laptop and fail in CI (``CI`` set).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.environment import CHROMIUM, require_chromium
from watchkeeper.dashboards.sample import make_app, serve, shared_storage
from watchkeeper.tsdb.storage import Storage

from .pagewatch import PageWatch

REFERENCE_DIR = Path(__file__).parents[2] / "dashboards"  # the reference deployment's dashboards
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass(frozen=True)
class Sample:
    """The sample server: its URL, its store (tests may append series) and the dashboards
    directory it re-reads on every request (tests may write files)."""

    url: str
    storage: Storage
    dashboards_dir: Path


@pytest.fixture(scope="package")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sample]:
    require_chromium()
    storage = shared_storage(hours=6, step_ms=60_000)  # the unit tests' store when both run
    dashboards_dir = tmp_path_factory.mktemp("dashboards")
    app = make_app(
        storage,
        dashboards_dir=dashboards_dir,
        extra_dirs=[REFERENCE_DIR],
        scrape_interval_ms=60_000,
        min_refresh_ms=1000,
        check_interval_seconds=0,
    )
    with serve(app) as base:
        yield Sample(base, storage, dashboards_dir)


@pytest.fixture(scope="package")
def server(sample: Sample) -> str:
    return sample.url


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@contextmanager
def watching(browser: Any, base: str, **options: Any) -> Iterator[PageWatch]:
    """A fresh browser page on ``base`` (``options``: more Playwright context options); on
    leaving, it must have had no console error and no request outside localhost."""
    context = browser.new_context(**{"viewport": {"width": 1400, "height": 1000}, **options})
    page = context.new_page()
    page.set_default_timeout(30_000)
    watch = PageWatch(page, base)
    yield watch
    context.close()
    assert watch.errors == [], watch.errors
    assert watch.outside_requests() == [], watch.outside_requests()


@pytest.fixture
def watched(browser: Any, server: str) -> Iterator[PageWatch]:
    with watching(browser, server) as watch:
        yield watch
