"""Aggregation operators against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.promql.store import MemoryStore
from watchkeeper.errors import EvalError
from watchkeeper.promql.aggregations import compensated_sum
from watchkeeper.promql.engine import Engine

Labels = tuple[tuple[str, str], ...]


def make_engine(values: dict[tuple[str, str], float]) -> Engine:
    s = MemoryStore()
    for (job, inst), v in values.items():
        s.add({"__name__": "x", "job": job, "inst": inst}, [0], [v])
    return Engine(s)


@pytest.fixture
def engine() -> Engine:
    values = {("a", "1"): 1.0, ("a", "2"): 2.0, ("a", "3"): 6.0, ("b", "1"): 10.0, ("b", "2"): math.nan}
    return make_engine(values)


def by_job(engine: Engine, query: str) -> dict[str, float]:
    return {dict(s.labels).get("job", ""): float(s.values[0]) for s in engine.instant(query, 0).series}


@pytest.mark.parametrize(
    ("op", "a", "b"),
    [
        ("sum", 9.0, math.nan),
        ("avg", 3.0, math.nan),
        ("count", 3.0, 2.0),
        ("group", 1.0, 1.0),
        ("min", 1.0, 10.0),  # NaN is ignored unless everything is NaN
        ("max", 6.0, 10.0),
        ("stdvar", 14 / 3, math.nan),
        ("stddev", math.sqrt(14 / 3), math.nan),
    ],
)
def test_simple_aggregations(engine: Engine, op: str, a: float, b: float) -> None:
    got = by_job(engine, f"{op} by (job) (x)")
    assert got["a"] == pytest.approx(a)
    assert got["b"] == pytest.approx(b, nan_ok=True)


def test_without_drops_listed_labels_and_name(engine: Engine) -> None:
    result = engine.instant("sum without (inst) (x)", 0)
    assert sorted(s.labels for s in result.series) == [(("job", "a"),), (("job", "b"),)]


def test_by_name_keeps_the_name(engine: Engine) -> None:
    result = engine.instant("sum by (__name__) (x)", 0)
    assert [s.labels for s in result.series] == [(("__name__", "x"),)]


def test_compensated_sum_survives_cancellation() -> None:
    ids = np.zeros(4, dtype=np.int64)
    values = np.array([[2.0], [8.0], [1e100], [-1e100]])
    assert compensated_sum(ids, values, 1)[0, 0] == 10.0
    big = 9.988465674311579e307
    engine = make_engine({("a", "1"): -big, ("a", "2"): -big, ("a", "3"): big, ("a", "4"): big})
    assert by_job(engine, "avg by (job) (x)") == {"a": 0.0}  # the sum overflows, the mean does not


def test_avg_of_infinities() -> None:
    assert by_job(make_engine({("a", "1"): math.inf, ("a", "2"): 0.0}), "avg by (job) (x)") == {"a": math.inf}
    got = by_job(make_engine({("a", "1"): math.inf, ("a", "2"): -math.inf}), "avg by (job) (x)")
    assert math.isnan(got["a"])


def test_variance_of_constant_values_is_exactly_zero() -> None:
    engine = make_engine({("a", str(i)): 13.3 for i in range(3)})
    assert by_job(engine, "stdvar by (job) (x)") == {"a": 0.0}


def test_topk_bottomk_sorted_with_nan_last(engine: Engine) -> None:
    top = engine.instant("topk(2, x)", 0).series
    assert [float(s.values[0]) for s in top] == [10.0, 6.0]
    assert dict(top[0].labels)["__name__"] == "x"  # original labels kept
    bottom = engine.instant("bottomk by (job) (5, x)", 0).series
    values = [float(s.values[0]) for s in bottom]
    assert values[:3] == [1.0, 2.0, 6.0] and values[3] == 10.0 and math.isnan(values[4])


def test_topk_k_per_step() -> None:
    s = MemoryStore()
    for i in range(4):
        s.add({"__name__": "x", "i": str(i)}, [0, 60_000, 120_000], [float(i)] * 3)
    s.add({"__name__": "k"}, [0, 60_000, 120_000], [1.0, 3.0, 0.0])
    result = Engine(s).range("count(topk(scalar(k), x))", 0, 120_000, 60_000)
    assert result.series[0].values.tolist() == [1.0, 3.0]
    assert result.series[0].timestamps_ms.tolist() == [0, 60_000]  # k < 1 gives nothing


def test_k_parameter_errors(engine: Engine) -> None:
    with pytest.raises(EvalError, match="Parameter value is NaN"):
        engine.instant("topk(NaN, x)", 0)
    with pytest.raises(EvalError, match="Ratio value is NaN"):
        engine.instant("limit_ratio(NaN, x)", 0)


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.5, 2.0), (0.75, 4.0), (0.0, 1.0), (1.0, 6.0), (-1.0, -math.inf), (2.0, math.inf)],
)
def test_quantile(engine: Engine, q: float, expected: float) -> None:
    assert by_job(engine, f"quantile by (job) ({q}, x)")["a"] == expected


def test_quantile_nan_sorts_first_and_warns_on_out_of_range(engine: Engine) -> None:
    assert by_job(engine, "quantile by (job) (1, x)")["b"] == 10.0
    assert math.isnan(by_job(engine, "quantile by (job) (0, x)")["b"])
    result = engine.instant("quantile(NaN, x)", 0)
    assert result.warnings == ["PromQL warning: quantile value should be between 0 and 1, got NaN (1:10)"]


def test_count_values() -> None:
    engine = make_engine({("a", "1"): 6.0, ("a", "2"): 6.0, ("b", "1"): 0.5})
    result = engine.instant('count_values by (job) ("v", x)', 0)
    got = {s.labels: float(s.values[0]) for s in result.series}
    assert got == {(("job", "a"), ("v", "6")): 2.0, (("job", "b"), ("v", "0.5")): 1.0}


def test_limitk_keeps_the_first_k_series_per_group(engine: Engine) -> None:
    result = engine.instant("limitk by (job) (1, x)", 0)
    assert len(result.series) == 2


def test_limit_ratio_is_deterministic_and_complementary(engine: Engine) -> None:
    some = {s.labels for s in engine.instant("limit_ratio(0.5, x)", 0).series}
    rest = {s.labels for s in engine.instant("limit_ratio(-0.5, x)", 0).series}
    assert some.isdisjoint(rest) and len(some | rest) == 5
    assert len(engine.instant("limit_ratio(1, x)", 0).series) == 5


def test_range_aggregation_groups_change_per_step() -> None:
    s = MemoryStore()
    s.add({"__name__": "x", "g": "1", "i": "1"}, [0, 60_000], [1.0, 2.0])
    s.add({"__name__": "x", "g": "1", "i": "2"}, [60_000], [5.0])
    result = Engine(s, lookback_ms=30_000).range("sum by (g) (x)", 0, 60_000, 60_000)
    assert result.series[0].values.tolist() == [1.0, 7.0]


def test_topk_ties_keep_the_first_series_at_every_step() -> None:
    s = MemoryStore()
    for i in range(6):
        s.add({"__name__": "x", "i": str(i)}, [0, 60_000, 120_000], [1.0, 1.0, float(i == 4)])
    result = Engine(s).range("topk(1, x)", 0, 120_000, 60_000)
    got = {dict(r.labels)["i"]: r.timestamps_ms.tolist() for r in result.series}
    assert got == {"0": [0, 60_000], "4": [120_000]}


@pytest.mark.parametrize(("groups", "max_size"), [(5, 40), (600, 3), (2000, 9), (3000, 40)])
def test_segment_reduce_matches_reduceat(groups: int, max_size: int) -> None:
    from watchkeeper.promql.aggregations import segment_reduce

    rng = np.random.default_rng(groups)
    sizes = rng.integers(1, max_size, groups)
    starts = np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64)
    x = rng.random((int(sizes.sum()), 7))
    x[rng.random(x.shape) < 0.1] = np.nan
    for ufunc in (np.add, np.fmin, np.fmax):
        expected = ufunc.reduceat(x, starts, axis=0)
        assert np.allclose(segment_reduce(ufunc, x, starts), expected, rtol=1e-14, equal_nan=True)


def test_count_values_rejects_invalid_label_names(engine: Engine) -> None:
    with pytest.raises(EvalError, match='invalid label name "a\\\\xc5z"'):
        engine.instant('count_values("a\\xc5z", x)', 0)


def test_limit_ratio_out_of_range_warns_and_caps(engine: Engine) -> None:
    result = engine.instant("limit_ratio(1.5, x)", 0)
    assert len(result.series) == 5
    assert result.warnings == [
        "PromQL warning: ratio value should be between -1 and 1, got 1.5, capping to 1 (1:13)"
    ]
