"""``/api/v1/rules`` and ``/api/v1/alerts`` through HTTP, in Prometheus' shape."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.rules.support import Env
from watchkeeper.rules.api import rfc3339, rules_router
from watchkeeper.rules.persistence import AlertStore
from watchkeeper.tsdb.schema import make_engine, migrate, sqlite_url

RULES = """
groups:
  - name: g
    interval: 30s
    rules:
      - record: r
        expr: vector(1)
      - alert: Down
        expr: up == 0
        for: 1m
        labels: {severity: page}
        annotations: {summary: "{{ $labels.instance }}"}
"""


def _client(env: Env, tmp_path: Path) -> tuple[TestClient, str]:
    env.add({"__name__": "up", "instance": "a"}, [(0, 0.0)])
    db = make_engine(sqlite_url(tmp_path))
    migrate(db)
    m = env.manager(RULES, store=AlertStore(db))
    key = m.groups[0].key
    m.evaluate(key, 0)
    app = FastAPI()
    app.include_router(rules_router(lambda: m))
    return TestClient(app), m.groups[0].file


def test_rules(env: Env, tmp_path: Path) -> None:
    client, file = _client(env, tmp_path)
    body = client.get("/api/v1/rules").json()
    assert body["status"] == "success"
    (group,) = body["data"]["groups"]
    assert (group["name"], group["file"], group["interval"], group["limit"]) == ("g", file, 30, 0)
    assert group["lastEvaluation"] == "1970-01-01T00:00:00Z"
    rec, alert = group["rules"]
    assert rec["type"] == "recording" and rec["health"] == "ok" and rec["query"] == "vector(1)"
    assert alert["type"] == "alerting" and alert["state"] == "pending" and alert["duration"] == 60
    assert alert["alerts"] == [{
        "labels": {"alertname": "Down", "instance": "a", "severity": "page"},
        "annotations": {"summary": "a"}, "state": "pending", "activeAt": "1970-01-01T00:00:00Z",
        "value": "0e+00",
    }]
    only_alerts = client.get("/api/v1/rules", params={"type": "alert", "exclude_alerts": "true"}).json()
    (alert_only,) = only_alerts["data"]["groups"][0]["rules"]
    assert alert_only["name"] == "Down" and "alerts" not in alert_only
    assert client.get("/api/v1/rules", params={"rule_name[]": "nope"}).json()["data"]["groups"] == []
    paged = client.get("/api/v1/rules", params={"match[]": '{severity="page"}'}).json()["data"]["groups"]
    assert [r["name"] for r in paged[0]["rules"]] == ["Down"]
    assert client.get("/api/v1/rules", params={"match[]": "{"}).status_code == 400
    bad = client.get("/api/v1/rules", params={"type": "x"})
    assert bad.status_code == 400 and bad.json()["errorType"] == "bad_data"


def test_alerts_and_history(env: Env, tmp_path: Path) -> None:
    client, _ = _client(env, tmp_path)
    alerts = client.get("/api/v1/alerts").json()["data"]["alerts"]
    assert [a["state"] for a in alerts] == ["pending"]
    history = client.get("/api/v1/alerts/history", params={"alertname": "Down"}).json()["data"]
    rows = [(h["from"], h["to"], h["time"]) for h in history]
    assert rows == [("inactive", "pending", "1970-01-01T00:00:00Z")]


def test_rfc3339() -> None:
    assert rfc3339(1_704_067_200_500) == "2024-01-01T00:00:00.5Z"
    assert rfc3339(None) == "0001-01-01T00:00:00Z"
