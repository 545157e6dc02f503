from __future__ import annotations

import time

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from watchkeeper.alerting.config import AlertingConfig
from watchkeeper.alerting.service import AlertingService

from .conftest import FakeService


def test_service_lifecycle(sqlite_engine: sa.Engine, service: FakeService) -> None:
    cfg = AlertingConfig.model_validate(
        {
            "route": {"receiver": "ops", "group_wait": "0s"},
            "receivers": [{"name": "ops", "webhook_configs": [{"url": f"{service.url}/a"}]}],
        }
    )
    registry = CollectorRegistry()
    svc = AlertingService.start(cfg, database=sqlite_engine, registry=registry)
    try:
        assert svc.leadership.is_leader()
        app = FastAPI()
        app.include_router(svc.router())
        with TestClient(app) as client:
            assert client.post("/api/v2/alerts", json=[{"labels": {"alertname": "A"}}]).status_code == 200
            assert service.event.wait(5)
            svc.reload(
                cfg.model_copy(
                    update={
                        "receivers": [*cfg.receivers, cfg.receivers[0].model_copy(update={"name": "other"})]
                    }
                )
            )
            assert [r["name"] for r in client.get("/api/v2/receivers").json()] == ["ops", "other"]
        deadline = time.monotonic() + 5
        labels = {"receiver": "ops", "integration": "ops/webhook/0"}
        while registry.get_sample_value("watchkeeper_notifications_total", labels) != 1.0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)
        assert len(service.delivered) == 1  # the reload re-sent nothing
    finally:
        svc.stop()
