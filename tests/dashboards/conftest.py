from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.dashboards.workload import make_app, seed
from watchkeeper.tsdb.storage import Storage

NOW_MS = (int(time.time() * 1000) // 60_000) * 60_000


@pytest.fixture(scope="session")
def storage() -> Iterator[Storage]:
    """The workload at 1-minute resolution over 6 h (quick to build; enough for every panel)."""
    store = Storage.open(data_dir=None)
    seed(store, NOW_MS, hours=6, step_ms=60_000)
    yield store
    store.close()


@pytest.fixture
def client(storage: Storage, tmp_path: object) -> Iterator[TestClient]:
    with TestClient(
        make_app(storage, dashboards_dir=tmp_path, scrape_interval_ms=60_000, check_interval_seconds=0)
    ) as c:  # type: ignore[arg-type]
        yield c
