"""Rule evaluation (watchkeeper.rules, 1 s interval) feeding the dispatcher, a local webhook receiving:
time to notify from the sample that makes a ``for: 0s`` alert true, and the resolution."""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa

from watchkeeper.alerting.config import AlertingConfig
from watchkeeper.alerting.dispatcher import Dispatcher
from watchkeeper.alerting.runner import DispatcherRunner
from watchkeeper.labels import from_dict
from watchkeeper.promql.engine import Engine
from watchkeeper.rules.manager import RuleManager
from watchkeeper.rules.model import RulesConfig
from watchkeeper.rules.notify import DispatcherSink
from watchkeeper.scheduler import RuleScheduler
from watchkeeper.tsdb.storage import Storage

from .conftest import FakeService

RULES = """
groups:
- name: api
  interval: 1s
  rules:
  - alert: Hot
    expr: temp > 100
    labels: {severity: page}
    annotations: {summary: "temperature {{ $value }}"}
"""


def wait_for(service: FakeService, n: int, timeout_s: float) -> float:
    t0 = time.time()
    while len(service.delivered) < n:
        assert time.time() - t0 < timeout_s, f"{len(service.delivered)} of {n} notifications"
        time.sleep(0.005)
    return time.time()


def test_time_to_notify_through_rules_dispatcher_and_webhook(
    tmp_path: Path, sqlite_engine: sa.Engine, service: FakeService
) -> None:
    cfg = AlertingConfig.model_validate(
        {
            "route": {
                "receiver": "team",
                "group_wait": "30s",
                "routes": [{"matchers": ['severity="page"'], "receiver": "pager", "group_wait": "0s"}],
            },
            "receivers": [
                {"name": "team"},
                {"name": "pager", "webhook_configs": [{"url": f"{service.url}/page"}]},
            ],
        }
    )
    dispatcher = Dispatcher(cfg, sqlite_engine)
    runner = DispatcherRunner(dispatcher)
    storage = Storage.open(data_dir=None, retention_ms=2**62)
    (tmp_path / "rules.yml").write_text(RULES)
    manager = RuleManager(
        storage=storage,
        engine=Engine(storage),
        sink=DispatcherSink(dispatcher),
        config=RulesConfig(rule_files=[str(tmp_path / "rules.yml")]),
    )
    manager.start()
    scheduler = RuleScheduler(manager)
    runner.start()
    scheduler.start()
    ref = storage.series_refs([from_dict({"__name__": "temp"})])
    try:
        time.sleep(1.2)
        written = time.time()
        storage.append(ref, [int(written * 1000)], [120.0])
        fired = wait_for(service, 1, 4) - written
        cooled = time.time()
        storage.append(ref, [int(cooled * 1000)], [20.0])
        resolved = wait_for(service, 2, 4) - cooled
    finally:
        scheduler.shutdown()
        runner.stop()
        dispatcher.close()
        storage.close()
    bodies = [r.json() for r in service.delivered]
    assert [b["status"] for b in bodies] == ["firing", "resolved"]
    assert bodies[0]["alerts"][0]["annotations"] == {"summary": "temperature 120"}
    print(
        f"\nsample -> webhook: firing {fired * 1000:.0f} ms, resolved {resolved * 1000:.0f} ms (interval 1 s)"
    )
    assert fired <= 1.0 + 1.0 and resolved <= 1.0 + 1.0
