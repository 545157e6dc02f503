"""One evaluation of a rule group at one timestamp (Prometheus' ``Group.Eval``), without a clock.

Rules run in order; each queries at ``ts - query_offset``, and what a recording rule writes is
visible to the rules after it. Alerting rules step :func:`~watchkeeper.rules.state.step_alert`
per label set and write ``ALERTS``/``ALERTS_FOR_STATE``. Series a rule returned at the previous
evaluation but not at this one get a staleness marker. A rule over the group ``limit`` writes
nothing (its alerts are cleared) and reports the error.

>>> runtime = GroupRuntime()                                                   # doctest: +SKIP
>>> result = evaluate_group(group, runtime, ts_ms=60_000, query=q, writer=w)   # doctest: +SKIP
>>> result.transitions                                                         # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from watchkeeper.errors import EvalError, WatchkeeperError
from watchkeeper.labels import METRIC_NAME, Labels, MatchOp, from_dict, without
from watchkeeper.promql.ast import Expr, VectorSelector
from watchkeeper.promql.promqltest import walk
from watchkeeper.promql.selectors import SharedSelects
from watchkeeper.rules.model import AlertingRule, RecordingRule, Rule, RuleGroup, rule_key
from watchkeeper.rules.state import AlertState, Transition, step_alert
from watchkeeper.rules.template import expand_or_error
from watchkeeper.tsdb.reader import STALE_NAN

log = logging.getLogger("watchkeeper.rules")

ALERTS_METRIC = "ALERTS"
ALERTS_FOR_STATE_METRIC = "ALERTS_FOR_STATE"
ALERT_NAME = "alertname"
ALERT_STATE = "alertstate"

#: ``query(expr, time_ms)`` -> the instant vector (a scalar as one sample with no labels).
QueryFunc = Callable[[Expr | str, int], list[tuple[Labels, float]]]


class SampleWriter(Protocol):
    """Where rule output goes (the store). Samples of one call share one timestamp."""

    def write(self, samples: Sequence[tuple[Labels, float]], ts_ms: int) -> None: ...


@dataclass(slots=True)
class RuleHealth:
    health: str = "unknown"  # ok | err | unknown
    last_error: str = ""
    last_evaluation_ms: int | None = None
    evaluation_seconds: float = 0.0


@dataclass(slots=True)
class GroupRuntime:
    """What a group keeps between evaluations: alert instances, series written, health.

    Keyed by :func:`~watchkeeper.rules.model.rule_key` (so state survives reloads that keep the rule).
    """

    alerts: dict[str, dict[Labels, AlertState]] = field(default_factory=dict)
    series: dict[str, set[Labels]] = field(default_factory=dict)
    health: dict[str, RuleHealth] = field(default_factory=dict)
    last_evaluation_ms: int | None = None
    evaluation_seconds: float = 0.0
    iterations: int = 0
    iterations_missed: int = 0
    evaluation_failures: int = 0


@dataclass(slots=True)
class GroupResult:
    transitions: list[tuple[AlertingRule, Transition]] = field(default_factory=list)
    errors: list[tuple[Rule, str]] = field(default_factory=list)
    samples_written: int = 0


@dataclass(frozen=True, slots=True)
class EvalOptions:
    external_labels: Mapping[str, str] = field(default_factory=dict)
    external_url: str = ""
    default_query_offset_ms: int = 0


def alerts_series(alert: AlertState) -> Labels:
    return _with_name(alert.labels, ALERTS_METRIC, alert.state.value)


def alerts_for_state_series(alert: AlertState) -> Labels:
    return _with_name(alert.labels, ALERTS_FOR_STATE_METRIC, None)


@functools.lru_cache(maxsize=1 << 16)  # the same alerts come back every evaluation
def _with_name(labels: Labels, name: str, state: str | None) -> Labels:
    extra = {METRIC_NAME: name} if state is None else {METRIC_NAME: name, ALERT_STATE: state}
    return from_dict({**dict(labels), **extra})


def evaluate_group(
    group: RuleGroup,
    runtime: GroupRuntime,
    *,
    ts_ms: int,
    query: QueryFunc,
    writer: SampleWriter,
    options: EvalOptions | None = None,
) -> GroupResult:
    """Evaluate every rule of ``group`` at ``ts_ms``; updates ``runtime`` in place."""
    started = time.perf_counter()
    shared = getattr(query, "shared_selects", None)  # an EngineQuery: one fetch per repeated selector
    with shared() if shared is not None else contextlib.nullcontext(_nothing) as forget:
        result = _evaluate_rules(group, runtime, ts_ms=ts_ms, query=query, writer=writer,
                                 opts=options or EvalOptions(), forget=forget)
    runtime.last_evaluation_ms = ts_ms
    runtime.evaluation_seconds = time.perf_counter() - started
    runtime.iterations += 1
    return result


def _nothing() -> None:
    return None


def _evaluate_rules(
    group: RuleGroup,
    runtime: GroupRuntime,
    *,
    ts_ms: int,
    query: QueryFunc,
    writer: SampleWriter,
    opts: EvalOptions,
    forget: Callable[[], None],
) -> GroupResult:
    offset = group.query_offset_ms if group.query_offset_ms is not None else opts.default_query_offset_ms
    at_ms = ts_ms - offset
    result = GroupResult()
    # Output is buffered and written in one append (one WAL sync) per group, except that the buffer
    # is flushed before a rule that may read what is in it: later rules see earlier rules' output.
    buffer: list[tuple[Labels, float]] = []
    buffered_names: set[str] = set()
    for rule in group.rules:
        key = rule_key(rule)
        health = runtime.health.setdefault(key, RuleHealth())
        rule_started = time.perf_counter()
        try:
            if buffer and _may_read(rule, buffered_names):
                writer.write(buffer, at_ms)
                forget()  # selections remembered so far may miss what was just written
                buffer, buffered_names = [], set()
            if isinstance(rule, RecordingRule):
                samples = _record(rule, query(rule.ast, at_ms), group.limit)
            else:
                samples = _alert(rule, group, runtime, key, ts_ms, at_ms, query, opts, result)
            result.samples_written += len(samples)
            current = {labels for labels, _ in samples}
            stale = runtime.series.get(key, set()) - current
            buffer += samples
            buffer += [(labels, STALE_NAN) for labels in sorted(stale)]
            buffered_names.update(_name(labels) for labels in current | stale)
            runtime.series[key] = current
            health.health, health.last_error = "ok", ""
        except WatchkeeperError as exc:
            health.health, health.last_error = "err", str(exc)
            result.errors.append((rule, str(exc)))
            runtime.evaluation_failures += 1
            log.warning("rule %s of group %s failed: %s", rule.name, group.name, exc)
        health.last_evaluation_ms = ts_ms
        health.evaluation_seconds = time.perf_counter() - rule_started
    if buffer:
        writer.write(buffer, at_ms)
    return result


def _name(labels: Labels) -> str:
    for k, v in labels:
        if k == METRIC_NAME:
            return v
    return ""


@functools.lru_cache(maxsize=65_536)
def _selected_names(rule: Rule) -> frozenset[str] | None:
    """Metric names the rule's expression can read, or None when it can read anything (a selector
    without a fixed name, or ``query`` in its templates)."""
    if isinstance(rule, AlertingRule) and any("query" in text for _, text in rule.labels + rule.annotations):
        return None
    names: set[str] = set()
    for node in walk(rule.ast):
        if isinstance(node, VectorSelector):
            fixed = [m.value for m in node.matchers if m.name == METRIC_NAME and m.op is MatchOp.EQUAL]
            if not fixed:
                return None
            names.add(fixed[0])
    return frozenset(names)


def _may_read(rule: Rule, buffered_names: set[str]) -> bool:
    names = _selected_names(rule)
    return names is None or not names.isdisjoint(buffered_names)


def _record(
    rule: RecordingRule, vector: list[tuple[Labels, float]], limit: int
) -> list[tuple[Labels, float]]:
    out: list[tuple[Labels, float]] = []
    seen: set[Labels] = set()
    extra = dict(rule.labels)
    for labels, value in vector:
        merged = from_dict({**dict(labels), **extra, METRIC_NAME: rule.name})
        if merged in seen:
            raise EvalError("vector contains metrics with the same labelset after applying rule labels")
        seen.add(merged)
        out.append((merged, value))
    if limit > 0 and len(out) > limit:
        raise EvalError(f"exceeded limit of {limit} with {len(out)} series")
    return out


def _alert(
    rule: AlertingRule,
    group: RuleGroup,
    runtime: GroupRuntime,
    key: str,
    ts_ms: int,
    at_ms: int,
    query: QueryFunc,
    opts: EvalOptions,
    result: GroupResult,
) -> list[tuple[Labels, float]]:
    vector = query(rule.ast, at_ms)
    found: dict[Labels, tuple[float, Labels]] = {}
    needs_templates = any("{{" in v for _, v in rule.labels + rule.annotations)
    for sample_labels, value in vector:
        template_labels = dict(without(sample_labels, (METRIC_NAME,)))

        def expand(text: str, tl: dict[str, str] = template_labels, v: float = value) -> str:
            return expand_or_error(
                text, labels=tl, value=v, external_labels=opts.external_labels,
                external_url=opts.external_url, query=_template_query(query, at_ms), now_s=ts_ms / 1000,
            )

        ident = dict(template_labels)
        for name, text in rule.labels:
            ident[name] = expand(text) if needs_templates else text
        ident[ALERT_NAME] = rule.name
        labels = from_dict(ident)
        if labels in found:
            raise EvalError("vector contains metrics with the same labelset after applying alert labels")
        annotations = tuple((n, expand(t) if needs_templates else t) for n, t in rule.annotations)
        found[labels] = (value, annotations)

    current = runtime.alerts.get(key, {})
    updated: dict[Labels, AlertState] = {}
    for labels in current.keys() | found.keys():
        hit = found.get(labels)
        state, transitions = step_alert(
            current.get(labels), None if hit is None else hit[0], now_ms=ts_ms, for_ms=rule.for_ms,
            keep_firing_for_ms=rule.keep_firing_for_ms, annotations=() if hit is None else hit[1],
            labels=labels,
        )
        if state is not None:
            updated[labels] = state
        result.transitions += [(rule, t) for t in transitions]
    active = [a for a in updated.values() if a.is_active]
    if group.limit > 0 and len(active) > group.limit:
        runtime.alerts[key] = {}
        raise EvalError(f"exceeded limit of {group.limit} with {len(active)} alerts")
    runtime.alerts[key] = updated
    samples: list[tuple[Labels, float]] = []
    for alert in sorted(active, key=lambda a: a.labels):
        samples.append((alerts_series(alert), 1.0))
        samples.append((alerts_for_state_series(alert), float(alert.active_at_ms // 1000)))
    return samples


def _template_query(query: QueryFunc, at_ms: int) -> Callable[[str], list[dict[str, Any]]]:
    def run(text: str) -> list[dict[str, Any]]:
        return [{"Labels": dict(labels), "Value": value} for labels, value in query(text, at_ms)]

    return run


class EngineQuery:
    """The :data:`QueryFunc` over a PromQL ``Engine`` (scalars become one unlabelled sample).

    Inside ``with query.shared_selects() as forget:`` (one group evaluation; per thread, as groups
    run on a pool) identical selections are fetched once; ``forget()`` after writing to the store.
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._local = threading.local()

    def __call__(self, expr: Expr | str, time_ms: int) -> list[tuple[Labels, float]]:
        shared = getattr(self._local, "shared", None)
        res = self.engine.instant(expr, time_ms) if shared is None else self.engine.instant(
            expr, time_ms, reader=shared)
        if res.result_type == "scalar":
            return [((), float(res.series[0].values[0]))]
        if res.result_type != "vector":
            raise EvalError("rule result is not a vector or scalar")
        return [(s.labels, float(s.values[0])) for s in res.series]

    @contextlib.contextmanager
    def shared_selects(self) -> Iterator[Callable[[], None]]:
        reader = getattr(self.engine, "reader", None)
        if reader is None:  # an engine wrapper that reads through another: no sharing
            yield _nothing
            return
        outer = getattr(self._local, "shared", None)
        shared = self._local.shared = SharedSelects(reader)
        try:
            yield shared.forget
        finally:
            self._local.shared = outer


def engine_query(engine: Any) -> EngineQuery:
    """A :data:`QueryFunc` over a PromQL ``Engine``."""
    return EngineQuery(engine)


def active_alerts(runtime: GroupRuntime, rule: AlertingRule) -> list[AlertState]:
    return [a for a in runtime.alerts.get(rule_key(rule), {}).values() if a.is_active]

