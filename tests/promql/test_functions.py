"""Elementwise, time, label, sort and absence functions on hand-built vectors."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from watchkeeper.errors import EvalError
from watchkeeper.labels import Labels, Matcher, from_dict
from watchkeeper.promql.ast import Call, Expr, MatrixSelector, NumberLiteral, VectorSelector
from watchkeeper.promql.functions import FUNCTIONS, expand_template, natural_less, valid_label_name
from watchkeeper.promql.values import EvalContext, RangeVector, Scalar, StepVector, StringValue, Value

NAN = math.nan


def ctx_at(*times_s: float) -> EvalContext:
    times = np.array([round(t * 1000) for t in times_s], dtype=np.int64)
    step = int(times[1] - times[0]) if len(times) > 1 else 0
    return EvalContext(int(times[0]), int(times[-1]), step, times)


def vec(rows: Sequence[tuple[dict[str, str], Sequence[float | None]]]) -> StepVector:
    """Rows of per-step values; None marks an absent sample."""
    values = np.array([[NAN if v is None else v for v in vals] for _, vals in rows], dtype=np.float64)
    present = np.array([[v is not None for v in vals] for _, vals in rows], dtype=bool)
    return StepVector([from_dict(lbls) for lbls, _ in rows], values, present)


def scalar(*values: float) -> Scalar:
    return Scalar(np.array(values, dtype=np.float64))


def call(name: str, args: list[Value], ctx: EvalContext, exprs: Sequence[Expr] = ()) -> Value:
    return FUNCTIONS[name].impl(args, list(exprs), ctx)


def call_vec(name: str, args: list[Value], ctx: EvalContext, exprs: Sequence[Expr] = ()) -> StepVector:
    out = call(name, args, ctx, exprs)
    assert isinstance(out, StepVector)
    return out


def first_column(out: StepVector) -> dict[Labels, float]:
    return {lbls: float(out.values[i, 0]) for i, lbls in enumerate(out.labels) if out.present[i, 0]}


def test_every_prometheus_float_function_is_registered() -> None:
    expected = """abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes
        clamp clamp_max clamp_min cos cosh count_over_time days_in_month day_of_month day_of_week
        day_of_year deg delta deriv exp first_over_time floor histogram_avg histogram_count
        histogram_fraction histogram_quantile histogram_sum histogram_stddev histogram_stdvar
        double_exponential_smoothing hour idelta increase irate label_replace label_join ln log10
        log2 last_over_time mad_over_time max_over_time min_over_time ts_of_first_over_time
        ts_of_last_over_time ts_of_max_over_time ts_of_min_over_time minute month pi predict_linear
        present_over_time quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_desc
        sort_by_label sort_by_label_desc sqrt stddev_over_time stdvar_over_time sum_over_time tan tanh
        time timestamp vector year step range start end min_of max_of histogram_quantiles"""
    assert set(expected.split()) <= FUNCTIONS.keys()
    assert all(FUNCTIONS[name].name == name for name in FUNCTIONS)


# --- elementwise ---------------------------------------------------------------------------------

SPECIALS = [2.5, -2.5, 0.0, math.inf, -math.inf, NAN]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("abs", [2.5, 2.5, 0, math.inf, math.inf, NAN]),
        ("ceil", [3, -2, 0, math.inf, -math.inf, NAN]),
        ("floor", [2, -3, 0, math.inf, -math.inf, NAN]),
        ("round", [3, -2, 0, math.inf, -math.inf, NAN]),
        ("sgn", [1, -1, 0, 1, -1, NAN]),
        ("ln", [math.log(2.5), NAN, -math.inf, math.inf, NAN, NAN]),
        ("sqrt", [math.sqrt(2.5), NAN, 0, math.inf, NAN, NAN]),
        ("exp", [math.exp(2.5), math.exp(-2.5), 1, math.inf, 0, NAN]),
        ("deg", [2.5 * 180 / math.pi, -2.5 * 180 / math.pi, 0, math.inf, -math.inf, NAN]),
        ("atanh", [NAN, NAN, 0, NAN, NAN, NAN]),
    ],
)
def test_elementwise_functions_follow_go_math(name: str, expected: list[float]) -> None:
    ctx = ctx_at(*range(len(SPECIALS)))
    out = call_vec(name, [vec([({"__name__": "m"}, SPECIALS)])], ctx)
    np.testing.assert_allclose(out.values[0], expected, equal_nan=True)
    assert out.drop_name is not None and out.drop_name.tolist() == [True]


def test_elementwise_functions_keep_absent_samples_absent() -> None:
    out = call_vec("abs", [vec([({"a": "1"}, [-1, None])])], ctx_at(0, 60))
    assert out.present.tolist() == [[True, False]]


@pytest.mark.parametrize(
    ("value", "to_nearest", "expected"),
    [(7, 5, 5), (7.5, 5, 10), (-7.5, 5, -5), (1.23456, 0.01, 1.23), (2.5, 1, 3), (-2.5, 1, -2)],
)
def test_round_to_nearest_rounds_ties_up(value: float, to_nearest: float, expected: float) -> None:
    out = call_vec("round", [vec([({}, [value])]), scalar(to_nearest)], ctx_at(0))
    assert out.values[0, 0] == pytest.approx(expected)


def test_clamp_family() -> None:
    ctx = ctx_at(0)
    data = vec([({"s": "a"}, [-50]), ({"s": "b"}, [0]), ({"s": "c"}, [100])])
    assert call_vec("clamp", [data, scalar(-25), scalar(75)], ctx).values[:, 0].tolist() == [-25, 0, 75]
    assert call_vec("clamp_min", [data, scalar(-25)], ctx).values[:, 0].tolist() == [-25, 0, 100]
    assert call_vec("clamp_max", [data, scalar(75)], ctx).values[:, 0].tolist() == [-50, 0, 75]
    assert np.isnan(call_vec("clamp", [data, scalar(0), scalar(NAN)], ctx).values).all()
    assert not call_vec("clamp", [data, scalar(5), scalar(-5)], ctx).present.any()  # max < min


def test_trigonometry_and_pi() -> None:
    ctx = ctx_at(60)
    out = call_vec("sin", [vec([({}, [10])])], ctx)
    assert out.values[0, 0] == pytest.approx(-0.5440211108893699)
    pi = call("pi", [], ctx)
    assert isinstance(pi, Scalar) and pi.values.tolist() == [math.pi]


# --- time ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "at_2006", "at_epoch"),
    [
        ("year", 2006, 1970),
        ("month", 1, 1),
        ("day_of_month", 2, 1),
        ("day_of_year", 2, 1),
        ("day_of_week", 1, 4),
        ("hour", 22, 0),
        ("minute", 4, 0),
        ("days_in_month", 31, 31),
    ],
)
def test_date_functions(name: str, at_2006: float, at_epoch: float) -> None:
    ctx = ctx_at(0)
    out = call_vec(name, [vec([({"__name__": "t"}, [1136239445])])], ctx)  # 2006-01-02 22:04:05 Mon
    assert out.values[0, 0] == at_2006
    without_args = call_vec(name, [], ctx)
    assert without_args.labels == [()] and without_args.values[0, 0] == at_epoch


@pytest.mark.parametrize(
    ("name", "timestamp", "expected"),
    [
        ("days_in_month", 1454284800, 29),  # February 2016
        ("days_in_month", 1485907200, 28),  # February 2017
        ("day_of_year", 1483191420, 366),  # 2016-12-31
        ("year", 1230767999, 2008),
        ("year", 1230768000, 2009),
        ("hour", -1, 23),  # 1969-12-31 23:59:59
        ("day_of_week", -1, 3),
    ],
)
def test_date_edges(name: str, timestamp: float, expected: float) -> None:
    assert call_vec(name, [vec([({}, [timestamp])])], ctx_at(0)).values[0, 0] == expected


def test_time_timestamp_and_vector() -> None:
    ctx = ctx_at(0, 60)
    time = call("time", [], ctx)
    assert isinstance(time, Scalar) and time.values.tolist() == [0, 60]
    selected = vec([({"__name__": "m"}, [1, 2])])
    assert call_vec("timestamp", [selected], ctx).values.tolist() == [[0, 60]]
    selected.sample_ts = np.array([[0, 50_000]], dtype=np.int64)
    stamped = call_vec("timestamp", [selected], ctx)
    assert stamped.values.tolist() == [[0, 50]]
    assert stamped.drop_name is not None and stamped.drop_name.tolist() == [True]
    as_vector = call_vec("vector", [time], ctx)
    assert as_vector.labels == [()] and as_vector.values.tolist() == [[0, 60]]


def test_scalar_is_nan_unless_exactly_one_sample() -> None:
    ctx = ctx_at(0, 60, 120)
    data = vec([({"l": "x"}, [1, 1, None]), ({"l": "y"}, [None, 2, None])])
    out = call("scalar", [data], ctx)
    assert isinstance(out, Scalar)
    np.testing.assert_equal(out.values, [1, NAN, NAN])
    empty = call("scalar", [StepVector.empty(3)], ctx)
    assert isinstance(empty, Scalar) and np.isnan(empty.values).all()


def test_query_context_functions() -> None:
    ranged = EvalContext(100_000, 130_000, 10_000, np.arange(100_000, 130_001, 10_000))
    got = {name: call(name, [], ranged) for name in ("step", "range", "start", "end")}
    assert {k: v.values[0] for k, v in got.items() if isinstance(v, Scalar)} == {
        "step": 10,
        "range": 30,
        "start": 100,
        "end": 130,
    }
    instant = ctx_at(100)
    step = call("step", [], instant)
    assert isinstance(step, Scalar) and step.values.tolist() == [0]


def test_min_of_and_max_of_propagate_nan() -> None:
    ctx = ctx_at(0, 1)
    low = call("min_of", [scalar(3, NAN), scalar(5, 3)], ctx)
    high = call("max_of", [scalar(3, 3), scalar(5, NAN)], ctx)
    assert isinstance(low, Scalar) and isinstance(high, Scalar)
    np.testing.assert_equal([low.values, high.values], [[3, NAN], [5, NAN]])


# --- labels --------------------------------------------------------------------------------------

TESTMETRIC = [
    ({"__name__": "testmetric", "src": "source-value-10", "dst": "original"}, [0.0]),
    ({"__name__": "testmetric", "src": "source-value-20", "dst": "original"}, [1.0]),
]


def strings(*values: str) -> list[Value]:
    return [StringValue(v) for v in values]


def relabel(name: str, *params: str, data: StepVector | None = None) -> StepVector:
    return call_vec(name, [data or vec(TESTMETRIC), *strings(*params)], ctx_at(0))


def dst_values(out: StepVector) -> list[str]:
    return [dict(lbls).get("dst", "") for lbls in out.labels]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            ("dst", "destination-value-$1", "src", "source-value-(.*)"),
            ["destination-value-10", "destination-value-20"],
        ),
        (("dst", "destination-value-$1", "src", "value-(.*)"), ["original", "original"]),  # full match only
        (("dst", "$1-value-$2", "src", "(.*)-value-(.*)"), ["source-value-10", "source-value-20"]),
        (("dst", "value-$1", "nonexistent-src", "source-value-(.*)"), ["original", "original"]),
        (("dst", "value-$1", "nonexistent-src", "(.*)"), ["value-", "value-"]),
        (("dst", "", "dst", ".*"), ["", ""]),  # an empty value removes the label
        (("dst", "${1}0 $$ $1x", "src", "source-value-(.*)"), ["100 $ ", "200 $ "]),
    ],
)
def test_label_replace(params: tuple[str, ...], expected: list[str]) -> None:
    out = relabel("label_replace", *params)
    assert dst_values(out) == expected
    assert out.values[:, 0].tolist() == [0, 1]


def test_label_replace_errors_are_worded_as_prometheus() -> None:
    with pytest.raises(EvalError, match=r"^invalid regular expression in label_replace\(\): \(\.\*$"):
        relabel("label_replace", "dst", "v", "src", "(.*")
    with pytest.raises(EvalError, match=r"^invalid destination label name in label_replace\(\): $"):
        relabel("label_replace", "", "v", "src", "(.*)")
    with pytest.raises(EvalError, match=r"^vector cannot contain metrics with the same labelset$"):
        relabel("label_replace", "src", "", "", "")


def test_label_replace_merges_identical_series_that_never_overlap() -> None:
    ctx = ctx_at(0, 1200)
    data = vec([({"__name__": "s", "idx": "1"}, [2, None]), ({"__name__": "s", "idx": "2"}, [None, 4])])
    out = call_vec("label_replace", [data, *strings("idx", "replaced", "idx", ".*")], ctx)
    assert out.labels == [from_dict({"__name__": "s", "idx": "replaced"})]
    assert out.values.tolist() == [[2, 4]]


def test_setting_the_metric_name_cancels_its_removal() -> None:
    data = vec([({"__name__": "rate_me", "env": "1"}, [0.2])])
    data.drop_name = np.array([True])
    kept = relabel("label_replace", "__name__", "rate_$1", "__name__", "(.+)", data=data)
    assert kept.labels == [from_dict({"__name__": "rate_rate_me", "env": "1"})]
    assert kept.drop_name is not None and kept.drop_name.tolist() == [False]
    other = relabel("label_replace", "my_name", "x_$1", "__name__", "(.+)", data=data)
    assert other.drop_name is not None and other.drop_name.tolist() == [True]


def test_label_join() -> None:
    data = vec([({"src": "a", "src1": "b", "src2": "c", "dst": "orig"}, [0])])
    assert dst_values(relabel("label_join", "dst", "-", "src", "src1", "src2", data=data)) == ["a-b-c"]
    assert dst_values(relabel("label_join", "dst", "-", "src", "src3", "src1", data=data)) == ["a--b"]
    assert dst_values(relabel("label_join", "dst", ", ", data=data)) == [""]
    dup = vec([({"label": "a", "this": "a"}, [1]), ({"label": "b", "this": "a"}, [1])])
    with pytest.raises(EvalError, match=r"^vector cannot contain metrics with the same labelset$"):
        relabel("label_join", "label", "", "this", data=dup)
    with pytest.raises(EvalError, match=r"^invalid source label name in label_join\(\): $"):
        relabel("label_join", "dst", "-", "", data=data)


def test_go_template_expansion_and_label_name_validity() -> None:
    import re

    m = re.fullmatch(r"(?P<first>a)(b)", "ab")
    assert m is not None
    assert expand_template("$first-$2-${1}-$3-$$-$", m) == "a-b-a--$-$"
    assert valid_label_name("ünïcode.name") and not valid_label_name("")
    assert not valid_label_name("bad\udcff")  # a byte that was not UTF-8


# --- sorting -------------------------------------------------------------------------------------


def test_sort_orders_rows_with_nan_last() -> None:
    data = vec([({"i": "a"}, [300]), ({"i": "b"}, [NAN]), ({"i": "c"}, [100]), ({"i": "d"}, [200])])
    ascending = call_vec("sort", [data], ctx_at(0))
    assert [dict(lbls)["i"] for lbls in ascending.labels] == ["c", "d", "a", "b"]
    descending = call_vec("sort_desc", [data], ctx_at(0))
    assert [dict(lbls)["i"] for lbls in descending.labels] == ["a", "d", "c", "b"]
    assert descending.values[:, 0].tolist()[:3] == [300, 200, 100]


def test_sort_in_a_range_query_warns_that_it_is_ineffective() -> None:
    ranged = ctx_at(0, 60)
    call("sort", [StepVector.empty(2)], ranged)
    call("sort_by_label_desc", [StepVector.empty(2), StringValue("a")], ranged)
    assert ranged.warnings == [
        "PromQL warning: sort is ineffective for range queries since results are always ordered by labels"
    ]
    instant = ctx_at(0)
    call("sort", [vec([({}, [1])])], instant)
    assert instant.warnings == []


def test_sort_by_label_is_natural_and_breaks_ties_by_all_labels() -> None:
    cpus = vec([({"cpu": c, "job": "cpu"}, [1]) for c in ["10", "2", "100", "1", "21"]])
    out = call_vec("sort_by_label", [cpus, StringValue("cpu")], ctx_at(0))
    assert [dict(lbls)["cpu"] for lbls in out.labels] == ["1", "2", "10", "21", "100"]
    data = vec(
        [
            ({"group": "production", "instance": "0"}, [1]),
            ({"group": "canary", "instance": "1"}, [2]),
            ({"group": "canary", "instance": "0"}, [3]),
        ]
    )
    asc = call_vec("sort_by_label", [data, StringValue("instance")], ctx_at(0))
    assert asc.values[:, 0].tolist() == [3, 1, 2]
    desc = call_vec("sort_by_label_desc", [data, StringValue("instance")], ctx_at(0))
    assert desc.values[:, 0].tolist() == [2, 1, 3]


@pytest.mark.parametrize(
    ("a", "b", "less"),
    [
        ("1.2.3", "1.11.3", True),
        ("4m5", "4m600", True),
        ("4m1000", "4m600", False),
        ("a", "b", True),
        ("a", "a1", True),
    ],
)
def test_natural_order(a: str, b: str, less: bool) -> None:
    assert natural_less(a, b) is less


# --- absence -------------------------------------------------------------------------------------


def selector(*matchers: tuple[str, str, str]) -> VectorSelector:
    return VectorSelector("nonexistent", tuple(Matcher.parse_op(op, n, v) for n, op, v in matchers))


@pytest.mark.parametrize(
    ("matchers", "expected"),
    [
        ((), {}),
        (
            (("job", "=", "testjob"), ("instance", "=", "i"), ("method", "=~", ".x")),
            {"job": "testjob", "instance": "i"},
        ),
        ((("job", "=", "a"), ("job", "=", "b"), ("foo", "=", "bar")), {"foo": "bar"}),
        ((("job", "=", "a"), ("job", "=~", "b"), ("foo", "=", "bar")), {"foo": "bar"}),
        ((("__name__", "=", "x"), ("handler", "!=", "/foo")), {}),
    ],
)
def test_absent_takes_labels_from_equality_matchers(
    matchers: tuple[tuple[str, str, str], ...], expected: dict[str, str]
) -> None:
    out = call_vec("absent", [StepVector.empty(1)], ctx_at(0), [selector(*matchers)])
    assert out.labels == [from_dict(expected)] and out.values.tolist() == [[1]]


def test_absent_is_empty_where_something_is_present() -> None:
    ctx = ctx_at(0, 60)
    data = vec([({"a": "1"}, [1, None])])
    out = call_vec("absent", [data], ctx, [Call("sum", (NumberLiteral(1),))])
    assert out.labels == [()] and out.present.tolist() == [[False, True]]
    assert len(call_vec("absent", [vec([({}, [1, 1])])], ctx, [selector()])) == 0


def test_absent_over_time() -> None:
    ctx = ctx_at(60, 120)
    expr = MatrixSelector(selector(("job", "=", "grok")), 60_000)
    rv = RangeVector(
        [from_dict({"job": "grok"})],
        np.array([30_000], dtype=np.int64),
        np.array([1.0]),
        np.array([0, 1], dtype=np.int64),
        np.array([[0, 1]], dtype=np.int64),
        np.array([[1, 1]], dtype=np.int64),
        ctx.times_ms,
        60_000,
    )
    out = call_vec("absent_over_time", [rv], ctx, [expr])
    assert out.labels == [from_dict({"job": "grok"})] and out.present.tolist() == [[False, True]]
