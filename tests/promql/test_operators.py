"""Binary operators: arithmetic, comparisons, ``bool``, set operators and vector matching."""

from __future__ import annotations

import math

import pytest

from tests.promql.store import MemoryStore
from watchkeeper.errors import EvalError
from watchkeeper.promql.engine import Engine


@pytest.fixture
def engine() -> Engine:
    s = MemoryStore()
    for inst, job, v in [("0", "api", 10.0), ("1", "api", 20.0), ("0", "web", 30.0), ("1", "web", 40.0)]:
        s.add({"__name__": "req", "instance": inst, "job": job}, [0], [v])
        s.add({"__name__": "err", "instance": inst, "job": job}, [0], [v / 10])
    s.add({"__name__": "cap", "job": "api", "tier": "gold"}, [0], [100.0])
    s.add({"__name__": "cap", "job": "web", "tier": "silver"}, [0], [50.0])
    s.add({"__name__": "neg"}, [0], [-7.0])
    # Series that come and go: "blink" exists at 0 and 120s, "blink2" only at 60s.
    s.add({"__name__": "a", "k": "x"}, [0, 60_000, 120_000], [1.0, 2.0, 3.0])
    s.add({"__name__": "b", "k": "x", "v": "1"}, [0, 120_000], [10.0, 30.0])
    s.add({"__name__": "b", "k": "x", "v": "2"}, [60_000], [20.0])
    return Engine(s, lookback_ms=30_000)


def vec(engine: Engine, query: str, t_ms: int = 0) -> dict[tuple[tuple[str, str], ...], float]:
    result = engine.instant(query, t_ms)
    assert result.result_type == "vector"
    return {s.labels: float(s.values[0]) for s in result.series}


def scalar(engine: Engine, query: str) -> float:
    result = engine.instant(query, 0)
    assert result.result_type == "scalar"
    return float(result.series[0].values[0])


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("1 + 2 * 3", 7.0),
        ("2 ^ 3 ^ 2", 512.0),
        ("-7 % 3", -1.0),  # Go's math.Mod: sign of the dividend
        ("7 % -3", 1.0),
        ("1 / 0", math.inf),
        ("-1 / 0", -math.inf),
        ("5 > bool 3", 1.0),
        ("5 <= bool 3", 0.0),
        ("1 atan2 1", math.atan2(1, 1)),
    ],
)
def test_scalar_arithmetic(engine: Engine, query: str, expected: float) -> None:
    assert scalar(engine, query) == pytest.approx(expected)


def test_nan_results(engine: Engine) -> None:
    assert math.isnan(scalar(engine, "0 / 0"))
    assert math.isnan(scalar(engine, "1 % 0"))


def test_vector_scalar_drops_name_and_keeps_labels(engine: Engine) -> None:
    got = vec(engine, 'req{job="api"} * 2')
    assert got == {(("instance", "0"), ("job", "api")): 20.0, (("instance", "1"), ("job", "api")): 40.0}


def test_comparison_filters_and_keeps_vector_value_and_name(engine: Engine) -> None:
    assert vec(engine, "req > 25") == {
        (("__name__", "req"), ("instance", "0"), ("job", "web")): 30.0,
        (("__name__", "req"), ("instance", "1"), ("job", "web")): 40.0,
    }
    # The scalar on the left: still the vector's value.
    assert set(vec(engine, "25 < req").values()) == {30.0, 40.0}


def test_bool_comparison_returns_zero_one_and_drops_name(engine: Engine) -> None:
    got = vec(engine, 'req{job="api"} > bool 15')
    assert got == {(("instance", "0"), ("job", "api")): 0.0, (("instance", "1"), ("job", "api")): 1.0}


def test_one_to_one_matching_ignores_name(engine: Engine) -> None:
    got = vec(engine, "err / req")
    assert len(got) == 4 and all(v == pytest.approx(0.1) for v in got.values())
    assert (("instance", "0"), ("job", "api")) in got


def test_on_keeps_only_matching_labels(engine: Engine) -> None:
    got = vec(engine, 'req{instance="0"} - on(job) err{instance="0"}')
    assert got == {(("job", "api"),): 9.0, (("job", "web"),): 27.0}


def test_group_left_copies_include_labels_from_the_one_side(engine: Engine) -> None:
    got = vec(engine, "req / on(job) group_left(tier) cap")
    assert got[(("instance", "0"), ("job", "api"), ("tier", "gold"))] == pytest.approx(0.1)
    assert got[(("instance", "1"), ("job", "web"), ("tier", "silver"))] == pytest.approx(0.8)
    assert len(got) == 4


def test_group_right_mirrors_group_left(engine: Engine) -> None:
    got = vec(engine, "cap / on(job) group_right(tier) req")
    assert got[(("instance", "0"), ("job", "api"), ("tier", "gold"))] == pytest.approx(10.0)
    assert len(got) == 4


def test_many_to_one_without_group_modifier_is_an_error(engine: Engine) -> None:
    with pytest.raises(EvalError, match="many-to-one matching must be explicit"):
        engine.instant("req / on(job) cap", 0)


def test_duplicate_on_the_one_side_is_an_error_with_sorted_series(engine: Engine) -> None:
    with pytest.raises(EvalError) as info:
        engine.instant("cap / on(job) group_left req", 0)
    message = str(info.value)
    assert message.startswith('found duplicate series for the match group {job="api"} on the right hand-side')
    assert '[{__name__="req", instance="0", job="api"}, {__name__="req", instance="1", job="api"}]' in message
    assert message.endswith("many-to-many matching not allowed: matching labels must be unique on one side")


def test_filtered_many_side_still_checked_for_duplicates(engine: Engine) -> None:
    with pytest.raises(EvalError, match="many-to-one"):
        engine.instant("req > on(job) cap", 0)  # every comparison is false


def test_set_operators(engine: Engine) -> None:
    assert len(vec(engine, 'req and on(instance) err{instance="1"}')) == 2
    assert set(vec(engine, 'req unless on(job) cap{job="web"}').values()) == {10.0, 20.0}
    got = vec(engine, 'req{job="api"} or neg or req')
    assert sorted(got.values()) == [-7.0, 10.0, 20.0, 30.0, 40.0]


def test_or_drops_rhs_series_per_step_only(engine: Engine) -> None:
    # lhs "a" exists at 0, 60s, 120s; rhs b{v="2"} only at 60s (and matches on k): dropped there.
    result = engine.range('a or on(k) b{v="2"}', 0, 120_000, 60_000)
    assert [dict(s.labels).get("__name__") for s in result.series] == ["a"]


def test_matching_is_per_step(engine: Engine) -> None:
    # a{k="x"} matches b{v="1"} at 0 and 120s and b{v="2"} at 60s: one partner per step.
    result = engine.range("a + on(k) group_left(v) b", 0, 120_000, 60_000)
    got = {s.labels: (s.timestamps_ms.tolist(), s.values.tolist()) for s in result.series}
    assert got == {
        (("k", "x"), ("v", "1")): ([0, 120_000], [11.0, 33.0]),
        (("k", "x"), ("v", "2")): ([60_000], [22.0]),
    }


def test_unary_minus_drops_name(engine: Engine) -> None:
    assert vec(engine, "-neg") == {(): 7.0}


def test_name_collision_after_removal_is_an_error(engine: Engine) -> None:
    with pytest.raises(EvalError, match="vector cannot contain metrics with the same labelset"):
        engine.instant('-{__name__=~"req|err"}', 0)
