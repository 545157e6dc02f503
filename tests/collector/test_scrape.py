"""The scrape manager: processing a scrape (labels, relabelling, limits, staleness), target building,
file_sd reloads, and real scrapes of a real target into a running watchkeeper."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.collector.test_push import build_app, serve, values
from tests.integration.conftest import Server
from watchkeeper.app import AppState
from watchkeeper.collector.relabel import RelabelConfig, compile_rules
from watchkeeper.collector.remote_write import parse_labels
from watchkeeper.collector.scrape import (
    SampleLimitExceeded,
    ScrapeManager,
    TargetState,
    merge_target_labels,
    process_scrape,
    target_offset_seconds,
)
from watchkeeper.collector.targets import (
    FileDiscovery,
    FileSDConfig,
    ScrapeConfig,
    StaticConfig,
    build_targets,
    default_scrape_configs,
    static_groups,
)

STALE = 0x7FF0000000000002


def target_of(cfg: ScrapeConfig) -> Any:
    active, _ = build_targets(cfg, static_groups(cfg))
    return active[0]


def run(
    text: str, cfg: ScrapeConfig, state: TargetState, ts: int = 1000
) -> list[tuple[dict[str, str], float]]:
    result = process_scrape(text, openmetrics=False, target=target_of(cfg), cfg=cfg,
                            rules=compile_rules(cfg.metric_relabel_configs), state=state, timestamp_ms=ts)
    return [(dict(parse_labels(k)), v) for k, v in zip(result.batch.keys, result.batch.values, strict=True)]


CFG = ScrapeConfig(job_name="app", static_configs=[StaticConfig(targets=["h:1"], labels={"env": "dev"})])


def test_target_labels_win_and_scraped_ones_are_exported() -> None:
    got = run('m{job="other",x="1"} 5\n', CFG, TargetState())
    assert got == [({"__name__": "m", "env": "dev", "exported_job": "other", "instance": "h:1", "job": "app",
                     "x": "1"}, 5.0)]
    honor = CFG.model_copy(update={"honor_labels": True})
    assert run('m{job="other"} 5\n', honor, TargetState())[0][0]["job"] == "other"
    scraped = (("__name__", "m"), ("job", "a"), ("exported_job", "b"))
    assert merge_target_labels(scraped, (("job", "t"),), False) == {
        "__name__": "m", "job": "t", "exported_job": "b", "exported_exported_job": "a"}


def test_metric_relabel_and_sample_limit() -> None:
    cfg = CFG.model_copy(update={"metric_relabel_configs": [
        RelabelConfig(source_labels=["__name__"], regex="go_.*", action="drop")]})
    got = run("go_gc 1\nkeep 2\n", cfg, TargetState())
    assert [labels["__name__"] for labels, _ in got] == ["keep"]
    limited = CFG.model_copy(update={"sample_limit": 1})
    with pytest.raises(SampleLimitExceeded, match="sample limit exceeded"):
        run("a 1\nb 2\n", limited, TargetState())


def test_disappearing_series_get_a_staleness_marker() -> None:
    state = TargetState()
    run("a 1\nb 2\n", CFG, state, ts=1000)
    got = run("a 3\n", CFG, state, ts=2000)
    assert [(labels["__name__"], v) for labels, v in got if not math.isnan(v)] == [("a", 3.0)]
    stale = [(labels["__name__"], v) for labels, v in got if math.isnan(v)]
    assert [name for name, _ in stale] == ["b"]
    assert struct.unpack("<Q", struct.pack("<d", stale[0][1]))[0] == STALE
    # samples with their own timestamps are not tracked for staleness (as in Prometheus)
    assert all(not math.isnan(v) for _, v in run("a 4 1500\n", CFG, state, ts=3000)[:1])


def test_build_targets_relabel_params_and_drops() -> None:
    cfg = ScrapeConfig(
        job_name="blackbox", metrics_path="/probe", params={"module": ["http_2xx"]},
        static_configs=[StaticConfig(targets=["https://example.org", "skip.me"])],
        relabel_configs=[
            RelabelConfig(source_labels=["__address__"], regex="skip.*", action="drop"),
            RelabelConfig(source_labels=["__address__"], target_label="__param_target"),
            RelabelConfig(source_labels=["__param_target"], target_label="instance"),
            RelabelConfig(target_label="__address__", replacement="127.0.0.1:9115"),
        ],
    )
    active, dropped = build_targets(cfg, static_groups(cfg))
    assert len(active) == 1 and len(dropped) == 1
    t = active[0]
    assert t.url == "http://127.0.0.1:9115/probe?module=http_2xx&target=https%3A%2F%2Fexample.org"
    assert dict(t.labels) == {"instance": "https://example.org", "job": "blackbox"}
    assert 0 <= target_offset_seconds(t, 15) < 15
    assert target_offset_seconds(t, 15) == target_offset_seconds(t, 15)


def test_config_validation_and_self_scrape_default() -> None:
    with pytest.raises(ValidationError):
        ScrapeConfig(job_name="x", scrape_interval="5s", scrape_timeout="10s")
    with pytest.raises(ValidationError):
        ScrapeConfig(job_name="x", bearer_token="a", basic_auth={"username": "u"})  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ScrapeConfig(job_name="x", unknown=1)  # type: ignore[call-arg]
    (cfg,) = default_scrape_configs("0.0.0.0", 9470)
    assert cfg.job_name == "watchkeeper" and cfg.static_configs[0].targets == ["127.0.0.1:9470"]
    assert ScrapeConfig(job_name="x", scrape_interval="5s").timeout_seconds == 5.0


def test_file_sd_reads_json_and_yaml_and_keeps_last_good(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps([{"targets": ["h1:1"], "labels": {"team": "x"}}]))
    (tmp_path / "b.yml").write_text("- targets: ['h2:2']\n")
    sd = FileDiscovery([FileSDConfig(files=[str(tmp_path / "*.json"), str(tmp_path / "*.yml")])])
    groups = sd.groups()
    assert sorted(t for g in groups for t in g.targets) == ["h1:1", "h2:2"]
    assert ("__meta_filepath", str(tmp_path / "a.json")) in groups[0].labels
    (tmp_path / "a.json").write_text("[{not json")
    assert sorted(t for g in sd.groups() for t in g.targets) == ["h1:1", "h2:2"]
    assert str(tmp_path / "a.json") in sd.errors
    (tmp_path / "b.yml").unlink()
    assert sorted(t for g in sd.groups() for t in g.targets) == ["h1:1"]


# --- end to end ----------------------------------------------------------------------------------


class FakeTarget:
    """A /metrics endpoint whose body and status the test changes; it wants basic auth."""

    def __init__(self) -> None:
        self.body = 'app_requests_total{code="200"} 7\napp_temp 21\ngo_gc 1\n'
        self.status = 200
        self.scrapes = 0

    def app(self) -> Starlette:
        async def metrics(request: Request) -> Response:
            expected = "Basic " + base64.b64encode(b"scraper:pw").decode()
            if request.headers.get("authorization") != expected:
                return PlainTextResponse("unauthorized", status_code=401)
            self.scrapes += 1
            return PlainTextResponse(self.body, status_code=self.status)

        return Starlette(routes=[Route("/metrics", metrics)])


@pytest.fixture
def fake_target() -> Iterator[tuple[FakeTarget, str]]:
    fake = FakeTarget()
    with serve_plain(fake.app()) as url:
        yield fake, url


def serve_plain(app: Starlette) -> Any:
    import socket
    import threading
    from contextlib import contextmanager

    import uvicorn

    @contextmanager
    def cm() -> Iterator[str]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                               access_log=False, ws="none", lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        try:
            yield f"127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(10)

    return cm()


async def until(condition: Callable[[], bool], timeout_seconds: float = 15) -> None:
    """Wait (without blocking the scrape loops) until `condition()` holds."""
    deadline = time.monotonic() + timeout_seconds
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, "condition did not hold in time"
        await asyncio.sleep(0.05)


def test_scrapes_into_a_running_server(tmp_path: Path, fake_target: tuple[FakeTarget, str]) -> None:
    fake, address = fake_target
    sd_file = tmp_path / "targets.json"
    sd_file.write_text(json.dumps([{"targets": [address], "labels": {"via": "file"}}]))
    configs = [
        ScrapeConfig(job_name="app", scrape_interval="300ms",
                     static_configs=[StaticConfig(targets=[address])],
                     basic_auth={"username": "scraper", "password": "pw"},  # type: ignore[arg-type]
                     metric_relabel_configs=[RelabelConfig(source_labels=["__name__"], regex="go_.*",
                                                           action="drop")]),
        ScrapeConfig(job_name="filed", scrape_interval="300ms",
                     file_sd_configs=[FileSDConfig(files=[str(sd_file)])],
                     basic_auth={"username": "scraper", "password": "wrong"}),  # type: ignore[arg-type]
    ]
    app = build_app(tmp_path)
    state: AppState = app.state.watchkeeper
    with serve(app) as url:
        async def scenario() -> None:
            manager = ScrapeManager(configs, state.require_ingester, discovery_interval_seconds=0.2)
            state.scrape_manager = manager
            await manager.start()
            try:
                await until(lambda: values(url, "up") == {
                    f"instance={address},job=app": 1.0, f"instance={address},job=filed,via=file": 0.0})
                got = await asyncio.to_thread(values, url, "app_requests_total")
                assert got == {f"code=200,instance={address},job=app": 7.0}
                assert await asyncio.to_thread(values, url, "go_gc") == {}
                assert await asyncio.to_thread(values, url, 'scrape_samples_scraped{job="app"}') == {
                    f"instance={address},job=app": 3.0}
                api = await asyncio.to_thread(httpx.get, url + "/api/v1/targets")
                data = api.json()["data"]
                by_pool = {t["scrapePool"]: t for t in data["activeTargets"]}
                assert by_pool["app"]["health"] == "up" and by_pool["app"]["lastError"] == ""
                assert by_pool["app"]["scrapeUrl"] == f"http://{address}/metrics"
                assert by_pool["app"]["labels"] == {"instance": address, "job": "app"}
                assert by_pool["filed"]["health"] == "down" and "401" in by_pool["filed"]["lastError"]
                assert by_pool["filed"]["discoveredLabels"]["__meta_filepath"] == str(sd_file)
                assert set(by_pool["app"]) >= {"discoveredLabels", "globalUrl", "lastScrape",
                                               "lastScrapeDuration", "scrapeInterval", "scrapeTimeout"}
                # a series that disappears goes stale at once
                fake.body = 'app_requests_total{code="200"} 9\n'
                await until(lambda: values(url, "app_temp") == {})
                assert values(url, "app_requests_total") == {f"code=200,instance={address},job=app": 9.0}
                # a failing target: up 0, its series stale
                fake.status = 500
                await until(lambda: values(url, 'up{job="app"}') == {f"instance={address},job=app": 0})
                assert await asyncio.to_thread(values, url, "app_requests_total") == {}
                t = manager.targets_api(state="active", scrape_pool="app")["activeTargets"][0]
                assert "500" in t["lastError"]
                # the file_sd target goes away: its up series goes stale
                sd_file.write_text("[]")
                await until(lambda: values(url, 'up{job="filed"}') == {})
                assert manager.targets_api(scrape_pool="filed")["activeTargets"] == []
            finally:
                await manager.stop()

        asyncio.run(scenario())


def test_self_scrape_of_a_fresh_server(tmp_path: Path) -> None:
    app = build_app(tmp_path)
    state: AppState = app.state.watchkeeper
    with serve(app) as url:
        port = int(url.rsplit(":", 1)[1])
        (cfg,) = default_scrape_configs("127.0.0.1", port)
        cfg = cfg.model_copy(update={"scrape_interval": "200ms"})

        async def scenario() -> None:
            manager = ScrapeManager([cfg], state.require_ingester)
            state.scrape_manager = manager
            await manager.start()
            deadline = time.monotonic() + 15
            while manager.targets_api()["activeTargets"][0]["health"] != "up":
                assert time.monotonic() < deadline, manager.targets_api()
                await asyncio.sleep(0.05)
            await manager.stop()

        asyncio.run(scenario())
        assert values(url, 'up{job="watchkeeper"}') == {f"instance=127.0.0.1:{port},job=watchkeeper": 1.0}
        assert values(url, "watchkeeper_ingest_samples_total")


OPENMETRICS = """# TYPE jobs counter
jobs_total{job="batch",queue="a"} 4
jobs_created{job="batch",queue="a"} 1.7e9
# TYPE temp gauge
temp{job="batch"} 20.5
# EOF
"""


def test_bearer_auth_openmetrics_honor_labels_and_sample_limit(tmp_path: Path) -> None:
    """A target that wants a bearer token (read from a file) and answers OpenMetrics; one job
    honours the scraped `job` label, another's sample_limit is below the target's sample count."""
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")

    async def metrics(request: Request) -> Response:
        if request.headers.get("authorization") != "Bearer s3cret-token":
            return PlainTextResponse("unauthorized", status_code=401)
        assert "application/openmetrics-text" in request.headers["accept"]
        return Response(OPENMETRICS, media_type="application/openmetrics-text; version=1.0.0; charset=utf-8")

    common = {"scrape_interval": "300ms", "authorization": {"credentials_file": str(token_file)}}
    app = build_app(tmp_path)
    state: AppState = app.state.watchkeeper
    with serve_plain(Starlette(routes=[Route("/metrics", metrics)])) as address, serve(app) as url:
        static = [StaticConfig(targets=[address])]
        configs = [
            ScrapeConfig(job_name="honoured", honor_labels=True, static_configs=static, **common),  # type: ignore[arg-type]
            ScrapeConfig(job_name="limited", sample_limit=1, static_configs=static, **common),  # type: ignore[arg-type]
        ]

        async def scenario() -> None:
            manager = ScrapeManager(configs, state.require_ingester)
            state.scrape_manager = manager
            await manager.start()
            try:
                await until(lambda: values(url, "up") == {
                    f"instance={address},job=honoured": 1.0, f"instance={address},job=limited": 0.0})
                got = await asyncio.to_thread(values, url, "jobs_total")  # honor_labels: the scraped job
                assert got == {f"instance={address},job=batch,queue=a": 4.0}
                # OpenMetrics _created series are skipped, as Prometheus does by default
                assert await asyncio.to_thread(values, url, "jobs_created") == {}
                limited = manager.targets_api(scrape_pool="limited")["activeTargets"][0]
                assert limited["health"] == "down"
                assert "sample limit exceeded: 2 samples" in limited["lastError"]
                assert await asyncio.to_thread(values, url, 'temp{job="limited"}') == {}
            finally:
                await manager.stop()

        asyncio.run(scenario())


def test_a_target_slower_than_scrape_timeout_is_down(tmp_path: Path) -> None:
    async def slow(request: Request) -> Response:
        await asyncio.sleep(2)
        return PlainTextResponse("late 1\n")

    app = build_app(tmp_path)
    state: AppState = app.state.watchkeeper
    with serve_plain(Starlette(routes=[Route("/metrics", slow)])) as address, serve(app) as url:
        cfg = ScrapeConfig(job_name="slow", scrape_interval="1s", scrape_timeout="200ms",
                           static_configs=[StaticConfig(targets=[address])])

        async def scenario() -> None:
            manager = ScrapeManager([cfg], state.require_ingester)
            await manager.start()
            try:
                await until(lambda: values(url, "up") == {f"instance={address},job=slow": 0.0})
                (target,) = manager.targets_api()["activeTargets"]
                assert target["health"] == "down" and "Timeout" in target["lastError"]
                assert target["scrapeTimeout"] == "200ms"
                duration = await asyncio.to_thread(values, url, "scrape_duration_seconds")
                assert duration[f"instance={address},job=slow"] >= 0.2  # waited for the timeout
            finally:
                await manager.stop()

        asyncio.run(scenario())


@pytest.mark.slow
def test_fresh_watchkeeper_serve_scrapes_itself_and_lists_the_target(tmp_path: Path) -> None:
    """`watchkeeper serve` with no configuration: the default self-scrape (15 s, at the target's
    offset in the interval) writes `up` and watchkeeper's own metrics, and /api/v1/targets shows it."""
    server = Server(tmp_path / "data")
    server.start()
    try:
        instance = f"127.0.0.1:{server.port}"
        deadline = time.monotonic() + 60
        while True:
            targets = server.client.get("/api/v1/targets").json()
            (target,) = targets["data"]["activeTargets"]
            if target["health"] == "up":
                break
            assert target["health"] == "unknown", target  # not scraped yet, never "down"
            assert time.monotonic() < deadline, target
            time.sleep(0.5)
        assert targets["status"] == "success"
        assert target["labels"] == {"instance": instance, "job": "watchkeeper"}
        assert target["scrapePool"] == "watchkeeper" and target["lastError"] == ""
        assert target["scrapeUrl"] == f"http://{instance}/metrics" and target["scrapeInterval"] == "15s"
        assert target["discoveredLabels"]["__address__"] == instance
        assert targets["data"]["droppedTargets"] == []
        assert values(server.url, "up") == {f"instance={instance},job=watchkeeper": 1.0}
        assert values(server.url, "scrape_samples_scraped")[f"instance={instance},job=watchkeeper"] > 10
        assert values(server.url, 'watchkeeper_ingest_samples_total{job="watchkeeper"}')
    finally:
        server.close()


def test_scrapes_are_spread_over_the_interval() -> None:
    """100 targets of one job: their offsets fill the interval evenly (each tenth holds 3 to 20),
    rather than all firing at the start of it."""
    addresses = [f"h{i}:9100" for i in range(100)]
    cfg = ScrapeConfig(job_name="many", static_configs=[StaticConfig(targets=addresses)])
    active, _ = build_targets(cfg, static_groups(cfg))
    tenths = [0] * 10
    for t in active:
        tenths[int(target_offset_seconds(t, 15) / 1.5)] += 1
    assert sum(tenths) == 100 and min(tenths) >= 3 and max(tenths) <= 20, tenths
