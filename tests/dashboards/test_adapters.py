from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from watchkeeper.dashboards.adapters import (
    AlertmanagerSilences,
    PrometheusAlerts,
    PrometheusRules,
    PrometheusTargets,
    rfc3339_ms,
    stored_history,
)
from watchkeeper.dashboards.router import DashboardOptions, dashboards_router
from watchkeeper.tsdb.storage import Storage

# shapes as Prometheus and Alertmanager document them (docs/querying/api.md, the v2 OpenAPI spec)
RULES: dict[str, Any] = {
    "groups": [
        {
            "name": "api",
            "file": "rules/api.yml",
            "interval": 30,
            "evaluationTime": 0.002,
            "lastEvaluation": "2026-11-28T10:00:00.5Z",
            "rules": [
                {
                    "type": "alerting",
                    "name": "HighErrorRate",
                    "query": "job:errors:ratio5m > 0.05",
                    "duration": 300,
                    "labels": {"severity": "page"},
                    "health": "ok",
                    "state": "firing",
                    "alerts": [],
                    "lastEvaluation": "2026-11-28T10:00:00.5Z",
                    "evaluationTime": 0.001,
                },
                {
                    "type": "recording",
                    "name": "job:errors:ratio5m",
                    "query": "sum(rate(errors[5m]))",
                    "health": "err",
                    "lastError": "bad",
                    "lastEvaluation": "0001-01-01T00:00:00Z",
                    "evaluationTime": 0,
                },
            ],
        }
    ]
}
ALERTS: dict[str, Any] = {
    "alerts": [
        {
            "labels": {"alertname": "HighErrorRate", "route": "/a"},
            "annotations": {"summary": "errors above 5%"},
            "state": "firing",
            "activeAt": "2026-11-28T09:55:00Z",
            "value": "7.5e-02",
        }
    ]
}
TARGETS: dict[str, Any] = {
    "activeTargets": [
        {
            "discoveredLabels": {},
            "labels": {"job": "core-api", "instance": "app-1:8000"},
            "scrapePool": "core-api",
            "scrapeUrl": "http://app-1:8000/metrics",
            "lastError": "",
            "lastScrape": "2026-11-28T10:00:01Z",
            "lastScrapeDuration": 0.012,
            "health": "up",
        },
        {
            "labels": {"job": "core-api", "instance": "app-2:8000"},
            "scrapePool": "core-api",
            "scrapeUrl": "http://app-2:8000/metrics",
            "lastError": "connection refused",
            "health": "down",
        },
    ],
    "droppedTargets": [],
}
SILENCES: list[dict[str, Any]] = [
    {
        "id": "old",
        "status": {"state": "expired"},
        "matchers": [{"name": "a", "value": "b", "isRegex": False}],
        "startsAt": "2026-11-27T00:00:00Z",
        "endsAt": "2026-11-27T01:00:00Z",
        "createdBy": "x",
        "comment": "c",
    },
    {
        "id": "now",
        "status": {"state": "active"},
        "matchers": [
            {"name": "alertname", "value": "SlowDB", "isRegex": False, "isEqual": True},
            {"name": "route", "value": "/api/.*", "isRegex": True, "isEqual": False},
        ],
        "startsAt": "2026-11-28T09:00:00Z",
        "endsAt": "2026-11-28T11:00:00Z",
        "createdBy": "ana",
        "comment": "maint",
    },
]


def test_rfc3339() -> None:
    assert rfc3339_ms("2026-11-28T10:00:00.5Z") == 1_795_860_000_500
    assert rfc3339_ms("0001-01-01T00:00:00Z") is None and rfc3339_ms(None) is None


def test_rules_alerts_targets_and_silences_convert() -> None:
    (group,) = PrometheusRules(lambda: RULES).rule_groups()
    alerting, recording = group.rules
    assert (group.name, group.interval_seconds, alerting.kind, alerting.for_) == (
        "api",
        30.0,
        "alerting",
        "300s",
    )
    assert recording.health == "err" and recording.last_evaluation_ms is None
    (alert,) = PrometheusAlerts(lambda: ALERTS).alerts()
    assert (alert.name, alert.state, alert.value) == ("HighErrorRate", "firing", 0.075)
    up, down = PrometheusTargets(lambda: TARGETS).targets()
    assert (up.job, up.health, down.last_error) == ("core-api", "up", "connection refused")
    active, expired = AlertmanagerSilences(lambda: SILENCES).silences()
    assert active.matchers == '{alertname="SlowDB", route!~"/api/.*"}' and expired.id == "old"


def pages(options: DashboardOptions, storage: Storage | None = None) -> TestClient:
    """The dashboards UI alone (no queries run on the pages these tests read)."""
    app = FastAPI()
    app.include_router(dashboards_router(lambda: None, lambda: storage, options))  # type: ignore[arg-type,return-value]
    return TestClient(app)


def test_pages_render_from_the_adapters() -> None:
    storage = Storage.open(data_dir=None)
    options = DashboardOptions(
        get_rules=lambda: PrometheusRules(lambda: RULES),
        get_alerts=lambda: PrometheusAlerts(lambda: ALERTS),
        get_targets=lambda: PrometheusTargets(lambda: TARGETS),
        get_silences=lambda: AlertmanagerSilences(lambda: SILENCES),
    )
    client = pages(options, storage)
    assert "errors above 5%" in client.get("/alerts").text
    assert "job:errors:ratio5m &gt; 0.05" in client.get("/rules").text
    assert "1/2 up" in client.get("/targets").text
    assert "route!~" in client.get("/silences").text
    storage.close()


def test_alerts_from_the_rules_components_own_json() -> None:
    from watchkeeper.rules.api import alert_json
    from watchkeeper.rules.state import AlertState, State

    state = AlertState(
        labels=(("alertname", "X"), ("job", "api")),
        annotations=(("summary", "s"),),
        state=State.PENDING,
        active_at_ms=1_795_860_000_000,
        value=0.5,
    )
    (alert,) = PrometheusAlerts(lambda: {"alerts": [alert_json(state)]}).alerts()
    assert (alert.name, alert.state, alert.active_at_ms, alert.value) == (
        "X",
        "pending",
        1_795_860_000_000,
        0.5,
    )


def test_alert_history_comes_from_the_rule_managers_store(tmp_path: Path) -> None:
    from watchkeeper.rules.persistence import AlertStore
    from watchkeeper.rules.state import State, Transition
    from watchkeeper.tsdb.schema import make_engine, migrate, sqlite_url

    engine = make_engine(sqlite_url(tmp_path))
    migrate(engine)
    store = AlertStore(engine)
    labels = (("alertname", "HighErrorRate"), ("route", "/a"))
    store.save_group(
        "rules/api.yml;api",
        {},
        [
            ("HighErrorRate", Transition(labels, State.INACTIVE, State.PENDING, 1_795_860_000_000, 0.07)),
            ("HighErrorRate", Transition(labels, State.PENDING, State.FIRING, 1_795_860_300_000, 0.08)),
        ],
    )
    history = stored_history(lambda: store)
    newest, oldest = history(10)
    assert (newest.name, newest.from_state, newest.to_state, newest.at_ms, newest.value) == (
        "HighErrorRate",
        "pending",
        "firing",
        1_795_860_300_000,
        0.08,
    )
    assert oldest.to_state == "pending" and newest.labels == labels
    assert len(history(1)) == 1 and stored_history(lambda: None)(10) == []

    alerts = PrometheusAlerts(lambda: ALERTS, history=history)
    page = pages(DashboardOptions(get_alerts=lambda: alerts)).get("/alerts").text.split("<h2>History</h2>")[1]
    assert "pending → firing" in page and "inactive → pending" in page and "No transitions" not in page
    engine.dispose()
