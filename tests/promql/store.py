"""A tiny in-memory ``SeriesReader`` for engine tests.

>>> store = MemoryStore()
>>> store.add({"__name__": "up", "job": "api"}, [0, 60_000], [1.0, 0.0])
>>> [s.labels for s in store.select([Matcher.parse_op("=", "__name__", "up")], 0, 60_000)]
[(('__name__', 'up'), ('job', 'api'))]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from watchkeeper.labels import Labels, Matcher, from_dict
from watchkeeper.tsdb.reader import SeriesData

F64 = npt.NDArray[np.float64]


class MemoryStore:
    """Series kept as sorted NumPy arrays; ``select`` filters with ``Matcher.matches``."""

    def __init__(self) -> None:
        self.series: dict[Labels, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]] = {}
        self._refs: dict[Labels, int] = {}
        self._by_ref: list[Labels] = []

    def add(self, labels: Mapping[str, str], timestamps_ms: Sequence[int], values: Sequence[float]) -> None:
        key = from_dict(labels)
        ts = np.asarray(timestamps_ms, dtype=np.int64)
        vs = np.asarray(values, dtype=np.float64)
        if key in self.series:
            old_ts, old_vs = self.series[key]
            ts, vs = np.concatenate([old_ts, ts]), np.concatenate([old_vs, vs])
        # Later samples win on equal timestamps.
        order = np.argsort(ts, kind="stable")
        ts, vs = ts[order], vs[order]
        last = np.r_[ts[1:] != ts[:-1], True]
        self.series[key] = (ts[last], vs[last])

    # The conformance runner's loading interface (``promqltest.LoadableStore``).
    def series_refs(self, labels: list[Labels]) -> npt.NDArray[np.int64]:
        refs = []
        for lbls in labels:
            if lbls not in self._refs:
                self._refs[lbls] = len(self._by_ref)
                self._by_ref.append(lbls)
            refs.append(self._refs[lbls])
        return np.asarray(refs, dtype=np.int64)

    def append(
        self, refs: npt.NDArray[np.int64], timestamps_ms: npt.NDArray[np.int64], values: F64
    ) -> None:
        for ref in np.unique(refs):
            mask = refs == ref
            self.add(dict(self._by_ref[int(ref)]), timestamps_ms[mask].tolist(), values[mask].tolist())

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[SeriesData]:
        out = []
        for labels, (ts, vs) in sorted(self.series.items()):
            d = dict(labels)
            if not all(m.matches(d.get(m.name, "")) for m in matchers):
                continue
            lo, hi = np.searchsorted(ts, start_ms, "left"), np.searchsorted(ts, end_ms, "right")
            if hi > lo:
                out.append(SeriesData(labels, ts[lo:hi], vs[lo:hi]))
        return out

    def label_names(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        return sorted({k for s in self.select(matchers, start_ms, end_ms) for k, _ in s.labels})

    def label_values(self, name: str, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        return sorted({v for s in self.select(matchers, start_ms, end_ms) for k, v in s.labels if k == name})
