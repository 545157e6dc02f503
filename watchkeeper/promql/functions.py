"""The PromQL function table: elementwise math, time, label, sort and absence functions here;
range-vector functions in ``range_functions``, classic histograms in ``histograms``.

The evaluator evaluates a call's arguments and invokes ``FUNCTIONS[name].impl(args, arg_exprs,
ctx)``: matrix arguments arrive as ``RangeVector``, instant vectors as ``StepVector``, scalars as
``Scalar`` and strings as ``StringValue``; ``arg_exprs`` are the argument nodes (``absent`` reads
their matchers). Contract with the evaluator:

* a result row whose metric name Prometheus drops is flagged in ``drop_name``; the engine removes
  ``__name__`` when the result leaves it (functions that keep the name pass the flags through);
* ``sort``, ``sort_desc``, ``sort_by_label``, ``sort_by_label_desc`` return the rows in the
  order of an instant query's result, so the engine must keep row order for instant results
  (for range queries, order is by labels anyway);
* ``step()``, ``range()``, ``start()``, ``end()`` read the query's ``EvalContext``; a context with
  ``start_ms == end_ms`` is an instant query (step and range 0).

>>> ctx = EvalContext(0, 0, 0, np.array([60_000]))
>>> FUNCTIONS["time"].impl([], [], ctx).values
array([60.])
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from watchkeeper.errors import EvalError
from watchkeeper.labels import METRIC_NAME, Labels, MatchOp, compile_anchored, from_pairs, get
from watchkeeper.promql.ast import Expr, MatrixSelector, VectorSelector
from watchkeeper.promql.histograms import HISTOGRAM_FUNCTIONS
from watchkeeper.promql.range_functions import RANGE_FUNCTIONS
from watchkeeper.promql.values import (
    F64,
    I64,
    Bool,
    EvalContext,
    RangeVector,
    Scalar,
    StepVector,
    StringValue,
    Value,
)

Impl = Callable[[list[Value], list[Expr], EvalContext], Value]
DUPLICATE_LABELSET = "vector cannot contain metrics with the same labelset"


@dataclass(frozen=True, slots=True)
class Function:
    name: str
    impl: Impl


# --- argument access -----------------------------------------------------------------------------


def _vector(args: list[Value], i: int = 0) -> StepVector:
    arg = args[i]
    if not isinstance(arg, StepVector):
        raise EvalError(f"expected an instant vector as argument {i + 1}")
    return arg


def _scalar(args: list[Value], i: int) -> F64:
    arg = args[i]
    if not isinstance(arg, Scalar):
        raise EvalError(f"expected a scalar as argument {i + 1}")
    return arg.values


def _string(args: list[Value], i: int) -> str:
    arg = args[i]
    if not isinstance(arg, StringValue):
        raise EvalError(f"expected a string as argument {i + 1}")
    return arg.value


def _mapped(vec: StepVector, values: F64) -> StepVector:
    """Same rows and presence, new values, metric name to be dropped."""
    return StepVector(
        list(vec.labels),
        np.where(vec.present, values, np.nan),
        vec.present.copy(),
        drop_name=np.ones(len(vec), dtype=bool),
    )


# --- elementwise math ----------------------------------------------------------------------------


def _elementwise(fn: Callable[[F64], F64]) -> Impl:
    def impl(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
        vec = _vector(args)
        return _mapped(vec, fn(vec.values))

    return impl


def _sgn(x: F64) -> F64:
    return np.where(x < 0, -1.0, np.where(x > 0, 1.0, x))


def _round(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
    """``floor(v / to_nearest + 0.5) * to_nearest`` computed with the inverse, as Prometheus."""
    vec = _vector(args)
    to_nearest = _scalar(args, 1) if len(args) > 1 else np.ones(ctx.steps)
    inverse = 1.0 / to_nearest[None, :]
    return _mapped(vec, np.floor(vec.values * inverse + 0.5) / inverse)


def _clamp_impl(lower_arg: int | None, upper_arg: int | None) -> Impl:
    def impl(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
        vec = _vector(args)
        lower = _scalar(args, lower_arg) if lower_arg else np.full(ctx.steps, -np.inf)
        upper = _scalar(args, upper_arg) if upper_arg else np.full(ctx.steps, np.inf)
        out = _mapped(vec, np.maximum(lower[None, :], np.minimum(upper[None, :], vec.values)))
        out.present &= ~(upper < lower)[None, :]  # max < min: no result at that step
        return out

    return impl


# --- time ----------------------------------------------------------------------------------------


def _seconds_since_epoch(ctx: EvalContext) -> I64:
    """Step times truncated to whole seconds towards zero, like Go's ``ts / 1000``."""
    t = ctx.times_ms
    return np.where(t < 0, -((-t) // 1000), t // 1000)


def _date_part(part: Callable[[I64], I64]) -> Impl:
    """``year(v=vector(time()))`` & co.: the UTC date part of each value read as Unix seconds."""

    def impl(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
        if not args:
            seconds = _seconds_since_epoch(ctx)
            return StepVector(
                [()],
                part(seconds)[None, :].astype(np.float64),
                np.ones((1, ctx.steps), dtype=bool),
                drop_name=np.zeros(1, dtype=bool),
            )
        vec = _vector(args)
        ok = np.isfinite(vec.values) & (np.abs(vec.values) < 1e16)
        seconds = np.trunc(np.where(ok, vec.values, 0.0)).astype(np.int64)
        return _mapped(vec, np.where(ok, part(seconds).astype(np.float64), np.nan))

    return impl


def _days(s: I64) -> I64:
    return s // 86_400


def _month_index(s: I64) -> I64:
    return s.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)


def _day_in_month(s: I64) -> I64:
    start = _month_index(s).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    return _days(s) - start + 1


def _day_in_year(s: I64) -> I64:
    start = s.astype("datetime64[s]").astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)
    return _days(s) - start + 1


def _days_in_month(s: I64) -> I64:
    month = _month_index(s)
    starts = [(month + k).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64) for k in (0, 1)]
    return starts[1] - starts[0]


_DATE_PARTS: dict[str, Callable[[I64], I64]] = {
    "year": lambda s: s.astype("datetime64[s]").astype("datetime64[Y]").astype(np.int64) + 1970,
    "month": lambda s: _month_index(s) % 12 + 1,
    "day_of_month": _day_in_month,
    "day_of_year": _day_in_year,
    "day_of_week": lambda s: (_days(s) + 4) % 7,  # 1970-01-01 was a Thursday
    "days_in_month": _days_in_month,
    "hour": lambda s: (s % 86_400) // 3_600,
    "minute": lambda s: (s % 3_600) // 60,
}


def _time(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
    return Scalar(ctx.times_ms / 1000)


def _timestamp(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
    """The sample's own timestamp when the argument comes straight from a selector, else the
    step time."""
    vec = _vector(args)
    ts = vec.sample_ts if vec.sample_ts is not None else np.broadcast_to(ctx.times_ms, vec.values.shape)
    return _mapped(vec, ts / 1000)


def _query_scalar(pick: Callable[[EvalContext], float]) -> Impl:
    def impl(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
        return Scalar(np.full(ctx.steps, pick(ctx)))

    return impl


def _instant(ctx: EvalContext) -> bool:
    return ctx.start_ms == ctx.end_ms


# --- conversions ---------------------------------------------------------------------------------


def _scalar_of(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
    """The only sample's value at each step; NaN for zero or several samples."""
    vec = _vector(args)
    single = vec.present.sum(axis=0) == 1
    value = np.where(vec.present, vec.values, 0.0).sum(axis=0) if len(vec) else np.zeros(ctx.steps)
    return Scalar(np.where(single, value, np.nan))


def _vector_of(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
    values = _scalar(args, 0)
    return StepVector(
        [()], values[None, :].copy(), np.ones((1, ctx.steps), dtype=bool), drop_name=np.zeros(1, dtype=bool)
    )


def _constant(value: float) -> Impl:
    def impl(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
        return Scalar(np.full(ctx.steps, value))

    return impl


def _min_max_of(fn: Callable[[F64, F64], F64]) -> Impl:
    def impl(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
        return Scalar(fn(_scalar(args, 0), _scalar(args, 1)))

    return impl


# --- absence -------------------------------------------------------------------------------------


def _absent_labels(expr: Expr) -> Labels:
    """The labels a selector pins with exactly one ``=`` matcher (Prometheus'
    ``createLabelsForAbsentFunction``): a label matched twice or by another operator is left out."""
    if isinstance(expr, MatrixSelector):
        expr = expr.selector
    if not isinstance(expr, VectorSelector):
        return ()
    pinned: dict[str, str] = {}
    seen: set[str] = set()
    for m in expr.matchers:
        if m.name == METRIC_NAME:
            continue
        if m.op is MatchOp.EQUAL and m.name not in seen:
            pinned[m.name] = m.value
            seen.add(m.name)
        else:
            pinned.pop(m.name, None)
    return from_pairs(pinned.items())


def _absent_result(missing: Bool, expr: Expr) -> StepVector:
    if not missing.any():
        return StepVector.empty(missing.shape[0])
    return StepVector(
        [_absent_labels(expr)],
        np.ones((1, missing.shape[0])),
        missing[None, :].copy(),
        drop_name=np.zeros(1, dtype=bool),
    )


def _absent(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
    vec = _vector(args)
    return _absent_result(np.asarray(~vec.present.any(axis=0)), arg_exprs[0])


def _absent_over_time(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
    rv = args[0]
    if not isinstance(rv, RangeVector):
        raise EvalError("expected a range vector as argument 1")
    if len(rv) == 0:
        return _absent_result(np.ones(ctx.steps, dtype=bool), arg_exprs[0])
    return _absent_result(np.asarray(~((rv.hi - rv.lo) > 0).any(axis=0)), arg_exprs[0])


# --- labels --------------------------------------------------------------------------------------


def valid_label_name(name: str) -> bool:
    """Prometheus 3 accepts any non-empty valid UTF-8 label name."""
    if not name or "\ufffd" in name:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8
        return False
    return True


_TEMPLATE_REF = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+)|(\$))")


def expand_template(template: str, match: re.Match[str]) -> str:
    """Go's ``Regexp.Expand``: ``$1``, ``${1}``, ``$name``, ``${name}`` and ``$$``; a reference
    to a missing group expands to nothing; ``$name`` takes the longest run of word characters."""

    def ref(m: re.Match[str]) -> str:
        if m.group(3):
            return "$"
        name = m.group(1) or m.group(2)
        try:
            value = match.group(int(name)) if name.isdigit() else match.group(name)
        except IndexError:  # no such group
            return ""
        return value or ""

    return _TEMPLATE_REF.sub(ref, template)


def _merge_same_labels(vec: StepVector) -> StepVector:
    """Rows that became identical merge when they never overlap in time (Prometheus'
    ``mergeSeriesWithSameLabelset``); overlapping ones are an error."""
    first: dict[Labels, int] = {}
    for i, lbls in enumerate(vec.labels):
        first.setdefault(lbls, i)
    if len(first) == len(vec.labels):
        return vec
    keep = sorted(first.values())
    position = {vec.labels[i]: k for k, i in enumerate(keep)}
    values = vec.values[keep].copy()
    present = vec.present[keep].copy()
    drop = vec.drop_name[keep].copy() if vec.drop_name is not None else None
    for i, lbls in enumerate(vec.labels):
        k = position[lbls]
        if i == keep[k]:
            continue
        if (present[k] & vec.present[i]).any():
            raise EvalError(DUPLICATE_LABELSET)
        values[k] = np.where(vec.present[i], vec.values[i], values[k])
        present[k] |= vec.present[i]
    return StepVector([vec.labels[i] for i in keep], values, present, drop_name=drop)


def _relabelled(vec: StepVector, labels: list[Labels], dst: str, changed: list[bool]) -> StepVector:
    drop = vec.drop_name.copy() if vec.drop_name is not None else np.zeros(len(vec), dtype=bool)
    if dst == METRIC_NAME:
        drop[np.array(changed, dtype=bool)] = False  # setting __name__ explicitly keeps it
    out = StepVector(labels, vec.values, vec.present, vec.sample_ts, drop)
    return _merge_same_labels(out)


def _set_label(lbls: Labels, name: str, value: str) -> Labels:
    return from_pairs([*(p for p in lbls if p[0] != name), (name, value)])


def _label_replace(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
    vec = _vector(args)
    dst, repl, src, pattern = (_string(args, i) for i in (1, 2, 3, 4))
    try:
        regex = compile_anchored(pattern)  # the matchers' dialect: anchored, `.` matches newline
    except re.error as exc:
        raise EvalError(f"invalid regular expression in label_replace(): {pattern}") from exc
    if not valid_label_name(dst):
        raise EvalError(f"invalid destination label name in label_replace(): {dst}")
    labels, changed = [], []
    for lbls in vec.labels:
        m = regex.match(get(lbls, src))
        labels.append(_set_label(lbls, dst, expand_template(repl, m)) if m else lbls)
        changed.append(m is not None)
    return _relabelled(vec, labels, dst, changed)


def _label_join(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
    vec = _vector(args)
    dst, sep = _string(args, 1), _string(args, 2)
    sources = [_string(args, i) for i in range(3, len(args))]
    for src in sources:
        if not valid_label_name(src):
            raise EvalError(f"invalid source label name in label_join(): {src}")
    if not valid_label_name(dst):
        raise EvalError(f"invalid destination label name in label_join(): {dst}")
    labels = [_set_label(lbls, dst, sep.join(get(lbls, s) for s in sources)) for lbls in vec.labels]
    return _relabelled(vec, labels, dst, [True] * len(labels))


# --- sorting -------------------------------------------------------------------------------------


_SORT_IN_RANGE = (
    "PromQL warning: sort is ineffective for range queries since results are always ordered by labels"
)


def _reordered(vec: StepVector, order: list[int], ctx: EvalContext) -> StepVector:
    if not _instant(ctx) and _SORT_IN_RANGE not in ctx.warnings:
        ctx.warnings.append(_SORT_IN_RANGE)
    return StepVector(
        [vec.labels[i] for i in order],
        vec.values[order],
        vec.present[order],
        vec.sample_ts[order] if vec.sample_ts is not None else None,
        vec.drop_name[order] if vec.drop_name is not None else None,
    )


def _sort_impl(descending: bool) -> Impl:
    """Rows ordered by their value at the last step (an instant query has one), NaN last."""

    def impl(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
        vec = _vector(args)
        last = vec.values[:, -1]
        key = -last if descending else last
        order = np.lexsort((key, np.isnan(last))).tolist()  # stable: NaN last, then by value
        return _reordered(vec, order, ctx)

    return impl


_CHUNKS = re.compile(r"[0-9]+|[^0-9]+")


def natural_less(a: str, b: str) -> bool:
    """``github.com/facette/natsort.Compare``: digit runs compare as integers."""
    chunks_a: list[str] = _CHUNKS.findall(a)
    chunks_b: list[str] = _CHUNKS.findall(b)
    for i, ca in enumerate(chunks_a):
        if i >= len(chunks_b):
            return False
        cb = chunks_b[i]
        if ca.isdigit() and cb.isdigit() and int(ca) != int(cb):
            return int(ca) < int(cb)
        if not (ca.isdigit() and cb.isdigit()) and ca != cb:
            return ca < cb
        if i == len(chunks_a) - 1:
            return True
        if i == len(chunks_b) - 1:
            return False
    return False


def _sort_by_label_impl(descending: bool) -> Impl:
    def impl(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
        vec = _vector(args)
        names = [_string(args, i) for i in range(1, len(args))]
        sign = -1 if descending else 1

        def compare(i: int, j: int) -> int:
            a, b = vec.labels[i], vec.labels[j]
            for name in names:
                va, vb = get(a, name), get(b, name)
                if va != vb:
                    return -sign if natural_less(va, vb) else sign
            return sign * ((a > b) - (a < b))

        return _reordered(vec, sorted(range(len(vec)), key=functools.cmp_to_key(compare)), ctx)

    return impl


# --- the table -----------------------------------------------------------------------------------


def _guarded(impl: Impl) -> Impl:
    """Float edge cases (Inf - Inf, log of negatives) give NaN/Inf as in Go, without warnings."""

    @functools.wraps(impl)
    def run(args: list[Value], arg_exprs: list[Expr], ctx: EvalContext) -> Value:
        with np.errstate(all="ignore"):
            return impl(args, arg_exprs, ctx)

    return run


# fmt: off
_MATH: dict[str, Callable[[F64], F64]] = {
    "abs": np.abs, "ceil": np.ceil, "floor": np.floor, "exp": np.exp, "sqrt": np.sqrt,
    "ln": np.log, "log2": np.log2, "log10": np.log10, "sgn": _sgn,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos,
    "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh, "asinh": np.arcsinh,
    "acosh": np.arccosh, "atanh": np.arctanh,
    "rad": lambda x: x * np.pi / 180, "deg": lambda x: x * 180 / np.pi,
}
# fmt: on

_IMPLS: dict[str, Impl] = {
    **{name: _elementwise(fn) for name, fn in _MATH.items()},
    **{name: _date_part(part) for name, part in _DATE_PARTS.items()},
    "round": _round,
    "clamp": _clamp_impl(1, 2),
    "clamp_min": _clamp_impl(1, None),
    "clamp_max": _clamp_impl(None, 1),
    "pi": _constant(np.pi),
    "time": _time,
    "timestamp": _timestamp,
    "step": _query_scalar(lambda ctx: 0.0 if _instant(ctx) else ctx.step_ms / 1000),
    "range": _query_scalar(lambda ctx: (ctx.end_ms - ctx.start_ms) / 1000),
    "start": _query_scalar(lambda ctx: ctx.start_ms / 1000),
    "end": _query_scalar(lambda ctx: ctx.end_ms / 1000),
    "min_of": _min_max_of(lambda a, b: np.where(np.isnan(a) | np.isnan(b), np.nan, np.minimum(a, b))),
    "max_of": _min_max_of(lambda a, b: np.where(np.isnan(a) | np.isnan(b), np.nan, np.maximum(a, b))),
    "scalar": _scalar_of,
    "vector": _vector_of,
    "absent": _absent,
    "absent_over_time": _absent_over_time,
    "label_replace": _label_replace,
    "label_join": _label_join,
    "sort": _sort_impl(descending=False),
    "sort_desc": _sort_impl(descending=True),
    "sort_by_label": _sort_by_label_impl(descending=False),
    "sort_by_label_desc": _sort_by_label_impl(descending=True),
    **RANGE_FUNCTIONS,
    **HISTOGRAM_FUNCTIONS,
}

FUNCTIONS: dict[str, Function] = {name: Function(name, _guarded(impl)) for name, impl in _IMPLS.items()}
