"""The PromQL parser wrapper: conversion to our AST, the binding's bugs worked around, limits."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from watchkeeper.errors import ParseError
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
    ValueType,
    VectorMatching,
    VectorSelector,
)
from watchkeeper.promql.parser import parse, value_type
from watchkeeper.promql.printer import to_promql
from watchkeeper.promql.syntax_errors import MAX_SEARCHED_LENGTH, first_unexpected


def name_is(name: str) -> Matcher:
    return Matcher(MatchOp.EQUAL, "__name__", name)


def sel(name: str, *matchers: Matcher, offset_ms: int = 0, at: At | None = None) -> VectorSelector:
    return VectorSelector(name, (name_is(name), *matchers), offset_ms, at)


def only_selector(text: str) -> VectorSelector:
    expr = parse(text)
    if isinstance(expr, MatrixSelector):
        return expr.selector
    assert isinstance(expr, VectorSelector), expr
    return expr


# --- selectors -----------------------------------------------------------------------------------


def test_selector_includes_name_matcher_and_keeps_name() -> None:
    assert parse('up{job="api", code!="200", path=~"/a.*", m!~"x|y"}') == VectorSelector(
        "up",
        (
            name_is("up"),
            Matcher(MatchOp.EQUAL, "job", "api"),
            Matcher(MatchOp.NOT_EQUAL, "code", "200"),
            Matcher(MatchOp.REGEX, "path", "/a.*"),
            Matcher(MatchOp.NOT_REGEX, "m", "x|y"),
        ),
    )


def test_name_given_as_matcher_only() -> None:
    assert parse('{__name__="up", job="api"}') == VectorSelector(
        None, (name_is("up"), Matcher(MatchOp.EQUAL, "job", "api"))
    )


def test_quoted_utf8_names() -> None:
    expr = parse('{"my.metric", "service.name"="api"}')
    assert expr == VectorSelector(None, (name_is("my.metric"), Matcher(MatchOp.EQUAL, "service.name", "api")))


@pytest.mark.parametrize(
    ("text", "offset_ms"),
    [
        ("up offset 5m", 300_000),
        ("up offset 1m1ms", 60_001),
        ("up offset -5m", -300_000),
        ("up offset 1h30m", 5_400_000),
        ("up offset 1001ms", 1001),
        ("up offset 1y", 365 * 86_400_000),
        ("up[5m] offset 2d", 2 * 86_400_000),
    ],
)
def test_offsets_in_exact_ms(text: str, offset_ms: int) -> None:
    assert only_selector(text).offset_ms == offset_ms


def test_matrix_selector_range_and_modifiers_on_inner_selector() -> None:
    assert parse("rate(up[1m1ms] @ 100 offset -1s)") == Call(
        "rate", (MatrixSelector(sel("up", offset_ms=-1000, at=At("time", 100_000)), 60_001),)
    )


@pytest.mark.parametrize(
    ("text", "at"),
    [
        ("up @ 100", At("time", 100_000)),
        ("up @ 100.5", At("time", 100_500)),
        ("up @ 1700000000.123", At("time", 1_700_000_000_123)),
        ("up @ 0", At("time", 0)),
        ("up @ -100", At("time", -100_000)),
        ("up @ -100.25", At("time", -100_250)),
        ("up @ - 7", At("time", -7000)),
        ("up @ start()", At("start")),
        ("up @ end()", At("end")),
        ("up[5m] @ -60", At("time", -60_000)),
    ],
)
def test_at_modifier(text: str, at: At) -> None:
    assert only_selector(text).at == at


def test_negative_at_lands_on_the_right_selectors() -> None:
    expr = parse(
        "a @ 1 + rate(b[1m] @ -2) + min_over_time(max_over_time(c[5m:] @ 3)[1h:] @ -4) + d @ start()"
    )
    ats: list[At | None] = []

    def walk(e: Expr) -> None:
        match e:
            case VectorSelector():
                ats.append(e.at)
            case MatrixSelector():
                walk(e.selector)
            case SubqueryExpr():
                walk(e.expr)
                ats.append(e.at)
            case BinaryExpr():
                walk(e.lhs)
                walk(e.rhs)
            case Call():
                for arg in e.args:
                    walk(arg)

    walk(expr)
    assert ats == [
        At("time", 1000),
        At("time", -2000),
        None,
        At("time", 3000),
        At("time", -4000),
        At("start"),
    ]


def test_subquery_default_and_explicit_step() -> None:
    assert parse("rate(up[1m])[5m:]") == SubqueryExpr(
        Call("rate", (MatrixSelector(sel("up"), 60_000),)), 300_000, None
    )
    assert parse("up[1h:1m1ms] offset 5m @ end()") == SubqueryExpr(
        sel("up"), 3_600_000, 60_001, 300_000, At("end")
    )


# --- strings, backticks, numbers -----------------------------------------------------------------


def test_backticks_are_raw_strings() -> None:
    assert only_selector(r"up{a=~`\d+`}").matchers[1] == Matcher(MatchOp.REGEX, "a", r"\d+")
    assert only_selector('up{a=`x"y\\z`}').matchers[1] == Matcher(MatchOp.EQUAL, "a", 'x"y\\z')
    assert parse(r'label_replace(up, "dst", "$1", "src", `(\w+):\d+`)') == Call(
        "label_replace",
        (
            sel("up"),
            StringLiteral("dst"),
            StringLiteral("$1"),
            StringLiteral("src"),
            StringLiteral(r"(\w+):\d+"),
        ),
    )


def test_bytes_that_are_not_utf8_reach_label_names_and_values() -> None:
    expr = parse(r'label_replace(up{a="\xff"}, "\xfe", "", "src", "(.*)")')
    assert expr == Call(
        "label_replace",
        (
            sel("up", Matcher(MatchOp.EQUAL, "a", "\udcff")),
            StringLiteral("\udcfe"),
            StringLiteral(""),
            StringLiteral("src"),
            StringLiteral("(.*)"),
        ),
    )


def test_backtick_inside_double_quotes_is_not_a_raw_string() -> None:
    assert only_selector('up{a="`\\\\d`"}').matchers[1] == Matcher(MatchOp.EQUAL, "a", "`\\d`")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (r'"\xc3\xa9"', "é"),  # \x escapes are bytes, as in Go (the binding alone gives "Ã©")
        (r'"\303\251"', "é"),
        (r'"\xff"', "\udcff"),  # not UTF-8: kept as a surrogateescape code point
        (r"'a\xfe\x41'", "a\udcfeA"),
        (r'"a\\x41"', r"a\x41"),
        ('"a\\nb\\"c"', 'a\nb"c'),
        ("'single \"quoted\"'", 'single "quoted"'),
        ('"\\u00e9\\x41"', "éA"),
        ("`raw \\n`", "raw \\n"),
    ],
)
def test_string_literals(text: str, value: str) -> None:
    assert parse(text) == StringLiteral(value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1.0),
        ("1.5e3", 1500.0),
        ("0x1F", 31.0),
        ("Inf", math.inf),
        ("-Inf", -math.inf),
        ("-1", -1.0),
        ("- -2", 2.0),
        (".5", 0.5),
    ],
)
def test_number_literals(text: str, value: float) -> None:
    assert parse(text) == NumberLiteral(value)


def test_nan_literals_compare_equal() -> None:
    expr = parse("NaN")
    assert isinstance(expr, NumberLiteral) and math.isnan(expr.value)
    assert parse("up + NaN") == parse("up+nan")


# --- operators -----------------------------------------------------------------------------------


def test_unary_minus() -> None:
    assert parse("-up") == UnaryExpr("-", sel("up"))
    assert parse("-(1)") == UnaryExpr("-", ParenExpr(NumberLiteral(1.0)))
    assert parse("+up") == sel("up")


def test_precedence_follows_prometheus() -> None:
    a, b, c = sel("a"), sel("b"), sel("c")
    assert parse("a + b * c") == BinaryExpr("+", a, BinaryExpr("*", b, c))
    assert parse("a ^ b ^ c") == BinaryExpr("^", a, BinaryExpr("^", b, c))
    assert parse("-a ^ b") == UnaryExpr("-", BinaryExpr("^", a, b))
    assert parse("-a * b") == BinaryExpr("*", UnaryExpr("-", a), b)
    assert parse("(a + b) * c") == BinaryExpr("*", ParenExpr(BinaryExpr("+", a, b)), c)


@pytest.mark.parametrize(
    ("text", "matching", "return_bool"),
    [
        ("a + b", None, False),
        ("a > bool b", None, True),
        ("a + on(x, y) b", VectorMatching("one-to-one", True, ("x", "y")), False),
        ("a + on() b", VectorMatching("one-to-one", True, ()), False),
        ("a + ignoring(x) b", VectorMatching("one-to-one", False, ("x",)), False),
        ("a * on(x) group_left(y, z) b", VectorMatching("many-to-one", True, ("x",), ("y", "z")), False),
        ("a * ignoring(x) group_right b", VectorMatching("one-to-many", False, ("x",)), False),
        ("a == bool on(x) group_left b", VectorMatching("many-to-one", True, ("x",)), True),
        ("a and b", VectorMatching("many-to-many"), False),
        ("a or on(x) b", VectorMatching("many-to-many", True, ("x",)), False),
        ("a UNLESS ignoring(x) b", VectorMatching("many-to-many", False, ("x",)), False),
    ],
)
def test_vector_matching(text: str, matching: VectorMatching | None, return_bool: bool) -> None:
    expr = parse(text)
    assert isinstance(expr, BinaryExpr)
    assert (expr.matching, expr.return_bool) == (matching, return_bool)


def test_binary_operator_words_are_lowercased() -> None:
    expr = parse("a ATAN2 b")
    assert isinstance(expr, BinaryExpr) and expr.op == "atan2"


# --- aggregations and calls ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sum(up)", AggregateExpr("sum", sel("up"))),
        ("SUM BY (job) (up)", AggregateExpr("sum", sel("up"), grouping=("job",))),
        ("sum(up) by (job, env)", AggregateExpr("sum", sel("up"), grouping=("job", "env"))),
        (
            "avg without (instance) (up)",
            AggregateExpr("avg", sel("up"), grouping=("instance",), without=True),
        ),
        ("sum without () (up)", AggregateExpr("sum", sel("up"), without=True)),
        ("topk(3, up)", AggregateExpr("topk", sel("up"), NumberLiteral(3.0))),
        ('count_values("v", up)', AggregateExpr("count_values", sel("up"), StringLiteral("v"))),
        ("quantile by (le) (0.9, up)", AggregateExpr("quantile", sel("up"), NumberLiteral(0.9), ("le",))),
        ("limitk(2, up)", AggregateExpr("limitk", sel("up"), NumberLiteral(2.0))),
        ("limit_ratio(0.5, up)", AggregateExpr("limit_ratio", sel("up"), NumberLiteral(0.5))),
    ],
)
def test_aggregations(text: str, expected: AggregateExpr) -> None:
    assert parse(text) == expected


def test_calls() -> None:
    assert parse("time()") == Call("time", ())
    assert parse('label_join(up, "dst", ",", "a", "b")') == Call(
        "label_join",
        (sel("up"), StringLiteral("dst"), StringLiteral(","), StringLiteral("a"), StringLiteral("b")),
    )


@pytest.mark.parametrize(
    "text",
    [
        "limitk(2, up)",
        "limit_ratio(0.5, up)",
        'sort_by_label(up, "job")',
        'sort_by_label_desc(up, "job", "instance")',
        "double_exponential_smoothing(up[5m], 0.5, 0.5)",
        "mad_over_time(up[5m])",
        "ts_of_max_over_time(up[5m])",
        "ts_of_min_over_time(up[5m])",
        "ts_of_last_over_time(up[5m])",
        "ts_of_first_over_time(up[5m])",
        "first_over_time(up[5m])",
        "info(up)",
        "histogram_stddev(up)",
        "histogram_avg(up)",
    ],
)
def test_experimental_functions_parse(text: str) -> None:
    parse(text)


# --- value types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", "scalar"),
        ('"s"', "string"),
        ("up", "vector"),
        ("up[5m]", "matrix"),
        ("up[5m:1m]", "matrix"),
        ("rate(up[5m])", "vector"),
        ("sum(up)", "vector"),
        ("scalar(up)", "scalar"),
        ("time()", "scalar"),
        ("pi()", "scalar"),
        ("vector(1)", "vector"),
        ("1 + 2", "scalar"),
        ("1 > bool 2", "scalar"),
        ("up * 2", "vector"),
        ("2 * up", "vector"),
        ("(1)", "scalar"),
        ("(up[5m])", "matrix"),
        ("-time()", "scalar"),
        ("-up", "vector"),
        ("time() + scalar(up)", "scalar"),
        ("day_of_week()", "vector"),
    ],
)
def test_value_type(text: str, expected: ValueType) -> None:
    assert value_type(parse(text)) == expected


# --- errors and limits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "up{",
        "sum(",
        "up)",
        "rate(up)",
        "1 < 2",
        "{}",
        'up{a=~".*"} and {b=~".*"}',
        "up @ @",
        "up @ NaN",
        "up offset NaN",  # the binding panics here (a BaseException)
        "up[1e30]",  # ... and here
        "up offset 9.5e10",  # beyond Go's time.Duration: Prometheus rejects it, the binding does not
        "`unterminated",
        '"unterminated',
        "up{a='b",
        "no_such_function(up)",
        "up[5m][5m]",
        "\x00",
        'up{a=~"("}',
        'up{a="1" or b="2"}',  # a GreptimeDB extension the binding accepts
    ],
)
def test_garbage_raises_parse_error(text: str) -> None:
    with pytest.raises(ParseError, match="parse error"):
        parse(text)


def test_lexer_errors_carry_a_position() -> None:
    with pytest.raises(ParseError, match=r"^2:6: parse error: unterminated quoted string"):
        parse('up +\nup{a="b}')


@pytest.mark.parametrize(
    ("text", "position"),
    [  # positions as Prometheus 2.42 reports them for the same queries
        ("foo{", "1:5"),
        ("sum(", "1:5"),
        ('foo{a="b"', "1:10"),
        ("sum(rate(foo[5m])", "1:18"),
        ("foo offset", "1:11"),
        ("foo[5m", "1:7"),
        ("foo)", "1:5"),
        ("((x)))", "1:7"),
        ('foo{a=")"})', "1:12"),
        ("x[5m]]]", "1:6"),
        ("foo[5m:]]", "1:9"),
        ("foo[5x]", "1:5"),
        ("foo[5m:1x]", "1:8"),
        ("foo{a!}", "1:6"),
        ("foo{a=b}", "1:7"),
        ("foo$", "1:4"),
        ('foo{a$="b"}', "1:6"),
        ("unknown_fn(foo)", "1:1"),
        ("sum(x) + foo(x)", "1:10"),
        ("a +\n unknown(b)", "2:2"),
        ("x + `)`)", "1:9"),  # a bracket inside a string is not one
    ],
)
def test_binding_errors_get_prometheus_positions(text: str, position: str) -> None:
    with pytest.raises(ParseError, match=rf"^{position}: parse error: "):
        parse(text)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('foo{a="b"} bar', '1:12: parse error: unexpected identifier "bar"'),
        ("foo bar", '1:5: parse error: unexpected identifier "bar"'),
        ("1 +", "1:4: parse error: unexpected end of input"),
        ("sum(x) by", "1:10: parse error: unexpected end of input"),
        ("a and", "1:6: parse error: unexpected end of input"),
        ("rate(x[5m] 1)", '1:12: parse error: unexpected number "1"'),
        ("x + * y", "1:5: parse error: unexpected <op:*>"),
        ("foo offset 5m bar", '1:15: parse error: unexpected identifier "bar"'),
        ('label_replace(x, "a" "b")', '1:22: parse error: unexpected string "\\"b\\""'),
        ('count_values("x", y) sum', "1:22: parse error: unexpected <aggr:sum>"),
        ("x[5m] offset 1h 12345678901", '1:17: parse error: unexpected number "1234567890"...'),
        ("a\n+ b c", '2:5: parse error: unexpected identifier "c"'),
        ("x + `)` y", '1:9: parse error: unexpected identifier "y"'),  # the string is one token
    ],
)
def test_grammar_errors_name_the_first_unexpected_token(text: str, error: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse(text)
    assert str(caught.value) == error


def test_the_token_search_gives_up_when_its_time_is_spent() -> None:
    candidates: list[str] = []

    def parses(text: str) -> bool:
        candidates.append(text)
        return True

    assert first_unexpected("foo bar", parses, budget_s=-1.0) is None
    assert candidates == []
    assert first_unexpected("foo bar", parses) == (7, "end of input")  # every prefix continues
    assert candidates


def test_grammar_errors_of_very_long_queries_have_no_position() -> None:
    text = "x + " * (MAX_SEARCHED_LENGTH // 4) + "x y"
    with pytest.raises(ParseError, match=r"^parse error: invalid promql query$"):
        parse(text)


def test_length_limit() -> None:
    query = "up + " * 20_000 + "up"
    with pytest.raises(ParseError, match="longer than the limit of 65536 bytes"):
        parse(query)
    with pytest.raises(ParseError, match="longer than the limit of 10 bytes"):
        parse("up{job='api'}", max_length_bytes=10)
    assert parse("up" * 500, max_length_bytes=1000) == sel("up" * 500)


def test_depth_and_operator_limits() -> None:
    with pytest.raises(ParseError, match="nests brackets deeper than the limit of 256"):
        parse("(" * 300 + "up" + ")" * 300)
    assert parse("(" * 200 + "up" + ")" * 200) is not None
    with pytest.raises(ParseError, match="nests expressions deeper than the limit of 256"):
        parse(" + ".join(["up"] * 300))
    with pytest.raises(ParseError, match="nests expressions deeper than the limit of 256"):
        parse("- " * 300 + "up")
    # A dashboard-sized sum of 200 rates is fine (and prints back the same).
    big = " + ".join(f'sum(rate(x{{job="j{i}"}}[5m]))' for i in range(200))
    assert to_promql(parse(big)) == big
    with pytest.raises(ParseError, match="more than 1024 operators"):
        parse(" + ".join(["up"] * 2000))
    with pytest.raises(ParseError, match="more than 3 operators"):
        parse("a + b + c + d + e", max_operators=3)
    # Brackets and operators inside strings do not count.
    assert parse('up{a="' + "((((+-" * 100 + '"}', max_depth=2, max_operators=1) is not None


def test_inputs_that_crash_the_binding_are_refused_in_process() -> None:
    # 12,000 nested parentheses or a 6,000-term sum segfault the binding; run in a child process
    # so a regression shows up as a failed test, not a dead test runner.
    code = (
        "from watchkeeper.promql.parser import parse\n"
        "from watchkeeper.errors import ParseError\n"
        "for q in ['(' * 20000 + 'up' + ')' * 20000, '+'.join(['a'] * 8000), '-' * 8000 + 'a']:\n"
        "    try:\n"
        "        parse(q)\n"
        "    except ParseError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit('accepted')\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr


def test_parse_is_cached() -> None:
    assert parse('sum(rate(up{job="api"}[5m]))') is parse('sum(rate(up{job="api"}[5m]))')
    long_query = " or ".join(
        f'up{{job="{i:04}", instance="host-{i:04}.example.com:9100"}}' for i in range(200)
    )
    assert len(long_query) > 8192
    assert parse(long_query) == parse(long_query)
    assert parse(long_query) is not parse(long_query)  # too long to keep
