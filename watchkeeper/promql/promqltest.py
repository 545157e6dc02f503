"""Runs Prometheus' ``.test`` files (parsed by `testfile`) with the upstream harness' semantics.

The format is Prometheus' ``promql/promqltest`` one (``load``/``clear``/``eval`` blocks, ``expect``
lines, the series value notation ``0+10x5 _ stale``). Each file runs against a fresh in-memory
store; each eval runs as upstream runs it: instant evals also with ``@`` pinned at five other
evaluation times and as a range query around the evaluation time.

>>> report = run_file("../shared/conformance/promql/staleness.test")   # doctest: +SKIP
>>> report.passed, report.failed, report.skipped                       # doctest: +SKIP
(17, 0, 0)

From the command line (``watchkeeper promql-test FILE|DIR ...``) :func:`main` prints one line per
file, the failures with a diff, and exits 1 if anything failed.

Native histograms are not supported: their ``{{...}}`` values are parsed (so files load) and where
they would be is recorded (``load_with_nhcb`` included), but only float samples are stored. An
eval is skipped with :data:`NATIVE_HISTOGRAMS_UNSUPPORTED` when it expects histogram values, or
when one of its queries selected a time range of a series holding a histogram sample (the store
records what the engine selects); every other eval runs, in files that mix both.
"""

from __future__ import annotations

import argparse
import math
import re
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from watchkeeper.errors import QueryError
from watchkeeper.labels import METRIC_NAME, Labels, Matcher, format_labels, from_pairs
from watchkeeper.promql import ast
from watchkeeper.promql.formatting import format_go_float
from watchkeeper.promql.testfile import (
    _STALE_NAN_BITS,
    Clear,
    Command,
    Eval,
    Load,
    NativeHistogram,
    Point,
    TestFileError,
    parse_test,
)
from watchkeeper.promql.values import QueryResult
from watchkeeper.tsdb.reader import SeriesData, SeriesReader

NATIVE_HISTOGRAMS_UNSUPPORTED = "native histograms not supported"

#: Upstream harness options (``promqltest.NewTestEngine``).
LOOKBACK_MS = 300_000
MAX_SAMPLES = 10_000
DEFAULT_SUBQUERY_STEP_MS = 60_000
TIMEOUT_SECONDS = 100.0
EPSILON = 1e-6

#: Functions whose result depends on the evaluation time even with ``@``: upstream does not run
#: the ``@``-pinned variants of evals that call them (``promql.AtModifierUnsafeFunctions`` plus
#: the query-context functions).
_AT_UNSAFE_FUNCTIONS = frozenset({
    "days_in_month", "day_of_month", "day_of_week", "day_of_year", "hour", "minute", "month",
    "year", "predict_linear", "time", "timestamp", "start", "end", "range", "step",
})
_QUERY_CONTEXT_RE = re.compile(r"(start|end|range|step)\(\)")
_QUERY_CONTEXT_FUNCTIONS = frozenset({"start", "end", "range", "step"})

# --- running ------------------------------------------------------------------------------------


class LoadableStore(SeriesReader, Protocol):
    """What the runner needs from a store: loading, and reading for the engine (``tsdb.Storage``)."""

    def series_refs(self, labels: list[Labels]) -> npt.NDArray[np.int64]: ...

    def append(
        self,
        refs: npt.NDArray[np.int64],
        timestamps_ms: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64],
    ) -> object: ...


class QueryEngine(Protocol):
    def instant(self, query: str | ast.Expr, time_ms: int) -> QueryResult: ...

    def range(self, query: str | ast.Expr, start_ms: int, end_ms: int, step_ms: int) -> QueryResult: ...


@dataclass(frozen=True, slots=True)
class Harness:
    """The parser, store and engine the runner uses; :meth:`default` wires watchkeeper's own."""

    parse: Callable[[str], ast.Expr]
    new_store: Callable[[], LoadableStore]
    new_engine: Callable[[LoadableStore], QueryEngine]

    @classmethod
    def default(cls) -> Harness:
        from watchkeeper.promql.engine import Engine
        from watchkeeper.promql.parser import parse
        from watchkeeper.tsdb.storage import Storage

        def new_store() -> LoadableStore:
            # no retention: test data spans years; out-of-order samples are refused as upstream
            return Storage.open(data_dir=None, retention_ms=2**62)

        def new_engine(store: LoadableStore) -> QueryEngine:
            engine: QueryEngine = Engine(
                store,
                lookback_ms=LOOKBACK_MS,
                max_samples=MAX_SAMPLES,
                timeout_seconds=TIMEOUT_SECONDS,
                default_subquery_step_ms=DEFAULT_SUBQUERY_STEP_MS,
            )
            return engine

        return cls(parse=parse, new_store=new_store, new_engine=new_engine)


Status = Literal["pass", "fail", "skip"]


@dataclass(frozen=True, slots=True)
class EvalOutcome:
    line: int
    expr: str
    status: Status
    message: str = ""


@dataclass(slots=True)
class FileReport:
    """The outcome of every eval of one file; ``error`` is set when the file could not be run."""

    path: str
    outcomes: list[EvalOutcome] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def passed(self) -> int:
        return self.count("pass")

    @property
    def failed(self) -> int:
        return self.count("fail")

    @property
    def skipped(self) -> int:
        return self.count("skip")

    @property
    def ok(self) -> bool:
        return self.error is None and self.failed == 0

    def outcome_at(self, line: int) -> EvalOutcome | None:
        return next((o for o in self.outcomes if o.line == line), None)


class _EvalFailure(Exception):
    """One eval did not give what the file expects; the message says how."""


def run_file(path: str | Path, harness: Harness | None = None) -> FileReport:
    """Run every command of a ``.test`` file against a fresh store; never raises for test failures."""
    started = time.perf_counter()
    report = FileReport(str(path))
    try:
        commands = parse_test(Path(path).read_text(encoding="utf-8"))
    except (OSError, TestFileError) as exc:
        report.error = str(exc)
        return report
    run_commands(commands, report, harness or Harness.default())
    report.seconds = time.perf_counter() - started
    return report


def run_commands(commands: Sequence[Command], report: FileReport, harness: Harness) -> None:
    state = _FileState(harness)
    for command in commands:
        if isinstance(command, Clear):
            state.clear()
        elif isinstance(command, Load):
            try:
                state.load(command)
            except Exception as exc:  # a store bug must not stop the other files
                report.error = f"line {command.line}: load failed: {type(exc).__name__}: {exc}"
                return
        else:
            report.outcomes.append(state.run_eval(command))


class _RecordingStore:
    """Passes everything to the store and remembers what the engine selected."""

    def __init__(self, store: LoadableStore) -> None:
        self.store = store
        self.selected: list[tuple[Sequence[Matcher], int, int]] = []

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[SeriesData]:
        self.selected.append((tuple(matchers), start_ms, end_ms))
        return self.store.select(matchers, start_ms, end_ms)

    def label_names(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        return self.store.label_names(matchers, start_ms, end_ms)

    def label_values(self, name: str, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        return self.store.label_values(name, matchers, start_ms, end_ms)

    def series_refs(self, labels: list[Labels]) -> npt.NDArray[np.int64]:
        return self.store.series_refs(labels)

    def append(
        self,
        refs: npt.NDArray[np.int64],
        timestamps_ms: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64],
    ) -> object:
        return self.store.append(refs, timestamps_ms, values)


class _FileState:
    """The store of one file (renewed by ``clear``) and where native histograms would be in it.

    Histogram samples are not stored; ``native_samples`` keeps their series and timestamps so that
    an eval is skipped exactly when the engine selected a time range holding one of them.
    """

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.clear()

    def clear(self) -> None:
        self.store = _RecordingStore(self.harness.new_store())
        self.engine = self.harness.new_engine(self.store)
        self.native_samples: dict[Labels, list[int]] = {}

    def load(self, load: Load) -> None:
        float_series: list[tuple[Labels, list[int], list[float]]] = []
        for series in load.series:
            timestamps: list[int] = []
            values: list[float] = []
            for i, point in enumerate(series.values):
                if isinstance(point, float):
                    timestamps.append(i * load.interval_ms)
                    values.append(point)
                elif isinstance(point, NativeHistogram):
                    self.native_samples.setdefault(series.labels, []).append(i * load.interval_ms)
            if timestamps:
                float_series.append((series.labels, timestamps, values))
            if load.with_nhcb and (base := _nhcb_base(series.labels)) is not None:
                self.native_samples.setdefault(base, []).extend(timestamps)
        if not float_series:
            return
        refs = self.store.series_refs([labels for labels, _, _ in float_series])
        for ref, (labels, timestamps, values) in zip(refs.tolist(), float_series, strict=True):
            result = self.store.append(
                np.full(len(timestamps), ref, dtype=np.int64),
                np.asarray(timestamps, dtype=np.int64),
                _floats(values),
            )
            if rejected := {k: v for k, v in getattr(result, "rejected", {}).items() if v}:
                raise ValueError(f"samples of {format_labels(labels)} refused by the store: {rejected}")

    def run_eval(self, ev: Eval) -> EvalOutcome:
        try:
            expr = self.harness.parse(ev.expr)
        except Exception as exc:
            # Upstream refuses to load a file with an unparsable eval; we fail just this eval.
            message = f"parse error (the file would not load upstream): {exc}"
            return EvalOutcome(ev.line, ev.expr, "fail", message)
        if ev.expects_histograms:
            return EvalOutcome(ev.line, ev.expr, "skip", NATIVE_HISTOGRAMS_UNSUPPORTED)
        self.store.selected.clear()
        outcome = self._run(ev, expr)
        if self._selected_native_samples():
            return EvalOutcome(ev.line, ev.expr, "skip", NATIVE_HISTOGRAMS_UNSUPPORTED)
        return outcome

    def _run(self, ev: Eval, expr: ast.Expr) -> EvalOutcome:
        try:
            if ev.instant:
                self._run_instant_eval(ev, expr)
            else:
                self._run_range_eval(ev, expr)
        except _EvalFailure as exc:
            return EvalOutcome(ev.line, ev.expr, "fail", str(exc))
        except Exception as exc:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            where = traceback.extract_tb(exc.__traceback__)[-1]
            return EvalOutcome(
                ev.line, ev.expr, "fail",
                f"crashed: {detail} (at {Path(where.filename).name}:{where.lineno})",
            )
        return EvalOutcome(ev.line, ev.expr, "pass")

    def _selected_native_samples(self) -> bool:
        """Did any select of the eval's queries cover a native histogram sample upstream has?"""
        for matchers, start_ms, end_ms in self.store.selected:
            for labels, timestamps in self.native_samples.items():
                if _selects(matchers, labels) and any(start_ms <= t <= end_ms for t in timestamps):
                    return True
        return False

    def _run_range_eval(self, ev: Eval, expr: ast.Expr) -> None:
        try:
            result = self.engine.range(expr, ev.start_ms, ev.end_ms, ev.step_ms)
        except QueryError as exc:
            if ev.is_fail:
                _check_expected_failure(ev, exc)
                return
            raise _EvalFailure(f"error evaluating query: {exc}") from exc
        if ev.is_fail:
            raise _EvalFailure("expected error evaluating query but got none")
        _check_annotations(ev, ev.expr, result)
        _compare(ev, result, ev.expr)

    def _run_instant_eval(self, ev: Eval, expr: ast.Expr) -> None:
        for variant in _instant_variants(ev, expr):
            self._run_instant_query(ev, variant)

    def _run_instant_query(self, ev: Eval, variant: _Variant) -> None:
        text, expr, time_ms = variant.text, variant.expr, variant.time_ms
        try:
            result = self.engine.instant(expr, time_ms)
        except QueryError as exc:
            if ev.is_fail:
                _check_expected_failure(ev, exc)
                return
            raise _EvalFailure(f"error evaluating query {text} at {_fmt_time(time_ms)}: {exc}") from exc
        if ev.is_fail:
            raise _EvalFailure(f"expected error evaluating query {text} at {_fmt_time(time_ms)} but got none")
        _check_annotations(ev, text, result)
        _compare(ev, result, f"{text} at {_fmt_time(time_ms)}")

        if ev.exclude_from_range or _uses_query_context(variant):
            return
        # The same query as a range query must give the same result at the middle step.
        try:
            ranged = self.engine.range(expr, time_ms - 60_000, time_ms + 60_000, 60_000)
        except QueryError as exc:
            raise _EvalFailure(
                f"error evaluating query {text} in range mode around {_fmt_time(time_ms)}: {exc}"
            ) from exc
        if ev.is_ordered:
            return  # range results are sorted by labels
        where = f"{text} in range mode around {_fmt_time(time_ms)}"
        _assert_sorted(ranged, where)
        middle: list[tuple[Labels, float]] = []
        for series in ranged.series:
            hits = np.flatnonzero(series.timestamps_ms == time_ms)
            if hits.size:
                middle.append((series.labels, float(series.values[hits[0]])))
        if result.result_type == "scalar":
            if not middle:
                raise _EvalFailure(f"error in {where}: no sample at the middle step")
            _compare_scalar(ev, middle[0][1], where)
        else:
            _compare_vector(ev, middle, where)


@dataclass(frozen=True, slots=True)
class _Variant:
    """One instant query an instant eval runs: the text (for messages), the AST, the time."""

    text: str
    expr: ast.Expr
    time_ms: int
    pinned: bool = False


def _instant_variants(ev: Eval, expr: ast.Expr) -> Iterator[_Variant]:
    """The query as written, then (unless unsafe) with ``@ t`` pinned, at upstream's extra times."""
    yield _Variant(ev.expr, expr, ev.eval_ms)
    if any(isinstance(n, ast.Call) and n.func in _AT_UNSAFE_FUNCTIONS for n in walk(expr)):
        return
    t = ev.eval_ms
    pinned = pin_at(expr, t)
    text = _printed(pinned) or f"{ev.expr} [with @ {_fmt_time(t)} on every selector]"
    times = [-1000, 0, 1000] if t == 0 else [-10 * t, 0, t // 5, t, 10 * t]  # t >= 0
    for time_ms in times:
        yield _Variant(text, pinned, time_ms, pinned=True)


def _printed(expr: ast.Expr) -> str | None:
    """PromQL text of an AST for messages (the AST itself is what gets evaluated)."""
    try:
        from watchkeeper.promql.printer import to_promql

        return to_promql(expr)
    except Exception:
        return None


def pin_at(expr: ast.Expr, time_ms: int) -> ast.Expr:
    """Add ``@ time_ms`` to every selector and subquery that has none, as upstream's harness does.

    Nodes inside a subquery are left alone (the subquery itself is pinned). Like upstream, which
    sets the timestamp wherever it is unset, ``@ start()``/``@ end()`` become ``@ time_ms`` too.
    """
    at = ast.At("time", time_ms)

    def visit(node: ast.Expr) -> ast.Expr:
        match node:
            case ast.VectorSelector():
                return node if node.at is not None and node.at.kind == "time" else replace(node, at=at)
            case ast.MatrixSelector():
                selector = visit(node.selector)
                assert isinstance(selector, ast.VectorSelector)
                return replace(node, selector=selector)
            case ast.SubqueryExpr():
                return node if node.at is not None and node.at.kind == "time" else replace(node, at=at)
            case ast.Call():
                return replace(node, args=tuple(visit(a) for a in node.args))
            case ast.AggregateExpr():
                param = None if node.param is None else visit(node.param)
                return replace(node, expr=visit(node.expr), param=param)
            case ast.BinaryExpr():
                return replace(node, lhs=visit(node.lhs), rhs=visit(node.rhs))
            case ast.UnaryExpr() | ast.ParenExpr():
                return replace(node, expr=visit(node.expr))
            case _:
                return node

    return visit(expr)


def walk(expr: ast.Expr) -> Iterator[ast.Expr]:
    """Every node of an expression, parents first."""
    yield expr
    match expr:
        case ast.MatrixSelector():
            yield from walk(expr.selector)
        case ast.SubqueryExpr() | ast.UnaryExpr() | ast.ParenExpr():
            yield from walk(expr.expr)
        case ast.Call():
            for arg in expr.args:
                yield from walk(arg)
        case ast.AggregateExpr():
            if expr.param is not None:
                yield from walk(expr.param)
            yield from walk(expr.expr)
        case ast.BinaryExpr():
            yield from walk(expr.lhs)
            yield from walk(expr.rhs)
        case _:
            pass


def _uses_query_context(variant: _Variant) -> bool:
    """Upstream skips the range-mode check when the query text mentions ``start()`` & co. (its
    pinned variants have ``@ start()``/``@ end()`` replaced, so only function calls count there)."""
    if not variant.pinned and _QUERY_CONTEXT_RE.search(variant.text):
        return True
    return any(isinstance(n, ast.Call) and n.func in _QUERY_CONTEXT_FUNCTIONS for n in walk(variant.expr))


def _selects(matchers: Sequence[Matcher], labels: Labels) -> bool:
    values = dict(labels)
    return all(m.matches(values.get(m.name, "")) for m in matchers)


def _nhcb_base(labels: Labels) -> Labels | None:
    """The native-histogram series ``load_with_nhcb`` makes from a classic ``_bucket/_count/_sum``."""
    name = dict(labels).get(METRIC_NAME, "")
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix):
            base = name.removesuffix(suffix)
            return from_pairs([(METRIC_NAME, base)] + [p for p in labels if p[0] not in (METRIC_NAME, "le")])
    return None


def _floats(values: list[float]) -> npt.NDArray[np.float64]:
    """Floats to an array, keeping the staleness marker's exact bits."""
    bits = np.array([struct.unpack("<Q", struct.pack("<d", v))[0] for v in values], dtype=np.uint64)
    return bits.view(np.float64)


# --- comparing ----------------------------------------------------------------------------------

_MIN_NORMAL = 2.2250738585072014e-308


def is_stale(value: float) -> bool:
    return bool(struct.unpack("<Q", struct.pack("<d", value))[0] == _STALE_NAN_BITS)


def almost_equal(a: float, b: float, epsilon: float = EPSILON) -> bool:
    """Upstream's ``almost.Equal``: relative tolerance, NaN equals NaN, the staleness marker
    equals only itself."""
    if is_stale(a) or is_stale(b):
        return is_stale(a) and is_stale(b)
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    abs_sum = abs(a) + abs(b)
    diff = abs(a - b)
    if a == 0 or b == 0 or abs_sum < _MIN_NORMAL:
        return diff < epsilon * _MIN_NORMAL
    return diff / min(abs_sum, sys.float_info.max) < epsilon


def _check_expected_failure(ev: Eval, exc: Exception) -> None:
    actual = str(exc)
    if ev.expected_fail_message is not None and ev.expected_fail_message != actual:
        raise _EvalFailure(f"expected error {ev.expected_fail_message!r}, but got: {actual}")
    if ev.expected_fail_regexp is not None and not ev.expected_fail_regexp.search(actual):
        raise _EvalFailure(f"expected error matching {ev.expected_fail_regexp.pattern!r}, but got: {actual}")
    fails = ev.expects.get("fail", [])
    if fails and not fails[0].matches(actual):
        raise _EvalFailure(f"expected error matching {fails[0].describe()}, but got: {actual}")


def _check_annotations(ev: Eval, text: str, result: QueryResult) -> None:
    warnings, infos = list(result.warnings), list(result.infos)
    if ev.warn and not warnings:
        raise _EvalFailure(f"expected warnings evaluating query {text} but got none")
    if ev.info and not infos:
        raise _EvalFailure(f"expected info annotations evaluating query {text} but got none")
    everything = warnings + infos
    for kind, actual in (("warn", warnings), ("info", infos)):
        expected = ev.expects.get(kind, [])
        if not expected:
            continue
        if not actual:
            raise _EvalFailure(f"expected {kind} annotations but none were found for query {text}")
        for e in expected:
            if not any(e.matches(a) for a in actual):
                raise _EvalFailure(
                    f"expected {kind} annotation matching {e.describe()} but none was found for query "
                    f"{text}, found: {everything}"
                )
        for a in actual:
            if not any(e.matches(a) for e in expected):
                raise _EvalFailure(f"unexpected {kind} annotation {a!r} found for query {text}")
    if "no_warn" in ev.expects and warnings:
        raise _EvalFailure(f"unexpected warning annotations evaluating query {text}: {everything}")
    if "no_info" in ev.expects and infos:
        raise _EvalFailure(f"unexpected info annotations evaluating query {text}: {everything}")


def _compare(ev: Eval, result: QueryResult, where: str) -> None:
    kind = result.result_type
    if kind == "matrix":
        _compare_matrix(ev, result, where)
    elif kind == "vector":
        got = [(s.labels, float(s.values[0])) for s in result.series]
        _compare_vector(ev, got, where)
    elif kind == "scalar":
        if ev.expected_scalar is None:
            raise _EvalFailure(f"error in {where}: expected vector or matrix result, but got scalar "
                               f"{_fmt(float(result.series[0].values[0]))}\n{_expected_block(ev)}")
        _compare_scalar(ev, float(result.series[0].values[0]), where)
    else:
        got_string = result.string_value or ""
        if (ev.expected_string or "") != got_string:  # upstream's default expectation is ""
            raise _EvalFailure(
                f"error in {where}: expected string {ev.expected_string!r} but got {got_string!r}"
            )


def _compare_scalar(ev: Eval, got: float, where: str) -> None:
    if ev.expected_scalar is None:
        raise _EvalFailure(f"error in {where}: expected vector or matrix result, but got scalar {_fmt(got)}")
    if not almost_equal(ev.expected_scalar, got):
        raise _EvalFailure(
            f"error in {where}: expected scalar {_fmt(ev.expected_scalar)} but got {_fmt(got)}"
        )


def _compare_vector(ev: Eval, got: list[tuple[Labels, float]], where: str) -> None:
    def fail(message: str) -> _EvalFailure:
        listing = "\n".join(f"    {format_labels(lb)} {_fmt(v)}" for lb, v in got) or "    (empty)"
        return _EvalFailure(f"error in {where}: {message}\n{_expected_block(ev)}\n  got:\n{listing}")

    if ev.expected_scalar is not None:
        raise fail("expected scalar result, but got a vector")
    seen: set[Labels] = set()
    for index, (labels, value) in enumerate(got):
        if labels not in ev.expected:
            raise fail(f"unexpected metric {format_labels(labels)} in result, has value {_fmt(value)}")
        position, values = ev.expected[labels]
        if ev.is_ordered and position != index + 1:
            raise fail(
                f"expected metric {format_labels(labels)} at position {position} but was at {index + 1}"
            )
        want = values[0] if values else None
        want_value = want if isinstance(want, float) else 0.0  # `_` reads as 0 upstream
        if not almost_equal(want_value, value):
            raise fail(f"expected {_fmt(want_value)} for {format_labels(labels)} but got {_fmt(value)}")
        seen.add(labels)
    for labels in ev.expected:
        if labels not in seen:
            raise fail(f"expected metric {format_labels(labels)} not found")


def _compare_matrix(ev: Eval, result: QueryResult, where: str) -> None:
    def fail(message: str) -> _EvalFailure:
        listing = "\n".join(
            f"    {format_labels(s.labels)} "
            + " ".join(
                f"{_fmt(float(v))}@{_fmt_time(int(t))}"
                for t, v in zip(s.timestamps_ms, s.values, strict=True)
            )
            for s in result.series
        ) or "    (empty)"
        return _EvalFailure(f"error in {where}: {message}\n{_expected_block(ev)}\n  got:\n{listing}")

    if ev.is_ordered:
        raise fail("expected ordered result, but query returned a matrix")
    if ev.expected_scalar is not None:
        raise fail("expected scalar result, but got matrix")
    _assert_sorted(result, where)
    seen: set[Labels] = set()
    for series in result.series:
        if series.labels not in ev.expected:
            raise fail(f"unexpected metric {format_labels(series.labels)} in result")
        seen.add(series.labels)
        want_t: list[int] = []
        want_v: list[float] = []
        for i, point in enumerate(ev.expected[series.labels][1]):
            t = ev.start_ms + i * ev.step_ms
            if t > ev.end_ms:
                raise fail(f"expected more points for {format_labels(series.labels)} than the query time "
                           "range can return")
            if isinstance(point, float):
                want_t.append(t)
                want_v.append(point)
        if len(want_t) != len(series.timestamps_ms):
            raise fail(f"expected {len(want_t)} float points for {format_labels(series.labels)}, "
                       f"but got {len(series.timestamps_ms)}")
        for i, (t, v) in enumerate(zip(want_t, want_v, strict=True)):
            got_t, got_v = int(series.timestamps_ms[i]), float(series.values[i])
            if t != got_t:
                raise fail(f"expected float value at index {i} for {format_labels(series.labels)} to have "
                           f"timestamp {_fmt_time(t)}, but it had timestamp {_fmt_time(got_t)}")
            if not almost_equal(v, got_v):
                raise fail(f"expected float value at index {i} (t={_fmt_time(t)}) for "
                           f"{format_labels(series.labels)} to be {_fmt(v)}, but got {_fmt(got_v)}")
    for labels in ev.expected:
        if labels not in seen:
            raise fail(f"expected metric {format_labels(labels)} not found")


def _assert_sorted(result: QueryResult, where: str) -> None:
    labels = [s.labels for s in result.series]
    for i in range(len(labels) - 1):
        if labels[i] > labels[i + 1]:
            raise _EvalFailure(
                f"error in {where}: matrix results should always be sorted by labels, but "
                f"{format_labels(labels[i + 1])} comes after {format_labels(labels[i])}"
            )


def _expected_block(ev: Eval) -> str:
    if ev.expected_scalar is not None:
        return f"  expected:\n    scalar {_fmt(ev.expected_scalar)}"
    if ev.expected_string is not None:
        return f"  expected:\n    string {ev.expected_string!r}"
    lines = [
        f"    {format_labels(labels)} " + " ".join(_fmt_point(p) for p in values)
        for labels, (_, values) in sorted(ev.expected.items(), key=lambda kv: kv[1][0])
    ]
    return "  expected:\n" + ("\n".join(lines) or "    (empty)")


def _fmt(value: float) -> str:
    return "stale" if is_stale(value) else format_go_float(value, "g")


def _fmt_point(point: Point) -> str:
    if point is None:
        return "_"
    if isinstance(point, NativeHistogram):
        return point.text
    return _fmt(point)


def _fmt_time(time_ms: int) -> str:
    """Milliseconds as a readable offset from the epoch: ``50m``, ``1h5m``, ``-1s``, ``0``."""
    if time_ms == 0:
        return "0"
    sign, rest = ("-" if time_ms < 0 else ""), abs(time_ms)
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return sign + "".join(parts)


# --- command line -------------------------------------------------------------------------------


def _test_files(paths: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        files.extend(sorted(path.glob("*.test")) if path.is_dir() else [path])
    return files


def format_report(report: FileReport) -> str:
    status = "PASS" if report.ok else "FAIL"
    counts = f"{report.passed} passed, {report.failed} failed, {report.skipped} skipped"
    lines = [f"{status} {report.path}: {counts}"]
    if report.error:
        lines.append(f"  error: {report.error}")
    for outcome in report.outcomes:
        if outcome.status == "fail":
            lines.append(f"  line {outcome.line}: {outcome.expr}")
            lines.extend("    " + ln for ln in outcome.message.splitlines())
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, *, harness: Harness | None = None) -> int:
    """``watchkeeper promql-test FILE|DIR ...``: run ``.test`` files; 1 if anything failed."""
    parser = argparse.ArgumentParser(prog="watchkeeper promql-test", description=main.__doc__)
    parser.add_argument("paths", nargs="+", help=".test files, or directories of them")
    parser.add_argument("--run", metavar="REGEX", help="only evals whose query matches REGEX")
    parser.add_argument("-q", "--quiet", action="store_true", help="only the summary lines, no diffs")
    args = parser.parse_args(argv)
    only = re.compile(args.run) if args.run else None
    files = _test_files(args.paths)
    if not files:
        print("no .test files found", file=sys.stderr)
        return 1
    harness = harness or Harness.default()
    totals = [0, 0, 0]
    any_error = False
    for path in files:
        report = run_file(path, harness)
        if only is not None:
            report.outcomes = [o for o in report.outcomes if only.search(o.expr)]
        any_error = any_error or report.error is not None
        text = format_report(report)
        print(text.splitlines()[0] if args.quiet else text)
        totals[0] += report.passed
        totals[1] += report.failed
        totals[2] += report.skipped
    print(f"{totals[0]} passed, {totals[1]} failed, {totals[2]} skipped")
    return 1 if totals[1] or any_error else 0


if __name__ == "__main__":
    raise SystemExit(main())
