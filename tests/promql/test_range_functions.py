"""Range-vector functions on hand-built ``RangeVector``s, with hand-computed expectations."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pytest

from watchkeeper.errors import EvalError
from watchkeeper.labels import Labels, from_dict
from watchkeeper.promql.functions import FUNCTIONS
from watchkeeper.promql.range_functions import RANGE_FUNCTIONS
from watchkeeper.promql.values import EvalContext, RangeVector, Scalar, StepVector, Value

Samples = Sequence[tuple[float, float]]  # (seconds, value)


def ctx_at(*times_s: float) -> EvalContext:
    times = np.array([round(t * 1000) for t in times_s], dtype=np.int64)
    step = int(times[1] - times[0]) if len(times) > 1 else 0
    return EvalContext(int(times[0]), int(times[-1]), step, times)


def range_vector(
    series: Sequence[tuple[Labels, Samples]], ctx: EvalContext, range_s: float, *, offset_s: float = 0
) -> RangeVector:
    """Windows (end - range, end] at each step of ``ctx``, as the engine builds them."""
    range_ms = round(range_s * 1000)
    ends = ctx.times_ms - round(offset_s * 1000)
    ts_parts, val_parts, offsets, los, his = [], [], [0], [], []
    for _, samples in series:
        ts = np.array([round(t * 1000) for t, _ in samples], dtype=np.int64)
        base = offsets[-1]
        los.append(base + np.searchsorted(ts, ends - range_ms, side="right"))
        his.append(base + np.searchsorted(ts, ends, side="right"))
        ts_parts.append(ts)
        val_parts.append(np.array([v for _, v in samples], dtype=np.float64))
        offsets.append(base + len(samples))
    steps = ctx.steps
    return RangeVector(
        [lbls for lbls, _ in series],
        np.concatenate(ts_parts) if ts_parts else np.empty(0, dtype=np.int64),
        np.concatenate(val_parts) if val_parts else np.empty(0),
        np.array(offsets, dtype=np.int64),
        np.array(los, dtype=np.int64).reshape(len(series), steps),
        np.array(his, dtype=np.int64).reshape(len(series), steps),
        ends,
        range_ms,
    )


def call(name: str, args: list[Value], ctx: EvalContext) -> StepVector:
    out = FUNCTIONS[name].impl(args, [], ctx)
    assert isinstance(out, StepVector)
    return out


def scalar(value: float, ctx: EvalContext) -> Scalar:
    return Scalar(np.full(ctx.steps, value))


def single(
    name: str, samples: Samples, *, at: float, range_s: float, extra: Sequence[float] = ()
) -> float | None:
    """The one value of ``name(metric[range])`` at ``at``, or None when there is no result."""
    ctx = ctx_at(at)
    rv = range_vector([(from_dict({"__name__": "m_total"}), samples)], ctx, range_s)
    scalars: list[Value] = [scalar(x, ctx) for x in extra]
    args: list[Value] = [*scalars[:1], rv] if name == "quantile_over_time" else [rv, *scalars]
    out = call(name, args, ctx)
    if len(out) == 0:
        return None
    assert out.present[0, 0]
    return float(out.values[0, 0])


def series(values: Sequence[float], interval_s: float = 60, start_s: float = 0) -> list[tuple[float, float]]:
    return [(start_s + i * interval_s, v) for i, v in enumerate(values)]


# --- rate family ---------------------------------------------------------------------------------


def test_increase_adds_counter_reset_and_extrapolates_to_window_start() -> None:
    # Window (0s, 180s] holds 10 @60, 2 @120 (reset), 12 @180: raw increase 12 - 10 + 10 = 12.
    # The first sample is one average interval (60s < 66s) from the start: extrapolate 60s,
    # the zero point (100s back) is further. Factor (120 + 60) / 120.
    samples = series([0, 10, 2, 12])
    assert single("increase", samples, at=180, range_s=180) == pytest.approx(18)
    assert single("rate", samples, at=180, range_s=180) == pytest.approx(0.1)


def test_reset_corrections_keep_precision_after_a_huge_reset() -> None:
    # Window (110s, 240s]: 10, 0 (reset), 10 -> 20 - 10 + 10. An earlier reset from 1e17 must not
    # leak rounding into it. Extrapolated 10s to the window start: × 130 / 120.
    samples = series([1e17, 0, 10, 0, 10])
    assert single("increase", samples, at=240, range_s=130) == pytest.approx(10 * 130 / 120, rel=1e-12)


def test_counter_extrapolation_stops_at_zero() -> None:
    # 1 @60, 11 @120, 21 @180: extrapolating 60s back would go below zero; the counter reaches
    # zero 120 * 1/20 = 6s before the first sample.
    assert single("increase", series([1, 11, 21], start_s=60), at=180, range_s=180) == pytest.approx(21)


def test_extrapolation_limited_to_half_an_interval_when_samples_end_early() -> None:
    # Samples 100s..120s in window (0, 180]: both gaps exceed 1.1 × 10s, so only 5s each side.
    samples = series([0, 10, 20], interval_s=10, start_s=100)
    assert single("delta", samples, at=180, range_s=180) == pytest.approx(30)
    # As a counter starting at 0 it cannot have started before its first sample.
    assert single("rate", samples, at=180, range_s=180) == pytest.approx(25 / 180)


def test_delta_does_not_treat_decreases_as_resets() -> None:
    assert single("delta", series([200, 150, 100]), at=120, range_s=121) == pytest.approx(-100 * 121 / 120)


def test_rate_needs_two_samples() -> None:
    assert single("rate", series([5]), at=0, range_s=60) is None
    assert single("rate", series([5, 6]), at=300, range_s=60) is None  # empty window


def test_irate_and_idelta_use_the_last_two_samples() -> None:
    samples = series([0, 10, 2])
    assert single("irate", samples, at=120, range_s=300) == pytest.approx(2 / 60)  # reset: 2 - 0
    assert single("idelta", samples, at=120, range_s=300) == pytest.approx(-8)
    assert single("irate", series([0, 10, 40]), at=120, range_s=300) == pytest.approx(0.5)
    nan = single("irate", series([1, math.nan]), at=60, range_s=300)
    assert nan is not None and math.isnan(nan)


def test_resets_and_changes_count_pairs_inside_the_window() -> None:
    samples = series([1, 2, 1, 1, math.nan, math.nan, 3])
    assert single("resets", samples, at=360, range_s=400) == 1
    assert single("changes", samples, at=360, range_s=400) == 4  # NaN -> NaN is no change
    assert single("changes", series([7]), at=0, range_s=60) == 0
    assert single("resets", series([3, 2, 1]), at=120, range_s=61) == 1  # only the 2 -> 1 pair


def test_rate_drops_the_metric_name_and_flags_non_counter_names() -> None:
    ctx = ctx_at(120)
    rv = range_vector(
        [
            (from_dict({"__name__": "requests", "job": "a"}), series([0, 1, 2])),
            (from_dict({"__name__": "requests_total", "job": "a"}), series([0, 1, 2])),
            (from_dict({"__name__": "requests", "job": "b"}), series([0, 1, 2])),
        ],
        ctx,
        180,
    )
    out = call("rate", [rv], ctx)
    assert out.drop_name is not None and out.drop_name.all()
    assert ctx.infos == [
        "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: "
        '"requests"'
    ]
    ctx2 = ctx_at(120)
    call("delta", [range_vector([(from_dict({"__name__": "x"}), series([0, 1]))], ctx2, 180)], ctx2)
    assert ctx2.infos == []


def test_rate_over_several_steps_and_series_at_once() -> None:
    ctx = ctx_at(60, 120, 180, 240)
    a = (from_dict({"s": "a"}), series([0, 10, 20, 30, 40]))
    b = (from_dict({"s": "b"}), series([5, 5, 1, 2, 3], start_s=30))
    out = call("increase", [range_vector([a, b], ctx, 120)], ctx)
    assert out.labels == [a[0], b[0]]
    np.testing.assert_allclose(out.values[0], [10, 20, 20, 20])
    # b at 240: window (120, 240] = 2 @150, 3 @210; 30s to each edge < 1.1 × 60s: full range.
    assert out.values[1, 3] == pytest.approx(2)
    # b at 60: window (-60, 60] holds only its first sample.
    assert out.present.tolist() == [[True] * 4, [False, True, True, True]]


@pytest.mark.parametrize("name", ["rate", "increase"])
def test_rate_of_many_series_is_each_series_alone(name: str) -> None:
    """A series starting below where the one before it ends is not a counter reset; one with a
    real reset is still corrected, whether or not its neighbours have any."""
    ctx = ctx_at(*range(60, 601, 60))
    rng = np.random.default_rng(7)
    parts = []
    for k in range(6):
        values = np.cumsum(rng.integers(0, 20, 12)).astype(float) + (1000 if k % 2 else 0)
        reset_at = {2: 1, 3: 7, 5: 11}.get(k)  # right after a series' first sample, inside, at its end
        if reset_at is not None:
            values[reset_at:] -= values[reset_at - 1] + 1
        parts.append((from_dict({"s": str(k)}), series(values.tolist(), start_s=float(rng.integers(0, 50)))))
    together = call(name, [range_vector(parts, ctx, 180)], ctx)
    for k, part in enumerate(parts):
        alone = call(name, [range_vector([part], ctx, 180)], ctx)
        np.testing.assert_array_equal(together.present[k], alone.present[0])
        np.testing.assert_array_equal(together.values[k], alone.values[0])


# --- *_over_time ---------------------------------------------------------------------------------


def test_sum_and_avg_over_time_use_kahan_summation() -> None:
    samples = series([1, 1e100, 1, -1e100], interval_s=10)
    assert single("sum_over_time", samples, at=30, range_s=60) == 2
    assert single("avg_over_time", samples, at=30, range_s=60) == 0.5


def test_avg_over_time_switches_to_incremental_mean_on_overflow() -> None:
    big = 9.988465674311579e307
    assert single("avg_over_time", series([big, big]), at=60, range_s=120) == pytest.approx(big)
    assert single("sum_over_time", series([big, big]), at=60, range_s=120) == math.inf
    assert single("avg_over_time", series([-big, big]), at=60, range_s=120) == 0
    assert single("avg_over_time", series([math.inf, 0, math.inf]), at=120, range_s=180) == math.inf
    nan = single("avg_over_time", series([1, 2, math.inf, -math.inf]), at=180, range_s=240)
    assert nan is not None and math.isnan(nan)


def test_count_last_first_and_their_timestamps() -> None:
    samples = series([3, 1, 2], interval_s=10.053)
    assert single("count_over_time", samples, at=30, range_s=60) == 3
    assert single("last_over_time", samples, at=30, range_s=60) == 2
    assert single("first_over_time", samples, at=30, range_s=60) == 3
    assert single("ts_of_last_over_time", samples, at=30, range_s=60) == pytest.approx(20.106)
    assert single("ts_of_first_over_time", samples, at=30, range_s=60) == 0
    assert single("present_over_time", samples, at=30, range_s=60) == 1
    assert single("count_over_time", samples, at=200, range_s=60) is None


def test_last_over_time_keeps_the_name_unless_the_input_drops_it() -> None:
    ctx = ctx_at(60)
    rv = range_vector([(from_dict({"__name__": "m"}), series([1, 2]))] * 2, ctx, 120)
    rv.drop_name = np.array([False, True])
    for name in ("last_over_time", "first_over_time"):
        drop = call(name, [rv], ctx).drop_name
        assert drop is not None and drop.tolist() == [False, True]
    drop = call("max_over_time", [rv], ctx).drop_name
    assert drop is not None and drop.tolist() == [True, True]


def test_min_and_max_over_time_ignore_nan_unless_all_nan() -> None:
    samples = series([math.nan, 2, math.nan, 1])
    assert single("min_over_time", samples, at=180, range_s=240) == 1
    assert single("max_over_time", samples, at=180, range_s=240) == 2
    nan = single("max_over_time", series([math.nan, math.nan]), at=60, range_s=120)
    assert nan is not None and math.isnan(nan)


def test_ts_of_min_and_max_take_the_latest_extreme() -> None:
    samples = series([1, 5, 0, 5, 0, 3])
    assert single("ts_of_max_over_time", samples, at=300, range_s=360) == 180
    assert single("ts_of_min_over_time", samples, at=300, range_s=360) == 240


def test_stddev_and_stdvar_over_time() -> None:
    samples = series([0, 8, 8, 2, 3], interval_s=10)
    assert single("stdvar_over_time", samples, at=60, range_s=120) == pytest.approx(10.56)
    assert single("stddev_over_time", samples, at=60, range_s=120) == pytest.approx(3.249615)
    same = series([1.5990505637277868] * 3, interval_s=10)
    assert single("stdvar_over_time", same, at=20, range_s=60) == 0


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0, 0), (0.5, 1), (0.75, 2.5), (0.8, 2.8), (1, 4), (-1, -math.inf), (2, math.inf)],
)
def test_quantile_over_time(q: float, expected: float) -> None:
    got = single("quantile_over_time", series([0, 1, 4]), at=120, range_s=180, extra=[q])
    assert got == pytest.approx(expected)


def test_quantile_over_time_warns_about_invalid_quantiles() -> None:
    ctx = ctx_at(60)
    rv = range_vector([((), series([1, 2]))], ctx, 120)
    call("quantile_over_time", [scalar(2, ctx), rv], ctx)
    assert ctx.warnings == ["PromQL warning: quantile value should be between 0 and 1, got 2"]


def test_mad_over_time() -> None:
    assert single("mad_over_time", series([4, 6, 2, 1, 999, 1, 2]), at=360, range_s=420) == 1
    assert single("mad_over_time", series([5]), at=0, range_s=10) == 0
    nan = single("mad_over_time", series([1, 2, math.nan, 4]), at=180, range_s=240)
    assert nan is not None and math.isnan(nan)


def test_deriv_and_predict_linear() -> None:
    samples = series([0, 1, 2])
    assert single("deriv", samples, at=120, range_s=180) == pytest.approx(1 / 60)
    # Anchored at the evaluation time 120s: 2 + 60s × 1/60.
    assert single("predict_linear", samples, at=120, range_s=180, extra=[60]) == pytest.approx(3)
    assert single("deriv", series([7, 7, 7]), at=120, range_s=180) == 0
    nan = single("deriv", series([math.inf, math.inf]), at=60, range_s=120)
    assert nan is not None and math.isnan(nan)
    assert single("deriv", series([1]), at=0, range_s=60) is None


def test_predict_linear_regresses_against_the_evaluation_time_not_the_window_end() -> None:
    # The window is pinned (like `@ 120`) but the query is evaluated at 180s.
    ctx = ctx_at(180)
    rv = range_vector([((), series([0, 1, 2]))], ctx, 180, offset_s=60)
    out = call("predict_linear", [rv, scalar(0, ctx)], ctx)
    assert out.values[0, 0] == pytest.approx(3)


def test_double_exponential_smoothing() -> None:
    # s1=0, b=10 | x=5, y=.5×(0+10) -> 10 | b=.5×10+.5×10, y=.5×(10+10) -> 20 | ... -> 30
    samples = series([0, 10, 20, 30])
    assert single("double_exponential_smoothing", samples, at=180, range_s=240, extra=[0.5, 0.5]) == 30
    assert single("double_exponential_smoothing", series([1]), at=0, range_s=60, extra=[0.5, 0.5]) is None
    with pytest.raises(EvalError, match=r"^invalid smoothing factor. Expected: 0 < sf < 1, got: 1.000000$"):
        single("double_exponential_smoothing", samples, at=180, range_s=240, extra=[1, 0.5])
    with pytest.raises(EvalError, match=r"^invalid trend factor"):
        single("double_exponential_smoothing", samples, at=180, range_s=240, extra=[0.5, 0])


def test_empty_range_vector_gives_empty_vector() -> None:
    ctx = ctx_at(0, 60)
    rv = range_vector([], ctx, 60)
    for name in ("rate", "sum_over_time", "quantile_over_time", "deriv", "mad_over_time"):
        args: list[Value] = [scalar(0.5, ctx), rv] if name == "quantile_over_time" else [rv]
        assert len(call(name, args, ctx)) == 0


@pytest.mark.parametrize("name", sorted(set(RANGE_FUNCTIONS) - {"quantile_over_time"}))
def test_windows_after_the_last_sample_are_absent(name: str) -> None:
    ctx = ctx_at(60, 6000)
    rv = range_vector([(from_dict({"a": "1"}), series([0, 1, 2]))], ctx, 180)
    extra = {"predict_linear": 1, "double_exponential_smoothing": 2}.get(name, 0)
    out = call(name, [rv, *[scalar(0.5, ctx)] * extra], ctx)
    assert out.present.tolist() == [[True, False]]


def _reference(name: str, window: list[float]) -> float:
    if name == "sum_over_time":
        return math.fsum(window)
    if name == "max_over_time":
        return max(window)
    if name == "quantile_over_time":
        ordered = sorted(window)
        rank = 0.3 * (len(ordered) - 1)
        low = math.floor(rank)
        high = min(len(ordered) - 1, low + 1)
        return ordered[low] * (1 - (rank - low)) + ordered[high] * (rank - low)
    return len(window)


@pytest.mark.parametrize("name", ["sum_over_time", "max_over_time", "quantile_over_time", "count_over_time"])
def test_vectorised_windows_match_a_per_window_reference(name: str) -> None:
    rng = np.random.default_rng(7)
    ctx = ctx_at(*range(0, 1200, 45))
    data = []
    for s in range(6):
        times = np.sort(rng.choice(np.arange(0, 1200, 5), size=rng.integers(1, 120), replace=False))
        data.append((from_dict({"s": str(s)}), [(float(t), float(rng.normal())) for t in times]))
    rv = range_vector(data, ctx, 200)
    args: list[Value] = [scalar(0.3, ctx), rv] if name == "quantile_over_time" else [rv]
    out = call(name, args, ctx)
    got = {
        (lbls, j): out.values[i, j]
        for i, lbls in enumerate(out.labels)
        for j in range(ctx.steps)
        if out.present[i, j]
    }
    expected = {}
    for lbls, samples in data:
        for j, end in enumerate(ctx.times_ms / 1000):
            window = [v for t, v in samples if end - 200 < t <= end]
            if window:
                expected[(lbls, j)] = _reference(name, window)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12)


# --- vectorised results against one-window-at-a-time ports of Prometheus' Go code ---------------


def _kahan(inc: float, total: float, comp: float) -> tuple[float, float]:
    t = total + inc
    if math.isinf(t):
        return t, 0.0
    if abs(total) >= abs(inc):
        return t, comp + ((total - t) + inc)
    return t, comp + ((inc - t) + total)


def _go_rate(
    ts: list[float], vs: list[float], end: float, rng: float, counter: bool, rate: bool
) -> float | None:
    if len(vs) < 2:
        return None
    result = vs[-1] - vs[0]
    if counter:
        for prev, cur in itertools.pairwise(vs):
            if cur < prev:
                result += prev
    to_start, to_end = ts[0] - (end - rng), end - ts[-1]
    sampled = ts[-1] - ts[0]
    average = sampled / (len(vs) - 1)
    if to_start >= average * 1.1:
        to_start = average / 2
    if counter and result > 0 and vs[0] >= 0:
        to_start = min(to_start, sampled * (vs[0] / result))
    if to_end >= average * 1.1:
        to_end = average / 2
    factor = (sampled + to_start + to_end) / sampled
    return result * factor / (rng if rate else 1)


def _go_over_time(name: str, ts: list[float], vs: list[float], end: float, rng: float) -> float | None:
    if name in ("rate", "increase", "delta"):
        return _go_rate(ts, vs, end, rng, name != "delta", name == "rate")
    if name in ("irate", "idelta"):
        if len(vs) < 2:
            return None
        if name == "irate":
            return (vs[-1] if vs[-1] < vs[-2] else vs[-1] - vs[-2]) / (ts[-1] - ts[-2])
        return vs[-1] - vs[-2]
    if not vs:
        return None
    pairs = list(itertools.pairwise(vs))
    if name == "resets":
        return sum(cur < prev for prev, cur in pairs)
    if name == "changes":
        return sum(cur != prev and not (math.isnan(cur) and math.isnan(prev)) for prev, cur in pairs)
    if name == "sum_over_time":
        total = comp = 0.0
        for v in vs:
            total, comp = _kahan(v, total, comp)
        return total if math.isinf(total) else total + comp
    if name in ("stdvar_over_time", "stddev_over_time"):
        count = mean = c_mean = aux = c_aux = 0.0
        for v in vs:
            count += 1
            delta = v - (mean + c_mean)
            mean, c_mean = _kahan(delta / count, mean, c_mean)
            aux, c_aux = _kahan(delta * (v - (mean + c_mean)), aux, c_aux)
        variance = (aux + c_aux) / count
        return variance if name == "stdvar_over_time" else math.sqrt(variance)
    if name in ("min_over_time", "max_over_time", "ts_of_min_over_time", "ts_of_max_over_time"):
        best, best_t = vs[0], ts[0]
        for t, v in zip(ts, vs, strict=True):
            better = {
                "min_over_time": v < best,
                "max_over_time": v > best,
                "ts_of_min_over_time": v <= best,
                "ts_of_max_over_time": v >= best,
            }[name]
            if better or math.isnan(best):
                best, best_t = v, t
        return best_t if name.startswith("ts_of") else best
    if name == "deriv":
        if len(vs) < 2:
            return None
        n, sx, sy, sxy, sx2 = float(len(vs)), 0.0, 0.0, 0.0, 0.0
        cs = [0.0] * 4
        for t, v in zip(ts, vs, strict=True):
            x = t - ts[0]
            sx, cs[0] = _kahan(x, sx, cs[0])
            sy, cs[1] = _kahan(v, sy, cs[1])
            sxy, cs[2] = _kahan(x * v, sxy, cs[2])
            sx2, cs[3] = _kahan(x * x, sx2, cs[3])
        if all(v == vs[0] for v in vs):
            return math.nan if math.isinf(vs[0]) else 0.0
        sx, sy, sxy, sx2 = sx + cs[0], sy + cs[1], sxy + cs[2], sx2 + cs[3]
        return (sxy - sx * sy / n) / (sx2 - sx * sx / n)
    return {"count_over_time": len(vs), "last_over_time": vs[-1], "first_over_time": vs[0]}[name]


COMPARED = [
    "rate", "increase", "delta", "irate", "idelta", "resets", "changes", "sum_over_time",
    "stdvar_over_time", "stddev_over_time", "min_over_time", "max_over_time", "ts_of_min_over_time",
    "ts_of_max_over_time", "deriv", "count_over_time", "last_over_time", "first_over_time",
]  # fmt: skip


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("name", COMPARED)
def test_vectorised_functions_match_per_window_go_ports(name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ctx = ctx_at(*range(0, 900, 37))
    data = []
    for s in range(5):
        times = np.sort(rng.choice(np.arange(0, 900, 3), size=int(rng.integers(0, 80)), replace=False))
        values = np.cumsum(rng.integers(0, 5, size=times.shape[0])).astype(float)
        values[rng.random(times.shape[0]) < 0.1] = 0  # counter resets
        values[rng.random(times.shape[0]) < 0.03] = rng.choice([math.nan, math.inf, -7.5])
        data.append((from_dict({"s": str(s)}), list(zip(times.tolist(), values.tolist(), strict=True))))
    rv = range_vector(data, ctx, 120)
    out = call(name, [rv], ctx)
    got = {
        (lbls, j): out.values[i, j]
        for i, lbls in enumerate(out.labels)
        for j in range(ctx.steps)
        if out.present[i, j]
    }
    expected = {}
    for lbls, samples in data:
        for j, end in enumerate((ctx.times_ms / 1000).tolist()):
            window = [(t, v) for t, v in samples if end - 120 < t <= end]
            value = _go_over_time(name, [t for t, _ in window], [v for _, v in window], end, 120)
            if value is not None:
                expected[(lbls, j)] = value
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), key


@pytest.mark.parametrize("name", ["rate", "increase", "delta"])
def test_rate_in_small_blocks_matches_go_ports(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``rate`` works a block of series at a time: blocks of one row (and counter resets in some
    of them only) give the same answers."""
    from watchkeeper.promql import range_functions

    monkeypatch.setattr(range_functions, "_RATE_BLOCK_CELLS", 1)
    rng = np.random.default_rng(11)
    ctx = ctx_at(*range(0, 600, 30))
    data = []
    for s in range(7):
        times = np.sort(rng.choice(np.arange(0, 600, 4), size=int(rng.integers(0, 60)), replace=False))
        values = np.cumsum(rng.integers(0, 9, size=times.shape[0])).astype(float)
        if s % 3 == 0:
            values[rng.random(times.shape[0]) < 0.1] = 0  # resets in some series only
        data.append((from_dict({"s": str(s)}), list(zip(times.tolist(), values.tolist(), strict=True))))
    rv = range_vector(data, ctx, 90)
    out = call(name, [rv], ctx)
    got = {
        (lbls, j): out.values[i, j]
        for i, lbls in enumerate(out.labels)
        for j in range(ctx.steps)
        if out.present[i, j]
    }
    expected = {}
    for lbls, samples in data:
        for j, end in enumerate((ctx.times_ms / 1000).tolist()):
            window = [(t, v) for t, v in samples if end - 90 < t <= end]
            value = _go_over_time(name, [t for t, _ in window], [v for _, v in window], end, 90)
            if value is not None:
                expected[(lbls, j)] = value
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key
    assert np.isnan(out.values[~out.present]).all()


@pytest.mark.parametrize(("values", "negative"), [([-0.0, 0.0], True), ([0.0, -0.0], False), ([-0.0], True)])
def test_max_over_time_keeps_the_first_of_tied_zeros(values: list[float], negative: bool) -> None:
    """``-0`` and ``0`` compare equal: the first one stays (Go's ``>``), and prints as ``-0``."""
    for name in ("max_over_time", "min_over_time"):
        got = single(name, series(values), at=60, range_s=120)
        assert got == 0 and math.copysign(1, got) == (-1 if negative else 1), name
