"""Restart safety of a real server process: graceful SIGTERM persists the head; `kill -9` during
sustained ingest loses nothing that was acknowledged."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from tests.collector.encode import body
from tests.integration.conftest import WRITE_HEADERS, Server

# Recent timestamps: the server scrapes itself by default, and a sample more than the retention
# older than its newest (wall-clock) sample is "too old" (a fixed 2023 date made the stream refused
# as soon as a self-scrape landed first). Two hours back leaves room for thousands of 1 s steps
# before the far-future guard (10 min ahead of the clock).
T0 = (int(time.time()) - 7200) * 1000


def series_labels(i: int) -> list[tuple[str, str]]:
    return [("__name__", "durable_total"), ("job", "api"), ("instance", f"host-{i}")]


def test_sigterm_persists_the_head_so_no_wal_replay_is_needed(make_server: Callable[..., Server]) -> None:
    srv = make_server()
    for k in range(10):
        items = [(series_labels(i), [(T0 + k * 15_000, float(k * i))]) for i in range(20)]
        assert srv.write(items).status_code == 204
    assert srv.stop() == 0
    assert "store closed" in srv.log()
    # Everything is in the database: even without the write-ahead log, all samples come back.
    shutil.rmtree(srv.data_dir / "wal")
    srv.start()
    got = srv.raw_samples("durable_total", T0 + 9 * 15_000)
    assert len(got) == 20
    for key, samples in got.items():
        i = int(dict(key)["instance"].removeprefix("host-"))
        assert samples == [(T0 + k * 15_000, float(k * i)) for k in range(10)]
    assert srv.stop() == 0


def _writer(
    url: str, stop: threading.Event, acked: list[int], errors: list[str], series: int, k: int
) -> None:
    """Post one sample per series per batch, with timestamps increasing from step `k`; remember
    the acknowledged steps, and what went wrong otherwise. A transport error before `stop` (a slow
    answer on a loaded machine) is retried with the next step, so it cannot end the stream early."""
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            items = [(series_labels(i), [(T0 + k * 1000, float(k))]) for i in range(series)]
            try:
                r = client.post(url + "/api/v1/write", content=body(items), headers=WRITE_HEADERS)
            except httpx.TransportError as e:
                errors.append(repr(e))
                time.sleep(0.01)
            else:
                if r.status_code == 204:
                    acked.append(k)
                else:
                    errors.append(f"{r.status_code} {r.text[:200]}")
            k += 1


def _kill_during_ingest(srv: Server, *, series: int = 50, seconds: float = 1.5, first_step: int = 0) -> int:
    """Stream writes, SIGKILL the server mid-stream, restart it and check every acknowledged sample
    is back. Returns the step after the last acknowledged one (where a next stream may start)."""
    acked: list[int] = []
    errors: list[str] = []
    stop = threading.Event()
    writer = threading.Thread(target=_writer, args=(srv.url, stop, acked, errors, series, first_step))
    writer.start()
    deadline = time.monotonic() + 30
    while len(acked) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(seconds)
    srv.kill()  # SIGKILL while the writer is mid-stream
    stop.set()
    writer.join(10)
    assert len(acked) >= 20, f"the writer got only {len(acked)} acknowledgements; errors: {errors[:3]}"
    srv.start()
    last = max(acked)
    got = srv.raw_samples("durable_total", T0 + (last + 1) * 1000, window="1d")
    assert len(got) == series
    for samples in got.values():
        stored = dict(samples)
        missing = [k for k in acked if stored.get(T0 + k * 1000) != float(k)]
        assert not missing, f"{len(missing)} acknowledged samples lost, first {missing[:5]}"
    return last + 1


@pytest.mark.slow
def test_kill_9_during_sustained_ingest_loses_no_acknowledged_sample(
    make_server: Callable[..., Server],
) -> None:
    srv = make_server()
    resume = _kill_during_ingest(srv)
    # and it goes on: a second crash after the replay loses nothing either
    _kill_during_ingest(srv, seconds=0.5, first_step=resume)
    assert srv.stop() == 0


@pytest.mark.slow
@pytest.mark.postgres
def test_kill_9_on_postgresql(make_server: Callable[..., Server], postgres_url: str) -> None:
    srv = make_server(env={"WATCHKEEPER_DATABASE_URL": postgres_url})
    _kill_during_ingest(srv)
    assert srv.stop() == 0
