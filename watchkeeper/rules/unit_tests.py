"""``watchkeeper test rules``: promtool's rule unit-test format, run against watchkeeper's engine.

A test file names rule files and holds test groups (``input_series`` in the expanding notation,
``alert_rule_test``, ``promql_expr_test``), as in Prometheus' ``cmd/promtool/unittest.go``. Each
group gets a fresh in-memory store; its rules are evaluated every ``evaluation_interval`` from the
start time up to the last ``eval_time``, with input samples appended as time advances; alerts are
compared at the evaluation at or just before each alert test's ``eval_time``; expressions are
queried afterwards.

>>> test_rules_main(["../shared/conformance/rules/unittest.yml"])   # doctest: +SKIP
Unit Testing:  ../shared/conformance/rules/unittest.yml
  SUCCESS
0
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from watchkeeper.durations import format_duration, parse_duration
from watchkeeper.errors import WatchkeeperError
from watchkeeper.labels import Labels, from_dict
from watchkeeper.promql import ast
from watchkeeper.promql.engine import Engine
from watchkeeper.promql.formatting import format_go_float
from watchkeeper.promql.parser import parse
from watchkeeper.promql.promqltest import almost_equal
from watchkeeper.promql.testfile import parse_series
from watchkeeper.rules import histograms as hist
from watchkeeper.rules.evaluation import (
    ALERT_NAME,
    EvalOptions,
    GroupRuntime,
    engine_query,
    evaluate_group,
)
from watchkeeper.rules.model import (
    AlertingRule,
    RuleFileError,
    RuleGroup,
    expand_patterns,
    load_rule_files,
    load_yaml,
)
from watchkeeper.rules.state import State
from watchkeeper.tsdb.reader import is_stale
from watchkeeper.tsdb.storage import Storage

LOOKBACK_MS = 300_000


class TestFileError(ValueError):
    """The unit-test file itself is malformed."""

    __test__ = False


# --- the file ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExpSample:
    labels: Labels
    value: float
    histogram: hist.Histogram | None = None


@dataclass(frozen=True, slots=True)
class ExprTest:
    expr: str
    eval_time_ms: int
    exp_samples: tuple[ExpSample, ...]


@dataclass(frozen=True, slots=True)
class ExpAlert:
    labels: Labels
    annotations: Labels


@dataclass(frozen=True, slots=True)
class AlertTest:
    alertname: str
    eval_time_ms: int
    exp_alerts: tuple[ExpAlert, ...]


@dataclass(frozen=True, slots=True)
class InputSeries:
    labels: Labels
    points: tuple[float | hist.Histogram | None, ...]


@dataclass(frozen=True, slots=True)
class TestGroup:
    __test__ = False

    name: str
    interval_ms: int
    start_ms: int
    series: tuple[InputSeries, ...]
    alert_tests: tuple[AlertTest, ...]
    expr_tests: tuple[ExprTest, ...]
    external_labels: dict[str, str] = field(default_factory=dict)
    external_url: str = ""

    def max_eval_time_ms(self) -> int:
        times = [t.eval_time_ms for t in self.alert_tests] + [t.eval_time_ms for t in self.expr_tests]
        return max(times, default=0)


@dataclass(frozen=True, slots=True)
class TestFile:
    __test__ = False

    rule_files: tuple[str, ...]
    evaluation_interval_ms: int
    groups: tuple[TestGroup, ...]
    group_eval_order: tuple[str, ...] = ()
    fuzzy_compare: bool = False


def _duration(raw: Any, what: str) -> int:
    try:
        return parse_duration(str(raw).strip())
    except ValueError as exc:
        raise TestFileError(f"{what}: {exc}") from exc


def _start_ms(raw: Any) -> int:
    if raw is None:
        return 0
    text = str(raw).strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return round(float(text) * 1000)
    try:
        return round(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError as exc:
        raise TestFileError(f"start_timestamp: cannot parse {text!r}") from exc


def _labels(text: str | None) -> Labels:
    if not text or not str(text).strip():
        return ()
    labels, points = parse_series(str(text).strip())
    if points:
        raise TestFileError(f"unexpected values after labels {text!r}")
    return labels


def _str_map(raw: Any) -> dict[str, str]:
    return {} if not raw else {str(k): "" if v is None else str(v) for k, v in raw.items()}


def _input_series(raw: dict[str, Any]) -> InputSeries:
    series, values = str(raw.get("series") or ""), str(raw.get("values") or "")
    items = values.split("{{")
    if len(items) == 1:  # floats only: the shared notation parser
        labels, points = parse_series(f"{series} {values}")
        return InputSeries(labels, tuple(p if isinstance(p, float) or p is None else None for p in points))
    labels, _ = parse_series(series)
    out: list[float | hist.Histogram | None] = []
    for item in re.findall(r"\{\{.*?\}\}(?:[+-]\{\{.*?\}\})?(?:x\d+)?|\S+", values):
        expanded = hist.expand_item(item)
        if expanded is not None:
            out += expanded
        else:
            _, points = parse_series(f"{series} {item}")
            out += [p if isinstance(p, float) or p is None else None for p in points]
    return InputSeries(labels, tuple(out))


_FILE_FIELDS = {"rule_files", "evaluation_interval", "group_eval_order", "fuzzy_compare", "tests"}
_GROUP_FIELDS = {"name", "interval", "input_series", "alert_rule_test", "promql_expr_test",
                 "external_labels", "external_url", "start_timestamp"}


def _strict(raw: dict[str, Any], known: set[str], what: str) -> None:
    """Unknown fields are errors, as promtool's strict YAML unmarshalling makes them."""
    for key in sorted(set(raw) - known):
        raise TestFileError(f"field {key} not found in type {what}")


def parse_test_file(text: str) -> TestFile:
    doc = load_yaml(text) or {}
    if not isinstance(doc, dict):
        raise TestFileError("a test file must be a mapping")
    _strict(doc, _FILE_FIELDS, "main.unitTestFile")
    eval_interval = _duration(doc.get("evaluation_interval") or "1m", "evaluation_interval")
    order = [str(g) for g in doc.get("group_eval_order") or []]
    if len(set(order)) != len(order):
        dup = next(g for g in order if order.count(g) > 1)
        raise TestFileError(f"group name repeated in evaluation order: {dup}")
    groups: list[TestGroup] = []
    for raw in doc.get("tests") or []:
        _strict(raw, _GROUP_FIELDS, "main.testGroup")
        for a in raw.get("alert_rule_test") or []:
            if not a.get("alertname"):
                where = f" (in TestGroup {raw['name']})" if raw.get("name") else ""
                raise TestFileError("an item under alert_rule_test misses required attribute alertname "
                                    f"at eval_time {a.get('eval_time') or '0s'}{where}")
        interval = _duration(raw["interval"], "interval") if raw.get("interval") else eval_interval
        alert_tests = tuple(
            AlertTest(
                alertname=str(a.get("alertname") or ""),
                eval_time_ms=_duration(a.get("eval_time") or "0", "eval_time"),
                exp_alerts=tuple(
                    ExpAlert(
                        from_dict({**_str_map(e.get("exp_labels")),
                                   ALERT_NAME: str(a.get("alertname") or "")}),
                        tuple(sorted(_str_map(e.get("exp_annotations")).items())),  # "" kept, as upstream
                    )
                    for e in (a.get("exp_alerts") or []) if e is not None
                ),
            )
            for a in raw.get("alert_rule_test") or []
        )
        expr_tests = tuple(
            ExprTest(
                expr=str(p.get("expr") or ""),
                eval_time_ms=_duration(p.get("eval_time") or "0", "eval_time"),
                exp_samples=tuple(
                    ExpSample(
                        _labels(s.get("labels")),
                        float(s["value"]) if s.get("value") not in (None, "") else 0.0,
                        hist.parse_histogram(s["histogram"]) if s.get("histogram") else None,
                    )
                    for s in (p.get("exp_samples") or [])
                ),
            )
            for p in raw.get("promql_expr_test") or []
        )
        groups.append(TestGroup(
            name=str(raw.get("name") or ""), interval_ms=interval,
            start_ms=_start_ms(raw.get("start_timestamp")),
            series=tuple(_input_series(s) for s in raw.get("input_series") or []),
            alert_tests=alert_tests, expr_tests=expr_tests,
            external_labels=_str_map(raw.get("external_labels")),
            external_url=str(raw.get("external_url") or ""),
        ))
    return TestFile(
        rule_files=tuple(str(f) for f in doc.get("rule_files") or []),
        evaluation_interval_ms=eval_interval, groups=tuple(groups),
        group_eval_order=tuple(str(g) for g in doc.get("group_eval_order") or []),
        fuzzy_compare=str(doc.get("fuzzy_compare", "false")).lower() == "true",
    )


# --- running -------------------------------------------------------------------------------------


class _Writer:
    def __init__(self, store: Storage) -> None:
        self.store = store

    def write(self, samples: Sequence[tuple[Labels, float]], ts_ms: int) -> None:
        if not samples:
            return
        refs = self.store.series_refs([labels for labels, _ in samples])
        self.store.append(refs, np.full(len(samples), ts_ms, dtype=np.int64),
                          np.array([v for _, v in samples], dtype=np.float64))


class _Loader:
    """Appends input samples up to a time, as upstream's lazy loader does."""

    def __init__(self, store: Storage, group: TestGroup) -> None:
        self.store = store
        self.pending: list[tuple[int, int, float]] = []  # (ts, ref, value)
        self.histograms: dict[Labels, list[tuple[int, hist.Histogram | None]]] = {}
        float_series = [s for s in group.series if any(isinstance(p, float) for p in s.points)]
        refs = store.series_refs([s.labels for s in float_series]) if float_series else np.array([])
        for ref, series in zip(refs.tolist(), float_series, strict=True):
            for i, p in enumerate(series.points):
                if isinstance(p, float):
                    self.pending.append((group.start_ms + i * group.interval_ms, int(ref), p))
        for series in group.series:
            for i, p in enumerate(series.points):
                ts = group.start_ms + i * group.interval_ms
                if isinstance(p, hist.Histogram):
                    self.histograms.setdefault(series.labels, []).append((ts, p))
                elif (isinstance(p, float) and series.labels in self.histograms
                      and is_stale(np.array([p])).any()):
                    self.histograms[series.labels].append((ts, None))
        self.pending.sort()
        self.pos = 0
        self.loaded_until = -(2**62)

    def load_until(self, ts_ms: int) -> None:
        end = self.pos
        while end < len(self.pending) and self.pending[end][0] <= ts_ms:
            end += 1
        if end > self.pos:
            chunk = self.pending[self.pos:end]
            self.store.append([r for _, r, _ in chunk], [t for t, _, _ in chunk], [v for _, _, v in chunk])
            self.pos = end
        self.loaded_until = ts_ms

    def histogram_at(self, labels: Labels, at_ms: int) -> hist.Histogram | None:
        last: tuple[int, hist.Histogram | None] | None = None
        for ts, h in self.histograms.get(labels, []):
            if ts <= min(at_ms, self.loaded_until):
                last = (ts, h)
        if last is None or last[1] is None or at_ms - last[0] >= LOOKBACK_MS:
            return None
        return last[1]


@dataclass(slots=True)
class GroupReport:
    name: str
    errors: list[str] = field(default_factory=list)


def _order_groups(groups: list[RuleGroup], order: tuple[str, ...]) -> list[RuleGroup]:
    if not order:
        return sorted(groups, key=lambda g: g.key)
    rank = {name: i for i, name in enumerate(order)}
    return sorted(groups, key=lambda g: (rank.get(g.name, len(rank)), g.key))


def run_group(tf: TestFile, group: TestGroup, rule_groups: list[RuleGroup]) -> list[str]:
    """Run one test group; the failure messages (empty when it passed)."""
    store = Storage.open(data_dir=None, retention_ms=2**62)
    try:
        return _run_group(tf, group, rule_groups, store)
    finally:
        store.close()


def _run_group(tf: TestFile, group: TestGroup, rule_groups: list[RuleGroup], store: Storage) -> list[str]:
    engine = Engine(store, lookback_ms=LOOKBACK_MS, default_subquery_step_ms=tf.evaluation_interval_ms)
    query = engine_query(engine)
    writer = _Writer(store)
    loader = _Loader(store, group)
    opts = EvalOptions(external_labels=group.external_labels, external_url=group.external_url)
    runtimes = {g.key: GroupRuntime() for g in rule_groups}
    errors: list[str] = []
    mint = group.start_ms
    maxt = mint + group.max_eval_time_ms()
    step = tf.evaluation_interval_ms
    alert_times = sorted({t.eval_time_ms for t in group.alert_tests})
    curr = 0
    prefix = f"    name: {group.name},\n" if group.name else ""
    ts = mint
    while ts <= maxt:
        loader.load_until(ts)
        eval_errors: list[str] = []
        for g in rule_groups:
            result = evaluate_group(g, runtimes[g.key], ts_ms=ts, query=query, writer=writer, options=opts)
            eval_errors += [f"    rule: {r.name}, time: {format_duration(ts - mint)}, err: {e}"
                            for r, e in result.errors]
        if eval_errors:
            return errors + eval_errors
        while curr < len(alert_times) and ts - mint <= alert_times[curr] < ts - mint + step:
            t = alert_times[curr]
            for alert_test in (a for a in group.alert_tests if a.eval_time_ms == t):
                got = [
                    ExpAlert(a.labels, a.annotations)
                    for g in rule_groups for r in g.rules
                    if isinstance(r, AlertingRule) and r.name == alert_test.alertname
                    for a in runtimes[g.key].alerts.get(_key(r), {}).values() if a.state is State.FIRING
                ]
                exp = sorted(alert_test.exp_alerts, key=_alert_sort_key)
                got.sort(key=_alert_sort_key)
                if exp != got:
                    where = f"    alertname: {alert_test.alertname}, time: {format_duration(t)}, \n"
                    errors.append(prefix + where + _alerts_diff(exp, got))
            curr += 1
        ts += step
    for test in group.expr_tests:
        at = mint + test.eval_time_ms
        where = f'    expr: "{test.expr}", time: {format_duration(test.eval_time_ms)}'
        try:
            got_samples = _query_samples(engine, loader, test.expr, at)
        except (WatchkeeperError, ValueError) as exc:
            errors.append(prefix + f"{where}, err: {exc}")
            continue
        exp_samples = sorted(test.exp_samples, key=lambda s: s.labels)
        got_samples.sort(key=lambda s: s.labels)
        if not _samples_equal(exp_samples, got_samples, fuzzy=tf.fuzzy_compare):
            errors.append(prefix + f"{where},\n" + _samples_diff(exp_samples, got_samples))
    return errors


def _key(rule: AlertingRule) -> str:
    from watchkeeper.rules.model import rule_key

    return rule_key(rule)


def _alert_sort_key(a: ExpAlert) -> tuple[Labels, Labels]:
    return a.labels, a.annotations


def _query_samples(engine: Engine, loader: _Loader, text: str, at_ms: int) -> list[ExpSample]:
    expr = parse(text)
    hist_series = _histogram_selection(expr, loader)
    if hist_series is not None:
        out = [ExpSample(labels, 0.0, h) for labels in hist_series
               if (h := loader.histogram_at(labels, at_ms)) is not None]
        floats = engine.instant(expr, at_ms)
        out += [ExpSample(s.labels, float(s.values[0])) for s in floats.series]
        return out
    if any(_selects_histograms(node, loader) for node in _walk(expr)):
        raise ValueError("native histograms are only supported in plain selectors in test rules")
    res = engine.instant(expr, at_ms)
    if res.result_type == "scalar":
        return [ExpSample((), float(res.series[0].values[0]))]
    if res.result_type != "vector":
        raise ValueError(f"expression must evaluate to a vector or scalar, got {res.result_type}")
    return [ExpSample(s.labels, float(s.values[0])) for s in res.series]


def _histogram_selection(expr: ast.Expr, loader: _Loader) -> list[Labels] | None:
    if not isinstance(expr, ast.VectorSelector) or expr.offset_ms or expr.at is not None:
        return None
    selected = [labels for labels in loader.histograms
                if all(m.matches(dict(labels).get(m.name, "")) for m in expr.matchers)]
    return selected or None


def _selects_histograms(node: ast.Expr, loader: _Loader) -> bool:
    if isinstance(node, ast.VectorSelector):
        return _histogram_selection(ast.VectorSelector(node.name, node.matchers), loader) is not None
    return False


def _walk(expr: ast.Expr) -> list[ast.Expr]:
    from watchkeeper.promql.promqltest import walk

    return list(walk(expr))


def _float_equal(a: float, b: float, fuzzy: bool) -> bool:
    if math.isnan(a) and math.isnan(b):
        return True
    return a == b or (fuzzy and almost_equal(a, b))


def _samples_equal(exp: list[ExpSample], got: list[ExpSample], *, fuzzy: bool) -> bool:
    if len(exp) != len(got):
        return False
    for e, g in zip(exp, got, strict=True):
        if e.labels != g.labels or (e.histogram is None) != (g.histogram is None):
            return False
        if e.histogram is not None:
            if e.histogram != g.histogram:
                return False
        elif not _float_equal(e.value, g.value, fuzzy):
            return False
    return True


def _sample_text(s: ExpSample) -> str:
    if s.histogram is not None:
        value = hist.format_histogram(s.histogram)
    else:
        value = format_go_float(s.value, "e").upper()
    return f"{_labels_text(s.labels)} {value}"


def _labels_text(labels: Labels) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels) + "}"


def _samples_diff(exp: list[ExpSample], got: list[ExpSample]) -> str:
    exp_lines = [_sample_text(s) for s in exp]
    got_lines = [_sample_text(s) for s in got]
    out = [f"        exp: {'[' + ', '.join(exp_lines) + ']' if exp_lines else '(empty)'}",
           f"        got: {'[' + ', '.join(got_lines) + ']' if got_lines else '(empty)'}"]
    out += _diff_lines(exp_lines, got_lines)
    return "\n".join(out)


def _alert_lines(alerts: Sequence[ExpAlert]) -> list[str]:
    return [f"Labels:{_labels_text(a.labels)} Annotations:{_labels_text(a.annotations)}" for a in alerts]


def _alerts_diff(exp: Sequence[ExpAlert], got: Sequence[ExpAlert]) -> str:
    exp_lines, got_lines = _alert_lines(exp), _alert_lines(got)
    indent = "\n            "
    out = ["        exp:" + ("".join(f"{indent}{i}: {line}" for i, line in enumerate(exp_lines)) or "[]"),
           "        got:" + ("".join(f"{indent}{i}: {line}" for i, line in enumerate(got_lines)) or "[]")]
    out += _diff_lines(exp_lines, got_lines)
    return "\n".join(out)


def _diff_lines(exp: list[str], got: list[str]) -> list[str]:
    lines = [line for line in difflib.ndiff(exp, got) if line[:1] in "-+"]
    if not lines:
        return []
    return ["        diff (- expected, + got):"] + [f"            {line}" for line in lines]


def run_file(path: Path, *, run: re.Pattern[str] | None = None) -> list[str]:
    """Failure messages of one test file (empty when every group passed)."""
    try:
        tf = parse_test_file(path.read_text())
    except (OSError, TestFileError, ValueError, KeyError, TypeError) as exc:
        return [f"  {exc}"]
    files: list[str] = []
    for pattern in tf.rule_files:  # relative to the test file, globs expanded, as promtool
        matched = [str(f) for f in expand_patterns([pattern], path.parent) if f.exists()]
        if not matched:
            print(f"  WARNING: no file match pattern {pattern}", file=sys.stderr)
        files += matched
    try:
        rule_groups = load_rule_files(files,
                                      default_interval_ms=tf.evaluation_interval_ms)
    except RuleFileError as exc:
        return ["  " + e for e in exc.errors]
    rule_groups = _order_groups(rule_groups, tf.group_eval_order)
    errors: list[str] = []
    for group in tf.groups:
        if run is not None and not run.search(group.name):
            continue
        errors += run_group(tf, group, rule_groups)
    return errors


def test_rules_main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """``watchkeeper test rules [--run REGEX] FILE...``: exit 0 if every test passed, 1 otherwise."""
    stream = out or sys.stdout
    parser = argparse.ArgumentParser(prog="watchkeeper test rules", description="Unit tests for rules.")
    parser.add_argument("--run", action="append", default=[], help="only test groups matching this regex")
    parser.add_argument("--diff", action="store_true", help="accepted for promtool compatibility: "
                        "differences are always shown")
    parser.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report")
    parser.add_argument("files", nargs="+", metavar="FILE")
    args = parser.parse_args(list(argv) if argv is not None else None)
    run = re.compile("|".join(f"(?:{r})" for r in args.run)) if args.run else None
    failed = False
    results: list[tuple[str, list[str]]] = []
    for name in args.files:
        print(f"Unit Testing:  {name}", file=stream)
        errors = run_file(Path(name), run=run)
        results.append((name, errors))
        if errors:
            failed = True
            print("  FAILED:", file=stream)
            for e in errors:
                print(e, file=stream)
        else:
            print("  SUCCESS", file=stream)
        print(file=stream)
    if args.junit:
        _write_junit(Path(args.junit), results)
    return 1 if failed else 0


def _write_junit(path: Path, results: Sequence[tuple[str, list[str]]]) -> None:
    import xml.etree.ElementTree as ET  # writes XML, parses none # nosec B405

    suites = ET.Element("testsuites")
    for name, errors in results:
        suite = ET.SubElement(suites, "testsuite", name=name, tests="1", failures=str(int(bool(errors))))
        case = ET.SubElement(suite, "testcase", name=name)
        if errors:
            ET.SubElement(case, "failure", message="rule unit tests failed").text = "\n".join(errors)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


test_rules_main.__test__ = False  # type: ignore[attr-defined]
