from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from watchkeeper.dashboards.sample import make_app, shared_storage
from watchkeeper.tsdb.storage import Storage


@pytest.fixture
def storage() -> Storage:
    """The sample workload at 1-minute resolution over 6 h (quick to build; enough for every panel),
    shared with the browser tests when both run in one session; seeded anew once its data ended
    too long ago for queries at "now" (see `shared_storage`)."""
    return shared_storage(hours=6, step_ms=60_000)


@pytest.fixture
def client(storage: Storage, tmp_path: Path) -> Iterator[TestClient]:
    app = make_app(storage, dashboards_dir=tmp_path, scrape_interval_ms=60_000, check_interval_seconds=0)
    with TestClient(app) as c:
        yield c
