"""Rules as one service for the server: manager + persisted state + scheduler + self-metrics.

What ``watchkeeper serve`` needs, in three calls (the app owns the store, the DB and the dispatcher):

>>> service = RulesService.start(settings.rules, storage=storage, engine=engine, database=db,
...                              sink=DispatcherSink(dispatcher), base_dir=config_dir,
...                              registry=metrics.registry)                       # doctest: +SKIP
>>> service.reload()     # SIGHUP, POST /-/reload: state of unchanged rules kept  # doctest: +SKIP
>>> service.stop()                                                                # doctest: +SKIP

``app.include_router(rules_router(lambda: service.manager))`` serves the API. With several replicas,
``is_leader=alerting.leadership.is_leader`` makes only the holder of the leader lease evaluate
(:class:`~watchkeeper.rules.manager.RuleManager` explains the takeover).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from watchkeeper.rules.manager import RuleManager
from watchkeeper.rules.metrics import RuleMetricsCollector
from watchkeeper.rules.model import RulesConfig
from watchkeeper.rules.notify import AlertSink
from watchkeeper.rules.persistence import AlertStore
from watchkeeper.scheduler import RuleScheduler


@dataclass
class RulesService:
    manager: RuleManager
    scheduler: RuleScheduler

    @classmethod
    def start(
        cls,
        config: RulesConfig,
        *,
        storage: Any,
        engine: Any,
        database: sa.Engine | None = None,
        sink: AlertSink | None = None,
        base_dir: Path | None = None,
        registry: Any | None = None,
        max_workers: int = 4,
        is_leader: Callable[[], bool] | None = None,
    ) -> RulesService:
        """Restore alert state (``database`` must be migrated), load the files, start the jobs."""
        manager = RuleManager(storage=storage, engine=engine, config=config, sink=sink, base_dir=base_dir,
                              alert_store=AlertStore(database) if database is not None else None,
                              is_leader=is_leader)
        manager.start()
        scheduler = RuleScheduler(manager, max_workers=max_workers)
        scheduler.start()
        if registry is not None:
            registry.register(RuleMetricsCollector(manager))
        return cls(manager, scheduler)

    def reload(self, config: RulesConfig | None = None) -> bool:
        """Re-read the rule files (with a new config if given); False if they are invalid."""
        if config is not None:
            self.manager.config = config
        return self.manager.reload()

    def stop(self) -> None:
        self.scheduler.shutdown(wait=True)
