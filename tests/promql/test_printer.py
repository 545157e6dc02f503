"""The PromQL printer: ``parse(to_promql(parse(q))) == parse(q)`` over the conformance corpus, and
text that Prometheus users would recognise."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from watchkeeper.durations import format_duration
from watchkeeper.labels import Matcher, MatchOp
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
from watchkeeper.promql.parser import parse
from watchkeeper.promql.printer import format_number, format_string, to_promql

CONFORMANCE = Path(__file__).resolve().parents[2].parent / "shared" / "conformance"

# Prometheus' .test grammar (promql/promqltest/test.go).
_EVAL_INSTANT = re.compile(
    r"^eval(?:_(?:fail|warn|ordered|info))?\s+instant\s+(?:at\s+(?:.+?))?\s+(.+)$", re.I
)
_EVAL_RANGE = re.compile(
    r"^eval(?:_(?:fail|warn|info))?\s+range\s+from\s+(?:.+)\s+to\s+(?:.+)\s+step\s+(?:.+?)\s+(.+)$", re.I
)


def _yaml_exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str | int | float):
                yield str(value)
            else:
                yield from _yaml_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _yaml_exprs(item)


def corpus() -> list[tuple[str, str]]:
    """``(where, expression)`` for every eval line and rule-file ``expr:`` of the corpus."""
    found: list[tuple[str, str]] = []
    for path in sorted((CONFORMANCE / "promql").glob("*.test")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            match = _EVAL_INSTANT.match(stripped) or _EVAL_RANGE.match(stripped)
            if match:
                found.append((f"{path.name}:{number}", match.group(1)))
    for path in sorted((CONFORMANCE / "rules").glob("*.yml")):
        for index, text in enumerate(_yaml_exprs(yaml.safe_load(path.read_text()))):
            found.append((f"{path.name}#{index}", text))
    return found


CORPUS = corpus()
CORPUS_FILES = sorted({where.split(":")[0].split("#")[0] for where, _ in CORPUS})


def test_corpus_is_present() -> None:
    assert len(CORPUS) > 900, f"conformance corpus not found under {CONFORMANCE}"


def round_trip_failure(text: str) -> str | None:
    """Why ``text`` does not round-trip, or None."""
    try:
        expr = parse(text)
        printed = to_promql(expr)
        if parse(printed) != expr:
            return f"printed as {printed!r}, which parses differently"
        # What the conformance harness does: pin every selector and subquery with `@ <eval time>`.
        pinned = to_promql(with_at(expr, At("time", -10_500)))
        if parse(pinned) != with_at(expr, At("time", -10_500)):
            return f"with @ printed as {pinned!r}, which parses differently"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.mark.parametrize("file", CORPUS_FILES)
def test_corpus_round_trips(file: str) -> None:
    """One test per corpus file, listing every expression that does not round-trip."""
    failures = [
        f"{where}: {text}\n    {failure}"
        for where, text in CORPUS
        if where.startswith((f"{file}:", f"{file}#")) and (failure := round_trip_failure(text))
    ]
    assert not failures, "\n".join(failures)


def with_at(expr: Expr, at: At) -> Expr:
    """``@ at`` on every selector and subquery that has none; nodes below an ``@`` are left alone."""
    match expr:
        case VectorSelector(at=None):
            return replace(expr, at=at)
        case MatrixSelector(selector=VectorSelector(at=None) as sel):
            return replace(expr, selector=replace(sel, at=at))
        case SubqueryExpr(at=None):
            return replace(expr, expr=with_at(expr.expr, at), at=at)
        case Call(args=args):
            return replace(expr, args=tuple(with_at(arg, at) for arg in args))
        case AggregateExpr():
            param = None if expr.param is None else with_at(expr.param, at)
            return replace(expr, expr=with_at(expr.expr, at), param=param)
        case BinaryExpr():
            return replace(expr, lhs=with_at(expr.lhs, at), rhs=with_at(expr.rhs, at))
        case UnaryExpr() | ParenExpr():
            return replace(expr, expr=with_at(expr.expr, at))
        case _:
            return expr


# --- exact text ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (1, "1ms"),
        (1001, "1s1ms"),
        (60_001, "1m1ms"),
        (90_000, "1m30s"),
        (5_400_000, "1h30m"),
        (86_400_000, "1d"),
        (8 * 86_400_000, "8d"),
        (14 * 86_400_000, "2w"),
        (365 * 86_400_000, "1y"),
        (366 * 86_400_000, "366d"),
        (-300_000, "-5m"),
    ],
)
def test_format_duration(ms: int, text: str) -> None:
    assert format_duration(ms) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (-2.0, "-2"),
        (0.1, "0.1"),
        (1e-05, "1e-05"),
        (1e20, "1e+20"),
        (float("inf"), "Inf"),
        (float("-inf"), "-Inf"),
        (float("nan"), "NaN"),
        (-0.0, "-0"),
    ],
)
def test_format_number(value: float, text: str) -> None:
    assert format_number(value) == text


def test_format_string_escapes() -> None:
    assert format_string('a"b\\c\nd\te\x01é') == '"a\\"b\\\\c\\nd\\te\\x01é"'
    assert parse(format_string('a"b\\c\nd\te\x01é\u2028')) == StringLiteral('a"b\\c\nd\te\x01é\u2028')
    assert format_string("\udcff") == '"\\xff"'  # a byte that was not UTF-8
    assert parse(format_string("a\udcffé")) == StringLiteral("a\udcffé")


@pytest.mark.parametrize(
    ("query", "text"),
    [
        ("up", "up"),
        ('up{job="api"}', 'up{job="api"}'),
        ('{__name__="up"}', '{__name__="up"}'),
        ('{"my.metric", "a.b"="c"}', '{__name__="my.metric", "a.b"="c"}'),
        (r"up{a=~`\d+`}", 'up{a=~"\\\\d+"}'),
        ("rate(up[5m:])", "rate(up[5m:])"),
        ("up[1001ms]", "up[1s1ms]"),
        ("up offset 1m1ms", "up offset 1m1ms"),
        ("up offset -5m", "up offset -5m"),
        ("up @ start()", "up @ start()"),
        ("up @ 100.5", "up @ 100.500"),
        ("up @ -100", "up @ -100.000"),
        ("up[5m] @ end() offset 1m", "up[5m] @ end() offset 1m"),
        ("max_over_time(up[1h:5m] offset 1d)", "max_over_time(up[1h:5m] offset 1d)"),
        ("a > bool b", "a > bool b"),
        ("a * on(x) group_left(y) b", "a * on (x) group_left (y) b"),
        ("a * ignoring(x) group_right b", "a * ignoring (x) group_right () b"),
        ("a and on() b", "a and on () b"),
        ("a or b", "a or b"),
        ("sum by (job) (up)", "sum by (job) (up)"),
        ("sum(up) without (instance)", "sum without (instance) (up)"),
        ("topk(3, up)", "topk(3, up)"),
        ("sum by (on, group) (up)", "sum by (on, group) (up)"),
        ('sum by ("nan", "without") (up)', 'sum by ("nan", "without") (up)'),
        ('up{on="1", nan="2"}', 'up{on="1", nan="2"}'),
        ('{__name__="bool"}', '{__name__="bool"}'),
        ("-(a + b) * c", "-(a + b) * c"),
        ("a - -1", "a - -1"),
        ('label_replace(up, "a", "$1", "b", "(.*)")', 'label_replace(up, "a", "$1", "b", "(.*)")'),
    ],
)
def test_printed_text(query: str, text: str) -> None:
    assert to_promql(parse(query)) == text
    assert parse(text) == parse(query)


# --- hand-built trees: parentheses wherever precedence needs them --------------------------------


def strip_parens(expr: Expr) -> Expr:
    """The tree without parentheses, and with ``-<number>`` folded as the parser folds it."""
    match expr:
        case ParenExpr(expr=inner):
            return strip_parens(inner)
        case UnaryExpr(op=op, expr=inner):
            inner = strip_parens(inner)
            if isinstance(inner, NumberLiteral):
                return NumberLiteral(-inner.value)
            return UnaryExpr(op, inner)
        case BinaryExpr():
            return BinaryExpr(
                expr.op, strip_parens(expr.lhs), strip_parens(expr.rhs), expr.matching, expr.return_bool
            )
        case SubqueryExpr():
            return SubqueryExpr(strip_parens(expr.expr), expr.range_ms, expr.step_ms, expr.offset_ms, expr.at)
        case Call(func=func, args=args):
            return Call(func, tuple(strip_parens(arg) for arg in args))
        case _:
            return expr


def _selector(name: str) -> VectorSelector:
    return VectorSelector(name, (Matcher(MatchOp.EQUAL, "__name__", name),))


_OPS = ["+", "-", "*", "/", "%", "^", "atan2", "==", "!=", ">", "<", ">=", "<=", "and", "or", "unless"]
_SET = frozenset({"and", "or", "unless"})


def _binary(op: str, lhs: Expr, rhs: Expr) -> BinaryExpr:
    return BinaryExpr(op, lhs, rhs, VectorMatching("many-to-many") if op in _SET else None)


_leaves = st.sampled_from([_selector("a"), _selector("b"), _selector("c")])
_trees = st.recursive(
    _leaves,
    lambda children: st.one_of(
        st.builds(_binary, st.sampled_from(_OPS), children, children),
        st.builds(lambda e: UnaryExpr("-", e), children),
        st.builds(
            lambda e: Call("last_over_time", (SubqueryExpr(e, 300_000, None, -60_000, At("time", -1500)),)),
            children,
        ),
    ),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(_trees)
def test_hand_built_trees_print_with_the_parentheses_they_need(expr: Expr) -> None:
    assert strip_parens(parse(to_promql(expr))) == expr


# Arithmetic accepts any mix of scalars and vectors, so numbers can be leaves here.
_arithmetic_trees = st.recursive(
    st.one_of(_leaves, st.builds(NumberLiteral, st.sampled_from([0.5, 2.0, -3.0, -0.25]))),
    lambda children: st.one_of(
        st.builds(_binary, st.sampled_from(["+", "-", "*", "/", "%", "^"]), children, children),
        st.builds(lambda e: UnaryExpr("-", e), children),
    ),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(_arithmetic_trees)
def test_hand_built_arithmetic_with_signed_numbers(expr: Expr) -> None:
    assert strip_parens(parse(to_promql(expr))) == strip_parens(expr)


def test_hand_built_precedence_examples() -> None:
    a, b, c = _selector("a"), _selector("b"), _selector("c")
    assert to_promql(BinaryExpr("*", BinaryExpr("+", a, b), c)) == "(a + b) * c"
    assert to_promql(BinaryExpr("-", a, BinaryExpr("-", b, c))) == "a - (b - c)"
    assert to_promql(BinaryExpr("^", BinaryExpr("^", a, b), c)) == "(a ^ b) ^ c"
    assert to_promql(BinaryExpr("^", UnaryExpr("-", a), b)) == "(-a) ^ b"
    assert to_promql(BinaryExpr("^", NumberLiteral(-2.0), NumberLiteral(2.0))) == "(-2) ^ 2"
    assert to_promql(UnaryExpr("-", BinaryExpr("*", a, b))) == "-(a * b)"
    assert to_promql(SubqueryExpr(BinaryExpr("+", a, b), 60_000, 1000)) == "(a + b)[1m:1s]"
    assert to_promql(MatrixSelector(_selector("a"), 60_001)) == "a[1m1ms]"
    assert to_promql(_selector("bool")) == '{__name__="bool"}'
    assert to_promql(_selector("a.b")) == '{__name__="a.b"}'
