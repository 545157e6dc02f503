"""The ``.test`` parser and runner, against a small fake parser/store/engine (no real engine needed)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from watchkeeper.errors import EvalError
from watchkeeper.labels import METRIC_NAME, Labels, Matcher, MatchOp
from watchkeeper.promql import ast
from watchkeeper.promql.promqltest import (
    NATIVE_HISTOGRAMS_UNSUPPORTED,
    FileReport,
    Harness,
    LoadableStore,
    QueryEngine,
    almost_equal,
    format_report,
    is_stale,
    main,
    pin_at,
    run_file,
)
from watchkeeper.promql.testfile import (
    STALE_NAN,
    Clear,
    Eval,
    Load,
    NativeHistogram,
    TestFileError,
    parse_series,
    parse_test,
    parse_values,
)
from watchkeeper.promql.values import QueryResult, ResultSeries
from watchkeeper.tsdb.reader import SeriesData, SeriesReader

# --- a fake parser, store and engine -------------------------------------------------------------


def fake_parse(text: str) -> ast.Expr:
    """Numbers, strings, ``name``, ``name @ <seconds>``, ``time()``, ``name[5m:1m]`` (subquery)."""
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return ast.NumberLiteral(float(text))
    if m := re.fullmatch(r'"(.*)"', text):
        return ast.StringLiteral(m.group(1))
    if text == "time()":
        return ast.Call("time", ())
    if m := re.fullmatch(r"(\w+)\[5m:1m\]", text):
        return ast.SubqueryExpr(selector(m.group(1)), 300_000, 60_000)
    if m := re.fullmatch(r"(\w+)(?: @ (\d+))?", text):
        at = ast.At("time", int(m.group(2)) * 1000) if m.group(2) else None
        return ast.VectorSelector(m.group(1), selector(m.group(1)).matchers, at=at)
    raise ValueError(f"fake parser cannot parse {text!r}")


def selector(name: str) -> ast.VectorSelector:
    return ast.VectorSelector(name, (Matcher(MatchOp.EQUAL, METRIC_NAME, name),))


class FakeStore:
    def __init__(self) -> None:
        self.labels: list[Labels] = []
        self.samples: dict[int, list[tuple[int, float]]] = {}

    def series_refs(self, labels: list[Labels]) -> npt.NDArray[np.int64]:
        refs = []
        for lb in labels:
            if lb not in self.labels:
                self.labels.append(lb)
            refs.append(self.labels.index(lb))
        return np.array(refs, dtype=np.int64)

    def append(
        self,
        refs: npt.NDArray[np.int64],
        timestamps_ms: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64],
    ) -> None:
        for ref, t, v in zip(refs.tolist(), timestamps_ms.tolist(), values, strict=True):
            self.samples.setdefault(ref, []).append((t, float(v)))

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[SeriesData]:
        out = []
        for ref, lb in enumerate(self.labels):
            if all(m.matches(dict(lb).get(m.name, "")) for m in matchers):
                points = [(t, v) for t, v in self.samples.get(ref, []) if start_ms <= t <= end_ms]
                if points:
                    ts = np.array([t for t, _ in points], dtype=np.int64)
                    out.append(SeriesData(lb, ts, np.array([v for _, v in points])))
        return out

    def label_names(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        return sorted({name for s in self.select(matchers, start_ms, end_ms) for name, _ in s.labels})

    def label_values(self, name: str, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        found = (dict(s.labels).get(name) for s in self.select(matchers, start_ms, end_ms))
        return sorted({v for v in found if v is not None})


class FakeEngine:
    """Instant vector selectors with a 5m lookback and staleness, ``@``, literals and ``time()``.

    ``ignore_at`` and ``range_offset`` simulate engine bugs the harness must catch. A metric named
    ``boom`` fails with an execution error; one named ``warny`` comes with a warning.
    """

    def __init__(self, store: SeriesReader, *, ignore_at: bool = False, range_offset: float = 0.0) -> None:
        self.store = store
        self.ignore_at = ignore_at
        self.range_offset = range_offset
        self.calls: list[tuple[str, int]] = []

    def _vector(self, expr: ast.Expr, t: int) -> list[tuple[Labels, float]] | float | str:
        if isinstance(expr, ast.NumberLiteral):
            return expr.value
        if isinstance(expr, ast.StringLiteral):
            return expr.value
        if isinstance(expr, ast.Call):
            return t / 1000
        if isinstance(expr, ast.SubqueryExpr):
            raise EvalError("subqueries are not supported by the fake engine")
        assert isinstance(expr, ast.VectorSelector)
        if expr.name == "boom":
            raise EvalError("Parameter value is NaN")
        at = expr.at.timestamp_ms if expr.at is not None and not self.ignore_at else t
        out = []
        for series in self.store.select(expr.matchers, at - 299_999, at):
            last = float(series.values[-1])
            if not is_stale(last):
                out.append((series.labels, last))
        return out

    def _warnings(self, expr: ast.Expr) -> list[str]:
        return ["PromQL warning: something (1:1)"] if getattr(expr, "name", None) == "warny" else []

    def instant(self, query: str | ast.Expr, time_ms: int) -> QueryResult:
        assert not isinstance(query, str)
        self.calls.append(("instant", time_ms))
        value = self._vector(query, time_ms)
        t = np.array([time_ms], dtype=np.int64)
        if isinstance(value, str):
            return QueryResult("string", [], string_value=value)
        if isinstance(value, float):
            return QueryResult("scalar", [ResultSeries((), t, np.array([value]))])
        series = [ResultSeries(lb, t, np.array([v])) for lb, v in value]
        return QueryResult("vector", series, warnings=self._warnings(query))

    def range(self, query: str | ast.Expr, start_ms: int, end_ms: int, step_ms: int) -> QueryResult:
        assert not isinstance(query, str)
        self.calls.append(("range", start_ms))
        points: dict[Labels, list[tuple[int, float]]] = {}
        for t in range(start_ms, end_ms + 1, step_ms):
            value = self._vector(query, t)
            if isinstance(value, str):
                raise EvalError("invalid expression type string for range query")
            pairs = [((), value)] if isinstance(value, float) else value
            for lb, v in pairs:
                points.setdefault(lb, []).append((t, v + self.range_offset))
        series = [
            ResultSeries(lb, np.array([p[0] for p in pts], dtype=np.int64), np.array([p[1] for p in pts]))
            for lb, pts in sorted(points.items())
        ]
        return QueryResult("matrix", series, warnings=self._warnings(query))


def fake_harness(**engine_options: float | bool) -> Harness:
    def new_engine(store: LoadableStore) -> QueryEngine:
        return FakeEngine(store, **engine_options)  # type: ignore[arg-type]

    return Harness(parse=fake_parse, new_store=FakeStore, new_engine=new_engine)


def run_text(tmp_path: Path, text: str, **engine_options: float | bool) -> FileReport:
    path = tmp_path / "case.test"
    path.write_text(text)
    return run_file(path, fake_harness(**engine_options))


# --- the value notation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 2 3", [1.0, 2.0, 3.0]),
        ("0+10x3", [0.0, 10.0, 20.0, 30.0]),
        ("10-2x2", [10.0, 8.0, 6.0]),
        ("-1+1x2", [-1.0, 0.0, 1.0]),
        ("1x2", [1.0, 1.0, 1.0]),
        ("0x59 60", [0.0] * 60 + [60.0]),  # no hexadecimal in series values
        ("_ 1 _x2 2", [None, 1.0, None, None, 2.0]),
        ("1e3 .5 -2.5e-1", [1000.0, 0.5, -0.25]),
        ("Inf -Inf", [math.inf, -math.inf]),
    ],
)
def test_value_notation(text: str, expected: list[float | None]) -> None:
    assert list(parse_values(text)) == expected


def test_value_notation_nan_stale_and_histograms() -> None:
    nan, stale, *hist = parse_values("NaN stale {{schema:1 sum:-0.3 buckets:[5.1 10 7] offset:-3}}x1 3")
    assert isinstance(nan, float) and math.isnan(nan) and not is_stale(nan)
    assert isinstance(stale, float) and is_stale(stale)
    assert hist[:2] == [NativeHistogram("{{schema:1 sum:-0.3 buckets:[5.1 10 7] offset:-3}}")] * 2
    assert hist[2] == 3.0
    assert len(parse_values("{{count:1}}+{{count:2}}x3")) == 4


@pytest.mark.parametrize("text", ["1+", "abc", "1x", "{{schema:1", "0x10x"])
def test_value_notation_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_values(text)


@pytest.mark.parametrize(
    ("line", "labels"),
    [
        (
            'http_requests{job="api", path="/a\\"b"} 1',
            (("__name__", "http_requests"), ("job", "api"), ("path", '/a"b')),
        ),
        ('{__name__="m", a="1"} 1', (("__name__", "m"), ("a", "1"))),
        ("{} 1", ()),
        ("up 1", (("__name__", "up"),)),
        ('{"my.metric", "a.b"="c"} 1', (("__name__", "my.metric"), ("a.b", "c"))),
        ("ns:metric:rate5m{a='x'} 1", (("__name__", "ns:metric:rate5m"), ("a", "x"))),
    ],
)
def test_series_lines(line: str, labels: Labels) -> None:
    assert parse_series(line) == (labels, (1.0,))


# --- the file format --------------------------------------------------------------------------------

FORMAT_SAMPLE = """\
# a comment
load 1m
  http_requests{job="api"} 0+10x10 _ stale
  other@st 0 0
  other 1 2

eval instant at 5m http_requests
  expect no_warn
  http_requests{job="api"} 50

eval range from 0 to 4m step 2m http_requests
  http_requests{job="api"} 0 20 40

eval instant at 0 1
  2

eval instant at 5m no_such_metric
  # empty: a comment ends the block

eval_fail instant at 0 boom
  expected_fail_message Parameter value is NaN

eval instant at 1m "Foo"
  expect string `Foo`

eval instant at 1m other
  expect range vector from 0 to 1m step 1m
  other 1 2

eval instant at 1m other
  expect ordered
  expect warn regex: some (thing|one)
  expect fail msg: exact text
  {a="1"} 1
  {a="2"} 2

clear
"""


def test_parse_commands() -> None:
    cmds = parse_test(FORMAT_SAMPLE)
    assert [type(c).__name__ for c in cmds] == ["Load"] + ["Eval"] * 8 + ["Clear"]
    load = cmds[0]
    assert isinstance(load, Load) and load.interval_ms == 60_000
    assert [s.labels for s in load.series] == [
        (("__name__", "http_requests"), ("job", "api")),
        (("__name__", "other"),),
    ]
    evals = [c for c in cmds if isinstance(c, Eval)]
    instant, ranged, scalar, empty, failing, string, range_vector, multi = evals
    assert (instant.line, instant.eval_ms, list(instant.expects)) == (7, 300_000, ["no_warn"])
    assert instant.expected == {(("__name__", "http_requests"), ("job", "api")): (1, (50.0,))}
    assert (ranged.start_ms, ranged.end_ms, ranged.step_ms, ranged.instant) == (0, 240_000, 120_000, False)
    assert scalar.expected_scalar == 2.0 and not scalar.expected
    assert empty.expected == {} and empty.expected_scalar is None
    assert failing.is_fail and failing.expected_fail_message == "Parameter value is NaN"
    assert string.expected_string == "Foo" and string.exclude_from_range
    assert (range_vector.start_ms, range_vector.end_ms, range_vector.eval_ms) == (0, 60_000, 60_000)
    assert range_vector.exclude_from_range
    assert multi.is_ordered and multi.is_fail
    assert [pos for pos, _ in multi.expected.values()] == [1, 2]
    (warn,) = multi.expects["warn"]
    assert warn.matches("PromQL warning: some thing (1:2)") and not warn.matches("other")
    assert multi.expects["fail"][0].matches("exact text")
    assert isinstance(cmds[-1], Clear)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus\n", "invalid command"),
        ("load xyz\n  a 1\n", "invalid step definition"),
        ("eval instant at 0 a\n  a 1 2\n", "expecting multiple values in instant evaluation not allowed"),
        ("eval instant at 0 a\n  expect warn\n  expect no_warn\n", "warn and no_warn cannot be used"),
        ("eval instant at 0 a\n  expect fail\n  expect fail\n", "multiple expect fail"),
        ("eval instant at 0 a\n  expect sometimes\n", "invalid expect statement"),
        ("eval range from 5m to 1m step 1m a\n", "end timestamp (1m) is before start timestamp (5m)"),
        ("eval instant at 0 a\n  expect string Foo\n", "correctly quoted"),
    ],
)
def test_format_errors(text: str, message: str) -> None:
    with pytest.raises(TestFileError, match=re.escape(message)):
        parse_test(text)


def test_last_block_may_end_at_eof() -> None:
    (ev,) = parse_test("eval instant at 0 a\n  a 1")
    assert isinstance(ev, Eval) and ev.expected == {(("__name__", "a"),): (1, (1.0,))}


def test_almost_equal() -> None:
    assert almost_equal(1.0, 1.0 + 1e-7)
    assert not almost_equal(1.0, 1.0 + 1e-5)
    assert almost_equal(math.nan, math.nan)
    assert not almost_equal(math.nan, STALE_NAN)
    assert almost_equal(STALE_NAN, STALE_NAN)
    assert almost_equal(math.inf, math.inf) and not almost_equal(math.inf, -math.inf)
    assert not almost_equal(0.0, 1e-300)


def test_pin_at_follows_upstream_rewrite() -> None:
    plain = selector("a")
    pinned = ast.VectorSelector("b", selector("b").matchers, at=ast.At("time", 5))
    start = ast.VectorSelector("c", selector("c").matchers, at=ast.At("start"))
    sub = ast.SubqueryExpr(ast.Call("rate", (ast.MatrixSelector(selector("d"), 60_000),)), 300_000, None)
    expr = ast.BinaryExpr(
        "+",
        ast.BinaryExpr("+", ast.MatrixSelector(plain, 1000), pinned),
        ast.ParenExpr(ast.BinaryExpr("*", start, sub)),
    )
    out = pin_at(expr, 7000)
    assert isinstance(out, ast.BinaryExpr) and isinstance(out.lhs, ast.BinaryExpr)
    matrix = out.lhs.lhs
    assert isinstance(matrix, ast.MatrixSelector) and matrix.selector.at == ast.At("time", 7000)
    assert out.lhs.rhs == pinned  # an explicit @ stays
    assert isinstance(out.rhs, ast.ParenExpr) and isinstance(out.rhs.expr, ast.BinaryExpr)
    assert out.rhs.expr.lhs == ast.VectorSelector("c", start.matchers, at=ast.At("time", 7000))
    new_sub = out.rhs.expr.rhs
    assert isinstance(new_sub, ast.SubqueryExpr) and new_sub.at == ast.At("time", 7000)
    assert new_sub.expr == sub.expr  # selectors inside the subquery are left alone


# --- running ----------------------------------------------------------------------------------------

RUN_SAMPLE = """\
load 1m
  a{job="x"} 1 2 3 stale
  a{job="y"} 10+10x5
  h {{schema:0 sum:1 count:1}}x3

eval instant at 2m a
  a{job="x"} 3
  a{job="y"} 30

eval range from 0 to 4m step 2m a
  a{job="x"} 1 3
  a{job="y"} 10 30 50

eval instant at 1m 42
  42

eval instant at 0 "Foo"
  expect string "Foo"

eval instant at 3m a
  a{job="y"} 40

eval instant at 1m h
  h 3

eval_fail instant at 0 boom
  expect fail msg: Parameter value is NaN

eval instant at 1m warny
  expect warn msg: PromQL warning: something (1:1)
"""


def test_a_file_that_passes(tmp_path: Path) -> None:
    report = run_text(tmp_path, RUN_SAMPLE)
    assert report.error is None
    assert [(o.line, o.status) for o in report.outcomes] == [
        (6, "pass"), (10, "pass"), (14, "pass"), (17, "pass"),
        (20, "pass"), (23, "skip"), (26, "pass"), (29, "pass"),
    ]
    skipped = report.outcome_at(23)
    assert skipped is not None and skipped.message == NATIVE_HISTOGRAMS_UNSUPPORTED
    assert (report.passed, report.failed, report.skipped, report.ok) == (7, 0, 1, True)
    assert format_report(report).startswith(f"PASS {tmp_path / 'case.test'}: 7 passed, 0 failed, 1 skipped")


def test_instant_evals_run_pinned_and_as_range_queries(tmp_path: Path) -> None:
    harness = fake_harness()
    engines: list[FakeEngine] = []

    def new_engine(store: LoadableStore) -> QueryEngine:
        engine = harness.new_engine(store)
        assert isinstance(engine, FakeEngine)
        engines.append(engine)
        return engine

    path = tmp_path / "t.test"
    path.write_text("load 1m\n  a 1+1x10\n\neval instant at 2m a\n  a 3\n")
    report = run_file(path, Harness(fake_parse, FakeStore, new_engine))
    assert report.ok
    # as written, then pinned at -10t, 0, t/5, t, 10t; each also as a range query t-1m..t+1m
    times = [120_000, -1_200_000, 0, 24_000, 120_000, 1_200_000]
    assert engines[0].calls == [c for t in times for c in (("instant", t), ("range", t - 60_000))]


def test_failures_come_with_a_readable_diff(tmp_path: Path) -> None:
    report = run_text(tmp_path, "load 1m\n  a{job=\"x\"} 1 2 3\n\neval instant at 2m a\n  a{job=\"x\"} 4\n")
    (outcome,) = report.outcomes
    assert outcome.status == "fail"
    assert "expected 4 for a{job=\"x\"} but got 3" in outcome.message
    assert "expected:\n    a{job=\"x\"} 4" in outcome.message
    assert "got:\n    a{job=\"x\"} 3" in outcome.message
    text = format_report(report)
    assert text.startswith("FAIL") and "line 4: a" in text


@pytest.mark.parametrize(
    ("test", "message"),
    [
        ("load 1m\n  a 1\n\neval instant at 0 a\n", "unexpected metric a in result"),
        ("eval instant at 0 a\n  a 1\n", "expected metric a not found"),
        ("eval instant at 0 1\n  {} 1\n", "expected vector or matrix result, but got scalar 1"),
        ("load 1m\n  a 1\n\neval instant at 0 a\n  1\n", "expected scalar result, but got a vector"),
        ("eval instant at 0 \"x\"\n  expect string \"y\"\n", "expected string 'y' but got 'x'"),
        ("eval instant at 0 boom\n", "error evaluating query boom at 0: Parameter value is NaN"),
        ("eval instant at 0 a\n  expect fail\n", "expected error evaluating query a at 0 but got none"),
        ("eval instant at 0 boom\n  expect fail msg: other\n", "expected error matching message 'other'"),
        ("load 1m\n  warny 1\n\neval instant at 0 warny\n  expect no_warn\n  warny 1\n", "unexpected warn"),
        ("load 1m\n  warny 1\n\neval instant at 0 warny\n  expect warn msg: x\n  warny 1\n", "expected warn"),
        ("load 1m\n  a 1\n\neval instant at 0 a\n  expect info\n  a 1\n", "expected info annotations"),
        ("load 1m\n  a 1 2\n\neval range from 0 to 1m step 1m a\n  a 1 3\n", "to be 3, but got 2"),
        ("load 1m\n  a 1 2\n\neval range from 0 to 1m step 1m a\n  a 1\n", "expected 1 float points"),
        ("eval instant at 0 a b\n", "parse error"),
    ],
)
def test_mismatches_fail(tmp_path: Path, test: str, message: str) -> None:
    report = run_text(tmp_path, test)
    (outcome,) = report.outcomes
    assert outcome.status == "fail"
    assert message in outcome.message


def test_an_engine_ignoring_at_is_caught(tmp_path: Path) -> None:
    text = "load 1m\n  a 1+1x10\n\neval instant at 2m a\n  a 3\n"
    assert run_text(tmp_path, text).ok
    (outcome,) = run_text(tmp_path, text, ignore_at=True).outcomes
    assert outcome.status == "fail" and "error in a @ 120.000 at -20m" in outcome.message


def test_range_mode_disagreement_is_caught(tmp_path: Path) -> None:
    text = "load 1m\n  a 1+1x10\n\neval instant at 2m a\n  a 3\n"
    (outcome,) = run_text(tmp_path, text, range_offset=1.0).outcomes
    assert outcome.status == "fail" and "in range mode around 2m" in outcome.message


def test_time_is_not_pinned(tmp_path: Path) -> None:
    # time() is at-modifier unsafe: only the query as written (and its range mode) runs
    report = run_text(tmp_path, "eval instant at 1m time()\n  60\n")
    assert report.ok


def test_native_skip_is_per_eval_and_per_selected_time(tmp_path: Path) -> None:
    text = (
        "load 10m\n  h 1 {{schema:0 count:1}}\n  f 1\n\n"
        "eval instant at 0 f\n  f 1\n\n"
        "eval instant at 10m h\n  h 1\n\n"
        "eval range from 0 to 4m step 4m h\n  h 1 1\n\n"
        "eval instant at 0 g\n  g {{count:1}}\n\n"
        "clear\n\neval instant at 10m h\n"
    )
    report = run_text(tmp_path, text)
    # the range eval selects h only up to 4m, before its histogram sample: it runs
    assert [o.status for o in report.outcomes] == ["pass", "skip", "pass", "skip", "pass"]


def test_clear_empties_the_store(tmp_path: Path) -> None:
    report = run_text(tmp_path, "load 1m\n  a 1\n\nclear\n\neval instant at 0 a\n")
    assert report.ok and report.passed == 1


def test_broken_files_are_reported_not_raised(tmp_path: Path) -> None:
    report = run_text(tmp_path, "eval sometime a\n")
    assert not report.ok and report.error is not None and "invalid evaluation command" in report.error
    missing = run_file(tmp_path / "missing.test", fake_harness())
    assert missing.error is not None and not missing.ok


def test_main_prints_a_line_per_file_and_a_total(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "good.test").write_text("load 1m\n  a 1\n\neval instant at 0 a\n  a 1\n")
    (tmp_path / "bad.test").write_text("load 1m\n  a 1\n\neval instant at 0 a\n  a 2\n")
    assert main([str(tmp_path)], harness=fake_harness()) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"FAIL {tmp_path / 'bad.test'}: 0 passed, 1 failed, 0 skipped"
    assert out[1] == "  line 4: a"
    assert f"PASS {tmp_path / 'good.test'}: 1 passed, 0 failed, 0 skipped" in out
    assert out[-1] == "1 passed, 1 failed, 0 skipped"
    assert main([str(tmp_path / "good.test")], harness=fake_harness()) == 0
