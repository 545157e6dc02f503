"""``histogram_quantile`` and ``histogram_fraction`` over classic ``le`` buckets."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from watchkeeper.labels import from_dict
from watchkeeper.promql.functions import FUNCTIONS
from watchkeeper.promql.histograms import (
    bucket_fraction,
    bucket_quantile,
    format_openmetrics_float,
    parse_bound,
)
from watchkeeper.promql.values import EvalContext, Scalar, StepVector, StringValue, Value

NAME = "request_seconds_bucket"


def ctx_steps(steps: int) -> EvalContext:
    times = np.arange(steps, dtype=np.int64) * 60_000
    return EvalContext(0, int(times[-1]), 60_000, times)


def buckets(counts: Mapping[str, Sequence[float | None]], **labels: str) -> StepVector:
    """One histogram: ``le`` -> counts per step (None = bucket absent at that step)."""
    rows = list(counts.items())
    values = np.array([[math.nan if c is None else c for c in cs] for _, cs in rows], dtype=np.float64)
    present = np.array([[c is not None for c in cs] for _, cs in rows], dtype=bool)
    lbls = [from_dict({"__name__": NAME, "le": le, **labels}) for le, _ in rows]
    return StepVector(lbls, values, present)


def concat(*vectors: StepVector) -> StepVector:
    return StepVector(
        [lbls for v in vectors for lbls in v.labels],
        np.concatenate([v.values for v in vectors]),
        np.concatenate([v.present for v in vectors]),
    )


def quantile(q: float, data: StepVector, ctx: EvalContext | None = None) -> StepVector:
    ctx = ctx or ctx_steps(data.values.shape[1])
    out = FUNCTIONS["histogram_quantile"].impl([Scalar(np.full(ctx.steps, q)), data], [], ctx)
    assert isinstance(out, StepVector)
    return out


def fraction(lower: float, upper: float, data: StepVector) -> float:
    ctx = ctx_steps(1)
    args: list[Value] = [Scalar(np.array([lower])), Scalar(np.array([upper])), data]
    out = FUNCTIONS["histogram_fraction"].impl(args, [], ctx)
    assert isinstance(out, StepVector) and len(out) == 1
    return float(out.values[0, 0])


HIST = buckets({"1": [2], "2": [6], "+Inf": [8]})


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.1, 0.4),  # rank 0.8 in (0, 1]: a natural lower bound of 0
        (0.5, 1.5),  # rank 4: 2 into the 4 observations of (1, 2]
        (0.75, 2.0),
        (0.9, 2.0),  # in the +Inf bucket: the highest finite bound
        (0.0, 0.0),
        (1.0, 2.0),
        (-0.5, -math.inf),
        (1.5, math.inf),
    ],
)
def test_histogram_quantile_interpolates_linearly_in_buckets(q: float, expected: float) -> None:
    out = quantile(q, HIST)
    assert out.labels == [from_dict({"__name__": NAME})]
    assert out.values[0, 0] == pytest.approx(expected)
    assert out.drop_name is not None and out.drop_name.tolist() == [True]


@pytest.mark.parametrize(
    "counts",
    [
        {"1": [2], "2": [6]},  # no +Inf bucket
        {"+Inf": [6]},  # fewer than two buckets
        {"1": [0], "+Inf": [0]},  # no observations
    ],
)
def test_histogram_quantile_is_nan_for_unusable_buckets(counts: dict[str, Sequence[float]]) -> None:
    out = quantile(0.5, buckets(counts))
    assert len(out) == 1 and math.isnan(out.values[0, 0])


def test_nan_quantile_and_invalid_quantile_warning() -> None:
    assert math.isnan(quantile(math.nan, HIST).values[0, 0])
    ctx = ctx_steps(1)
    quantile(1.5, HIST, ctx)
    assert ctx.warnings == ["PromQL warning: quantile value should be between 0 and 1, got 1.5"]


def test_first_bucket_at_or_below_zero_returns_its_bound() -> None:
    out = quantile(0.25, buckets({"-1": [2], "1": [4], "+Inf": [4]}))
    assert out.values[0, 0] == -1


def test_non_monotonic_buckets_are_fixed_and_reported() -> None:
    ctx = ctx_steps(1)
    out = quantile(0.5, buckets({"1": [5], "2": [3], "+Inf": [8]}), ctx)
    # Counts become 5, 5, 8: rank 4 falls into (0, 1].
    assert out.values[0, 0] == pytest.approx(0.8)
    assert ctx.infos == [
        "PromQL info: input to histogram_quantile needed to be fixed for monotonicity (see "
        "https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) "
        f'for metric name "{NAME}"'
    ]
    tiny = ctx_steps(1)
    quantile(0.5, buckets({"1": [5], "2": [5 - 1e-13], "+Inf": [8]}), tiny)
    assert tiny.infos == []  # floating-point noise is corrected silently


def test_groups_by_labels_without_le_and_warns_about_bad_le() -> None:
    ctx = ctx_steps(1)
    data = concat(
        buckets({"1": [2], "+Inf": [4]}, job="a"),
        buckets({"1": [1], "+Inf": [4]}, job="b"),
        buckets({"oops": [100]}, job="a"),
        StepVector([from_dict({"__name__": NAME, "job": "c"})], np.array([[1.0]]), np.array([[True]])),
    )
    out = quantile(0.5, data, ctx)
    assert dict(zip(out.labels, out.values[:, 0].tolist(), strict=True)) == {
        from_dict({"__name__": NAME, "job": "a"}): 1.0,
        from_dict({"__name__": NAME, "job": "b"}): 1.0,
    }
    assert ctx.warnings == [
        'PromQL warning: bucket label "le" is missing or has a malformed value of "oops" for metric name '
        f'"{NAME}"',
        'PromQL warning: bucket label "le" is missing or has a malformed value of "" for metric name '
        f'"{NAME}"',
    ]


def test_equal_bounds_are_coalesced() -> None:
    out = quantile(0.5, buckets({"1": [1], "1.0": [1], "+Inf": [4]}))
    assert out.values[0, 0] == pytest.approx(1.0)


def test_each_step_uses_the_buckets_present_then() -> None:
    data = buckets({"1": [2, None, None], "2": [6, 6, None], "+Inf": [8, 8, None]})
    out = quantile(0.5, data)
    # Step 1 lacks le="1": rank 4 in (0, 2] holding 6 -> 4/6 × 2.
    assert out.values[0, :2] == pytest.approx([1.5, 4 / 3])
    assert out.present.tolist() == [[True, True, False]]


def test_native_histogram_functions_ignore_float_series() -> None:
    ctx = ctx_steps(1)
    for name in ("histogram_count", "histogram_sum", "histogram_avg", "histogram_stddev", "histogram_stdvar"):
        out = FUNCTIONS[name].impl([HIST], [], ctx)
        assert isinstance(out, StepVector) and len(out) == 0


@pytest.mark.parametrize(
    ("lower", "upper", "expected"),
    [
        (0, 1, 0.25),
        (-math.inf, 1.5, 0.5),  # 2 + half of the 4 in (1, 2]
        (1.5, math.inf, 0.5),
        (0, 0.5, 0.125),
        (-math.inf, 100, 0.75),  # the +Inf bucket lies above every finite bound
        (-math.inf, math.inf, 1.0),
        (2, 1, 0.0),
    ],
)
def test_histogram_fraction(lower: float, upper: float, expected: float) -> None:
    assert fraction(lower, upper, HIST) == pytest.approx(expected)


def test_histogram_fraction_nan_cases() -> None:
    assert math.isnan(fraction(math.nan, 1, HIST))
    assert math.isnan(fraction(0, 1, buckets({"1": [0], "+Inf": [0]})))
    assert math.isnan(fraction(0, 1, buckets({"1": [2], "2": [4]})))


def test_bucket_functions_vectorise_over_steps() -> None:
    bounds = np.array([1.0, 2.0, math.inf])
    counts = np.array([[2.0, 0.0], [6.0, 4.0], [8.0, 4.0]])
    values, forced = bucket_quantile(np.array([0.5, 0.5]), bounds, counts)
    assert values.tolist() == pytest.approx([1.5, 1.5])
    assert not forced.any()
    shares = bucket_fraction(np.array([1.0, 1.0]), np.array([2.0, 2.0]), bounds, counts)
    assert shares.tolist() == pytest.approx([0.5, 1.0])


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0.5", 0.5),
        ("+Inf", math.inf),
        ("1e3", 1000.0),
        ("0x1p-2", 0.25),
        ("", None),
        (" 1", None),
        ("1_0", None),
    ],
)
def test_le_parsing_follows_go(text: str, value: float | None) -> None:
    assert parse_bound(text) == value


def test_histogram_quantiles_labels_each_quantile() -> None:
    ctx = ctx_steps(1)
    args: list[Value] = [HIST, StringValue("quantile"), Scalar(np.array([0.5])), Scalar(np.array([1.0]))]
    out = FUNCTIONS["histogram_quantiles"].impl(args, [], ctx)
    assert isinstance(out, StepVector)
    got = dict(zip(out.labels, out.values[:, 0].tolist(), strict=True))
    assert got == {
        from_dict({"__name__": NAME, "quantile": "0.5"}): 1.5,
        from_dict({"__name__": NAME, "quantile": "1.0"}): 2.0,
    }
    assert out.drop_name is not None and out.drop_name.all()


@pytest.mark.parametrize(
    ("value", "text"), [(1.0, "1.0"), (0.0, "0.0"), (0.99, "0.99"), (100.0, "100.0"), (1e6, "1e+06")]
)
def test_openmetrics_float_format(value: float, text: str) -> None:
    assert format_openmetrics_float(value) == text
