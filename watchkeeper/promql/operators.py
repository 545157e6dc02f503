"""Binary operators: arithmetic, comparisons (filters or ``bool``), set operators, vector matching.

Matching is per step: the match signature of every series is mapped to an integer id, and
per-(signature, step) counts of present series (``group_count``) find partners and duplicates for
all steps at once.

>>> binary(BinaryExpr("+", lhs_expr, rhs_expr), lhs, rhs, ctx)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np

from watchkeeper.errors import EvalError
from watchkeeper.labels import METRIC_NAME, Labels, keep_only, without
from watchkeeper.promql.aggregations import dense_ids, group_count, group_reduce
from watchkeeper.promql.ast import ARITHMETIC_OPS, COMPARISON_OPS, SET_OPS, BinaryExpr, VectorMatching
from watchkeeper.promql.values import F64, I64, Bool, EvalContext, Scalar, StepVector, Value

MANY_TO_MANY = (
    "found duplicate series for the match group {group} on the {side} hand-side of the operation: "
    "[{a}, {b}];many-to-many matching not allowed: matching labels must be unique on one side"
)
ONE_TO_ONE_DUPLICATE = (
    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
)
GROUPING_DUPLICATE = "multiple matches for labels: grouping labels must ensure unique matches"


_ARITHMETIC: dict[str, np.ufunc] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.divide,
    "%": np.fmod,  # Go's math.Mod: the result has the dividend's sign
    "^": np.power,
    "atan2": np.arctan2,
}
_COMPARISON: dict[str, np.ufunc] = {
    "==": np.equal,
    "!=": np.not_equal,
    ">": np.greater,
    "<": np.less,
    ">=": np.greater_equal,
    "<=": np.less_equal,
}


def arithmetic(op: str, lhs: F64 | float, rhs: F64 | float) -> F64:
    ufunc = _ARITHMETIC.get(op)
    if ufunc is None:
        raise EvalError(f"operator {op!r} not allowed for arithmetic")
    with np.errstate(all="ignore"):
        result: F64 = ufunc(lhs, rhs)
    return result


def compare(op: str, lhs: F64 | float, rhs: F64 | float) -> Bool:
    ufunc = _COMPARISON.get(op)
    if ufunc is None:
        raise EvalError(f"operator {op!r} is not a comparison")
    with np.errstate(invalid="ignore"):
        result: Bool = ufunc(lhs, rhs)
    return result


def negate(value: Value) -> Value:
    """Unary minus; drops the metric name (delayed)."""
    if isinstance(value, Scalar):
        return Scalar(-value.values)
    if isinstance(value, StepVector):
        drop = np.ones(len(value), dtype=bool)
        return StepVector(value.labels, -value.values, value.present, drop_name=drop)
    raise EvalError("unary minus is only allowed on scalars and instant vectors")


def binary(node: BinaryExpr, lhs: Value, rhs: Value, ctx: EvalContext) -> Value:
    """Evaluate ``lhs <op> rhs`` for all steps."""
    op = node.op.lower()
    if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
        if op in COMPARISON_OPS:
            return Scalar(compare(op, lhs.values, rhs.values).astype(np.float64))
        return Scalar(arithmetic(op, lhs.values, rhs.values))
    if isinstance(lhs, StepVector) and isinstance(rhs, Scalar):
        return _vector_scalar(op, lhs, rhs.values, swap=False, return_bool=node.return_bool)
    if isinstance(lhs, Scalar) and isinstance(rhs, StepVector):
        return _vector_scalar(op, rhs, lhs.values, swap=True, return_bool=node.return_bool)
    if isinstance(lhs, StepVector) and isinstance(rhs, StepVector):
        matching = node.matching or VectorMatching(card="many-to-many" if op in SET_OPS else "one-to-one")
        if op in SET_OPS:
            return _set_op(op, lhs, rhs, matching)
        return _vector_vector(op, lhs, rhs, matching, node.return_bool)
    raise EvalError(f"binary operator {op!r} is not defined between {_kind(lhs)} and {_kind(rhs)}")


def _kind(v: Value) -> str:
    return {"Scalar": "scalar", "StepVector": "instant vector", "RangeVector": "range vector"}.get(
        type(v).__name__, "string"
    )


def _vector_scalar(op: str, vec: StepVector, scalar: F64, *, swap: bool, return_bool: bool) -> StepVector:
    s = scalar[None, :]
    lv, rv = (s, vec.values) if swap else (vec.values, s)
    ones = np.ones(len(vec), dtype=bool)
    if op in ARITHMETIC_OPS:
        return StepVector(vec.labels, arithmetic(op, lv, rv), vec.present, drop_name=ones)
    if op not in COMPARISON_OPS:
        raise EvalError(f"operator {op!r} not allowed between an instant vector and a scalar")
    cond = compare(op, lv, rv)
    if return_bool:
        return StepVector(vec.labels, cond.astype(np.float64), vec.present.copy(), drop_name=ones)
    # A comparison filters and keeps the vector's value even when the scalar is on the left.
    return _compact(StepVector(vec.labels, vec.values, vec.present & cond, drop_name=vec.drop_name))


def _compact(vec: StepVector) -> StepVector:
    """Drop series that are absent at every step."""
    keep = vec.present.any(axis=1)
    if keep.all():
        return vec
    idx = np.flatnonzero(keep)
    return StepVector(
        [vec.labels[i] for i in idx],
        vec.values[idx],
        vec.present[idx],
        sample_ts=None if vec.sample_ts is None else vec.sample_ts[idx],
        drop_name=None if vec.drop_name is None else vec.drop_name[idx],
    )


def signature(labels: Labels, matching: VectorMatching) -> Labels:
    if matching.on:
        return keep_only(labels, matching.labels)
    return without(labels, (*matching.labels, METRIC_NAME))


def _signature_ids(lhs: StepVector, rhs: StepVector, matching: VectorMatching) -> tuple[I64, I64, int]:
    ids, first = dense_ids([signature(lb, matching) for lb in (*lhs.labels, *rhs.labels)])
    return ids[: len(lhs)], ids[len(lhs) :], len(first)


def _drop(vec: StepVector) -> Bool:
    return np.zeros(len(vec), dtype=bool) if vec.drop_name is None else vec.drop_name


def _set_op(op: str, lhs: StepVector, rhs: StepVector, matching: VectorMatching) -> StepVector:
    lid, rid, n_sig = _signature_ids(lhs, rhs, matching)
    if op == "or":
        lhs_count = group_count(lid, lhs.present, n_sig)
        rhs_present = rhs.present & (lhs_count[rid] == 0)
        out = StepVector(
            [*lhs.labels, *rhs.labels],
            np.vstack([lhs.values, rhs.values]),
            np.vstack([lhs.present, rhs_present]),
            drop_name=np.concatenate([_drop(lhs), _drop(rhs)]),
        )
        return _compact(out)
    rhs_count = group_count(rid, rhs.present, n_sig)
    matched = rhs_count[lid] > 0
    present = lhs.present & (matched if op == "and" else ~matched)
    return _compact(StepVector(lhs.labels, lhs.values, present, drop_name=lhs.drop_name))


def _labels_str(labels: Labels) -> str:
    """Prometheus' ``Labels.String()``: ``{__name__="up", job="api"}``."""
    return "{" + ", ".join(f"{k}={_quote(v)}" for k, v in labels) + "}"


def _quote(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _vector_vector(
    op: str, lhs: StepVector, rhs: StepVector, matching: VectorMatching, return_bool: bool
) -> StepVector:
    steps = lhs.present.shape[1]
    if len(lhs) == 0 or len(rhs) == 0:
        return StepVector.empty(steps)
    swapped = matching.card == "one-to-many"
    many, one = (rhs, lhs) if swapped else (lhs, rhs)
    mid, oid, n_sig = _signature_ids(many, one, matching)
    # Prometheus short-circuits steps where either side is empty.
    active = cast(Bool, many.present.any(axis=0) & one.present.any(axis=0))
    one_count = group_count(oid, one.present, n_sig)
    dup = (one_count > 1) & active[None, :]
    if dup.any():
        sig, step = (int(x[0]) for x in np.nonzero(dup))
        rows = np.flatnonzero((oid == sig) & one.present[:, step])[:2]
        a, b = sorted(_labels_str(one.labels[i]) for i in rows)
        group = _labels_str(signature(one.labels[rows[0]], matching))
        raise EvalError(MANY_TO_MANY.format(group=group, side="left" if swapped else "right", a=a, b=b))
    # The one-side row matched at each (signature, step): unique where one_count == 1.
    row_index = np.where(one.present, np.arange(len(one))[:, None], 0)
    one_row = group_reduce(np.add, oid, row_index, n_sig, 0)
    matched = many.present & (one_count[mid] == 1)
    if matching.card == "one-to-one" and (group_count(mid, matched, n_sig) > 1).any():
        raise EvalError(ONE_TO_ONE_DUPLICATE)
    partner = one_row[mid]  # (many rows, steps)
    cols = np.arange(steps)[None, :]
    one_vals = one.values[partner, cols]
    lv, rv = (one_vals, many.values) if swapped else (many.values, one_vals)
    drop = _drop(many)
    if op in ARITHMETIC_OPS:
        values = arithmetic(op, lv, rv)
        present = matched
    elif op in COMPARISON_OPS:
        cond = compare(op, lv, rv)
        if return_bool:
            values, present = cond.astype(np.float64), matched
            drop = np.ones(len(many), dtype=bool)
        else:
            values, present = lv, matched & cond
    else:
        raise EvalError(f"operator {op!r} not allowed between instant vectors")
    drop_metric = op in ARITHMETIC_OPS

    def result_labels(m: int, o: int) -> Labels:
        lb = dict(many.labels[m])
        if drop_metric:
            lb.pop(METRIC_NAME, None)
        if matching.card == "one-to-one":
            if matching.on:
                lb = {k: v for k, v in lb.items() if k in matching.labels}
            else:
                for name in matching.labels:
                    lb.pop(name, None)
        if matching.include:
            one_labels = dict(one.labels[o])
            for name in matching.include:
                value = one_labels.get(name, "")
                if value:
                    lb[name] = value
                else:
                    lb.pop(name, None)
        return tuple(sorted(lb.items()))

    if not matching.include:
        labels = [result_labels(m, 0) for m in range(len(many))]
        out = StepVector(labels, np.where(present, values, np.nan), present, drop_name=drop)
    else:
        out = _expand_by_partner(many, one, matching, values, present, partner, drop, result_labels)
    if matching.card != "one-to-one":
        _check_unique_result(out)
    return _compact(out)


def _expand_by_partner(
    many: StepVector,
    one: StepVector,
    matching: VectorMatching,
    values: F64,
    present: Bool,
    partner: I64,
    drop: Bool,
    result_labels: Callable[[int, int], Labels],
) -> StepVector:
    """``group_x(include)``: the result labels depend on the partner, which may change per step."""
    include_key = [tuple(dict(lb).get(n, "") for n in matching.include) for lb in one.labels]
    inc_id, inc_first = dense_ids(include_key)
    rows, cols = np.nonzero(present)
    codes = rows * len(inc_first) + inc_id[partner[rows, cols]]
    uniq, inverse = np.unique(codes, return_inverse=True)
    inverse = inverse.reshape(-1)
    steps = present.shape[1]
    out_values = np.full((len(uniq), steps), np.nan)
    out_present = np.zeros((len(uniq), steps), dtype=bool)
    out_values[inverse, cols] = values[rows, cols]
    out_present[inverse, cols] = True
    m_rows = uniq // len(inc_first)
    o_rows = [inc_first[int(c % len(inc_first))] for c in uniq]
    labels = [result_labels(int(m), int(o)) for m, o in zip(m_rows, o_rows, strict=True)]
    return StepVector(labels, out_values, out_present, drop_name=drop[m_rows])


def _check_unique_result(vec: StepVector) -> None:
    ids, first = dense_ids(vec.labels)
    if len(first) < len(vec) and (group_count(ids, vec.present, len(first)) > 1).any():
        raise EvalError(GROUPING_DUPLICATE)
