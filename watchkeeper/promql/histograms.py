"""Classic-histogram functions: ``histogram_quantile`` and ``histogram_fraction`` over ``le`` buckets.

The input vector's series are grouped by their labels without ``le`` (the metric name stays in
the group key: Prometheus 3 removes it only when the result leaves the engine, so the output is
flagged ``drop_name``). Within a group, each step's buckets are the series present at that step;
steps sharing a presence pattern are computed together, vectorised over the steps.

Native histograms are not part of watchkeeper's value model, so ``histogram_count``, ``_sum``,
``_avg``, ``_stddev`` and ``_stdvar`` return an empty vector (Prometheus ignores float samples
in them).

>>> bounds, counts = np.array([1.0, 2.0, np.inf]), np.array([[2.0], [6.0], [8.0]])  # le=1, 2, +Inf
>>> bucket_quantile(np.array([0.5]), bounds, counts)[0]   # rank 4: halfway into (1, 2]
array([1.5])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from watchkeeper.errors import EvalError
from watchkeeper.labels import Labels, from_pairs, get, metric_name, without
from watchkeeper.promql.ast import Expr
from watchkeeper.promql.formatting import format_go_float
from watchkeeper.promql.values import F64, Bool, EvalContext, Scalar, StepVector, StringValue, Value

Impl = Callable[[list[Value], list[Expr], EvalContext], Value]

BUCKET_LABEL = "le"
_MONOTONICITY_INFO = (
    "PromQL info: input to histogram_quantile needed to be fixed for monotonicity "
    "(see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile)"
)


def parse_bound(text: str) -> float | None:
    """An ``le`` value as Go's ``strconv.ParseFloat`` reads it, or None when malformed."""
    if not text or text != text.strip() or "_" in text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return float.fromhex(text) if "0x" in text.lower() else None
    except ValueError:
        return None


@dataclass(slots=True)
class _Group:
    """The buckets of one histogram: distinct upper bounds ascending, counts per step."""

    labels: Labels
    bounds: F64  # (buckets,)
    counts: F64  # (buckets, steps); duplicate bounds already summed
    present: Bool  # (buckets, steps)


def _groups(vec: StepVector, ctx: EvalContext) -> list[_Group]:
    rows_by_key: dict[Labels, list[tuple[float, int]]] = {}
    for i, lbls in enumerate(vec.labels):
        raw = get(lbls, BUCKET_LABEL)
        bound = parse_bound(raw)
        if bound is None:
            if vec.present[i].any():
                msg = f'PromQL warning: bucket label "le" is missing or has a malformed value of "{raw}"'
                name = metric_name(lbls)
                msg += f' for metric name "{name}"' if name else ""
                if msg not in ctx.warnings:
                    ctx.warnings.append(msg)
            continue
        rows_by_key.setdefault(without(lbls, [BUCKET_LABEL]), []).append((bound, i))
    groups = []
    for key, rows in rows_by_key.items():
        bounds = np.unique(np.array([b for b, _ in rows]))
        counts = np.zeros((bounds.shape[0], vec.values.shape[1]))
        present = np.zeros(counts.shape, dtype=bool)
        for bound, i in rows:
            pos = int(np.searchsorted(bounds, bound))
            counts[pos] += np.where(vec.present[i], vec.values[i], 0.0)
            present[pos] |= vec.present[i]
        groups.append(_Group(key, bounds, counts, present))
    return groups


def _patterns(group: _Group) -> Iterator[tuple[F64, F64, F64]]:
    """``(steps, bounds, counts)`` for each set of steps with the same buckets present."""
    cols = np.flatnonzero(group.present.any(axis=0))
    if cols.shape[0] == 0:
        return
    patterns, inverse = np.unique(group.present[:, cols].T, axis=0, return_inverse=True)
    for p, pattern in enumerate(patterns):
        steps = cols[inverse.ravel() == p]
        yield steps, group.bounds[pattern], group.counts[pattern][:, steps]


def _correct_precision(counts: F64, tolerance: float = 1e-12) -> None:
    """Prometheus' ``correctPrecisionErrors``: tiny relative decreases are floating-point noise."""
    prev = counts[0].copy()
    for i in range(1, counts.shape[0]):
        curr = counts[i]
        delta = np.abs(curr - prev)
        fix = (delta != 0) & (delta / curr <= tolerance)
        counts[i] = np.where(fix, prev, curr)
        prev = np.where((delta != 0) & ~fix, curr, prev)


def _ensure_monotonic(counts: F64) -> Bool:
    """Prometheus' ``ensureMonotonic``: the running maximum; True where a step needed it."""
    forced = np.zeros(counts.shape[1], dtype=bool)
    highest = counts[0].copy()
    for i in range(1, counts.shape[0]):
        curr = counts[i]
        lower = curr < highest
        forced |= lower
        highest = np.where(curr > highest, curr, highest)
        counts[i] = np.where(lower, highest, curr)
    return forced


def bucket_quantile(q: F64, bounds: F64, counts: F64) -> tuple[F64, Bool]:
    """Prometheus' ``bucketQuantile`` for sorted, distinct ``bounds`` and ``counts`` of shape
    (buckets, steps): linear interpolation inside the bucket holding rank ``q × count``, a lower
    bound of 0 for the first bucket when it is positive, the second-highest bound when the rank
    falls into the +Inf bucket. Returns the quantiles and where monotonicity had to be forced."""
    steps = counts.shape[1]
    counts = counts.copy()
    forced = np.zeros(steps, dtype=bool)
    if not np.isposinf(bounds[-1]) or bounds.shape[0] < 2:
        result = np.full(steps, np.nan)
    else:
        _correct_precision(counts)
        forced = _ensure_monotonic(counts)
        observations = counts[-1]
        rank = q * observations
        reached = counts[:-1] >= rank[None, :]
        b = np.where(reached.any(axis=0), reached.argmax(axis=0), bounds.shape[0] - 1)
        prev = np.maximum(b - 1, 0)
        cols = np.arange(steps)
        start = np.where(b > 0, bounds[prev], 0.0)
        below = np.where(b > 0, counts[prev, cols], 0.0)
        end = bounds[np.minimum(b, bounds.shape[0] - 1)]
        in_bucket = counts[np.minimum(b, bounds.shape[0] - 1), cols] - below
        result = start + (end - start) * ((rank - below) / in_bucket)
        result = np.where((b == 0) & (bounds[0] <= 0), bounds[0], result)
        result = np.where(b == bounds.shape[0] - 1, bounds[-2], result)
        result = np.where(observations == 0, np.nan, result)
    result = np.where(q > 1, np.inf, np.where(q < 0, -np.inf, result))
    result = np.where(np.isnan(q), np.nan, result)
    return result, forced & (q >= 0) & (q <= 1) & np.isposinf(bounds[-1]) & (bounds.shape[0] >= 2)


def bucket_fraction(lower: F64, upper: F64, bounds: F64, counts: F64) -> F64:
    """Prometheus' ``BucketFraction``: the share of observations in (lower, upper], linear
    inside buckets. The first bucket spans from 0 when its bound is positive (as in
    ``bucketQuantile``), else it is a point at its bound; the +Inf bucket never interpolates."""
    steps = counts.shape[1]
    if not np.isposinf(bounds[-1]):
        return np.full(steps, np.nan)
    total = counts[-1]
    rank = np.zeros(steps)
    lower_rank, upper_rank = np.zeros(steps), np.zeros(steps)
    lower_set, upper_set = np.zeros(steps, dtype=bool), np.zeros(steps, dtype=bool)
    for i in range(bounds.shape[0]):
        hi = bounds[i]
        lo = bounds[i - 1] if i else (0.0 if hi > 0 else hi)
        done = lower_set & upper_set
        hit = ~done & ~lower_set & (lo >= lower)
        lower_rank, lower_set = np.where(hit, rank, lower_rank), lower_set | hit
        hit = ~done & ~upper_set & (lo >= upper)
        upper_rank, upper_set = np.where(hit, rank, upper_rank), upper_set | hit
        done = lower_set & upper_set
        width = hi - lo
        hit = ~done & ~lower_set & (lo < lower) & (hi > lower)
        lower_rank = np.where(hit, rank + (counts[i] - rank) * (lower - lo) / width, lower_rank)
        lower_set |= hit
        hit = ~done & ~upper_set & (lo < upper) & (hi > upper)
        upper_rank = np.where(hit, rank + (counts[i] - rank) * (upper - lo) / width, upper_rank)
        upper_set |= hit
        rank = np.where(lower_set & upper_set, rank, counts[i])
    lower_rank = np.where(~lower_set | (lower_rank > total), total, lower_rank)
    upper_rank = np.where(~upper_set | (upper_rank > total), total, upper_rank)
    result = (upper_rank - lower_rank) / total
    result = np.where(lower >= upper, 0.0, result)
    return np.where((total == 0) | np.isnan(lower) | np.isnan(upper), np.nan, result)


def _scalar(args: list[Value], i: int) -> F64:
    arg = args[i]
    if not isinstance(arg, Scalar):
        raise EvalError(f"expected a scalar as argument {i + 1}")
    return arg.values


def _vector(args: list[Value], i: int) -> StepVector:
    arg = args[i]
    if not isinstance(arg, StepVector):
        raise EvalError(f"expected an instant vector as argument {i + 1}")
    return arg


def _output(groups: list[_Group], rows: list[tuple[F64, Bool]]) -> StepVector:
    keep = [i for i, (_, present) in enumerate(rows) if present.any()]
    if not keep:
        return StepVector.empty(groups[0].counts.shape[1] if groups else 0)
    return StepVector(
        [groups[i].labels for i in keep],
        np.stack([rows[i][0] for i in keep]),
        np.stack([rows[i][1] for i in keep]),
        drop_name=np.ones(len(keep), dtype=bool),
    )


def _warn_invalid_quantiles(q_steps: F64, ctx: EvalContext) -> None:
    for q in dict.fromkeys(q_steps[~((q_steps >= 0) & (q_steps <= 1))].tolist()):
        msg = f"PromQL warning: quantile value should be between 0 and 1, got {format_go_float(q, 'g')}"
        if msg not in ctx.warnings:
            ctx.warnings.append(msg)


def _group_quantile(group: _Group, q_steps: F64, ctx: EvalContext) -> tuple[F64, Bool]:
    values = np.full(ctx.steps, np.nan)
    present = np.zeros(ctx.steps, dtype=bool)
    for steps, bounds, counts in _patterns(group):
        values[steps], forced = bucket_quantile(q_steps[steps], bounds, counts)
        present[steps] = True
        if forced.any():
            name = metric_name(group.labels)
            msg = _MONOTONICITY_INFO + (f' for metric name "{name}"' if name else "")
            if msg not in ctx.infos:
                ctx.infos.append(msg)
    return values, present


def _histogram_quantile(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
    q_steps = _scalar(args, 0)
    _warn_invalid_quantiles(q_steps, ctx)
    groups = _groups(_vector(args, 1), ctx)
    if not groups:
        return StepVector.empty(ctx.steps)
    return _output(groups, [_group_quantile(group, q_steps, ctx) for group in groups])


def _histogram_fraction(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
    lower, upper = _scalar(args, 0), _scalar(args, 1)
    groups = _groups(_vector(args, 2), ctx)
    rows = []
    for group in groups:
        values = np.full(ctx.steps, np.nan)
        present = np.zeros(ctx.steps, dtype=bool)
        for steps, bounds, counts in _patterns(group):
            values[steps] = bucket_fraction(lower[steps], upper[steps], bounds, counts)
            present[steps] = True
        rows.append((values, present))
    if not groups:
        return StepVector.empty(ctx.steps)
    return _output(groups, rows)


def format_openmetrics_float(f: float) -> str:
    """Prometheus' ``labels.FormatOpenMetricsFloat``: Go's ``%g`` with ``.0`` added to integers."""
    text = format_go_float(f, "g")
    if math.isnan(f) or math.isinf(f) or "e" in text or "." in text:
        return text
    return text + ".0"


def _histogram_quantiles(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
    """``histogram_quantiles(v, "label", q0, q1, ...)``: one series per histogram and quantile,
    told apart by ``label`` set to the quantile (as ``FormatOpenMetricsFloat`` writes it)."""
    vec = _vector(args, 0)
    label = args[1]
    if not isinstance(label, StringValue):
        raise EvalError("expected a string as argument 2")
    groups = _groups(vec, ctx)
    labels: list[Labels] = []
    rows: list[tuple[F64, Bool]] = []
    for i in range(2, len(args)):
        q_steps = _scalar(args, i)
        _warn_invalid_quantiles(q_steps, ctx)
        for group in groups:
            values, present = _group_quantile(group, q_steps, ctx)
            for q in dict.fromkeys(q_steps[present].tolist()):
                at = present & ((q_steps == q) | (np.isnan(q_steps) & math.isnan(q)))
                lbls = from_pairs(
                    [
                        *(p for p in group.labels if p[0] != label.value),
                        (label.value, format_openmetrics_float(q)),
                    ]
                )
                if lbls in labels:
                    k = labels.index(lbls)
                    if (rows[k][1] & at).any():
                        raise EvalError("vector cannot contain metrics with the same labelset")
                    rows[k] = (np.where(at, values, rows[k][0]), rows[k][1] | at)
                else:
                    labels.append(lbls)
                    rows.append((np.where(at, values, np.nan), at))
    if not labels:
        return StepVector.empty(ctx.steps)
    return StepVector(
        labels,
        np.stack([r[0] for r in rows]),
        np.stack([r[1] for r in rows]),
        drop_name=np.ones(len(labels), dtype=bool),
    )


def _native_only(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
    """``histogram_count`` & co. read native histograms only; float series give nothing."""
    _vector(args, 0)
    return StepVector.empty(ctx.steps)


HISTOGRAM_FUNCTIONS: dict[str, Impl] = {
    "histogram_quantile": _histogram_quantile,
    "histogram_quantiles": _histogram_quantiles,
    "histogram_fraction": _histogram_fraction,
    "histogram_count": _native_only,
    "histogram_sum": _native_only,
    "histogram_avg": _native_only,
    "histogram_stddev": _native_only,
    "histogram_stdvar": _native_only,
}
