"""Remote-write out to a real Prometheus (2.42, Debian's package) with its remote-write receiver:
what a running `watchkeeper serve` ingests is queried back from Prometheus.

Without /usr/bin/prometheus these tests skip on a laptop and fail under CI (``CI`` set)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.environment import unavailable
from tests.forwarding.receiver import Receiver
from tests.integration.conftest import Server, free_port

PROMETHEUS = Path("/usr/bin/prometheus")
pytestmark = pytest.mark.slow

Samples = dict[tuple[tuple[str, str], ...], list[tuple[int, float]]]


class Prometheus:
    """A Prometheus server on a free loopback port and a temporary TSDB; restartable."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        (tmp / "prometheus.yml").write_text("global: {scrape_interval: 1h}\nscrape_configs: []\n")
        self.log_path = tmp / "prometheus.log"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-remote-write-receiver",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log_path.read_text()}")
            try:
                if httpx.get(self.url + "/-/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"prometheus not ready:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def raw_samples(self, selector: str, at_ms: int) -> Samples:
        r = httpx.get(
            self.url + "/api/v1/query", params={"query": f"{selector}[1h]", "time": at_ms / 1000}, timeout=10
        )
        r.raise_for_status()
        return {
            tuple(sorted(s["metric"].items())): [(round(float(t) * 1000), float(v)) for t, v in s["values"]]
            for s in r.json()["data"]["result"]
        }


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    if not PROMETHEUS.exists():
        unavailable(f"{PROMETHEUS} is not installed (Debian's prometheus package)")
    (tmp_path / "prom").mkdir()
    p = Prometheus(tmp_path / "prom")
    p.start()
    yield p
    p.stop()


def forwarding_server(make_server: Callable[..., Server], url: str, **queue: str) -> Server:
    remote_write = [
        {
            "url": url,
            "name": "prometheus",
            "queue_config": {
                "batch_send_deadline": "100ms", "min_backoff": "20ms", "max_backoff": "200ms", **queue
            },
        }
    ]
    env = {"WATCHKEEPER_REMOTE_WRITE": json.dumps(remote_write), "WATCHKEEPER_SCRAPE_CONFIGS": "[]"}
    server: Server = make_server(env=env)
    return server


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


Request = list[tuple[list[tuple[str, str]], list[tuple[int, float]]]]


def workload(start_ms: int, steps: int, series: int) -> list[Request]:
    """One remote-write request per step; every series gets one sample a step (15 s apart)."""
    return [
        [
            (
                [("__name__", "wk_forwarded_total"), ("instance", f"host{i}"), ("job", "api")],
                [(start_ms + 15_000 * step, float(step * 10 + i))],
            )
            for i in range(series)
        ]
        for step in range(steps)
    ]


def test_prometheus_receives_what_watchkeeper_ingests(
    prometheus: Prometheus, make_server: Callable[..., Server]
) -> None:
    server = forwarding_server(make_server, prometheus.url + "/api/v1/write")
    start_ms = (time.time_ns() // 1_000_000) - 20 * 60_000
    requests = workload(start_ms, steps=20, series=25)
    for items in requests:
        assert server.write(items).status_code == 204
    end_ms = start_ms + 15_000 * 20
    stored = server.raw_samples("wk_forwarded_total", end_ms)
    assert len(stored) == 25 and all(len(v) == 20 for v in stored.values())
    wait_until(
        lambda: prometheus.raw_samples("wk_forwarded_total", end_ms) == stored, "Prometheus to hold it all"
    )
    wait_until(lambda: _metric(server, "samples_total") == [500.0], "the sent counter to reach 500")
    assert _metric(server, "samples_failed_total") == [0.0]


def _metric(server: Server, name: str) -> list[float]:
    """The values of ``watchkeeper_remote_storage_<name>`` of the queue named prometheus."""
    prefix = f'watchkeeper_remote_storage_{name}{{remote_name="prometheus"'
    text = server.client.get("/metrics").text
    return [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)]


def test_samples_queued_while_prometheus_is_down_arrive_when_it_is_back(
    prometheus: Prometheus, make_server: Callable[..., Server]
) -> None:
    server = forwarding_server(make_server, prometheus.url + "/api/v1/write")
    start_ms = (time.time_ns() // 1_000_000) - 20 * 60_000
    requests = workload(start_ms, steps=10, series=5)
    for items in requests[:5]:
        server.write(items)
    end_ms = start_ms + 15_000 * 10
    wait_until(lambda: len(prometheus.raw_samples("wk_forwarded_total", end_ms)) == 5, "the first samples")
    prometheus.stop()
    for items in requests[5:]:
        assert server.write(items).status_code == 204  # ingest does not wait for the receiver
    wait_until(lambda: _metric(server, "samples_retried_total")[0] > 0, "retries")
    prometheus.start()
    stored = server.raw_samples("wk_forwarded_total", end_ms)
    wait_until(lambda: prometheus.raw_samples("wk_forwarded_total", end_ms) == stored, "every sample, once")


def test_sigterm_flushes_the_queue_to_prometheus(
    prometheus: Prometheus, make_server: Callable[..., Server]
) -> None:
    server = forwarding_server(make_server, prometheus.url + "/api/v1/write", batch_send_deadline="1h")
    start_ms = (time.time_ns() // 1_000_000) - 5 * 60_000
    for items in workload(start_ms, steps=3, series=4):
        server.write(items)
    assert prometheus.raw_samples("wk_forwarded_total", start_ms + 60_000) == {}  # still queued
    assert server.stop() == 0
    got = prometheus.raw_samples("wk_forwarded_total", start_ms + 60_000)
    assert sorted(v for values in got.values() for _, v in values) == sorted(
        float(step * 10 + i) for step in range(3) for i in range(4)
    )


def test_reload_moves_forwarding_to_a_new_endpoint(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    first, second = Receiver(), Receiver()
    try:
        config = tmp_path / "watchkeeper.yml"

        def point_at(url: str) -> None:
            queue = "{batch_send_deadline: 50ms, min_backoff: 10ms, max_backoff: 50ms}"
            entry = f"{{url: '{url}', queue_config: {queue}}}"
            config.write_text(f"scrape_configs: []\nremote_write: [{entry}]\n")

        point_at(first.url)
        server: Server = make_server(extra_args=["--config", str(config)])
        now_ms = time.time_ns() // 1_000_000
        server.write(workload(now_ms - 60_000, steps=1, series=3)[0])
        first.wait_for(lambda: len(first.accepted()) == 3, "3 samples at the first endpoint")
        point_at(second.url)
        assert server.client.post("/-/reload").status_code == 200
        server.write(workload(now_ms - 45_000, steps=1, series=2)[0])
        second.wait_for(lambda: len(second.accepted()) == 2, "2 samples at the second endpoint")
        assert len(first.accepted()) == 3
    finally:
        first.close()
        second.close()
