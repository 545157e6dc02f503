"""The PromQL evaluator: every node is evaluated once for all steps of the query.

>>> engine = Engine(storage)                                        # doctest: +SKIP
>>> engine.instant('sum by (job) (rate(http_requests_total[5m]))', time_ms=1_700_000_000_000)
QueryResult(result_type='vector', series=[...])
>>> engine.range('up', start_ms=0, end_ms=3_600_000, step_ms=15_000).result_type
'matrix'

An instant query is a range query with one step. Instant-vector nodes produce a ``StepVector``
(series x steps), range-vector nodes a ``RangeVector`` (concatenated samples with per-window index
bounds); see ``values.py``. Metric names that operations drop are removed only at the end
(Prometheus 3's delayed name removal), where series that became identical are merged if they
never overlap in time and are an error otherwise. A subtree whose selectors are all pinned by
``@`` is evaluated for one step and repeated (Prometheus' step invariance).

Limits: ``max_samples`` (samples read plus any series x steps matrix), ``timeout_seconds``
(checked before every node) and ``max_points_per_series`` (steps of a range query).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from watchkeeper.errors import EvalError, ParseError, QueryTimeout
from watchkeeper.labels import METRIC_NAME, Labels, without
from watchkeeper.promql import aggregations, operators, selectors
from watchkeeper.promql.ast import (
    AggregateExpr,
    At,
    BinaryExpr,
    Call,
    Expr,
    MatrixSelector,
    NumberLiteral,
    ParenExpr,
    StringLiteral,
    SubqueryExpr,
    UnaryExpr,
    VectorSelector,
)
from watchkeeper.promql.values import (
    F64,
    I64,
    Bool,
    EvalContext,
    QueryResult,
    RangeVector,
    ResultSeries,
    Scalar,
    StepVector,
    StringValue,
    Value,
)
from watchkeeper.tsdb.reader import SeriesReader

TIMEOUT_MESSAGE = "query timed out in expression evaluation"
#: Functions whose result depends on the evaluation time itself, so never step invariant.
_TIME_DEPENDENT_FUNCTIONS = frozenset({
    "time", "timestamp", "predict_linear", "days_in_month", "day_of_month", "day_of_week",
    "day_of_year", "hour", "minute", "month", "year", "start", "end", "range", "step",
})
SAME_LABELSET = "vector cannot contain metrics with the same labelset"


class Engine:
    """Evaluates PromQL against a ``SeriesReader`` with Prometheus 3.x semantics.

    >>> Engine(reader, lookback_ms=300_000).instant("up == 0", time_ms=60_000)  # doctest: +SKIP
    """

    def __init__(
        self,
        reader: SeriesReader,
        *,
        lookback_ms: int = 300_000,
        max_samples: int = 50_000_000,
        timeout_seconds: float = 120.0,
        default_subquery_step_ms: int = 60_000,
        max_points_per_series: int = 11_000,
    ) -> None:
        self.reader = reader
        self.lookback_ms = lookback_ms
        self.max_samples = max_samples
        self.timeout_seconds = timeout_seconds
        self.default_subquery_step_ms = default_subquery_step_ms
        self.max_points_per_series = max_points_per_series

    def instant(self, query: str | Expr, time_ms: int, *, reader: SeriesReader | None = None) -> QueryResult:
        """Evaluate at one time: a ``vector``, ``scalar``, ``string`` or (range vector) ``matrix``.
        ``reader`` replaces the engine's own for this query (a ``selectors.SharedSelects`` over it)."""
        expr = _parse(query)
        ctx = EvalContext(time_ms, time_ms, 0, np.array([time_ms], dtype=np.int64), self.lookback_ms)
        ctx.query, ctx.query_expr = (query, None) if isinstance(query, str) else ("", expr)
        evaluator = self._evaluator(time_ms, time_ms, reader)
        value = evaluator.eval(expr, ctx)
        result = _instant_result(value, time_ms)
        return _with_annotations(result, ctx, evaluator.budget.loaded)

    def range(self, query: str | Expr, start_ms: int, end_ms: int, step_ms: int) -> QueryResult:
        """Evaluate at ``start, start + step, ... <= end``: always a ``matrix``."""
        if step_ms <= 0:
            raise ParseError(
                "zero or negative query resolution step widths are not accepted. Try a positive integer"
            )
        if end_ms < start_ms:
            raise ParseError("end timestamp must not be before start time")
        if (end_ms - start_ms) // step_ms + 1 > self.max_points_per_series:
            raise ParseError(
                f"exceeded maximum resolution of {self.max_points_per_series:,} points per timeseries. "
                "Try decreasing the query resolution (?step=XX)"
            )
        expr = _parse(query)
        times = np.arange(start_ms, end_ms + 1, step_ms, dtype=np.int64)
        ctx = EvalContext(start_ms, end_ms, step_ms, times, self.lookback_ms)
        ctx.query, ctx.query_expr = (query, None) if isinstance(query, str) else ("", expr)
        evaluator = self._evaluator(start_ms, end_ms)
        value = evaluator.eval(expr, ctx)
        if isinstance(value, StringValue | RangeVector):
            kind = "string" if isinstance(value, StringValue) else "range vector"
            raise ParseError(
                f'invalid expression type "{kind}" for range query, must be Scalar or instant Vector'
            )
        result = _range_result(value, times)
        return _with_annotations(result, ctx, evaluator.budget.loaded)

    def _evaluator(self, start_ms: int, end_ms: int, reader: SeriesReader | None = None) -> _Evaluator:
        return _Evaluator(
            self.reader if reader is None else reader,
            query_start_ms=start_ms,
            query_end_ms=end_ms,
            budget=selectors.SampleBudget(self.max_samples),
            deadline=time.monotonic() + self.timeout_seconds,
            default_subquery_step_ms=self.default_subquery_step_ms,
        )


def _parse(query: str | Expr) -> Expr:
    if isinstance(query, str):
        from watchkeeper.promql.parser import parse

        return parse(query)
    return query


class _Evaluator:
    """One query's evaluation state: limits and the query's own start/end (for ``@ start()``)."""

    def __init__(
        self,
        reader: SeriesReader,
        *,
        query_start_ms: int,
        query_end_ms: int,
        budget: selectors.SampleBudget,
        deadline: float,
        default_subquery_step_ms: int,
    ) -> None:
        self.reader = reader
        self.query_start_ms = query_start_ms
        self.query_end_ms = query_end_ms
        self.budget = budget
        self.deadline = deadline
        self.default_subquery_step_ms = default_subquery_step_ms
        self._dispatch: dict[type, Callable[[Any, EvalContext], Value]] = {
            NumberLiteral: self._number,
            StringLiteral: self._string,
            VectorSelector: self._vector_selector,
            MatrixSelector: self._matrix_selector,
            SubqueryExpr: self._subquery,
            Call: self._call,
            AggregateExpr: self._aggregate,
            BinaryExpr: self._binary,
            UnaryExpr: self._unary,
            ParenExpr: self._paren,
        }
        self._invariance: dict[int, bool] = {}

    def eval(self, expr: Expr, ctx: EvalContext) -> Value:
        if time.monotonic() > self.deadline:
            raise QueryTimeout(TIMEOUT_MESSAGE)
        handler = self._dispatch.get(type(expr))
        if handler is None:
            raise EvalError(f"unexpected expression node {type(expr).__name__}")
        if ctx.steps > 1 and not isinstance(expr, NumberLiteral | StringLiteral) and self._invariant(expr):
            # Every selector below is pinned by ``@``: evaluate one step, repeat it for all.
            one = EvalContext(
                ctx.start_ms, ctx.start_ms, ctx.step_ms, ctx.times_ms[:1], ctx.lookback_ms,
                warnings=ctx.warnings, infos=ctx.infos, query=ctx.query, query_expr=ctx.query_expr,
            )
            return _repeat_steps(handler(expr, one), ctx.steps)
        return handler(expr, ctx)

    def _invariant(self, expr: Expr) -> bool:
        """Prometheus' step invariance: the value is the same at every step."""
        key = id(expr)
        known = self._invariance.get(key)
        if known is None:
            known = self._invariance[key] = self._compute_invariant(expr)
        return known

    def _compute_invariant(self, expr: Expr) -> bool:
        match expr:
            case NumberLiteral() | StringLiteral():
                return True
            case VectorSelector(at=at) | SubqueryExpr(at=at):
                return at is not None
            case MatrixSelector(selector=sel):
                return sel.at is not None
            case Call(func=func, args=args):
                return func not in _TIME_DEPENDENT_FUNCTIONS and all(self._invariant(a) for a in args)
            case AggregateExpr(expr=inner, param=param):
                return self._invariant(inner) and (param is None or self._invariant(param))
            case BinaryExpr(lhs=lhs, rhs=rhs):
                return self._invariant(lhs) and self._invariant(rhs)
            case UnaryExpr(expr=inner) | ParenExpr(expr=inner):
                return self._invariant(inner)
        return False

    # --- leaves ----------------------------------------------------------------------------------

    def _number(self, expr: NumberLiteral, ctx: EvalContext) -> Value:
        return Scalar(np.full(ctx.steps, expr.value, dtype=np.float64))

    def _string(self, expr: StringLiteral, ctx: EvalContext) -> Value:
        return StringValue(expr.value)

    def _eval_times(self, at: At | None, offset_ms: int, ctx: EvalContext) -> I64:
        if at is None:
            times: I64 = ctx.times_ms - offset_ms
            return times
        if at.kind == "start":
            t = self.query_start_ms
        elif at.kind == "end":
            t = self.query_end_ms
        else:
            t = at.timestamp_ms
        return np.full(ctx.steps, t - offset_ms, dtype=np.int64)

    def _vector_selector(
        self, expr: VectorSelector, ctx: EvalContext, with_timestamps: bool = False
    ) -> Value:
        times = self._eval_times(expr.at, expr.offset_ms, ctx)
        return selectors.select_instant(
            self.reader, expr.matchers, times, lookback_ms=ctx.lookback_ms, budget=self.budget,
            with_timestamps=with_timestamps,
        )

    def _matrix_selector(self, expr: MatrixSelector, ctx: EvalContext) -> Value:
        sel = expr.selector
        times = self._eval_times(sel.at, sel.offset_ms, ctx)
        return selectors.select_range(self.reader, sel.matchers, times, expr.range_ms, budget=self.budget)

    def _subquery(self, expr: SubqueryExpr, ctx: EvalContext) -> Value:
        step = expr.step_ms or self.default_subquery_step_ms
        window_end = self._eval_times(expr.at, expr.offset_ms, ctx)
        # Inner steps are the multiples of the step in (end - range, end] of any outer step.
        first = (int(window_end.min()) - expr.range_ms) // step * step + step
        last = int(window_end.max()) // step * step
        inner_times = np.arange(first, last + 1, step, dtype=np.int64)
        if inner_times.size == 0:
            return selectors.range_from_steps(StepVector.empty(0), inner_times, window_end, expr.range_ms)
        inner = EvalContext(
            int(inner_times[0]), int(inner_times[-1]), step, inner_times, ctx.lookback_ms,
            warnings=ctx.warnings, infos=ctx.infos, query=ctx.query, query_expr=ctx.query_expr,
        )
        value = self.eval(expr.expr, inner)
        if not isinstance(value, StepVector):
            raise EvalError("subquery is only allowed on instant vector")
        self.budget.add(int(value.present.sum()))
        return selectors.range_from_steps(value, inner_times, window_end, expr.range_ms)

    # --- inner nodes -----------------------------------------------------------------------------

    def _paren(self, expr: ParenExpr, ctx: EvalContext) -> Value:
        return self.eval(expr.expr, ctx)

    def _unary(self, expr: UnaryExpr, ctx: EvalContext) -> Value:
        value = self.eval(expr.expr, ctx)
        return operators.negate(value) if expr.op == "-" else value

    def _binary(self, expr: BinaryExpr, ctx: EvalContext) -> Value:
        lhs = self.eval(expr.lhs, ctx)
        rhs = self.eval(expr.rhs, ctx)
        return operators.binary(expr, lhs, rhs, ctx)

    def _aggregate(self, expr: AggregateExpr, ctx: EvalContext) -> Value:
        param = None if expr.param is None else self.eval(expr.param, ctx)
        value = self.eval(expr.expr, ctx)
        if not isinstance(value, StepVector):
            raise EvalError(f"expected instant vector in aggregation {expr.op}")
        return aggregations.aggregate(expr, value, param, ctx)

    def _call(self, expr: Call, ctx: EvalContext) -> Value:
        from watchkeeper.promql.functions import FUNCTIONS

        function = FUNCTIONS.get(expr.func)
        if function is None:
            raise EvalError(f"unknown function with name {expr.func!r}")
        args = [self._argument(arg, ctx, with_timestamps=expr.func == "timestamp") for arg in expr.args]
        return function.impl(args, list(expr.args), ctx)

    def _argument(self, arg: Expr, ctx: EvalContext, *, with_timestamps: bool) -> Value:
        # Sample timestamps are kept only where ``timestamp()`` reads them: its argument
        # straight from a selector (through parentheses).
        inner = arg
        while isinstance(inner, ParenExpr):
            inner = inner.expr
        if with_timestamps and isinstance(inner, VectorSelector):
            if time.monotonic() > self.deadline:
                raise QueryTimeout(TIMEOUT_MESSAGE)
            return self._vector_selector(inner, ctx, with_timestamps=True)
        return self.eval(arg, ctx)


def _repeat_steps(value: Value, steps: int) -> Value:
    """A one-step value repeated for ``steps`` identical steps."""
    if isinstance(value, Scalar):
        return Scalar(np.repeat(value.values, steps))
    if isinstance(value, StepVector):
        return StepVector(
            value.labels,
            np.repeat(value.values, steps, axis=1),
            np.repeat(value.present, steps, axis=1),
            sample_ts=None if value.sample_ts is None else np.repeat(value.sample_ts, steps, axis=1),
            drop_name=value.drop_name,
        )
    if isinstance(value, RangeVector):
        return RangeVector(
            value.labels, value.timestamps_ms, value.values, value.offsets,
            np.repeat(value.lo, steps, axis=1), np.repeat(value.hi, steps, axis=1),
            np.repeat(value.window_end_ms, steps), value.range_ms, drop_name=value.drop_name,
        )
    return value


# --- results -------------------------------------------------------------------------------------


def _final_vector(vec: StepVector) -> tuple[list[Labels], F64, Bool]:
    """Apply delayed name removal; merge series that became identical if they never overlap."""
    labels = list(vec.labels)
    if vec.drop_name is not None:
        for i in np.flatnonzero(vec.drop_name):
            labels[i] = without(labels[i], (METRIC_NAME,))
    values, present = vec.values, vec.present
    ids, first = aggregations.dense_ids(labels)
    if len(first) == len(labels):
        return labels, values, present
    counts = aggregations.group_count(ids, present, len(first))
    if (counts > 1).any():
        raise EvalError(SAME_LABELSET)
    steps = present.shape[1]
    out_values = np.full((len(first), steps), np.nan)
    out_present = np.zeros((len(first), steps), dtype=bool)
    rows, cols = np.nonzero(present)
    out_values[ids[rows], cols] = values[rows, cols]
    out_present[ids[rows], cols] = True
    return [labels[i] for i in first], out_values, out_present


def _instant_result(value: Value, time_ms: int) -> QueryResult:
    at = np.array([time_ms], dtype=np.int64)
    if isinstance(value, Scalar):
        return QueryResult("scalar", [ResultSeries((), at, value.values[:1].copy())])
    if isinstance(value, StringValue):
        return QueryResult("string", [ResultSeries((), at, np.array([np.nan]))], string_value=value.value)
    if isinstance(value, RangeVector):
        return QueryResult("matrix", _raw_matrix(value))
    labels, values, present = _final_vector(value)
    series = [
        ResultSeries(labels[i], at, values[i, :1].copy()) for i in range(len(labels)) if present[i, 0]
    ]
    return QueryResult("vector", series)


def _raw_matrix(rv: RangeVector) -> list[ResultSeries]:
    series = []
    for i, lbls in enumerate(rv.labels):
        lo, hi = int(rv.lo[i, 0]), int(rv.hi[i, 0])
        if hi > lo:
            if rv.drop_name is not None and rv.drop_name[i]:
                lbls = without(lbls, (METRIC_NAME,))
            series.append(ResultSeries(lbls, rv.timestamps_ms[lo:hi].copy(), rv.values[lo:hi].copy()))
    series.sort(key=lambda s: s.labels)
    return series


def _range_result(value: Value, times: I64) -> QueryResult:
    if isinstance(value, Scalar):
        return QueryResult("matrix", [ResultSeries((), times.copy(), value.values.copy())])
    if not isinstance(value, StepVector):
        raise ParseError("invalid expression type for range query, must be Scalar or instant Vector")
    labels, values, present = _final_vector(value)
    order = sorted(range(len(labels)), key=lambda i: labels[i])
    series = []
    for i in order:
        mask = present[i]
        if mask.any():
            series.append(ResultSeries(labels[i], times[mask], values[i][mask]))
    return QueryResult("matrix", series)


def _with_annotations(result: QueryResult, ctx: EvalContext, loaded: int) -> QueryResult:
    result.warnings = list(dict.fromkeys(ctx.warnings))
    result.infos = list(dict.fromkeys(ctx.infos))
    result.samples_loaded = loaded
    return result
