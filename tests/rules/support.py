"""A rule manager over a real in-memory store, with rules written to a temporary file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from watchkeeper.labels import Labels, Matcher, MatchOp, from_dict
from watchkeeper.promql.engine import Engine
from watchkeeper.rules.manager import RuleManager
from watchkeeper.rules.model import RulesConfig
from watchkeeper.rules.notify import ListSink
from watchkeeper.rules.persistence import AlertStore
from watchkeeper.tsdb.storage import Storage


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.storage = Storage.open(data_dir=None, retention_ms=2**62)
        self.engine = Engine(self.storage)
        self.sink = ListSink()
        self.now_s = 0.0

    def add(self, labels: dict[str, str], samples: list[tuple[int, float]]) -> Labels:
        lbls = from_dict(labels)
        ref = self.storage.series_refs([lbls])
        for t, v in samples:
            self.storage.append(ref, [t], [v])
        return lbls

    def manager(self, rules: str, *, store: AlertStore | None = None) -> RuleManager:
        path = self.tmp_path / "rules.yml"
        path.write_text(rules)
        m = RuleManager(storage=self.storage, engine=self.engine,
                        config=RulesConfig(rule_files=[str(path)]),
                        alert_store=store, sink=self.sink, clock=lambda: self.now_s)
        m.start()
        return m

    def query(self, q: str, t_ms: int) -> list[tuple[dict[str, str], float]]:
        res = self.engine.instant(q, t_ms)
        rows = sorted((s.labels, float(s.values[0])) for s in res.series)
        return [(dict(labels), value) for labels, value in rows]

    def raw(self, labels: Labels, end_ms: int) -> tuple[list[int], np.ndarray]:

        (data,) = self.storage.select([Matcher(MatchOp.EQUAL, k, v) for k, v in labels], 0, end_ms)
        return data.timestamps_ms.tolist(), data.values
