"""End to end: a running HTTP server (uvicorn) with the v2 API and the runner, alerts posted as
Prometheus posts them, a local HTTP receiver; restart and leader failover on a shared database."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI

from watchkeeper.alerting.api import alertmanager_router
from watchkeeper.alerting.config import AlertingConfig
from watchkeeper.alerting.dispatcher import Dispatcher
from watchkeeper.alerting.runner import DispatcherRunner, Leadership, RedisLease

from .conftest import FakeService, Received


def config(url: str) -> AlertingConfig:
    return AlertingConfig.model_validate(
        {
            "route": {
                "receiver": "team",
                "group_by": ["alertname", "cluster"],
                "group_wait": "0s",
                "group_interval": "5m",
                "repeat_interval": "4h",
                "routes": [{"matchers": ['severity="page"'], "receiver": "pager", "group_wait": "0s"}],
            },
            "receivers": [
                {"name": "team", "slack_configs": [{"api_url": f"{url}/slack"}]},
                {"name": "pager", "webhook_configs": [{"url": f"{url}/pager"}]},
            ],
            "inhibit_rules": [
                {
                    "source_matchers": ['severity="page"'],
                    "target_matchers": ['severity="ticket"'],
                    "equal": ["cluster"],
                }
            ],
            "outbox": {"poll_interval": "200ms"},
        }
    )


class Replica:
    """One watchkeeper alerting process: the v2 API under uvicorn, the runner in its lifespan."""

    def __init__(self, cfg: AlertingConfig, engine: sa.Engine, leader: Leadership | None = None) -> None:
        self.dispatcher = Dispatcher(cfg, engine)
        self.runner = DispatcherRunner(self.dispatcher, leader=leader)
        runner = self.runner

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            runner.start()
            yield

        app = FastAPI(lifespan=lifespan)
        app.include_router(alertmanager_router(lambda: self.dispatcher))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_config=None,
                access_log=False,
                ws="none",
                lifespan="on",
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.stopped = False

    def start(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.port}"

    def stop(self, *, crash: bool = False) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.server.should_exit = True
        self.thread.join(10)
        self.runner.stop(release=not crash)
        self.dispatcher.close()


@contextmanager
def running(cfg: AlertingConfig, engine: sa.Engine) -> Iterator[str]:
    replica = Replica(cfg, engine)
    try:
        yield replica.start()
    finally:
        replica.stop()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat()


_client = httpx.Client(timeout=5)  # one client: creating one costs ~100 ms (TLS context), not ours to measure


@pytest.fixture(autouse=True, scope="module")
def _close_client() -> Iterator[None]:
    yield
    _client.close()


def post(base: str, alerts: list[dict[str, Any]]) -> None:
    _client.post(f"{base}/api/v2/alerts", json=alerts).raise_for_status()


def status_of(rec: Received) -> str:
    body = rec.json()
    if "status" in body:  # webhook
        return str(body["status"])
    return "firing" if body["text"].startswith("[FIRING") else "resolved"  # Slack


def wait_for(service: FakeService, n: int, timeout_s: float = 5.0) -> float:
    """Seconds until ``n`` notifications were acknowledged (fails after the timeout)."""
    t0 = time.monotonic()
    while len(service.delivered) < n:
        assert time.monotonic() - t0 < timeout_s, f"only {len(service.delivered)} of {n} notifications"
        time.sleep(0.005)
    return time.monotonic() - t0


PAGE = {
    "labels": {"alertname": "ApiDown", "cluster": "eu", "severity": "page"},
    "annotations": {"summary": "API down in eu"},
    "generatorURL": "http://prom/graph",
}
TICKET = {"labels": {"alertname": "ApiSlow", "cluster": "eu", "severity": "ticket"}}
TICKET_US = {"labels": {"alertname": "ApiSlow", "cluster": "us", "severity": "ticket"}}
NOISE = {"labels": {"alertname": "Noise", "cluster": "us", "severity": "ticket"}}


def test_routed_grouped_inhibited_silenced_and_resolved_promptly(
    sqlite_engine: sa.Engine, service: FakeService
) -> None:
    with running(config(service.url), sqlite_engine) as base:
        now = time.time()
        _client.post(
            f"{base}/api/v2/silences",
            json={
                "matchers": [{"name": "alertname", "value": "Noise", "isRegex": False, "isEqual": True}],
                "startsAt": iso(now - 1),
                "endsAt": iso(now + 3600),
                "createdBy": "t",
                "comment": "known",
            },
            timeout=5,
        ).raise_for_status()
        t_post = time.monotonic()
        post(base, [PAGE, TICKET, TICKET_US, NOISE])
        wait_for(service, 2)
        first = time.monotonic() - t_post
        time.sleep(0.3)  # nothing else arrives: eu ticket inhibited by the page, Noise silenced
        by_path = {r.path: r.json() for r in service.delivered}
        assert set(by_path) == {"/pager", "/slack"} and len(service.delivered) == 2
        assert by_path["/pager"]["alerts"][0]["labels"]["alertname"] == "ApiDown"
        assert by_path["/slack"]["text"] == "[FIRING:1] ApiSlow us (ticket)"  # the eu one is inhibited
        t_resolve = time.monotonic()
        post(base, [{**PAGE, "endsAt": iso(time.time())}])
        wait_for(service, 3)
        resolved = time.monotonic() - t_resolve
        last = service.delivered[-1]
        assert last.path == "/pager" and last.json()["status"] == "resolved"
    print(
        f"\nPOST /api/v2/alerts -> webhook: firing {first * 1000:.0f} ms, resolved {resolved * 1000:.0f} ms "
        f"(group_interval 5m)"
    )
    assert first < 1.0 and resolved < 1.0


def test_restart_keeps_firing_and_sends_nothing_twice(sqlite_engine: sa.Engine, service: FakeService) -> None:
    cfg = config(service.url)
    with running(cfg, sqlite_engine) as base:
        post(base, [PAGE])
        wait_for(service, 1)
    with running(cfg, sqlite_engine) as base:  # a new process on the same database
        post(base, [PAGE])  # Prometheus keeps re-sending the firing alert
        time.sleep(0.5)
        assert len(service.delivered) == 1
        post(base, [{**PAGE, "endsAt": iso(time.time())}])
        wait_for(service, 2)
        time.sleep(0.3)
    assert [r.json()["status"] for r in service.delivered] == ["firing", "resolved"]


@pytest.mark.redis
@pytest.mark.postgres
def test_leader_failover_sends_no_duplicate(
    postgres_engine: sa.Engine, redis_url: str, service: FakeService
) -> None:
    engine = postgres_engine
    cfg = config(service.url)
    a = Replica(cfg, engine, RedisLease(redis_url, lease_ms=600, instance_id="a"))
    b = Replica(cfg, engine, RedisLease(redis_url, lease_ms=600, instance_id="b"))
    try:
        base_a, base_b = a.start(), b.start()
        assert a.runner.leader.is_leader() and not b.runner.leader.is_leader()
        for base in (base_a, base_b):  # Prometheus sends to every replica
            post(base, [PAGE, TICKET_US])
        wait_for(service, 2)
        time.sleep(0.3)
        assert len(service.delivered) == 2  # only the leader sent
        a.stop(crash=True)  # dies without releasing its lease
        t_crash = time.monotonic()
        post(base_b, [{**PAGE, "endsAt": iso(time.time())}, TICKET_US])
        wait_for(service, 3)
        takeover = time.monotonic() - t_crash
        time.sleep(0.5)
        assert b.runner.leader.is_leader()
        got = [(r.path, status_of(r)) for r in service.delivered]
        assert got[:2] == [("/pager", "firing"), ("/slack", "firing")] or sorted(got[:2]) == [
            ("/pager", "firing"),
            ("/slack", "firing"),
        ]
        assert got[2:] == [("/pager", "resolved")]  # the us ticket is not re-sent by the new leader
    finally:
        b.stop()
        a.stop()
    print(f"\nleader failover: resolved sent {takeover * 1000:.0f} ms after the leader died (lease 600 ms)")
    assert takeover < 2.0


def test_unreachable_redis_fails_open_or_closed_as_configured() -> None:
    assert RedisLease("redis://127.0.0.1:1/0", lease_ms=600).renew() is True  # every replica dispatches
    closed = RedisLease("redis://127.0.0.1:1/0", lease_ms=600, fail_open=False)
    assert closed.renew() is False and not closed.is_leader()


@pytest.mark.redis
def test_lease_is_exclusive_and_expires(redis_url: str) -> None:
    a = RedisLease(redis_url, lease_ms=300, instance_id="a")
    b = RedisLease(redis_url, lease_ms=300, instance_id="b")
    assert a.renew() and not b.renew()
    assert a.renew() and not b.renew()  # renewal keeps it
    time.sleep(0.35)  # a stopped renewing
    assert b.renew() and not a.renew() and not a.is_leader()
    b.release()
    assert a.renew()
