"""Range-vector functions (``rate`` family, ``*_over_time``, ``deriv`` ...), vectorised over windows.

Each function takes a ``RangeVector`` (samples of all series concatenated, with the index window
``[lo, hi)`` of every (series, step)) and returns a ``StepVector`` of shape (series, steps); a
(series, step) with no result is absent, and series without any result are dropped. Semantics
follow Prometheus 3.x ``promql/functions.go``, float samples only. Three techniques, cheapest
first:

* O(1) per window from the window ends and cumulative sums: ``count``, ``last``, ``irate``,
  ``rate``/``increase`` (counter resets through a cumulative correction array), ``resets``;
* sequential recurrences (Kahan sums, running means, min/max, regression, smoothing) run
  position by position *across all windows at once*: windows are sorted by length, so at
  position k the windows still running are a prefix of that order (``_Windows``);
* order statistics (``quantile_over_time``, ``mad_over_time``) sort padded blocks of windows.

>>> impl = RANGE_FUNCTIONS["rate"]    # impl(args, arg_exprs, ctx) -> StepVector
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from watchkeeper.errors import EvalError
from watchkeeper.labels import METRIC_NAME, MatchOp, metric_name
from watchkeeper.promql.ast import Expr, MatrixSelector, ParenExpr
from watchkeeper.promql.formatting import format_go_float
from watchkeeper.promql.values import F64, I64, Bool, EvalContext, RangeVector, Scalar, StepVector, Value

Impl = Callable[[list[Value], list[Expr], EvalContext], Value]

_COUNTER_SUFFIXES = ("_total", "_sum", "_count", "_bucket")
_BLOCK_CELLS = 1 << 22  # padded cells sorted at once by the order-statistics functions


def kahan_inc(inc: F64, total: F64, comp: F64) -> tuple[F64, F64]:
    """Prometheus' ``kahansum.Inc`` (Kahan–Neumaier), elementwise."""
    t = total + inc
    big = np.abs(total) >= np.abs(inc)
    comp = np.where(np.isinf(t), 0.0, comp + np.where(big, (total - t) + inc, (inc - t) + total))
    return t, comp


@dataclass(slots=True)
class _Windows:
    """All (series, step) windows, flattened and ordered longest first."""

    order: I64  # flat (series * steps) index of each window, longest first
    lo: I64  # first sample index of each window, in that order
    n: I64  # window lengths, descending
    running: I64  # running[k]: how many windows have more than k samples

    @classmethod
    def of(cls, rv: RangeVector, only: Bool | None = None) -> _Windows:
        """All windows, or those where ``only`` (the others count as empty)."""
        return cls.between(rv.lo, rv.hi, only)

    @classmethod
    def between(cls, lo: I64, hi: I64, only: Bool | None = None) -> _Windows:
        """The windows ``[lo, hi)`` (any shape; flattened), or those where ``only``."""
        n_flat = (hi - lo).ravel() if only is None else np.where(only, hi - lo, 0).ravel()
        order = np.argsort(-n_flat, kind="stable")
        n = n_flat[order]
        longest = int(n[0]) if n.size else 0
        running = np.searchsorted(-n, -np.arange(longest), side="left")
        return cls(order, lo.ravel()[order], n, running)

    def positions(self) -> Iterator[tuple[int, int, I64]]:
        """``(k, m, idx)``: the k-th sample index ``idx`` of each of the first m windows."""
        for k, m in enumerate(self.running.tolist()):
            yield k, m, self.lo[:m] + k

    def per_window(self, per_step: F64, series: int) -> F64:
        """A per-step array broadcast to every window, in window order."""
        return np.broadcast_to(per_step[None, :], (series, per_step.shape[0])).ravel()[self.order]

    def unsort(self, x: F64, shape: tuple[int, int]) -> F64:
        out = np.empty_like(x)
        out[self.order] = x
        return out.reshape(shape)


def _result(
    rv: RangeVector, values: F64, present: Bool, *, keep_name: bool = False, clean: bool = False
) -> StepVector:
    """The output vector; series never present are dropped. Only ``last_over_time`` and
    ``first_over_time`` keep the metric name (and then inherit the input's drop flags).
    ``clean``: ``values`` is already NaN wherever not ``present`` (and may be kept as is)."""
    if not clean:
        values = np.where(present, values, np.nan)
    any_row = present.any(axis=1)
    if bool(any_row.all()):  # the usual case: no copies
        labels = list(rv.labels)
        drop = rv.drop_name if keep_name and rv.drop_name is not None else np.full(len(labels), not keep_name)
        return StepVector(labels, values, present, drop_name=drop)
    rows = np.flatnonzero(any_row)
    if keep_name and rv.drop_name is not None:
        drop = rv.drop_name[rows]
    else:
        drop = np.full(rows.shape[0], not keep_name)
    return StepVector([rv.labels[i] for i in rows.tolist()], values[rows], present[rows], drop_name=drop)


def _counts(rv: RangeVector) -> I64:
    return rv.hi - rv.lo


def _at(arr: F64 | I64, idx: I64, ok: Bool) -> F64:
    """``arr[idx]`` where ``ok``, NaN elsewhere (idx may be out of range where not ok)."""
    if arr.shape[0] == 0:
        return np.full(idx.shape, np.nan)
    return np.where(ok, arr[np.where(ok, idx, 0)], np.nan).astype(np.float64)


def _pair_cumsum(values: F64, indicator: Callable[[F64, F64], F64]) -> F64:
    """``cum[i]`` = sum of ``indicator(prev, cur)`` over the pairs ``(j-1, j)``, ``j <= i``.
    The pairs inside a window ``[lo, hi)`` sum to ``cum[hi-1] - cum[lo]``."""
    ind = np.zeros(values.shape[0])
    if values.shape[0] > 1:
        ind[1:] = indicator(values[:-1], values[1:])
    return np.cumsum(ind)


def _scalar(args: list[Value], i: int) -> F64:
    arg = args[i]
    if not isinstance(arg, Scalar):
        raise EvalError(f"expected a scalar as argument {i + 1}")
    return arg.values


def _range(args: list[Value], i: int = 0) -> RangeVector:
    arg = args[i]
    if not isinstance(arg, RangeVector):
        raise EvalError(f"expected a range vector as argument {i + 1}")
    return arg


def _simple(fn: Callable[[RangeVector], tuple[F64, Bool]]) -> Impl:
    """A function of the range vector alone: ``fn`` gives the values and where they exist."""

    def impl(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
        rv = _range(args)
        return _result(rv, *fn(rv))

    return impl


# --- rate, increase, delta, irate, idelta --------------------------------------------------------


#: Cells (series x steps) of one block of ``rate``'s temporaries: small enough to stay in the CPU
#: cache and to keep memory flat (90k series x 481 steps would otherwise need ~20 full-size
#: temporaries, gigabytes), big enough that NumPy's per-call overhead does not matter.
_RATE_BLOCK_CELLS = 1 << 16


def _extrapolated_rate(rv: RangeVector, *, is_counter: bool, is_rate: bool) -> tuple[F64, Bool]:
    """Prometheus' ``extrapolatedRate``: needs two samples; extrapolates to the window edges
    when the first/last sample is within 1.1 average intervals of them (else half an interval),
    and for counters never below zero (Prometheus 3.x order: the 1.1x threshold first, then the
    zero point, prometheus/prometheus#13725). Values are NaN where the result is absent.

    Computed a block of series at a time; counter resets are looked for once over all samples
    and corrected only in the windows that hold one."""
    shape = rv.lo.shape
    values = np.full(shape, np.nan)
    present = np.zeros(shape, dtype=bool)
    total = int(rv.values.shape[0])
    if total == 0 or values.size == 0:
        return values, present
    resets: I64 | None = None
    if is_counter and total > 1:
        drop = rv.values[1:] < rv.values[:-1]
        # A pair across two series (a series' last sample, the next one's first) is never inside a
        # window: not a reset, so counters without resets skip the correction entirely.
        starts = rv.offsets[1:-1]
        drop[starts[(starts > 0) & (starts < total)] - 1] = False
        if drop.any():
            resets = np.zeros(total, dtype=np.int64)
            np.cumsum(drop, out=resets[1:])
    ends = rv.window_end_ms
    range_seconds = rv.range_ms / 1000
    rows = max(1, _RATE_BLOCK_CELLS // max(1, shape[1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        for a in range(0, shape[0], rows):
            b = min(shape[0], a + rows)
            lo, hi = rv.lo[a:b], rv.hi[a:b]
            n = hi - lo
            ok = n >= 2
            if not ok.any():
                continue
            first = np.minimum(lo, total - 1)
            last = hi - 1
            np.clip(last, 0, total - 1, out=last)
            t0, t1 = rv.timestamps_ms.take(first), rv.timestamps_ms.take(last)
            v0 = rv.values.take(first)
            result = rv.values.take(last)
            result -= v0
            if resets is not None:
                has_reset = ok & (resets.take(last) > resets.take(first))
                if has_reset.any():
                    result = _with_reset_corrections(rv, lo, hi, has_reset, result)
            # Integer milliseconds (exact), then seconds, as Prometheus' float64(ms) / 1000 (a
            # true division of the int64 array converts each element, then divides: the same).
            sampled = np.true_divide(t1 - t0, 1000)
            np.subtract(ends[None, :], t1, out=t1)
            to_end = np.true_divide(t1, 1000)
            np.subtract(t0, (ends - rv.range_ms)[None, :], out=t0)
            to_start = np.true_divide(t0, 1000)
            n -= 1
            average = sampled / n
            threshold = average * 1.1
            half = average
            half /= 2
            np.copyto(to_start, half, where=to_start >= threshold)
            if is_counter:
                # durationToZero = sampled * (v0 / result) where the counter went up from >= 0
                zero_ok = (result > 0) & (v0 >= 0)
                v0 /= result
                v0 *= sampled
                np.copyto(to_start, v0, where=zero_ok & (v0 < to_start))
            np.copyto(to_end, half, where=to_end >= threshold)
            to_start += sampled
            to_start += to_end
            to_start /= sampled  # the factor
            if is_rate:
                to_start /= range_seconds
            out = values[a:b]
            np.multiply(result, to_start, out=out)
            if not ok.all():
                out[~ok] = np.nan
            present[a:b] = ok
    return values, present


def _with_reset_corrections(rv: RangeVector, lo: I64, hi: I64, has_reset: Bool, result: F64) -> F64:
    """``last - first`` plus the value before each counter reset, added in sample order as
    Prometheus does (prefix-sum differences would lose precision after a large reset); only the
    windows ``[lo, hi)`` where ``has_reset`` are walked."""
    w = _Windows.between(lo, hi, has_reset)
    total = result.ravel()[w.order]
    for k, m, idx in w.positions():
        if k:
            prev, cur = rv.values[idx - 1], rv.values[idx]
            total[:m] += np.where(cur < prev, prev, 0.0)
    return np.where(has_reset, w.unsort(total, lo.shape), result)


def _selected_name(arg_exprs: list[Expr]) -> str | None:
    """The metric name every series of a ``name{...}[range]`` argument has, else None."""
    expr = arg_exprs[0] if arg_exprs else None
    while isinstance(expr, ParenExpr):
        expr = expr.expr
    if isinstance(expr, MatrixSelector):
        for m in expr.selector.matchers:
            if m.name == METRIC_NAME and m.op is MatchOp.EQUAL:
                return m.value
    return None


def _non_counter_infos(rv: RangeVector, present: Bool, ctx: EvalContext, name: str | None = None) -> None:
    """``rate``/``increase`` on a metric whose name does not look like a counter's. ``name``:
    the one name all series have (known from the selector), so no series needs looking at."""
    if name is not None:
        names = [name] if present.any() else []
    else:
        names = [metric_name(rv.labels[i]) for i in np.flatnonzero(present.any(axis=1)).tolist()]
    for metric in dict.fromkeys(names):
        if metric and not metric.endswith(_COUNTER_SUFFIXES):
            msg = (
                "PromQL info: metric might not be a counter, name does not end in "
                f'_total/_sum/_count/_bucket: "{metric}"'
            )
            if msg not in ctx.infos:
                ctx.infos.append(msg)


def _rate_impl(*, is_counter: bool, is_rate: bool, check_name: bool) -> Impl:
    def impl(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
        rv = _range(args)
        values, present = _extrapolated_rate(rv, is_counter=is_counter, is_rate=is_rate)
        if check_name:
            _non_counter_infos(rv, present, ctx, _selected_name(arg_exprs))
        return _result(rv, values, present, clean=True)

    return impl


def _instant_value(rv: RangeVector, *, is_rate: bool) -> tuple[F64, Bool]:
    """``irate``/``idelta`` from the last two samples of each window."""
    ok = _counts(rv) >= 2
    t0, t1 = _at(rv.timestamps_ms, rv.hi - 2, ok), _at(rv.timestamps_ms, rv.hi - 1, ok)
    v0, v1 = _at(rv.values, rv.hi - 2, ok), _at(rv.values, rv.hi - 1, ok)
    interval = t1 - t0
    ok = ok & (interval != 0)
    if not is_rate:
        return v1 - v0, ok
    return np.where(v1 < v0, v1, v1 - v0) / (interval / 1000), ok


def _pair_count(rv: RangeVector, indicator: Callable[[F64, F64], F64]) -> tuple[F64, Bool]:
    """``resets``/``changes``: how many adjacent sample pairs of each window satisfy ``indicator``."""
    ok = _counts(rv) >= 1
    cum = _pair_cumsum(rv.values, indicator)
    return _at(cum, rv.hi - 1, ok) - _at(cum, rv.lo, ok), ok


def _is_reset(prev: F64, cur: F64) -> F64:
    return np.asarray(cur < prev, dtype=np.float64)


def _is_change(prev: F64, cur: F64) -> F64:
    return np.asarray((cur != prev) & ~(np.isnan(cur) & np.isnan(prev)), dtype=np.float64)


# --- *_over_time from the window ends ------------------------------------------------------------


def _pick(*, last: bool, timestamp: bool) -> Impl:
    def impl(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
        rv = _range(args)
        ok = _counts(rv) > 0
        idx = rv.hi - 1 if last else rv.lo
        if timestamp:
            return _result(rv, _at(rv.timestamps_ms, idx, ok) / 1000, ok)
        return _result(rv, _at(rv.values, idx, ok), ok, keep_name=True)

    return impl


# --- *_over_time by recurrences across windows ---------------------------------------------------


def _sum(rv: RangeVector) -> F64:
    """Kahan(-Neumaier) sums; an infinite sum is returned without its compensation."""
    w = _Windows.of(rv)
    total, comp = np.zeros(w.n.shape), np.zeros(w.n.shape)
    for _, m, idx in w.positions():
        total[:m], comp[:m] = kahan_inc(rv.values[idx], total[:m], comp[:m])
    return w.unsort(np.where(np.isinf(total), total, total + comp), rv.lo.shape)


def _avg_over_time(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
    """Direct mean with Kahan summation, vectorised; the rare windows whose running sum
    overflows are redone one by one with Prometheus' switch to the incremental mean."""
    rv = _range(args)
    w = _Windows.of(rv)
    size = w.n.shape[0]
    total, comp = np.zeros(size), np.zeros(size)
    overflow = np.zeros(size, dtype=bool)
    for k, m, idx in w.positions():
        if k == 0:
            total[:m] = rv.values[idx]
            continue
        total[:m], comp[:m] = kahan_inc(rv.values[idx], total[:m], comp[:m])
        overflow[:m] |= np.isinf(total[:m])
    n = np.maximum(w.n, 1).astype(np.float64)
    result = total / n + comp / n
    for i in np.flatnonzero(overflow).tolist():
        start = int(w.lo[i])
        result[i] = _avg_with_overflow(rv.values[start : start + int(w.n[i])].tolist())
    return _result(rv, w.unsort(result, rv.lo.shape), _counts(rv) > 0)


def _avg_with_overflow(values: list[float]) -> float:
    """``funcAvgOverTime`` for one window, sample by sample."""

    def inc(x: float, total: float, comp: float) -> tuple[float, float]:
        t = total + x
        if math.isinf(t):
            return t, 0.0
        if abs(total) >= abs(x):
            return t, comp + ((total - t) + x)
        return t, comp + ((x - t) + total)

    total, comp, mean, incremental = values[0], 0.0, 0.0, False
    for i, x in enumerate(values[1:]):
        count = float(i + 2)
        if not incremental:
            new_total, new_comp = inc(x, total, comp)
            if not math.isinf(new_total):
                total, comp = new_total, new_comp
                continue
            incremental = True
            mean, comp = total / (count - 1), comp / (count - 1)
        q = (count - 1) / count
        mean, comp = inc(x / count, q * mean, q * comp)
    count = float(len(values))
    return mean + comp if incremental else total / count + comp / count


def _variance(rv: RangeVector) -> F64:
    """Welford's algorithm with Kahan-compensated mean and sum of squares."""
    w = _Windows.of(rv)
    size = w.n.shape[0]
    mean, c_mean, aux, c_aux = (np.zeros(size) for _ in range(4))
    for k, m, idx in w.positions():
        x = rv.values[idx]
        delta = x - (mean[:m] + c_mean[:m])
        mean[:m], c_mean[:m] = kahan_inc(delta / (k + 1), mean[:m], c_mean[:m])
        aux[:m], c_aux[:m] = kahan_inc(delta * (x - (mean[:m] + c_mean[:m])), aux[:m], c_aux[:m])
    return w.unsort((aux + c_aux) / np.maximum(w.n, 1), rv.lo.shape)


def _compare_over_time(*, better: Callable[[F64, F64], Bool], timestamp: bool) -> Impl:
    """``min/max_over_time`` and ``ts_of_min/max_over_time``: a sample replaces the best so far
    when ``better(cur, best)`` or the best is NaN, so NaN wins only when all samples are NaN."""

    reduce = None if timestamp else (np.fmax if better is np.greater else np.fmin)

    def impl(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
        rv = _range(args)
        if reduce is not None:
            fast = _reduce_windows(rv, reduce)
            if fast is not None:
                return _result(rv, fast, _counts(rv) > 0, clean=True)
        w = _Windows.of(rv)
        best, best_ts = np.full(w.n.shape, np.nan), np.zeros(w.n.shape)
        for k, m, idx in w.positions():
            x = rv.values[idx]
            take = better(x, best[:m]) | np.isnan(best[:m]) if k else np.ones(m, dtype=bool)
            best[:m] = np.where(take, x, best[:m])
            best_ts[:m] = np.where(take, rv.timestamps_ms[idx] / 1000, best_ts[:m])
        result = best_ts if timestamp else best
        return _result(rv, w.unsort(result, rv.lo.shape), _counts(rv) > 0)

    return impl


def _reduce_windows(rv: RangeVector, reduce: np.ufunc) -> F64 | None:
    """``reduce`` (``np.fmax``/``np.fmin``) over every window with one ``reduceat``; NaN where a
    window is empty. ``fmax`` skips NaN unless all are NaN, exactly the sequential rule above;
    only ties between ``0`` and ``-0`` could come out differently, so with a ``-0`` sample this
    returns None (the caller walks the windows)."""
    values = rv.values
    zeros = values == 0
    if zeros.any() and bool(np.signbit(values[zeros]).any()):
        return None
    out = np.full(rv.lo.shape, np.nan)
    nonempty = rv.hi > rv.lo
    if not nonempty.any():
        return out
    lo, hi = rv.lo[nonempty], rv.hi[nonempty]
    # Interleaved [lo0, hi0, lo1, hi1, ...]: the even results reduce the windows; a NaN sentinel
    # makes ``hi == len(values)`` a valid index.
    bounds = np.empty(2 * lo.shape[0], dtype=np.intp)
    bounds[0::2], bounds[1::2] = lo, hi
    out[nonempty] = reduce.reduceat(np.append(values, np.nan), bounds)[0::2]
    return out


def _linear_regression(rv: RangeVector, w: _Windows, origin_ms: F64) -> tuple[F64, F64]:
    """Least squares per window (x in seconds from ``origin_ms``, Kahan sums), Prometheus'
    ``linearRegression``: slope and the intercept at ``origin_ms``, in window order."""
    size = w.n.shape[0]
    sx, cx, sy, cy, sxy, cxy, sx2, cx2 = (np.zeros(size) for _ in range(8))
    first = _at(rv.values, w.lo, w.n > 0)
    constant = np.ones(size, dtype=bool)
    for _, m, idx in w.positions():
        y = rv.values[idx]
        constant[:m] &= ~(y != first[:m])
        x = (rv.timestamps_ms[idx] - origin_ms[:m]) / 1e3
        sx[:m], cx[:m] = kahan_inc(x, sx[:m], cx[:m])
        sy[:m], cy[:m] = kahan_inc(y, sy[:m], cy[:m])
        sxy[:m], cxy[:m] = kahan_inc(x * y, sxy[:m], cxy[:m])
        sx2[:m], cx2[:m] = kahan_inc(x * x, sx2[:m], cx2[:m])
    n = np.maximum(w.n, 1).astype(np.float64)
    sx, sy, sxy, sx2 = sx + cx, sy + cy, sxy + cxy, sx2 + cx2
    slope = (sxy - sx * sy / n) / (sx2 - sx * sx / n)
    intercept = sy / n - slope * sx / n
    infinite = np.isinf(first)
    slope = np.where(constant, np.where(infinite, np.nan, 0.0), slope)
    intercept = np.where(constant, np.where(infinite, np.nan, first), intercept)
    return slope, intercept


def _deriv(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
    rv = _range(args)
    w = _Windows.of(rv)
    origin = _at(rv.timestamps_ms, w.lo, w.n > 0)
    slope, _ = _linear_regression(rv, w, origin)
    return _result(rv, w.unsort(slope, rv.lo.shape), _counts(rv) >= 2)


def _predict_linear(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
    """Regression anchored at the evaluation time (not the window end, which ``@`` may move)."""
    rv = _range(args)
    duration = _scalar(args, 1)
    w = _Windows.of(rv)
    series = len(rv)
    origin = w.per_window(ctx.times_ms.astype(np.float64), series)
    slope, intercept = _linear_regression(rv, w, origin)
    result = slope * w.per_window(duration, series) + intercept
    return _result(rv, w.unsort(result, rv.lo.shape), _counts(rv) >= 2)


def _double_exponential_smoothing(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
    rv = _range(args)
    sf_steps, tf_steps = _scalar(args, 1), _scalar(args, 2)
    has_data = (_counts(rv) > 0).any(axis=0)
    for name, short, factor in (("smoothing", "sf", sf_steps), ("trend", "tf", tf_steps)):
        bad = has_data & ~((factor > 0) & (factor < 1))
        if bad.any():
            got = float(factor[np.flatnonzero(bad)[0]])
            raise EvalError(f"invalid {name} factor. Expected: 0 < {short} < 1, got: {got:f}")
    w = _Windows.of(rv)
    series = len(rv)
    sf, tf = w.per_window(sf_steps, series), w.per_window(tf_steps, series)
    size = w.n.shape[0]
    s0, s1, trend, prev = (np.zeros(size) for _ in range(4))
    for k, m, idx in w.positions():
        x = rv.values[idx]
        if k == 0:
            s1[:m] = x
        else:
            if k == 1:
                trend[:m] = x - prev[:m]
            else:
                trend[:m] = tf[:m] * (s1[:m] - s0[:m]) + (1 - tf[:m]) * trend[:m]
            smoothed = sf[:m] * x + (1 - sf[:m]) * (s1[:m] + trend[:m])
            s0[:m], s1[:m] = s1[:m], smoothed
        prev[:m] = x
    return _result(rv, w.unsort(s1, rv.lo.shape), _counts(rv) >= 2)


# --- order statistics ----------------------------------------------------------------------------


def _blocks(rv: RangeVector, w: _Windows) -> Iterator[tuple[slice, F64, I64]]:
    """Padded (windows × longest) blocks of the non-empty windows, each row sorted with NaN
    first as Prometheus' sample heap orders them; padding (+Inf) sorts after the samples."""
    total = int(np.count_nonzero(w.n))
    start = 0
    while start < total:
        width = int(w.n[start])
        stop = min(total, start + max(1, _BLOCK_CELLS // width))
        n = w.n[start:stop]
        cols = np.arange(width)
        inside = cols[None, :] < n[:, None]
        idx = np.where(inside, w.lo[start:stop, None] + cols[None, :], 0)
        block = np.where(inside, rv.values[idx], np.inf)
        nans = np.isnan(block).sum(axis=1)
        block = np.sort(block, axis=1)  # numpy puts NaN last; rotate them to the front
        rank = cols[None, :] - nans[:, None]
        block = np.where(rank < 0, np.nan, np.take_along_axis(block, np.maximum(rank, 0), axis=1))
        yield slice(start, stop), block, n
        start = stop


def _sorted_quantile(q: F64, block: F64, n: I64) -> F64:
    """Prometheus' ``quantile`` on rows already sorted; q outside [0, 1] gives ∓Inf."""
    rank = q * (n - 1)
    lower = np.maximum(0.0, np.floor(rank))
    upper = np.minimum(n - 1.0, lower + 1)
    weight = rank - np.floor(rank)
    # q outside [0, 1] or NaN is answered below; clip so that the lookups stay in the row.
    safe_lower = np.clip(np.where(np.isfinite(lower), lower, 0), 0, n - 1).astype(np.int64)
    safe_upper = np.clip(np.where(np.isfinite(upper), upper, 0), 0, n - 1).astype(np.int64)
    lo_val = np.take_along_axis(block, safe_lower[:, None], axis=1)[:, 0]
    hi_val = np.take_along_axis(block, safe_upper[:, None], axis=1)[:, 0]
    result = lo_val * (1 - weight) + hi_val * weight
    result = np.where(q < 0, -np.inf, np.where(q > 1, np.inf, result))
    return np.where(np.isnan(q), np.nan, result)


def _quantile_over_time(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
    q_steps = _scalar(args, 0)
    rv = _range(args, 1)
    has_data = (_counts(rv) > 0).any(axis=0)
    invalid = has_data & ~((q_steps >= 0) & (q_steps <= 1))
    for q in dict.fromkeys(q_steps[invalid].tolist()):
        msg = f"PromQL warning: quantile value should be between 0 and 1, got {format_go_float(q, 'g')}"
        if msg not in ctx.warnings:
            ctx.warnings.append(msg)
    w = _Windows.of(rv)
    q = w.per_window(q_steps, len(rv))
    result = np.full(w.n.shape, np.nan)
    for rows, block, n in _blocks(rv, w):
        result[rows] = _sorted_quantile(q[rows], block, n)
    return _result(rv, w.unsort(result, rv.lo.shape), _counts(rv) > 0)


def _mad_over_time(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
    """Median absolute deviation; a NaN sample makes the result NaN."""
    rv = _range(args)
    w = _Windows.of(rv)
    result = np.full(w.n.shape, np.nan)
    for rows, block, n in _blocks(rv, w):
        half = np.full(n.shape, 0.5)
        median = _sorted_quantile(half, block, n)
        inside = np.arange(block.shape[1])[None, :] < n[:, None]
        deviation = np.where(inside, np.abs(block - median[:, None]), np.inf)
        mad = _sorted_quantile(half, np.sort(deviation, axis=1), n)
        result[rows] = np.where(np.isnan(block[:, 0]), np.nan, mad)
    return _result(rv, w.unsort(result, rv.lo.shape), _counts(rv) > 0)


RANGE_FUNCTIONS: dict[str, Impl] = {
    "rate": _rate_impl(is_counter=True, is_rate=True, check_name=True),
    "increase": _rate_impl(is_counter=True, is_rate=False, check_name=True),
    "delta": _rate_impl(is_counter=False, is_rate=False, check_name=False),
    "irate": _simple(lambda rv: _instant_value(rv, is_rate=True)),
    "idelta": _simple(lambda rv: _instant_value(rv, is_rate=False)),
    "resets": _simple(lambda rv: _pair_count(rv, _is_reset)),
    "changes": _simple(lambda rv: _pair_count(rv, _is_change)),
    "deriv": _deriv,
    "predict_linear": _predict_linear,
    "double_exponential_smoothing": _double_exponential_smoothing,
    "count_over_time": _simple(lambda rv: (_counts(rv).astype(np.float64), _counts(rv) > 0)),
    "present_over_time": _simple(lambda rv: (np.ones(rv.lo.shape), _counts(rv) > 0)),
    "last_over_time": _pick(last=True, timestamp=False),
    "first_over_time": _pick(last=False, timestamp=False),
    "ts_of_last_over_time": _pick(last=True, timestamp=True),
    "ts_of_first_over_time": _pick(last=False, timestamp=True),
    "sum_over_time": _simple(lambda rv: (_sum(rv), _counts(rv) > 0)),
    "avg_over_time": _avg_over_time,
    "stddev_over_time": _simple(lambda rv: (np.sqrt(_variance(rv)), _counts(rv) > 0)),
    "stdvar_over_time": _simple(lambda rv: (_variance(rv), _counts(rv) > 0)),
    "min_over_time": _compare_over_time(better=np.less, timestamp=False),
    "max_over_time": _compare_over_time(better=np.greater, timestamp=False),
    "ts_of_min_over_time": _compare_over_time(better=np.less_equal, timestamp=True),
    "ts_of_max_over_time": _compare_over_time(better=np.greater_equal, timestamp=True),
    "quantile_over_time": _quantile_over_time,
    "mad_over_time": _mad_over_time,
}
