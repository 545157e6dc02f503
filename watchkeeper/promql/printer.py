"""watchkeeper's AST -> PromQL text that parses back to the same AST.

>>> from watchkeeper.promql.parser import parse
>>> to_promql(parse('sum by (job) (rate(http_requests_total{code=~"5.."}[1m1ms] offset -5m))'))
'sum by (job) (rate(http_requests_total{code=~"5.."}[1m1ms] offset -5m))'
>>> format_duration(5_400_000)
'1h30m'

The binding's own printer is lossy (``[5m:]`` -> ``[5m]``, sub-second remainders dropped, escapes
lost), so this one is ours. :func:`prettify` is Prometheus' ``Prettify`` (``/api/v1/format_query``):
an expression longer than 100 columns is split over lines, one level of indentation per node.

:func:`to_promql` writes parentheses where the AST has :class:`ParenExpr` and, for
ASTs built by hand, wherever operator precedence needs them; for any parsed ``q``,
``parse(to_promql(parse(q))) == parse(q)``.
"""

from __future__ import annotations

import math
import re

from watchkeeper.durations import format_duration
from watchkeeper.labels import METRIC_NAME, Matcher, MatchOp
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
    VectorMatching,
    VectorSelector,
)

__all__ = ["MAX_LINE", "format_duration", "format_number", "format_string", "prettify", "to_promql"]

MAX_LINE = 100
"""Prometheus' ``maxCharactersPerLine``: a node whose text is longer is split by :func:`prettify`."""
_INDENT = "  "


# Binding strength of binary operators, as in Prometheus' grammar (higher binds tighter).
_PRECEDENCE = {
    "or": 1,
    "and": 2,
    "unless": 2,
    "==": 3,
    "!=": 3,
    ">": 3,
    "<": 3,
    ">=": 3,
    "<=": 3,
    "+": 4,
    "-": 4,
    "*": 5,
    "/": 5,
    "%": 5,
    "atan2": 5,
    "^": 6,
}
_UNARY_PRECEDENCE = 5  # `-a * b` is `(-a) * b`, `-a ^ b` is `-(a ^ b)`

_IDENTIFIER = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
# Words the lexer reads as keywords even where a label name is expected (`by (nan)`): quoted.
_LABEL_KEYWORDS = frozenset({"without", "inf", "nan", "anchored", "smoothed"})
# Words that cannot start a selector (`on{a="1"}`): written as a `__name__` matcher instead.
_METRIC_KEYWORDS = frozenset(
    {"atan2", "on", "ignoring", "group_left", "group_right", "bool", "inf", "nan", "anchored", "smoothed"}
)

_SHORT_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\v": "\\v",
}


def to_promql(expr: Expr, *, sorted_matchers: bool = False) -> str:
    """PromQL text for an expression. ``sorted_matchers``: label matchers as Prometheus' printer
    writes them (sorted, joined by ``,``), else in query order joined by ``, ``.

    >>> from watchkeeper.promql.parser import parse
    >>> to_promql(parse("a+on(x)group_left(y)b@-1.5"))
    'a + on (x) group_left (y) b @ -1.500'
    >>> to_promql(parse('up{job="a", code="5"}'), sorted_matchers=True)
    'up{code="5",job="a"}'
    """
    # Iterative, not recursive: a parsed query can be over a thousand nodes deep.
    out: list[str] = []
    todo: list[Expr | str] = [expr]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            out.append(item)
        else:
            todo.extend(reversed(_parts(item, sorted_matchers)))
    return "".join(out)


def prettify(expr: Expr, *, max_line: int = MAX_LINE) -> str:
    """Prometheus' ``Prettify`` (``promql/parser/prettier.go``): a node whose one-line text is
    longer than ``max_line`` puts its operands, arguments or body on lines of their own, indented
    two spaces per level; shorter nodes stay on one line.

    >>> from watchkeeper.promql.parser import parse
    >>> print(prettify(parse("sum by (job) (rate(http_requests_total[5m])) / 2"), max_line=30))
      sum by (job) (
        rate(http_requests_total[5m])
      )
    /
      2
    """
    return _pretty(expr, 0, max_line)


def _pretty(expr: Expr, level: int, max_line: int) -> str:
    pad = _INDENT * level
    text = to_promql(expr, sorted_matchers=True)
    if isinstance(expr, SubqueryExpr):
        # As Prometheus: a subquery that fits is written without the indentation of its level.
        return text if len(text) <= max_line else _pretty(expr.expr, level, max_line) + _subquery_suffix(expr)
    if isinstance(expr, UnaryExpr):
        return f"{pad}{expr.op}{_pretty(expr.expr, level, max_line).strip()}"
    if len(text) <= max_line:
        return pad + text
    inner = level + 1
    match expr:
        case AggregateExpr():
            head = f"{pad}{_aggregate_head(expr)}(\n"
            if expr.param is not None:
                head += _pretty(expr.param, inner, max_line) + ",\n"
            return f"{head}{_pretty(expr.expr, inner, max_line)}\n{pad})"
        case BinaryExpr():
            lhs, rhs = _pretty(expr.lhs, inner, max_line), _pretty(expr.rhs, inner, max_line)
            return f"{lhs}\n{pad}{expr.op}{_matching(expr)}\n{rhs}"
        case Call(func=func, args=args) if args:
            body = ",\n".join(_pretty(arg, inner, max_line) for arg in args)
            return f"{pad}{func}(\n{body}\n{pad})"
        case ParenExpr(expr=body):
            return f"{pad}(\n{_pretty(body, inner, max_line)}\n{pad})"
    return pad + text  # selectors and literals are never split


def _aggregate_head(expr: AggregateExpr) -> str:
    if expr.without:
        return f"{expr.op} without ({_label_list(expr.grouping)}) "
    if expr.grouping:
        return f"{expr.op} by ({_label_list(expr.grouping)}) "
    return expr.op


def _subquery_suffix(expr: SubqueryExpr) -> str:
    step = "" if expr.step_ms is None else format_duration(expr.step_ms)
    return f"[{format_duration(expr.range_ms)}:{step}]{_modifiers(expr.at, expr.offset_ms)}"


def _parts(expr: Expr, sorted_matchers: bool = False) -> list[Expr | str]:
    """One node's text, with its sub-expressions left in place to be printed in turn."""
    match expr:
        case NumberLiteral(value=value):
            return [format_number(value)]
        case StringLiteral(value=value):
            return [format_string(value)]
        case VectorSelector():
            return [_selector(expr, sorted_matchers) + _modifiers(expr.at, expr.offset_ms)]
        case MatrixSelector(selector=sel, range_ms=range_ms):
            return [f"{_selector(sel, sorted_matchers)}[{format_duration(range_ms)}]"
                    f"{_modifiers(sel.at, sel.offset_ms)}"]
        case SubqueryExpr():
            suffix = _subquery_suffix(expr)
            if isinstance(expr.expr, BinaryExpr | UnaryExpr) or _is_negative_number(expr.expr):
                return ["(", expr.expr, ")" + suffix]
            return [expr.expr, suffix]
        case Call(func=func, args=args):
            parts: list[Expr | str] = [f"{func}("]
            for index, arg in enumerate(args):
                if index:
                    parts.append(", ")
                parts.append(arg)
            parts.append(")")
            return parts
        case AggregateExpr():
            head = _aggregate_head(expr) + "("
            if expr.param is None:
                return [head, expr.expr, ")"]
            return [head, expr.param, ", ", expr.expr, ")"]
        case BinaryExpr():
            return _binary(expr)
        case UnaryExpr(op=op, expr=inner):
            if isinstance(inner, BinaryExpr) and _PRECEDENCE.get(inner.op, 0) <= _UNARY_PRECEDENCE:
                return [f"{op}(", inner, ")"]
            if isinstance(inner, UnaryExpr) or _is_negative_number(inner):
                return [f"{op} ", inner]  # `- -a`, not `--a`
            return [op, inner]
        case ParenExpr(expr=inner):
            return ["(", inner, ")"]
        case _:
            raise TypeError(f"not a PromQL expression: {expr!r}")


def format_number(value: float) -> str:
    """A float literal that parses back to the same value (``Inf``, ``NaN``, ``-0``).

    >>> format_number(2.0), format_number(0.1), format_number(float("-inf"))
    ('2', '0.1', '-Inf')
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def format_string(value: str) -> str:
    """A double-quoted PromQL string literal with Go escapes.

    >>> print(format_string('a"b\\\\c'))
    "a\\"b\\\\c"
    """
    out = []
    for ch in value:
        escaped = _SHORT_ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ch.isprintable():
            out.append(ch)
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def _label_name(name: str) -> str:
    return name if _IDENTIFIER.match(name) else format_string(name)


def _label_list(names: tuple[str, ...]) -> str:
    return ", ".join(format_string(n) if n.lower() in _LABEL_KEYWORDS else _label_name(n) for n in names)


def _selector(sel: VectorSelector, sorted_matchers: bool = False) -> str:
    matchers = list(sel.matchers)
    name = sel.name
    if name is not None:
        implied = Matcher(MatchOp.EQUAL, METRIC_NAME, name)
        if implied in matchers:
            matchers.remove(implied)
        if not _METRIC_NAME.match(name) or name.lower() in _METRIC_KEYWORDS:
            matchers.insert(0, implied)
            name = None
    texts = [f"{_label_name(m.name)}{m.op.value}{format_string(m.value)}" for m in matchers]
    body = ",".join(sorted(texts)) if sorted_matchers else ", ".join(texts)
    if name is None:
        return f"{{{body}}}"
    return f"{name}{{{body}}}" if body else name


def _modifiers(at: At | None, offset_ms: int) -> str:
    out = ""
    if at is not None:
        if at.kind == "time":
            sign = "-" if at.timestamp_ms < 0 else ""
            seconds, ms = divmod(abs(at.timestamp_ms), 1000)
            out += f" @ {sign}{seconds}.{ms:03d}"
        else:
            out += f" @ {at.kind}()"
    if offset_ms:
        out += f" offset {format_duration(offset_ms)}"
    return out


def _matching(expr: BinaryExpr) -> str:
    m: VectorMatching | None = expr.matching
    out = " bool" if expr.return_bool else ""
    if m is None:
        return out
    grouped = m.card in ("many-to-one", "one-to-many")
    if m.on:
        out += f" on ({_label_list(m.labels)})"
    elif m.labels or grouped:
        out += f" ignoring ({_label_list(m.labels)})"
    if m.card == "many-to-one":
        out += f" group_left ({_label_list(m.include)})"
    elif m.card == "one-to-many":
        out += f" group_right ({_label_list(m.include)})"
    return out


def _binary(expr: BinaryExpr) -> list[Expr | str]:
    precedence = _PRECEDENCE.get(expr.op, 0)
    right_assoc = expr.op == "^"
    parts: list[Expr | str] = []
    if _operand_precedence(expr.lhs) < precedence + (1 if right_assoc else 0):
        parts += ["(", expr.lhs, ")"]
    else:
        parts.append(expr.lhs)
    parts.append(f" {expr.op}{_matching(expr)} ")
    # An operand on the right that starts with a sign (unary minus, negative number) cannot be
    # split by the operator before it, so it never needs parentheses.
    signed = isinstance(expr.rhs, UnaryExpr) or _is_negative_number(expr.rhs)
    if not signed and _operand_precedence(expr.rhs) < precedence + (0 if right_assoc else 1):
        parts += ["(", expr.rhs, ")"]
    else:
        parts.append(expr.rhs)
    return parts


def _is_negative_number(expr: Expr) -> bool:
    return (
        isinstance(expr, NumberLiteral) and math.copysign(1.0, expr.value) < 0 and not math.isnan(expr.value)
    )


def _operand_precedence(expr: Expr) -> int:
    if isinstance(expr, BinaryExpr):
        return _PRECEDENCE.get(expr.op, 0)
    if isinstance(expr, UnaryExpr) or _is_negative_number(expr):
        return _UNARY_PRECEDENCE
    return 100  # atoms: selectors, calls, aggregations, parentheses, literals
