"""The Alertmanager v2 API on a FastAPI app of our own, with a real local receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from watchkeeper.alerting.api import alertmanager_router
from watchkeeper.alerting.config import AlertingConfig
from watchkeeper.alerting.dispatcher import Dispatcher

from .conftest import FakeService

NOW = 1_795_867_200_000  # 2026-11-28T12:00:00Z


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def setup(sqlite_engine: sa.Engine, service: FakeService) -> Iterator[tuple[TestClient, Dispatcher, Clock]]:
    cfg = AlertingConfig.model_validate(
        {
            "route": {
                "receiver": "ops",
                "group_by": ["alertname"],
                "group_wait": "0s",
                "routes": [{"matchers": ['team="db"'], "receiver": "db"}],
            },
            "receivers": [
                {"name": "ops", "webhook_configs": [{"url": f"{service.url}/ops"}]},
                {"name": "db", "webhook_configs": [{"url": f"{service.url}/db"}]},
                {
                    "name": "chat",
                    "slack_configs": [{"api_url": f"{service.url}/slack"}],
                    "msteamsv2_configs": [{"webhook_url": f"{service.url}/teams"}],
                    "discord_configs": [{"webhook_url": f"{service.url}/discord"}],
                    "mattermost_configs": [{"webhook_url": f"{service.url}/mattermost"}],
                    "telegram_configs": [{"api_url": service.url, "bot_token": "1:x", "chat_id": 42}],
                    "webhook_configs": [{"url": f"{service.url}/webhook"}],
                },
                {"name": "broken", "webhook_configs": [{"url": "http://127.0.0.1:1/nothing-listens"}]},
            ],
        }
    )
    d = Dispatcher(cfg, sqlite_engine)
    clock = Clock()
    app = FastAPI()
    app.include_router(alertmanager_router(lambda: d, clock=clock))
    with TestClient(app) as client:
        yield client, d, clock
    d.close()


def test_post_alerts_then_list_and_group(setup: tuple[TestClient, Dispatcher, Clock]) -> None:
    client, d, clock = setup
    r = client.post(
        "/api/v2/alerts",
        json=[
            {
                "labels": {"alertname": "Down", "instance": "a"},
                "annotations": {"summary": "a down"},
                "startsAt": "2026-11-28T11:59:00Z",
                "generatorURL": "http://prom/graph",
            },
            {"labels": {"alertname": "Slow", "team": "db"}},
        ],
    )
    assert r.status_code == 200
    alerts = client.get("/api/v2/alerts").json()
    assert [a["labels"]["alertname"] for a in alerts] == ["Down", "Slow"]
    down = alerts[0]
    assert down["startsAt"] == "2026-11-28T11:59:00.000Z" and down["endsAt"] == "2026-11-28T12:05:00.000Z"
    assert down["status"] == {"state": "active", "silencedBy": [], "inhibitedBy": [], "mutedBy": []}
    assert down["receivers"] == [{"name": "ops"}] and len(down["fingerprint"]) == 16
    assert [
        a["labels"]["alertname"] for a in client.get("/api/v2/alerts", params={"filter": 'team="db"'}).json()
    ] == ["Slow"]
    assert [
        a["labels"]["alertname"] for a in client.get("/api/v2/alerts", params={"receiver": "o.*"}).json()
    ] == ["Down"]
    groups = client.get("/api/v2/alerts/groups").json()
    assert sorted((g["receiver"]["name"], g["labels"]["alertname"]) for g in groups) == [
        ("db", "Slow"),
        ("ops", "Down"),
    ]
    assert d.tick(clock.now) == 2


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"labels": {}}, 400),
        ([{"labels": {}}], 400),
        ([{"labels": {"0bad": "x"}}], 400),
        ([{"labels": {"a": "b"}, "startsAt": "yesterday"}], 400),
        ([{"labels": {"a": "b"}, "startsAt": "2026-11-28T12:00:00Z", "endsAt": "2026-11-28T11:00:00Z"}], 400),
    ],
)
def test_post_alerts_validation(
    setup: tuple[TestClient, Dispatcher, Clock], body: object, status: int
) -> None:
    client, _, _ = setup
    assert client.post("/api/v2/alerts", json=body).status_code == status


def test_silence_lifecycle(setup: tuple[TestClient, Dispatcher, Clock]) -> None:
    client, d, clock = setup
    client.post("/api/v2/alerts", json=[{"labels": {"alertname": "Down", "instance": "a"}}])
    r = client.post(
        "/api/v2/silences",
        json={
            "matchers": [{"name": "alertname", "value": "Down", "isRegex": False, "isEqual": True}],
            "startsAt": "2026-11-28T12:00:00Z",
            "endsAt": "2026-11-28T14:00:00Z",
            "createdBy": "alice",
            "comment": "deploy",
        },
    )
    assert r.status_code == 200
    sid = r.json()["silenceID"]
    got = client.get(f"/api/v2/silence/{sid}").json()
    assert got["status"] == {"state": "active"} and got["createdBy"] == "alice"
    assert got["matchers"] == [{"name": "alertname", "value": "Down", "isRegex": False, "isEqual": True}]
    (alert,) = client.get("/api/v2/alerts").json()
    assert alert["status"]["state"] == "suppressed" and alert["status"]["silencedBy"] == [sid]
    assert client.get("/api/v2/alerts", params={"silenced": "false"}).json() == []
    assert client.get("/api/v2/alerts/groups", params={"silenced": "false"}).json() == []
    assert len(client.get("/api/v2/alerts/groups", params={"active": "false"}).json()) == 1
    assert [x["id"] for x in client.get("/api/v2/silences", params={"creator": "alice"}).json()] == [sid]
    assert client.get("/api/v2/silences", params={"creator": "bob"}).json() == []
    assert d.tick(clock.now) == 0  # silenced: nothing sent
    # extend it (same id while active)
    r = client.post("/api/v2/silences", json={**got, "endsAt": "2026-11-28T16:00:00Z"})
    assert r.json()["silenceID"] == sid
    assert (
        client.get("/api/v2/silences", params={"filter": 'alertname="Down"'})
        .json()[0]["endsAt"]
        .startswith("2026-11-28T16:00")
    )
    clock.now += 60_000
    assert client.delete(f"/api/v2/silence/{sid}").status_code == 200
    assert client.get(f"/api/v2/silence/{sid}").json()["status"] == {"state": "expired"}
    assert client.get("/api/v2/alerts").json()[0]["status"]["state"] == "active"
    assert client.delete("/api/v2/silence/nope").status_code == 404
    assert client.get("/api/v2/silence/nope").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"matchers": [], "endsAt": "2026-11-28T14:00:00Z"},
        {"matchers": [{"name": "a", "value": ".*", "isRegex": True}], "endsAt": "2026-11-28T14:00:00Z"},
        {"matchers": [{"name": "a", "value": "b"}]},
        {"matchers": [{"name": "a", "value": "b"}], "endsAt": "2026-11-28T11:00:00Z"},
    ],
)
def test_bad_silences_are_refused(setup: tuple[TestClient, Dispatcher, Clock], body: object) -> None:
    client, _, _ = setup
    assert client.post("/api/v2/silences", json=body).status_code == 400


def test_receiver_test_sends_each_native_payload(
    setup: tuple[TestClient, Dispatcher, Clock], service: FakeService
) -> None:
    client, _, _ = setup
    r = client.post("/api/v2/receivers/chat/test")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] and [x["integration"] for x in body["results"]] == [
        "chat/slack/0",
        "chat/msteamsv2/0",
        "chat/discord/0",
        "chat/mattermost/0",
        "chat/telegram/0",
        "chat/webhook/0",
    ]
    assert all(x["status"] == 200 and x["response"] == "ok" for x in body["results"])
    paths = {rec.path: rec.json() for rec in service.delivered}
    assert set(paths) == {"/slack", "/teams", "/discord", "/mattermost", "/bot1:x/sendMessage", "/webhook"}
    assert "blocks" in paths["/slack"] and paths["/teams"]["type"] == "message"
    assert paths["/discord"]["embeds"] and paths["/bot1:x/sendMessage"]["parse_mode"] == "HTML"
    assert paths["/webhook"]["version"] == "4" and len(paths["/webhook"]["alerts"]) == 3


def test_receiver_test_reports_failures_and_unknown_receivers(
    setup: tuple[TestClient, Dispatcher, Clock], service: FakeService
) -> None:
    client, _, _ = setup
    r = client.post("/api/v2/receivers/broken/test")
    assert r.status_code == 502
    (result,) = r.json()["results"]
    assert not result["ok"] and "ConnectError" in result["response"]
    service.fail(1, status=400, body=b"invalid_blocks")
    r = client.post("/api/v2/receivers/chat/test")
    assert r.status_code == 502 and r.json()["results"][0] == {
        "integration": "chat/slack/0",
        "ok": False,
        "status": 400,
        "response": "invalid_blocks",
    }
    assert client.post("/api/v2/receivers/nope/test").status_code == 404


def test_receiver_test_with_own_alerts(
    setup: tuple[TestClient, Dispatcher, Clock], service: FakeService
) -> None:
    client, _, _ = setup
    r = client.post("/api/v2/receivers/ops/test", json={"alerts": [{"labels": {"alertname": "Mine"}}]})
    assert r.status_code == 200
    assert service.delivered[0].json()["alerts"][0]["labels"] == {"alertname": "Mine"}


def test_status_and_receivers(setup: tuple[TestClient, Dispatcher, Clock]) -> None:
    client, _, _ = setup
    assert [r["name"] for r in client.get("/api/v2/receivers").json()] == ["ops", "db", "chat", "broken"]
    status = client.get("/api/v2/status").json()
    assert status["cluster"]["status"] == "disabled" and status["uptime"] == "2026-11-28T12:00:00.000Z"
    assert set(status["versionInfo"]) == {
        "version",
        "revision",
        "branch",
        "buildUser",
        "buildDate",
        "goVersion",
    }
    original = status["config"]["original"]
    assert "receiver: ops" in original and "bot_token: <secret>" in original
    assert "1:x" not in original and "/slack" not in original  # tokens and webhook paths hidden


def test_notification_history_and_requeue(
    setup: tuple[TestClient, Dispatcher, Clock], service: FakeService
) -> None:
    client, d, clock = setup
    service.fail(1, status=400, body=b"bad payload")
    client.post("/api/v2/alerts", json=[{"labels": {"alertname": "Down"}}])
    d.tick(clock.now)
    d.deliver(clock.now)
    (item,) = client.get("/api/v2/notifications").json()
    assert (item["receiver"], item["integration"], item["state"], item["status"]) == (
        "ops",
        "ops/webhook/0",
        "dead",
        "firing",
    )
    assert item["attempts"] == 1 and item["lastStatus"] == 400 and "bad payload" in item["lastError"]
    assert client.get("/api/v2/notifications", params={"state": "sent"}).json() == []
    assert client.post("/api/v2/notifications/requeue", params={"receiver": "ops"}).json() == {"requeued": 1}
    d.deliver(clock.now)
    (item,) = client.get("/api/v2/notifications").json()
    assert item["state"] == "sent" and item["sentAt"] == "2026-11-28T12:00:00.000Z"


def test_prometheus_style_body_with_nanosecond_timestamps(
    setup: tuple[TestClient, Dispatcher, Clock],
) -> None:
    client, _, _ = setup
    body = [
        {
            "labels": {"alertname": "X", "job": "api"},
            "annotations": {},
            "startsAt": "2026-11-28T11:58:00.123456789Z",
            "endsAt": "2026-11-28T12:04:00.123456789+00:00",
            "generatorURL": "http://prom:9090/graph?g0.expr=up+%3D%3D+0&g0.tab=1",
        }
    ]
    assert client.post("/api/v2/alerts", json=body).status_code == 200
    (alert,) = client.get("/api/v2/alerts").json()
    assert (alert["startsAt"], alert["endsAt"]) == ("2026-11-28T11:58:00.123Z", "2026-11-28T12:04:00.123Z")
    assert alert["generatorURL"].endswith("g0.tab=1")
