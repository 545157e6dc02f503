"""Delivery through the outbox against a real local HTTP server, with a simulated clock."""

from __future__ import annotations

import itertools
import random
import time

import sqlalchemy as sa

from watchkeeper.alerting import store
from watchkeeper.alerting.config import AlertingConfig
from watchkeeper.alerting.dispatcher import DEAD_LETTER_ALERT, Dispatcher
from watchkeeper.alerting.model import Alert
from watchkeeper.alerting.runner import DispatcherRunner
from watchkeeper.labels import from_dict

from .conftest import FakeService

S = 1000
M = 60 * S


def make(engine: sa.Engine, url: str, **outbox: object) -> Dispatcher:
    cfg = AlertingConfig.model_validate(
        {
            "route": {
                "receiver": "hook",
                "group_by": ["alertname"],
                "group_wait": "0s",
                "group_interval": "1m",
            },
            "receivers": [{"name": "hook", "webhook_configs": [{"url": f"{url}/hook"}]}],
            "outbox": {"initial_backoff": "1s", "max_backoff": "1m", **outbox},
        }
    )
    d = Dispatcher(cfg, engine)
    d.outbox._rng = random.Random(1)
    return d


def alert(name: str, start: int = 0, end: int | None = None) -> Alert:
    return Alert(from_dict({"alertname": name}), from_dict({"summary": name}), start, end)


def states(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return [i.state for i in store.list_items(conn)]


def test_receiver_failing_n_times_then_succeeding_gets_everything_once(
    engine: sa.Engine, service: FakeService
) -> None:
    d = make(engine, service.url)
    service.fail(3)
    d.receive([alert("A")], now_ms=0)
    d.tick(0)
    now = 0
    while states(engine) != ["sent"] and now < 5 * M:
        d.deliver(now)
        now += 100
    assert len(service.seen) == 4 and len(service.delivered) == 1
    assert service.delivered[0].json()["alerts"][0]["labels"] == {"alertname": "A"}
    with engine.connect() as conn:
        (item,) = store.list_items(conn)
    assert item.attempts == 4 and item.last_status == 200
    key = service.delivered[0].headers["idempotency-key"]
    assert key == item.idempotency_key and {r.headers["idempotency-key"] for r in service.seen} == {key}
    for _ in range(20):  # nothing is sent again
        now += M
        d.deliver(now)
    assert len(service.seen) == 4
    assert (
        d.metrics.registry.get_sample_value(
            "watchkeeper_notifications_failed_total", {"receiver": "hook", "integration": "hook/webhook/0"}
        )
        == 3
    )


def test_backoff_grows_exponentially_with_jitter(sqlite_engine: sa.Engine, service: FakeService) -> None:
    d = make(sqlite_engine, service.url, initial_backoff="2s", max_backoff="30s")
    service.fail(6)
    d.receive([alert("A")], now_ms=0)
    d.tick(0)
    attempts_at = []
    now = 0
    while len(service.seen) < 7:
        before = len(service.seen)
        d.deliver(now - 1)  # one millisecond early: never sent before it is due
        assert len(service.seen) == before
        d.deliver(now)
        assert len(service.seen) == before + 1
        attempts_at.append(now)
        now = d.outbox.next_due_ms() or now
    gaps = [b - a for a, b in itertools.pairwise(attempts_at)]
    ceilings = [2 * S, 4 * S, 8 * S, 16 * S, 30 * S, 30 * S]
    for gap, ceiling in zip(gaps, ceilings, strict=True):
        assert ceiling // 2 <= gap <= ceiling
    assert len(set(gaps[-2:])) == 2  # jittered: two waits under the same ceiling differ
    assert len(service.delivered) == 1


def test_retry_after_is_honoured(sqlite_engine: sa.Engine, service: FakeService) -> None:
    d = make(sqlite_engine, service.url)
    service.fail(1, status=429, headers={"Retry-After": "120"})
    d.receive([alert("A")], now_ms=0)
    d.tick(0)
    d.deliver(0)
    for now in range(1 * S, 120 * S, 10 * S):
        d.deliver(now)
    assert len(service.seen) == 1  # backoff alone would have retried after ~1s
    d.deliver(120 * S)
    assert len(service.delivered) == 1


def test_discord_style_retry_after_in_the_body(sqlite_engine: sa.Engine, service: FakeService) -> None:
    d = make(sqlite_engine, service.url)
    service.fail(1, status=429, body=b'{"message": "You are being rate limited.", "retry_after": 30.5}')
    d.receive([alert("A")], now_ms=0)
    d.tick(0)
    d.deliver(0)
    d.deliver(30 * S)
    assert len(service.seen) == 1
    d.deliver(30_500)
    assert len(service.delivered) == 1


def test_dead_letter_after_max_attempts_raises_an_alert(
    sqlite_engine: sa.Engine, service: FakeService
) -> None:
    d = make(sqlite_engine, service.url, max_attempts=3)
    service.fail(100)
    d.receive([alert("A")], now_ms=0)
    d.tick(0)
    now = 0
    while (due := d.outbox.next_due_ms()) is not None:
        now = due
        d.deliver(now)
    assert len(service.seen) == 3 and states(sqlite_engine) == ["dead"]
    assert now < 10 * M
    dead = [s.alert for s in d.alert_statuses(now_ms=10 * M) if s.alert.name == DEAD_LETTER_ALERT]
    assert [dict(a.labels)["integration"] for a in dead] == ["hook/webhook/0"]
    assert "HTTP 503" in dict(dead[0].annotations)["description"]
    with sqlite_engine.begin() as conn:  # an operator fixes the receiver and requeues
        assert store.requeue_dead(conn, now_ms=10 * M) == 1
    service.script.clear()
    d.deliver(10 * M)
    assert states(sqlite_engine)[0] == "sent"


def test_permanent_4xx_goes_straight_to_dead_letter(sqlite_engine: sa.Engine, service: FakeService) -> None:
    d = make(sqlite_engine, service.url)
    service.fail(1, status=400, body=b'{"embeds": ["BASE_TYPE_MAX_LENGTH"]}')
    d.receive([alert("A")], now_ms=0)
    d.tick(0)
    d.deliver(0)
    assert states(sqlite_engine) == ["dead"]
    with sqlite_engine.connect() as conn:
        assert "BASE_TYPE_MAX_LENGTH" in (store.list_items(conn)[0].last_error or "")


def test_ten_minute_outage_loses_nothing_and_duplicates_nothing(
    engine: sa.Engine, service: FakeService
) -> None:
    d = make(engine, service.url, max_backoff="2m")
    service.fail(100_000)
    now = 0
    for i in range(15):  # an alert every 40 s during the outage, each its own group
        d.receive([alert(f"A{i}", start=now)], now_ms=now)
        d.tick(now)
        d.deliver(now)
        now += 40 * S

    def run_until(end_ms: int) -> int:
        t = now
        while t < end_ms:  # jump from one due retry to the next, as the runner's wake-ups do
            d.deliver(t)
            t = max(t + 1, min(d.outbox.next_due_ms() or end_ms, end_ms))
        return t

    now = run_until(10 * M)
    # one request per retry for the whole receiver, not one per pending notification
    assert service.delivered == [] and 10 <= len(service.seen) <= 30
    service.script.clear()  # the receiver is back
    now = run_until(14 * M)
    got = [(r.json()["alerts"][0]["labels"]["alertname"], r.json()["status"]) for r in service.delivered]
    assert len(got) == len(set(got)), "a notification arrived twice"
    assert sorted(name for name, status in got if status == "firing") == sorted(f"A{i}" for i in range(15))
    # alerts not re-sent for resolve_timeout (5m) resolved during the outage: those notices arrive too
    assert {name for name, status in got if status == "resolved"} == {
        f"A{i}" for i in range(7)
    }  # ended by the last tick (560 s)
    assert set(states(engine)) == {"sent"}


def test_restart_resumes_pending_and_resends_nothing_acknowledged(
    engine: sa.Engine, service: FakeService
) -> None:
    d = make(engine, service.url)
    d.receive([alert("A"), alert("B")], now_ms=0)
    d.tick(0)
    with engine.begin() as conn:  # only A was acknowledged before the "crash"
        (a_item,) = [i for i in store.list_items(conn) if '"A"' in i.notification]
        store.mark_sent(conn, a_item.id, now_ms=0, status=200)
    d.close()
    d2 = make(engine, service.url)
    d2.receive([alert("A"), alert("B")], now_ms=S)
    d2.tick(S)
    d2.deliver(S)
    assert [r.json()["alerts"][0]["labels"]["alertname"] for r in service.delivered] == ["B"]


def test_leases_keep_two_workers_from_sending_the_same_item(engine: sa.Engine, service: FakeService) -> None:
    d1, d2 = make(engine, service.url), make(engine, service.url)
    d1.receive([alert(f"A{i}") for i in range(10)], now_ms=0)
    d1.tick(0)
    with engine.begin() as conn:
        first = store.claim_due(conn, now_ms=0, lease_ms=10 * S)
    assert len(first) == 10
    assert d2.deliver(S) == []  # all leased
    assert len(d2.deliver(11 * S)) == 10  # lease over: the second worker takes them


def test_runner_delivers_within_a_second_and_resolved_promptly(
    sqlite_engine: sa.Engine, service: FakeService
) -> None:
    d = make(sqlite_engine, service.url)
    runner = DispatcherRunner(d)
    runner.start()
    try:
        t0 = time.monotonic()
        now = time.time_ns() // 1_000_000
        d.receive([alert("A", start=now)], now_ms=now)
        assert service.event.wait(5)
        first = time.monotonic() - t0
        service.event.clear()
        t1 = time.monotonic()
        now = time.time_ns() // 1_000_000
        d.receive([alert("A", start=now - 1000, end=now)], now_ms=now)
        assert service.event.wait(5)
        resolved = time.monotonic() - t1
    finally:
        runner.stop()
    assert [r.json()["status"] for r in service.delivered] == ["firing", "resolved"]
    assert first < 1.0 and resolved < 1.0, (first, resolved)  # group_interval is 1m
    print(f"time to notify: firing {first * 1000:.0f} ms, resolved {resolved * 1000:.0f} ms")


def test_latency_histogram_starts_when_the_alert_arrived_not_at_starts_at(
    sqlite_engine: sa.Engine, service: FakeService
) -> None:
    d = make(sqlite_engine, service.url)
    # a `for: 10m` alert: active since 0, firing (and sent here) at 10 minutes
    d.receive([alert("A", start=0)], now_ms=10 * M)
    d.tick(10 * M)
    d.deliver(10 * M + 250)
    d.receive([alert("A", start=0, end=20 * M)], now_ms=20 * M)
    d.tick(20 * M)
    d.deliver(20 * M + 1500)
    r = d.metrics.registry
    assert r.get_sample_value("watchkeeper_notification_latency_seconds_count", {"receiver": "hook"}) == 2
    assert r.get_sample_value("watchkeeper_notification_latency_seconds_sum", {"receiver": "hook"}) == 1.75
    assert (
        r.get_sample_value(
            "watchkeeper_notification_latency_seconds_bucket", {"receiver": "hook", "le": "0.25"}
        )
        == 1
    )


def test_delivered_history_is_kept_for_the_retention(sqlite_engine: sa.Engine, service: FakeService) -> None:
    d = make(sqlite_engine, service.url, retention="1d")
    d.receive([alert("A", start=0, end=M)], now_ms=0)  # fires and resolves in the first minute
    d.receive([alert("B", start=0)], now_ms=0)
    d.tick(0)
    d.deliver(0)
    d.tick(2 * 3_600_000)  # A resolved, B timed out (resolve_timeout): both resolved notices
    d.deliver(2 * 3_600_000)
    assert states(sqlite_engine) == ["sent"] * 4
    d.tick(25 * 3_600_000)  # the clean-up runs on a tick (at most once a minute)
    assert states(sqlite_engine) == ["sent"] * 2  # those sent at 0 are older than a day


def test_a_receiver_timing_out_does_not_hold_back_the_others(
    sqlite_engine: sa.Engine, service: FakeService
) -> None:
    import socket

    black_hole = socket.socket()  # accepts connections (backlog) and never answers
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(16)
    slow_url = f"http://127.0.0.1:{black_hole.getsockname()[1]}"
    cfg = AlertingConfig.model_validate(
        {
            "route": {
                "receiver": "slow",
                "group_by": ["alertname"],
                "group_wait": "0s",
                "routes": [{"matchers": ['team="fast"'], "receiver": "fast"}],
            },
            "receivers": [
                {"name": "slow", "webhook_configs": [{"url": slow_url}]},
                {"name": "fast", "webhook_configs": [{"url": f"{service.url}/fast"}]},
            ],
            "outbox": {"request_timeout": "500ms"},
        }
    )
    d = Dispatcher(cfg, sqlite_engine)
    try:
        d.receive([alert(f"S{i}") for i in range(5)], now_ms=0)
        d.receive([Alert(from_dict({"alertname": "F", "team": "fast"}), (), 0)], now_ms=0)
        assert d.tick(0) == 6
        t0 = time.monotonic()
        outcomes = d.deliver(0)
        elapsed = time.monotonic() - t0
    finally:
        d.close()
        black_hole.close()
    assert len(service.delivered) == 1
    # the slow receiver got one attempt (timed out), its four other notifications wait for the retry
    assert sorted((o.item.receiver, o.result.ok) for o in outcomes) == [("fast", True), ("slow", False)]
    assert elapsed < 1.5  # not 5 x 0.5 s in a row
    assert states(sqlite_engine).count("pending") == 5
