"""Variable options and selected values for one page view.

Options come from the store (``label_values``, ``label_names``, ``metrics``) or the engine
(``query_result``); the selection comes from the URL (``var-x=a&var-x=b``), else the variable's
default, else its first option. Variables are resolved in order, so a query may use the ones
before it (``label_values(up{job="$job"}, instance)``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from watchkeeper.dashboards.model import (
    ConstantVariable,
    CustomVariable,
    Dashboard,
    IntervalVariable,
    QueryVariable,
    Variable,
)
from watchkeeper.dashboards.panels import QueryEngine
from watchkeeper.dashboards.templating import ALL, VarValue, apply_regex, interpolate, parse_variable_query
from watchkeeper.dashboards.timerange import Range
from watchkeeper.durations import format_duration
from watchkeeper.errors import WatchkeeperError
from watchkeeper.labels import Labels, Matcher, format_labels
from watchkeeper.promql import ast
from watchkeeper.promql.parser import parse

MAX_OPTIONS = 1000


class MetadataStore(Protocol):
    def label_names(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]: ...

    def label_values(
        self, name: str, matchers: Sequence[Matcher], start_ms: int, end_ms: int
    ) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class ResolvedVariable:
    name: str
    label: str
    type: str
    options: list[str]
    selected: list[str]
    multi: bool
    include_all: bool
    hide: bool
    error: str | None = None

    @property
    def all_selected(self) -> bool:
        return self.selected == [ALL]


def _matchers(selector: str) -> list[Matcher]:
    if not selector:
        return []
    expr = parse(selector)
    if not isinstance(expr, ast.VectorSelector):
        raise ValueError(f"{selector!r} is not a series selector")
    return list(expr.matchers)


def _options(
    var: QueryVariable, values: Mapping[str, VarValue], store: MetadataStore, engine: QueryEngine, rng: Range
) -> list[str]:
    builtins = {
        "__range": format_duration(rng.duration_ms),
        "__range_s": str(rng.duration_ms // 1000),
        "__range_ms": str(rng.duration_ms),
    }
    q = parse_variable_query(interpolate(var.query, values, builtins))
    if q.kind == "label_values":
        found = store.label_values(q.label, _matchers(q.selector), rng.start_ms, rng.end_ms)
    elif q.kind == "label_names":
        found = store.label_names(_matchers(q.selector), rng.start_ms, rng.end_ms)
    elif q.kind == "metrics":
        names = store.label_values("__name__", [], rng.start_ms, rng.end_ms)
        pattern = re.compile(q.regex.strip("\"'") or ".*")
        found = [n for n in names if pattern.search(n)]
    else:
        result = engine.instant(q.expr, rng.end_ms)
        found = []
        for s in result.series:
            value = s.values[-1] if len(s.values) else float("nan")
            stamp = str(int(s.timestamps_ms[-1])) if len(s.timestamps_ms) else ""
            found.append(f"{format_labels(s.labels)} {value:g} {stamp}".strip())
    found = apply_regex(found, var.regex)
    if var.sort == "alpha":
        found = sorted(found)
    elif var.sort == "numeric":
        found = sorted(found, key=_numeric_key)
    return found[:MAX_OPTIONS]


def _numeric_key(text: str) -> tuple[float, str]:
    m = re.search(r"-?\d+(?:\.\d+)?", text)
    return (float(m.group(0)) if m else float("inf"), text)


def _select(
    requested: list[str], options: list[str], default: list[str], multi: bool, include_all: bool
) -> list[str]:
    for candidate in (requested, default):
        if not candidate:
            continue
        if include_all and ALL in candidate:
            return [ALL]
        picked = [c for c in candidate if c in options] if options else candidate
        if picked:
            return picked if multi else picked[:1]
    if include_all:
        return [ALL]
    return options[:1]


def resolve(
    dashboard: Dashboard,
    requested: Mapping[str, list[str]],
    *,
    store: MetadataStore,
    engine: QueryEngine,
    rng: Range,
) -> tuple[list[ResolvedVariable], dict[str, VarValue]]:
    """The variables of ``dashboard`` for this view, and the values queries interpolate."""
    resolved: list[ResolvedVariable] = []
    values: dict[str, VarValue] = {}
    for var in dashboard.variables:
        r, value = _resolve_one(var, requested.get(var.name, []), values, store, engine, rng)
        resolved.append(r)
        values[var.name] = value
    return resolved, values


def _resolve_one(
    var: Variable,
    requested: list[str],
    values: Mapping[str, VarValue],
    store: MetadataStore,
    engine: QueryEngine,
    rng: Range,
) -> tuple[ResolvedVariable, VarValue]:
    if isinstance(var, ConstantVariable):
        text = requested[0] if requested and var.type == "textbox" else var.value
        return (
            ResolvedVariable(
                var.name,
                var.label or var.name,
                var.type,
                [],
                [text],
                False,
                False,
                var.hide or var.type == "constant",
            ),
            VarValue((text,), regex=False),
        )
    error = None
    if isinstance(var, QueryVariable):
        try:
            options = _options(var, values, store, engine, rng)
        except (WatchkeeperError, ValueError, re.error) as exc:
            options, error = [], f"{var.name}: {exc}"
        multi, include_all, all_value = var.multi, var.include_all, var.all_value
    elif isinstance(var, CustomVariable):
        options = list(var.options)
        multi, include_all, all_value = var.multi, var.include_all, var.all_value
    else:
        assert isinstance(var, IntervalVariable)
        options, multi, include_all, all_value = list(var.options), False, False, None
    selected = _select(requested, options, list(var.default), multi, include_all)
    if selected == [ALL]:
        value = VarValue(tuple(options), regex=True, all_value=all_value or ".*")
    else:
        value = VarValue(tuple(selected), regex=multi or include_all)
    return (
        ResolvedVariable(
            var.name, var.label or var.name, var.type, options, selected, multi, include_all, var.hide, error
        ),
        value,
    )


def requested_from_query(pairs: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """``var-x=a&var-x=b`` -> ``{"x": ["a", "b"]}``."""
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        if key.startswith("var-"):
            out.setdefault(key[4:], []).append(value)
    return out


def labels_text(labels: Labels) -> str:
    return format_labels(labels)
