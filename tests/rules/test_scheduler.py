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
