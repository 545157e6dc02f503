"""Alerting as one service for the server: dispatcher + runner (+ leader lease) + API router.

What ``watchkeeper serve`` needs, in a few calls (the app owns settings, the database and metrics):

>>> service = AlertingService.start(settings.alerting, database=db, registry=metrics.registry,
...                                 redis_url=settings.redis_url)                 # doctest: +SKIP
>>> app.include_router(service.router())                                         # doctest: +SKIP
>>> rules = RulesService.start(..., sink=DispatcherSink(service.dispatcher))      # doctest: +SKIP
>>> service.reload(new_settings.alerting)   # SIGHUP, POST /-/reload              # doctest: +SKIP
>>> service.stop()                                                                # doctest: +SKIP

``service.leadership.is_leader()`` tells rule evaluation whether this replica is the one that
evaluates (with Redis; always true without); ``watchkeeper_leader`` (1 or 0) shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter
from prometheus_client import Gauge

from watchkeeper.alerting.api import alertmanager_router
from watchkeeper.alerting.config import AlertingConfig
from watchkeeper.alerting.dispatcher import Dispatcher
from watchkeeper.alerting.metrics import AlertingMetrics
from watchkeeper.alerting.runner import AlwaysLeader, DispatcherRunner, Leadership, RedisLease, wall_ms


@dataclass
class AlertingService:
    dispatcher: Dispatcher
    runner: DispatcherRunner

    @property
    def leadership(self) -> Leadership:
        return self.runner.leader

    @classmethod
    def start(
        cls,
        config: AlertingConfig,
        *,
        database: sa.Engine,
        registry: Any | None = None,
        redis_url: str | None = None,
        lease_ms: int = 15_000,
    ) -> AlertingService:
        """Open the dispatcher on a migrated ``database`` and start delivering."""
        metrics = AlertingMetrics(registry=registry)
        dispatcher = Dispatcher(config, database, metrics=metrics)
        leader: Leadership = RedisLease(redis_url, lease_ms=lease_ms) if redis_url else AlwaysLeader()
        Gauge(
            "watchkeeper_leader",
            "1 if this replica holds the leader lease (evaluates rules, sends notifications).",
            registry=metrics.registry,
        ).set_function(lambda: float(leader.is_leader()))
        runner = DispatcherRunner(dispatcher, leader=leader)
        runner.start()
        return cls(dispatcher, runner)

    def router(self) -> APIRouter:
        return alertmanager_router(lambda: self.dispatcher)

    def reload(self, config: AlertingConfig) -> None:
        self.dispatcher.reload(config, now_ms=wall_ms())
        self.dispatcher.wakeup.set()

    def stop(self) -> None:
        self.runner.stop()
        self.dispatcher.close()
