"""Generated rule files loaded by the real rules engine (RuleManager): the page alert fires on an
error burst and the budget series are recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from watchkeeper.labels import from_dict
from watchkeeper.promql.engine import Engine
from watchkeeper.rules.manager import RuleManager
from watchkeeper.rules.model import RulesConfig
from watchkeeper.slo.router import write_rule_files
from watchkeeper.slo.spec import parse_specs
from watchkeeper.tsdb.storage import Storage

MIN = 60_000
SPEC = """
version: prometheus/v1
service: checkout
slos:
  - name: availability
    objective: 99.9
    sli:
      events:
        error_query: sum(rate(http_requests_total{job="checkout",code="500"}[{{.window}}]))
        total_query: sum(rate(http_requests_total{job="checkout"}[{{.window}}]))
    alerting:
      name: CheckoutErrors
      page_alert: {labels: {severity: page}}
"""


def test_rule_manager_runs_generated_rules(tmp_path: Path) -> None:
    store = Storage.open(data_dir=None)
    # 100 req/min; from minute 60 on, 20% of them fail
    refs = store.series_refs(
        [from_dict({"__name__": "http_requests_total", "job": "checkout", "code": c}) for c in ("200", "500")]
    )
    ok = err = 0.0
    for m in range(91):
        bad = 20 if m >= 60 else 0
        ok, err = ok + 100 - bad, err + bad
        store.append(refs, np.array([m * MIN, m * MIN]), np.array([ok, err]))
    write_rule_files(parse_specs(SPEC), tmp_path)
    now = [0.0]
    manager = RuleManager(
        storage=store,
        engine=Engine(store),
        config=RulesConfig(rule_files=[str(tmp_path / "*.yml")]),
        clock=lambda: now[0],
    )
    manager.start()
    keys = [g.key for g in manager.groups]
    assert len(keys) == 3  # sli recordings, meta recordings, alerts
    fired_at = None
    for m in range(50, 91):
        for key in keys:  # in file order: recordings before the alerts that read them
            result = manager.evaluate(key, m * MIN)
            assert result.errors == []
            for _, t in result.transitions:
                if t.to_state.name.lower() == "firing" and fired_at is None:
                    fired_at = m
    # 20% errors: the 5m ratio passes 1.44% at once, the 1h ratio after 5 minutes (20% x 5/60 > 1.44%)
    assert fired_at is not None and 60 <= fired_at <= 66
    engine = Engine(store)
    remaining = engine.instant("slo:period_error_budget_remaining:ratio", 90 * MIN).series[0].values[0]
    # independent: recordings ran from minute 50 to 90 (41 evaluations); errors appear in the 5m
    # rates from minute 60 (31 evaluations) at 20 of 100 req/min: ratio ~ 31 x 20 / (41 x 100) = 15.1%
    expected = 1 - (31 * 20 / (41 * 100)) / 0.001
    assert abs(remaining - expected) / abs(expected) < 0.1
