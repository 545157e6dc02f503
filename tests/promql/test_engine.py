"""The engine's public API: result types, subqueries, limits, delayed name removal."""

from __future__ import annotations

import numpy as np
import pytest

from tests.promql.store import MemoryStore
from watchkeeper.errors import EvalError, ParseError, QueryTimeout
from watchkeeper.promql import ast
from watchkeeper.promql.engine import Engine
from watchkeeper.promql.parser import parse


@pytest.fixture
def store() -> MemoryStore:
    s = MemoryStore()
    ts = list(range(0, 600_001, 10_000))
    s.add({"__name__": "m", "job": "a"}, ts, [t / 10_000 for t in ts])  # value = seconds / 10
    s.add({"__name__": "n", "job": "a"}, ts, [1.0 for _ in ts])
    return s


def test_instant_result_types(store: MemoryStore) -> None:
    engine = Engine(store)
    vector = engine.instant("m", 95_000)
    assert vector.result_type == "vector"
    assert vector.series[0].timestamps_ms.tolist() == [95_000]  # the eval time, not the sample's
    assert vector.series[0].values.tolist() == [9.0]
    assert engine.instant("1 + 1", 0).result_type == "scalar"
    string = engine.instant('"hello"', 0)
    assert (string.result_type, string.string_value) == ("string", "hello")
    matrix = engine.instant("m[30s]", 95_000)
    assert matrix.result_type == "matrix"
    assert matrix.series[0].timestamps_ms.tolist() == [70_000, 80_000, 90_000]


def test_accepts_a_parsed_expression(store: MemoryStore) -> None:
    expr = parse('m{job="a"} * 2')
    assert isinstance(expr, ast.BinaryExpr)
    assert Engine(store).instant(expr, 95_000).series[0].values.tolist() == [18.0]


def test_range_result_is_sorted_matrix_of_present_points(store: MemoryStore) -> None:
    result = Engine(store).range("m > 3 or n", 0, 60_000, 20_000)
    assert result.result_type == "matrix"
    assert [s.labels[0][1] for s in result.series] == ["m", "n"]
    assert result.series[0].timestamps_ms.tolist() == [40_000, 60_000]
    scalar = Engine(store).range("time()", 0, 20_000, 10_000)
    assert scalar.series[0].values.tolist() == [0.0, 10.0, 20.0]


def test_range_query_rejects_non_instant_types_and_bad_steps(store: MemoryStore) -> None:
    engine = Engine(store)
    with pytest.raises(ParseError, match='invalid expression type "range vector"'):
        engine.range("m[1m]", 0, 60_000, 10_000)
    with pytest.raises(ParseError, match='invalid expression type "string"'):
        engine.range('"x"', 0, 60_000, 10_000)
    with pytest.raises(ParseError, match="zero or negative query resolution step"):
        engine.range("m", 0, 60_000, 0)
    with pytest.raises(ParseError, match="exceeded maximum resolution of 11,000 points per timeseries"):
        engine.range("m", 0, 11_000 * 1000, 1000)
    assert len(engine.range("m", 0, 10_999 * 1000, 1000).series) == 1


def test_timeout(store: MemoryStore) -> None:
    with pytest.raises(QueryTimeout, match="query timed out in expression evaluation"):
        Engine(store, timeout_seconds=-1).instant("m", 0)


def test_subquery_steps_are_aligned_to_multiples_of_the_step(store: MemoryStore) -> None:
    engine = Engine(store)
    # (95s - 30s, 95s] holds the inner steps 80s only (multiples of 20s).
    assert engine.instant("count_over_time(m[30s:20s])", 95_000).series[0].values.tolist() == [1.0]
    assert engine.instant("sum_over_time(m[30s:20s])", 95_000).series[0].values.tolist() == [8.0]
    # With offset: (55s, 85s] -> 60s and 80s.
    assert engine.instant("sum_over_time(m[30s:20s] offset 10s)", 95_000).series[0].values.tolist() == [14.0]
    # The default step is the engine's: 60s -> (35s, 95s] holds 60s.
    assert engine.instant("sum_over_time(m[1m:])", 95_000).series[0].values.tolist() == [6.0]


def test_subquery_in_range_query_matches_instant_queries(store: MemoryStore) -> None:
    engine = Engine(store)
    query = "max_over_time((m * 2)[45s:15s]) - min_over_time(m[1m:7s] offset 3s)"
    result = engine.range(query, 100_000, 400_000, 13_000)
    (series,) = result.series
    for t, v in zip(series.timestamps_ms.tolist(), series.values.tolist(), strict=True):
        assert engine.instant(query, t).series[0].values.tolist() == [v]


def test_nested_subquery_and_at(store: MemoryStore) -> None:
    engine = Engine(store)
    inner = engine.instant("max_over_time(m[1m:10s] @ 100)", 300_000)
    assert inner.series[0].values.tolist() == [10.0]
    nested = engine.instant("max_over_time(max_over_time(m[20s:10s])[1m:10s])", 100_000)
    assert nested.series[0].values.tolist() == [10.0]


def test_name_removal_merges_series_that_do_not_overlap() -> None:
    s = MemoryStore()
    s.add({"__name__": "a", "job": "x"}, [0], [1.0])
    s.add({"__name__": "b", "job": "x"}, [600_000], [2.0])
    result = Engine(s).range('-{job="x"}', 0, 600_000, 600_000)
    assert [(r.labels, r.values.tolist()) for r in result.series] == [((("job", "x"),), [-1.0, -2.0])]
    s.add({"__name__": "b", "job": "x"}, [0], [3.0])
    with pytest.raises(EvalError, match="vector cannot contain metrics with the same labelset"):
        Engine(s).range('-{job="x"}', 0, 600_000, 600_000)


def test_annotations_are_returned(store: MemoryStore) -> None:
    result = Engine(store).instant("quantile(2, m)", 95_000)
    assert result.warnings == ["PromQL warning: quantile value should be between 0 and 1, got 2 (1:10)"]


def test_dashboard_shaped_range_query_is_vectorised() -> None:
    s = MemoryStore()
    ts = np.arange(0, 3_600_001, 15_000)
    for i in range(200):
        s.add({"__name__": "http_requests_total", "route": f"/r{i % 5}", "i": str(i)}, ts.tolist(),
              (np.arange(len(ts)) * (i % 7 + 1)).astype(float).tolist())
    result = Engine(s).range("sum by (route) (rate(http_requests_total[5m]))", 600_000, 3_600_000, 15_000)
    assert len(result.series) == 5
    expected = sum((i % 7 + 1) / 15 for i in range(200) if i % 5 == 0)
    assert np.allclose(result.series[0].values, expected)


@pytest.mark.parametrize(
    "query",
    [
        "sum(rate(m[1m] @ 100)) * 2",
        "max_over_time(m[1m:10s] @ 100) + time()",
        "timestamp(m @ 95) - time()",
        "-(m @ 100) or n",
    ],
)
def test_step_invariant_parts_equal_per_step_evaluation(store: MemoryStore, query: str) -> None:
    engine = Engine(store)
    result = engine.range(query, 60_000, 300_000, 30_000)
    assert result.series
    for series in result.series:
        for t, v in zip(series.timestamps_ms.tolist(), series.values.tolist(), strict=True):
            at_t = {s.labels: s.values.tolist() for s in engine.instant(query, t).series}
            assert at_t[series.labels] == [v], (query, t)


def test_non_counter_info_once_per_name_from_the_selector_or_the_series() -> None:
    s = MemoryStore()
    ts = list(range(0, 300_001, 15_000))
    for i in range(3):
        s.add({"__name__": "temperature", "i": str(i)}, ts, [float(t) for t in ts])
        s.add({"__name__": "hits_total", "i": str(i + 3)}, ts, [float(t) for t in ts])
    info = (
        "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: "
        '"temperature"'
    )
    for query in ("rate(temperature[1m])", "rate({i=~'.+'}[1m])", "increase((temperature[1m]))"):
        infos = Engine(s).range(query, 60_000, 300_000, 60_000).infos
        assert [m for m in infos if m.startswith(info)] and len(infos) == 1, (query, infos)
    assert Engine(s).range("rate(hits_total[1m])", 60_000, 300_000, 60_000).infos == []
