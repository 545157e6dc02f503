"""The scheduler runs each rule group as an APScheduler job at its interval and follows reloads."""

from __future__ import annotations

import time
from pathlib import Path

from tests.rules.support import Env
from watchkeeper.rules.manager import RuleManager
from watchkeeper.rules.model import RulesConfig
from watchkeeper.scheduler import RuleScheduler


def test_groups_run_at_their_interval_and_reload_replans(tmp_path: Path) -> None:
    env = Env(tmp_path)
    path = tmp_path / "rules.yml"
    path.write_text("groups:\n- name: a\n  interval: 1s\n  rules:\n  - record: r\n    expr: vector(1)\n")
    m = RuleManager(storage=env.storage, engine=env.engine, config=RulesConfig(rule_files=[str(path)]))
    m.start()
    scheduler = RuleScheduler(m)
    scheduler.start()
    try:
        time.sleep(2.6)
        (a,) = m.groups
        assert m.runtime(a.key).iterations >= 2
        assert m.runtime(a.key).iterations_missed == 0
        path.write_text("groups:\n- name: b\n  interval: 1s\n  rules:\n  - record: s\n    expr: vector(2)\n")
        assert m.reload()
        assert [j.id for j in scheduler.scheduler.get_jobs()] == [f"rules:{m.groups[0].key}"]
        time.sleep(1.6)
        assert m.runtime(m.groups[0].key).iterations >= 1
    finally:
        scheduler.shutdown()
        env.storage.close()


def test_time_to_notify_is_within_one_interval(tmp_path: Path) -> None:
    """A ``for: 0s`` alert reaches the sink at most one evaluation interval (+1 s) after the sample."""
    env = Env(tmp_path)
    path = tmp_path / "rules.yml"
    path.write_text("groups:\n- name: a\n  interval: 1s\n  rules:\n  - alert: Hot\n    expr: temp > 100\n")
    received: list[float] = []

    class Sink:
        def send(self, alerts: object, now_ms: int) -> None:
            received.append(time.time())

    m = RuleManager(storage=env.storage, engine=env.engine, config=RulesConfig(rule_files=[str(path)]),
                    sink=Sink())
    m.start()
    scheduler = RuleScheduler(m)
    scheduler.start()
    try:
        time.sleep(1.2)
        written = time.time()
        env.add({"__name__": "temp"}, [(int(written * 1000), 120.0)])
        deadline = written + 3
        while not received and time.time() < deadline:
            time.sleep(0.01)
        assert received, "no notification"
        assert received[0] - written <= 1.0 + 1.0
    finally:
        scheduler.shutdown()
        env.storage.close()


def test_rules_service_lifecycle(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from watchkeeper.rules.notify import ListSink
    from watchkeeper.rules.service import RulesService
    from watchkeeper.tsdb.schema import make_engine, migrate, sqlite_url

    env = Env(tmp_path)
    db = make_engine(sqlite_url(tmp_path))
    migrate(db)
    (tmp_path / "rules.yml").write_text("groups:\n- name: a\n  interval: 1s\n  rules:\n"
                                        "  - alert: Always\n    expr: vector(1)\n")
    registry = CollectorRegistry()
    sink = ListSink()
    service = RulesService.start(RulesConfig(rule_files=["rules.yml"]), storage=env.storage,
                                 engine=env.engine, database=db, sink=sink, base_dir=tmp_path,
                                 registry=registry)
    try:
        time.sleep(2.2)
        assert sink.sent and sink.sent[0][1][0].name == "Always"
        assert b'watchkeeper_rule_alerts{alertname="Always",state="firing"} 1.0' in generate_latest(registry)
        assert service.reload(RulesConfig(rule_files=["missing-*.yml"]))  # no files: no groups
        assert service.manager.groups == []
    finally:
        service.stop()
        env.storage.close()
        db.dispose()
