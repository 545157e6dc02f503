"""watchkeeper's own PromQL syntax tree: frozen dataclasses, independent of the parser library.

>>> from watchkeeper.promql.parser import parse
>>> parse('sum by (job) (rate(http_requests_total[5m]))')   # doctest: +SKIP
AggregateExpr(op='sum', expr=Call(func='rate', args=(MatrixSelector(...),)), ...)

Durations and timestamps are integer milliseconds. ``offset_ms`` is 0 when there is no offset
(negative offsets are allowed). Value types follow Prometheus: ``scalar``, ``vector`` (instant
vector), ``matrix`` (range vector), ``string``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from watchkeeper.labels import Matcher

ValueType = Literal["scalar", "vector", "matrix", "string"]
Cardinality = Literal["one-to-one", "many-to-one", "one-to-many", "many-to-many"]


@dataclass(frozen=True, slots=True)
class At:
    """The ``@`` modifier: a fixed timestamp, or the query's ``start()`` / ``end()``."""

    kind: Literal["time", "start", "end"]
    timestamp_ms: int = 0


@dataclass(frozen=True, slots=True)
class NumberLiteral:
    value: float


@dataclass(frozen=True, slots=True)
class StringLiteral:
    value: str


@dataclass(frozen=True, slots=True)
class VectorSelector:
    """``name{matchers} offset X @ T``. ``matchers`` include the ``__name__`` matcher when a name
    is given, so evaluation only needs ``matchers``; ``name`` is kept for printing."""

    name: str | None
    matchers: tuple[Matcher, ...]
    offset_ms: int = 0
    at: At | None = None


@dataclass(frozen=True, slots=True)
class MatrixSelector:
    """``selector[range]``; offset and ``@`` live on the inner selector."""

    selector: VectorSelector
    range_ms: int


@dataclass(frozen=True, slots=True)
class SubqueryExpr:
    """``expr[range:step]``; ``step_ms`` None means the default step (the query step, or the
    engine's default subquery step)."""

    expr: Expr
    range_ms: int
    step_ms: int | None
    offset_ms: int = 0
    at: At | None = None


@dataclass(frozen=True, slots=True)
class Call:
    func: str
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class AggregateExpr:
    """``op [by|without (grouping)] ([param,] expr)``. ``without`` False with empty grouping
    aggregates everything into one group (as does no modifier at all)."""

    op: str
    expr: Expr
    param: Expr | None = None
    grouping: tuple[str, ...] = ()
    without: bool = False


@dataclass(frozen=True, slots=True)
class VectorMatching:
    """``on(labels)`` / ``ignoring(labels)`` and ``group_left(include)`` / ``group_right(include)``.
    ``on`` False with no labels is the default matching on all labels but the metric name."""

    card: Cardinality = "one-to-one"
    on: bool = False
    labels: tuple[str, ...] = ()
    include: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BinaryExpr:
    """``lhs op [bool] [matching] rhs``. ``op`` is the operator's text: ``+ - * / % ^ == != > < >= <=
    and or unless atan2``."""

    op: str
    lhs: Expr
    rhs: Expr
    matching: VectorMatching | None = None
    return_bool: bool = False


@dataclass(frozen=True, slots=True)
class UnaryExpr:
    op: Literal["-", "+"]
    expr: Expr


@dataclass(frozen=True, slots=True)
class ParenExpr:
    expr: Expr


Expr = (
    NumberLiteral | StringLiteral | VectorSelector | MatrixSelector | SubqueryExpr | Call
    | AggregateExpr | BinaryExpr | UnaryExpr | ParenExpr
)

COMPARISON_OPS = frozenset({"==", "!=", ">", "<", ">=", "<="})
SET_OPS = frozenset({"and", "or", "unless"})
ARITHMETIC_OPS = frozenset({"+", "-", "*", "/", "%", "^", "atan2"})
