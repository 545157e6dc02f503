"""Vector/matrix selectors: lookback, staleness, left-open windows, offset, ``@``."""

from __future__ import annotations

import numpy as np
import pytest

from tests.promql.store import MemoryStore
from watchkeeper.errors import TooManySamples
from watchkeeper.labels import Matcher
from watchkeeper.promql import selectors
from watchkeeper.promql.engine import Engine
from watchkeeper.tsdb.reader import STALE_NAN

NAME = [Matcher.parse_op("=", "__name__", "m")]


@pytest.fixture
def store() -> MemoryStore:
    s = MemoryStore()
    # m{a="1"}: 0 1 stale 2 at 0s, 10s, 20s, 30s; m{a="2"}: one sample at 0s.
    s.add({"__name__": "m", "a": "1"}, [0, 10_000, 20_000, 30_000], [0.0, 1.0, STALE_NAN, 2.0])
    s.add({"__name__": "m", "a": "2"}, [0], [5.0])
    return s


def instant(store: MemoryStore, query: str, t_ms: int) -> dict[str, float]:
    result = Engine(store).instant(query, t_ms)
    return {dict(s.labels).get("a", ""): float(s.values[0]) for s in result.series}


@pytest.mark.parametrize(
    ("t_ms", "expected"),
    [
        (10_000, {"1": 1.0, "2": 5.0}),
        (20_000, {"2": 5.0}),  # the staleness marker hides a="1"
        (30_000, {"1": 2.0, "2": 5.0}),
        (299_999, {"1": 2.0, "2": 5.0}),
        (300_000, {"1": 2.0}),  # a="2" is older than the 5m lookback (exclusive)
        (329_999, {"1": 2.0}),
        (330_000, {}),
        (-1, {}),
    ],
)
def test_instant_selector_lookback_and_staleness(
    store: MemoryStore, t_ms: int, expected: dict[str, float]
) -> None:
    assert instant(store, "m", t_ms) == expected


def test_range_query_matches_instant_queries_at_every_step(store: MemoryStore) -> None:
    engine = Engine(store)
    result = engine.range("m", 0, 340_000, 5_000)
    by_series = {dict(s.labels)["a"]: dict(zip(s.timestamps_ms.tolist(), s.values.tolist(), strict=True))
                 for s in result.series}
    for t in range(0, 340_001, 5_000):
        got = {a: points[t] for a, points in by_series.items() if t in points}
        assert got == instant(store, "m", t), t


def test_offset_and_negative_offset(store: MemoryStore) -> None:
    assert instant(store, "m offset 20s", 30_000) == {"1": 1.0, "2": 5.0}
    assert instant(store, "m offset -30s", 0) == {"1": 2.0, "2": 5.0}


def test_at_modifier_is_fixed_for_every_step(store: MemoryStore) -> None:
    result = Engine(store).range("m @ 10", 0, 60_000, 20_000)
    values = {dict(s.labels)["a"]: s.values.tolist() for s in result.series}
    assert values == {"1": [1.0] * 4, "2": [5.0] * 4}


def test_at_start_and_end(store: MemoryStore) -> None:
    result = Engine(store).range('m{a="1"} @ end()', 10_000, 30_000, 10_000)
    assert result.series[0].values.tolist() == [2.0, 2.0, 2.0]
    result = Engine(store).range('m{a="1"} @ start()', 10_000, 30_000, 10_000)
    assert result.series[0].values.tolist() == [1.0, 1.0, 1.0]


def test_matrix_selector_is_left_open_and_drops_staleness_markers(store: MemoryStore) -> None:
    result = Engine(store).instant('m{a="1"}[20s]', 30_000)
    assert result.result_type == "matrix"
    (series,) = result.series
    assert series.timestamps_ms.tolist() == [30_000]  # 10s is excluded, 20s is a marker
    result = Engine(store).instant('m{a="1"}[21s]', 30_000)
    assert result.series[0].timestamps_ms.tolist() == [10_000, 30_000]


def test_window_bounds_uniform_and_irregular_times_agree() -> None:
    rng = np.random.default_rng(1)
    lengths = np.array([5, 0, 7, 3], dtype=np.int64)
    chunks = [np.sort(rng.choice(np.arange(-50, 200), n, replace=False)) for n in lengths]
    ts = np.concatenate(chunks).astype(np.int64)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    series_index = np.repeat(np.arange(4), lengths).astype(np.int64)
    uniform = np.arange(-60, 220, 7, dtype=np.int64)
    fast = selectors.count_le(series_index, ts, offsets, uniform)
    irregular = uniform.copy()
    irregular[-1] += 1  # no longer evenly spaced: the searchsorted path
    slow = selectors.count_le(series_index, ts, offsets, irregular)
    assert (fast[:, :-1] == slow[:, :-1]).all()
    for i in range(4):
        own = ts[offsets[i] : offsets[i + 1]]
        expected = offsets[i] + np.searchsorted(own, uniform, side="right")
        assert (fast[i] == expected).all()


@pytest.mark.parametrize("range_ms", [7, 21, 70, 400, 10])
def test_window_bounds_from_one_extended_grid_agree_with_two_passes(range_ms: int) -> None:
    """A range that is a multiple of the step (up to the query's length) takes both window
    bounds from one pass over a grid extended backwards; others take two passes."""
    rng = np.random.default_rng(2)
    lengths = np.array([6, 0, 9, 1], dtype=np.int64)
    ts = np.concatenate([np.sort(rng.choice(np.arange(-500, 200), n, replace=False)) for n in lengths])
    ts = ts.astype(np.int64)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    series_index = np.repeat(np.arange(4), lengths).astype(np.int64)
    ends = np.arange(-60, 220, 7, dtype=np.int64)
    lo, hi = selectors._windows(series_index, ts, offsets, ends, range_ms)
    for i in range(4):
        own = ts[offsets[i] : offsets[i + 1]]
        assert (lo[i] == offsets[i] + np.searchsorted(own, ends - range_ms, side="right")).all()
        assert (hi[i] == offsets[i] + np.searchsorted(own, ends, side="right")).all()


def test_sample_limit() -> None:
    s = MemoryStore()
    s.add({"__name__": "m"}, list(range(0, 100_000, 1000)), [1.0] * 100)
    with pytest.raises(TooManySamples, match="query processing would load too many samples"):
        Engine(s, max_samples=50).instant("m[100s]", 99_000)
    assert Engine(s, max_samples=200).instant("m[100s]", 99_000).samples_loaded == 100


def test_regex_and_negative_matchers(store: MemoryStore) -> None:
    assert instant(store, 'm{a=~"1|3"}', 10_000) == {"1": 1.0}
    assert instant(store, 'm{a!="1"}', 10_000) == {"2": 5.0}
    assert instant(store, '{__name__=~"m", b=""}', 10_000) == {"1": 1.0, "2": 5.0}


def test_matrix_of_series_by_steps_counts_against_the_limit() -> None:
    s = MemoryStore()
    for i in range(10):
        s.add({"__name__": "m", "i": str(i)}, [0], [1.0])
    engine = Engine(s, max_samples=100)
    assert len(engine.range("m", 0, 90_000, 10_000).series) == 10  # 10 series x 10 steps
    with pytest.raises(TooManySamples):
        engine.range("m", 0, 100_000, 10_000)  # 10 x 11 cells


class _BlockStore(MemoryStore):
    """A store with the one-block ``select_concat`` form (as ``tsdb.Storage`` has)."""

    calls = 0

    def select_concat(
        self, matchers: list[Matcher], start_ms: int, end_ms: int
    ) -> tuple[list[tuple[tuple[str, str], ...]], np.ndarray, np.ndarray, np.ndarray]:
        self.calls += 1
        series = self.select(matchers, start_ms, end_ms)
        offsets = np.r_[0, np.cumsum([len(s.timestamps_ms) for s in series])].astype(np.int64)
        if not series:
            return [], np.empty(0, np.int64), np.empty(0), offsets
        return ([s.labels for s in series], np.concatenate([s.timestamps_ms for s in series]),
                np.concatenate([s.values for s in series]), offsets)


@pytest.mark.parametrize("query", ["m", "rate(m[1m])", "max_over_time(m[25s])", "nothing", "m offset 1h"])
def test_stores_with_select_concat_give_the_same_answers(query: str) -> None:
    plain, block = MemoryStore(), _BlockStore()
    for s in (plain, block):
        s.add({"__name__": "m", "a": "1"}, [0, 10_000, 20_000, 30_000], [0.0, 1.0, STALE_NAN, 2.0])
        s.add({"__name__": "m", "a": "2"}, [0, 15_000], [5.0, 7.0])
    a = Engine(plain).range(query, 0, 60_000, 5_000)
    b = Engine(block).range(query, 0, 60_000, 5_000)
    assert block.calls >= 1
    assert [(s.labels, s.timestamps_ms.tolist(), s.values.tolist()) for s in a.series] == [
        (s.labels, s.timestamps_ms.tolist(), s.values.tolist()) for s in b.series
    ]
    assert a.samples_loaded == b.samples_loaded


class CountingStore(MemoryStore):
    fetches = 0

    def select(self, matchers, start_ms, end_ms):  # type: ignore[no-untyped-def]
        CountingStore.fetches += 1
        return super().select(matchers, start_ms, end_ms)


@pytest.mark.parametrize("query", [
    "m", "m > 1", "rate(m[1m])", "sum by (a) (rate(m[30s]))", "avg_over_time(m[5m]) * 2",
    "sort_desc(m) + ignoring(a) group_left sum(m)", "max_over_time(m[1m:10s])", "timestamp(m)",
    "-m", "m offset 10s", "histogram_quantile(0.5, rate(m[1m]))", "clamp(m, 0.5, 1.5)",
])
def test_shared_selects_give_the_same_answers_and_fetch_once(query: str) -> None:
    store = CountingStore()
    store.add({"__name__": "m", "a": "1"}, [0, 10_000, 20_000, 30_000], [0.0, 1.0, STALE_NAN, 2.0])
    store.add({"__name__": "m", "a": "2"}, [0, 30_000], [5.0, 4.0])
    engine = Engine(store)
    expected = engine.instant(query, 30_000)
    shared = selectors.SharedSelects(store)
    CountingStore.fetches = 0
    for _ in range(3):  # arrays are read-only: an in-place change in any function would raise
        got = engine.instant(query, 30_000, reader=shared)
        assert [(s.labels, s.values.tolist()) for s in got.series] == [
            (s.labels, s.values.tolist()) for s in expected.series]
    distinct = CountingStore.fetches
    assert 1 <= distinct <= 2  # one per distinct selector, not one per query
    shared.forget()
    engine.instant(query, 30_000, reader=shared)
    assert CountingStore.fetches == 2 * distinct


def test_shared_selects_keep_at_most_max_bytes() -> None:
    store = CountingStore()
    for name in ("a", "b", "c"):  # each selection: 2 timestamps + 2 values + 2 offsets = 48 bytes
        store.add({"__name__": name}, [0, 10_000], [1.0, 2.0])
    shared = selectors.SharedSelects(store, max_bytes=100)
    engine = Engine(store)
    CountingStore.fetches = 0
    for name in ("a", "b", "a", "c", "a", "b"):
        got = engine.instant(name, 10_000, reader=shared)
        assert [s.values.tolist() for s in got.series] == [[2.0]]
    # a, b fetched; a remembered; c pushes out the oldest (a); a again pushes out b; b again
    assert CountingStore.fetches == 5
    assert selectors.SharedSelects(store, max_bytes=10).select_concat(
        [Matcher.parse_op("=", "__name__", "a")], 0, 10_000)[2].tolist() == [1.0, 2.0]  # too big: not kept
