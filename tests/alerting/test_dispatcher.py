"""Alertmanager timing and muting with an injected clock: everything counted in the outbox."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from watchkeeper.alerting import store
from watchkeeper.alerting.config import AlertingConfig
from watchkeeper.alerting.dispatcher import Dispatcher
from watchkeeper.alerting.model import Alert
from watchkeeper.alerting.silences import Silence
from watchkeeper.labels import from_dict

S = 1000
M = 60 * S

BASE = {
    "route": {
        "receiver": "ops",
        "group_by": ["alertname"],
        "group_wait": "30s",
        "group_interval": "5m",
        "repeat_interval": "10m",
    },
    "receivers": [{"name": "ops", "webhook_configs": [{"url": "http://127.0.0.1:9/hook"}]}],
}


def dispatcher(engine: sa.Engine, **overrides: object) -> Dispatcher:
    cfg = yaml.safe_load(json.dumps(BASE))
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    return Dispatcher(AlertingConfig.model_validate(cfg), engine)


def alert(name: str = "Down", start: int = 0, end: int | None = None, **labels: str) -> Alert:
    return Alert(
        from_dict({"alertname": name, **labels}), from_dict({"summary": f"{name} {labels}"}), start, end
    )


def sent(engine: sa.Engine) -> list[dict[str, Any]]:
    """Every notification in the outbox, as webhook bodies (oldest first)."""
    with engine.connect() as conn:
        return [json.loads(i.notification) for i in store.list_items(conn)]


def summary(body: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    return body["status"], [(a["labels"].get("instance", ""), a["status"]) for a in body["alerts"]]


def test_group_wait_then_group_interval_then_repeat(engine: sa.Engine) -> None:
    d = dispatcher(engine)
    d.receive([alert(instance="a")], now_ms=0)
    assert d.tick(29 * S) == 0
    assert d.tick(30 * S) == 1
    d.receive([alert(instance="a"), alert(start=40 * S, instance="b")], now_ms=40 * S)
    assert d.tick(60 * S) == 0  # new alerts wait for the group_interval tick
    assert d.tick(30 * S + 5 * M - 1) == 0
    d.receive([alert(instance="a"), alert(start=40 * S, instance="b")], now_ms=5 * M)
    assert d.tick(30 * S + 5 * M) == 1
    d.receive([alert(instance="a"), alert(start=40 * S, instance="b")], now_ms=10 * M)
    assert d.tick(30 * S + 10 * M) == 0  # nothing changed, repeat_interval (10m) not yet over
    d.receive([alert(instance="a"), alert(start=40 * S, instance="b")], now_ms=15 * M)
    assert d.tick(30 * S + 15 * M) == 1  # repeat
    bodies = sent(engine)
    assert [summary(b) for b in bodies] == [
        ("firing", [("a", "firing")]),
        ("firing", [("a", "firing"), ("b", "firing")]),
        ("firing", [("a", "firing"), ("b", "firing")]),
    ]
    assert bodies[0]["groupKey"] == '{}:{alertname="Down"}' and bodies[0]["groupLabels"] == {
        "alertname": "Down"
    }


def test_resolved_is_notified_promptly_not_at_group_interval(sqlite_engine: sa.Engine) -> None:
    d = dispatcher(sqlite_engine)
    d.receive([alert(instance="a"), alert(instance="b")], now_ms=0)
    assert d.tick(30 * S) == 1
    d.receive([alert(instance="a", end=100 * S), alert(instance="b")], now_ms=100 * S)
    assert d.next_flush_ms() == 100 * S
    assert d.tick(100 * S) == 1  # Alertmanager would wait until 330s
    assert summary(sent(sqlite_engine)[-1]) == ("firing", [("a", "resolved"), ("b", "firing")])
    d.receive([alert(instance="b", end=101 * S)], now_ms=101 * S)
    assert d.tick(101 * S) == 1
    assert summary(sent(sqlite_engine)[-1]) == ("resolved", [("b", "resolved")])
    assert d.tick(20 * M) == 0 and d.groups() == []  # the group is gone


def test_resolved_wait_delays_the_resolution_flush(sqlite_engine: sa.Engine) -> None:
    d = dispatcher(sqlite_engine, route={"resolved_wait": "10s"})
    d.receive([alert(instance="a")], now_ms=0)
    d.tick(30 * S)
    d.receive([alert(instance="a", end=100 * S)], now_ms=100 * S)
    assert d.tick(109 * S) == 0
    assert d.tick(110 * S) == 1


def test_alert_not_resent_resolves_after_resolve_timeout(sqlite_engine: sa.Engine) -> None:
    d = dispatcher(sqlite_engine, **{"global": {"resolve_timeout": "2m"}})
    d.receive([alert(instance="a")], now_ms=0)
    d.tick(30 * S)
    assert d.tick(2 * M - 1) == 0
    assert d.next_flush_ms() == 2 * M
    assert d.tick(2 * M) == 1
    assert summary(sent(sqlite_engine)[-1]) == ("resolved", [("a", "resolved")])


def test_fired_and_resolved_within_group_wait_sends_nothing(sqlite_engine: sa.Engine) -> None:
    d = dispatcher(sqlite_engine)
    d.receive([alert(instance="a")], now_ms=0)
    d.receive([alert(instance="a", end=10 * S)], now_ms=10 * S)
    assert d.tick(30 * S) == 0
    assert sent(sqlite_engine) == []


def test_send_resolved_false_sends_only_firing(sqlite_engine: sa.Engine) -> None:
    d = dispatcher(
        sqlite_engine,
        receivers=[
            {"name": "ops", "webhook_configs": [{"url": "http://127.0.0.1:9/a", "send_resolved": False}]}
        ],
    )
    d.receive([alert(instance="a"), alert(instance="b")], now_ms=0)
    d.tick(30 * S)
    d.receive([alert(instance="a", end=40 * S), alert(instance="b")], now_ms=40 * S)
    assert d.tick(40 * S) == 0  # only a resolution: nothing for this receiver
    assert [summary(b) for b in sent(sqlite_engine)] == [("firing", [("a", "firing"), ("b", "firing")])]


def test_restart_on_the_same_database_sends_nothing_twice(engine: sa.Engine) -> None:
    d = dispatcher(engine)
    firing = [alert(instance="a"), alert(instance="b")]
    d.receive(firing, now_ms=0)
    assert d.tick(30 * S) == 1
    d.close()
    # a new process: rule evaluation restores the alerts and sends them again
    d2 = dispatcher(engine)
    d2.receive(firing, now_ms=2 * M)
    assert d2.next_flush_ms() == 2 * M  # old alerts are not held for group_wait again
    assert d2.tick(2 * M) == 0
    d2.receive([alert(instance="a", end=3 * M), alert(instance="b")], now_ms=3 * M)
    assert d2.tick(3 * M) == 1
    assert len(sent(engine)) == 2
    with engine.connect() as conn:
        keys = [i.idempotency_key for i in store.list_items(conn)]
    assert len(set(keys)) == 2


def test_resolution_during_a_restart_is_still_notified(engine: sa.Engine) -> None:
    d = dispatcher(engine)
    d.receive([alert(instance="a")], now_ms=0)
    assert d.tick(30 * S) == 1
    d.close()
    d2 = dispatcher(engine)  # the alert resolved while watchkeeper was down
    d2.receive([alert(instance="a", end=M)], now_ms=2 * M)
    assert d2.tick(2 * M) == 1
    assert summary(sent(engine)[-1]) == ("resolved", [("a", "resolved")])
    d2.receive([alert(instance="a", end=M)], now_ms=3 * M)  # Prometheus re-sends resolved alerts
    assert d2.tick(3 * M) == 0 and d2.tick(30 * M) == 0
    d2.receive([alert("Other", end=M)], now_ms=3 * M)  # never announced firing: nothing to resolve
    assert d2.tick(4 * M) == 0


def test_silenced_alerts_are_not_notified_until_the_silence_expires(sqlite_engine: sa.Engine) -> None:
    d = dispatcher(sqlite_engine)
    d.put_silence(
        Silence.create(
            [{"name": "instance", "value": "b"}],
            starts_at_ms=0,
            ends_at_ms=2 * M,
            created_by="t",
            comment="maintenance",
            now_ms=0,
        )
    )
    d.receive([alert(instance="a"), alert(instance="b")], now_ms=0)
    d.tick(30 * S)
    assert [summary(b) for b in sent(sqlite_engine)] == [("firing", [("a", "firing")])]
    statuses = {s.alert.labels: s.state for s in d.alert_statuses(now_ms=60 * S)}
    assert sorted(statuses.values()) == ["active", "suppressed"]
    d.receive([alert(instance="a"), alert(instance="b")], now_ms=5 * M)
    d.tick(30 * S + 5 * M)  # the silence ended at 2m: b is now notified at the next tick
    assert summary(sent(sqlite_engine)[-1]) == ("firing", [("a", "firing"), ("b", "firing")])


def test_silences_persist_across_dispatchers(sqlite_engine: sa.Engine) -> None:
    d = dispatcher(sqlite_engine)
    s = Silence.create(
        [{"name": "instance", "value": "b"}],
        starts_at_ms=0,
        ends_at_ms=M,
        created_by="t",
        comment="c",
        now_ms=0,
    )
    d.put_silence(s)
    d.expire_silence(s.id, now_ms=10 * S)
    assert [x.state(now_ms=11 * S) for x in dispatcher(sqlite_engine).silences()] == ["expired"]


def test_inhibited_alerts_are_not_notified(sqlite_engine: sa.Engine) -> None:
    d = dispatcher(
        sqlite_engine,
        inhibit_rules=[
            {
                "source_matchers": ['severity="critical"'],
                "target_matchers": ['severity="warning"'],
                "equal": ["cluster"],
            }
        ],
        route={"group_by": ["cluster"]},
    )
    d.receive(
        [
            alert("NodeDown", severity="critical", cluster="eu"),
            alert("HighLatency", severity="warning", cluster="eu"),
            alert("HighLatency", severity="warning", cluster="us"),
        ],
        now_ms=0,
    )
    d.tick(30 * S)
    names = sorted(
        (b["groupLabels"]["cluster"], [a["labels"]["alertname"] for a in b["alerts"]])
        for b in sent(sqlite_engine)
    )
    assert names == [("eu", ["NodeDown"]), ("us", ["HighLatency"])]


def test_mute_time_interval_suppresses_notifications(sqlite_engine: sa.Engine) -> None:
    sat = 1_795_867_200_000  # 2026-11-28T12:00Z, a Saturday; tickets are muted at weekends
    d = dispatcher(
        sqlite_engine,
        time_intervals=[{"name": "weekend", "time_intervals": [{"weekdays": ["saturday", "sunday"]}]}],
        route={"routes": [{"matchers": ['severity="ticket"'], "mute_time_intervals": ["weekend"]}]},
    )
    d.receive([alert("Ticket", start=sat, severity="ticket")], now_ms=sat)
    assert d.tick(sat + M) == 0
    d.receive([alert("Page", start=sat, severity="page")], now_ms=sat)
    assert d.tick(sat + 2 * M) == 1


def test_continue_sends_to_every_matching_route(sqlite_engine: sa.Engine) -> None:
    d = dispatcher(
        sqlite_engine,
        route={
            "routes": [
                {"matchers": ['team="db"'], "receiver": "db", "continue": True, "group_wait": "0s"},
                {"matchers": ['team="db"'], "receiver": "ops", "group_wait": "0s"},
            ]
        },
        receivers=[
            {"name": "ops", "webhook_configs": [{"url": "http://127.0.0.1:9/ops"}]},
            {
                "name": "db",
                "webhook_configs": [{"url": "http://127.0.0.1:9/db"}],
                "slack_configs": [{"api_url": "http://127.0.0.1:9/slack"}],
            },
        ],
    )
    d.receive([alert(team="db")], now_ms=0)
    assert d.tick(0) == 3
    assert sorted(b["receiver"] for b in sent(sqlite_engine)) == ["db", "db", "ops"]


def test_reload_keeps_the_notification_log(sqlite_engine: sa.Engine) -> None:
    d = dispatcher(sqlite_engine)
    d.receive([alert(instance="a")], now_ms=0)
    d.tick(30 * S)
    d.reload(d.config, now_ms=M)
    assert d.tick(M) == 0 and d.tick(2 * M) == 0
    assert len(sent(sqlite_engine)) == 1


@pytest.mark.parametrize("n_alerts", [1000])
def test_many_alerts_one_flush(sqlite_engine: sa.Engine, n_alerts: int) -> None:
    d = dispatcher(sqlite_engine, route={"group_by": ["alertname"]})
    d.receive([alert(instance=str(i)) for i in range(n_alerts)], now_ms=0)
    assert d.tick(30 * S) == 1
    assert len(sent(sqlite_engine)[0]["alerts"]) == n_alerts
