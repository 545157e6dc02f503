"""10,000 alerts in 1,000 groups with an inhibition rule: receive and flush stay linear.

This machine measures 0.06-0.15 s / 0.16-0.5 s / 0.08-0.19 s; the thresholds are ten times that
or more (a shared box), so only a quadratic regression (~100x) fails them. ``-s`` prints figures.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from watchkeeper.alerting.config import AlertingConfig
from watchkeeper.alerting.dispatcher import Dispatcher
from watchkeeper.alerting.model import Alert
from watchkeeper.labels import from_dict


def test_ten_thousand_alerts_in_a_thousand_groups(sqlite_engine: sa.Engine) -> None:
    cfg = AlertingConfig.model_validate(
        {
            "route": {"receiver": "ops", "group_by": ["alertname"], "group_wait": "30s"},
            "receivers": [{"name": "ops", "webhook_configs": [{"url": "http://127.0.0.1:9/"}]}],
            "inhibit_rules": [
                {
                    "source_matchers": ['severity="critical"'],
                    "target_matchers": ['severity="warning"'],
                    "equal": ["instance"],
                }
            ],
        }
    )
    d = Dispatcher(cfg, sqlite_engine)
    alerts = [
        Alert(
            from_dict(
                {
                    "alertname": f"Rule{i % 1000}",
                    "instance": f"i{i // 1000}",
                    "severity": "warning" if i % 3 else "critical",
                }
            ),
            (),
            0,
        )
        for i in range(10_000)
    ]
    try:
        t0 = time.perf_counter()
        d.receive(alerts, 0)
        t1 = time.perf_counter()
        assert d.tick(30_000) == 1000
        t2 = time.perf_counter()
        d.receive(alerts, 60_000)
        t3 = time.perf_counter()
        assert d.tick(330_000) == 0
        t4 = time.perf_counter()
    finally:
        d.close()
    receive_s, flush_s, dedup_s = t1 - t0, t2 - t1, t4 - t3
    print(f"\nreceive 10k {receive_s:.3f} s, first flush {flush_s:.3f} s, dedup flush {dedup_s:.3f} s")
    assert receive_s < 3.0 and flush_s < 5.0 and dedup_s < 3.0
