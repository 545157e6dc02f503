"""Variables in queries and legends, as Grafana interpolates them for Prometheus.

>>> values = {"route": ["/a.b", "/c"], "job": ["api"]}
>>> interpolate('rate(x{route=~"$route", job="${job}"}[$__rate_interval])', values, {"__rate_interval": "1m"})
'rate(x{route=~"(/a\\\\\\\\.b|/c)", job="api"}[1m])'
>>> legend("{{route}} {{ status }}", {"route": "/a", "status": "500"})
'/a 500'

Multi-valued (and "All") variables become a regex alternation with each value regex-escaped for a
PromQL double-quoted string (Grafana's ``prometheusSpecialRegexEscape``); a single value of a
variable that is neither multi nor include-all is inserted as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from watchkeeper.labels import Labels, format_labels

_VAR_RE = re.compile(r"\$(\w+)|\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)(?::(\w+))?\]\]")
_LEGEND_RE = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
_REGEX_SPECIAL = re.compile(r"[$^*{}\[\]'+?.()|]")
ALL = "$__all"


def escape_regex_value(value: str) -> str:
    """A value for a regex inside a PromQL double-quoted string: ``a.b`` -> ``a\\\\.b``."""
    return _REGEX_SPECIAL.sub(lambda m: "\\\\" + m.group(0), value.replace("\\", "\\\\\\\\"))


@dataclass(frozen=True, slots=True)
class VarValue:
    values: tuple[str, ...]
    regex: bool
    """Multi or include-all: insert as a regex alternation."""
    all_value: str | None = None
    """Set when "All" is selected (the variable's ``all_value``, or ``.*``)."""

    def render(self, fmt: str | None = None) -> str:
        if self.all_value is not None and fmt != "csv":
            return self.all_value
        if fmt == "csv":
            return ",".join(self.values)
        if fmt == "raw" or (not self.regex and len(self.values) == 1):
            return self.values[0] if len(self.values) == 1 else "{" + ",".join(self.values) + "}"
        escaped = [escape_regex_value(v) for v in self.values]
        if len(escaped) == 1:
            return escaped[0]
        return "(" + "|".join(escaped) + ")"


def interpolate(
    text: str, values: Mapping[str, Sequence[str] | VarValue], builtins: Mapping[str, str] | None = None
) -> str:
    """``text`` with ``$var``, ``${var}``, ``${var:fmt}``, ``[[var]]`` and ``$__builtins`` replaced.
    Unknown names are left as written (the query then fails visibly, naming them)."""
    builtins = builtins or {}

    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(5)
        if name in builtins:
            return builtins[name]
        value = values.get(name)
        if value is None:
            return m.group(0)
        if not isinstance(value, VarValue):
            value = VarValue(tuple(value), regex=len(value) != 1)
        if not value.values and value.all_value is None:
            return ""
        return value.render(fmt)

    return _VAR_RE.sub(replace, text)


def legend(template: str, labels: Mapping[str, str]) -> str:
    """A series name from a ``{{label}}`` template (missing labels are empty)."""
    return _LEGEND_RE.sub(lambda m: labels.get(m.group(1), ""), template)


def series_name(template: str, labels: Labels) -> str:
    """The legend of one series: the template, or its labels as Prometheus prints them."""
    if template and template != "__auto":
        return legend(template, dict(labels))
    return format_labels(labels) or "{}"


# --- variable queries ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VariableQuery:
    """A parsed variable query: ``kind`` is label_values, label_names, metrics or query_result."""

    kind: str
    selector: str = ""
    label: str = ""
    regex: str = ""
    expr: str = ""


_QUERY_RE = re.compile(r"^\s*(label_values|label_names|metrics|query_result)\s*\((.*)\)\s*$", re.S)


def parse_variable_query(text: str) -> VariableQuery:
    """Parse a Grafana Prometheus variable query.

    >>> parse_variable_query('label_values(up{job="a"}, instance)')
    VariableQuery(kind='label_values', selector='up{job="a"}', label='instance', regex='', expr='')
    """
    m = _QUERY_RE.match(text)
    if not m:
        # Grafana treats any other text as query_result(expr)'s expression
        return VariableQuery("query_result", expr=text.strip())
    kind, args = m.group(1), m.group(2).strip()
    if kind == "label_values":
        selector, sep, label = args.rpartition(",")
        if not sep:
            return VariableQuery(kind, label=args)
        return VariableQuery(kind, selector=selector.strip(), label=label.strip())
    if kind == "label_names":
        return VariableQuery(kind, selector=args)
    if kind == "metrics":
        return VariableQuery(kind, regex=args)
    return VariableQuery(kind, expr=args)


def apply_regex(values: Sequence[str], regex: str) -> list[str]:
    """Grafana's variable ``regex``: ``/pattern/`` keeps matching values; a capture group's
    (or the group named ``value``'s) text replaces the value."""
    if not regex:
        return list(values)
    body = regex[1:-1] if len(regex) >= 2 and regex.startswith("/") and regex.endswith("/") else regex
    try:
        pattern = re.compile(body.replace("(?<", "(?P<").replace("(?P<=", "(?<=").replace("(?P<!", "(?<!"))
    except re.error:
        return list(values)
    out: list[str] = []
    for v in values:
        m = pattern.search(v)
        if not m:
            continue
        if "value" in pattern.groupindex:
            picked = m.group("value")
        elif m.groups():
            picked = next((g for g in m.groups() if g is not None), v)
        else:
            picked = v
        if picked not in out:
            out.append(picked)
    return out
