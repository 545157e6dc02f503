"""Prometheus rule files: the model and its loader, with Prometheus' validation.

A rule file is ``groups: [{name, interval, query_offset, limit, labels, rules: [...]}]``; a rule
is a recording rule (``record, expr, labels``) or an alerting rule (``alert, expr, for,
keep_firing_for, labels, annotations``), as in Prometheus' ``model/rulefmt``:

>>> groups = load_rule_files(["rules/*.yml"])                     # doctest: +SKIP
>>> groups[0].rules[0].name, groups[0].interval_ms                # doctest: +SKIP
('InstanceDown', 60000)

Errors are collected per file and raised together (:class:`RuleFileError`), each naming the
file, group and rule, so ``check rules`` can print all of them.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from watchkeeper.durations import parse_duration
from watchkeeper.errors import ConfigError, ParseError
from watchkeeper.labels import LABEL_NAME_RE, METRIC_NAME, METRIC_NAME_RE, Labels, from_dict
from watchkeeper.promql.ast import Expr
from watchkeeper.promql.parser import parse, value_type
from watchkeeper.rules.template import Template, TemplateError

DEFAULT_EVALUATION_INTERVAL_MS = 60_000


class RulesConfig(BaseModel):
    """The rule settings of ``watchkeeper.yml`` (``Settings.rules``).

    ``rule_files`` are glob patterns, relative to the working directory (or absolute).
    """

    rule_files: list[str] = Field(default_factory=list)
    evaluation_interval: str = "1m"
    query_offset: str = "0s"
    external_labels: dict[str, str] = Field(default_factory=dict)
    external_url: str = ""
    #: Prometheus' ``--rules.alert.resend-delay``: firing alerts are re-sent this often.
    resend_delay: str = "1m"
    #: Alert history older than this is deleted (checked hourly).
    history_retention: str = "90d"

    def evaluation_interval_ms(self) -> int:
        return parse_duration(self.evaluation_interval)

    def query_offset_ms(self) -> int:
        return parse_duration(self.query_offset)

    def resend_delay_ms(self) -> int:
        return parse_duration(self.resend_delay)

    def history_retention_ms(self) -> int:
        return parse_duration(self.history_retention)


class RuleFileError(ConfigError):
    """One or more rule files are invalid; ``errors`` lists every problem found."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = list(errors)


@dataclass(frozen=True, slots=True)
class RecordingRule:
    name: str
    expr: str
    ast: Expr = field(compare=False, repr=False)
    labels: Labels = ()

    @property
    def kind(self) -> str:
        return "recording"


@dataclass(frozen=True, slots=True)
class AlertingRule:
    name: str
    expr: str
    ast: Expr = field(compare=False, repr=False)
    for_ms: int = 0
    keep_firing_for_ms: int = 0
    labels: Labels = ()
    annotations: Labels = ()

    @property
    def kind(self) -> str:
        return "alerting"


Rule = RecordingRule | AlertingRule


@dataclass(frozen=True, slots=True)
class RuleGroup:
    """A group: its rules run in order, at one timestamp, every ``interval_ms``."""

    name: str
    file: str
    interval_ms: int
    rules: tuple[Rule, ...]
    limit: int = 0
    query_offset_ms: int | None = None
    labels: Labels = ()

    @property
    def key(self) -> str:
        """Prometheus' group key: ``file;name``."""
        return f"{self.file};{self.name}"


def rule_key(rule: Rule) -> str:
    """What identifies a rule across reloads (Prometheus matches rules by name and labels)."""
    return f"{rule.kind}:{rule.name}:{rule.labels!r}"


# --- YAML ----------------------------------------------------------------------------------------


class _StringLoader(yaml.SafeLoader):
    """YAML with every plain scalar kept as text (Go unmarshals ``values: 0x10`` into a string)."""


_StringLoader.yaml_implicit_resolvers = {
    k: [(tag, regexp) for tag, regexp in v if tag == "tag:yaml.org,2002:null"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(text: str) -> Any:
    """YAML where scalars stay strings (``null``/empty become ``None``)."""
    return yaml.load(text, Loader=_StringLoader)  # a SafeLoader subclass # nosec B506


# --- validation ----------------------------------------------------------------------------------

_GROUP_FIELDS = {"name", "interval", "query_offset", "limit", "labels", "rules"}
_RULE_FIELDS = {"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"}


def parse_rule_file(text: str, filename: str, *, default_interval_ms: int = DEFAULT_EVALUATION_INTERVAL_MS
                    ) -> tuple[list[RuleGroup], list[str]]:
    """Groups of one file and the errors found (all of them, Prometheus style)."""
    errors: list[str] = []
    try:
        doc = load_yaml(text)
    except yaml.YAMLError as exc:
        return [], [f"{filename}: {exc}"]
    if doc is None:
        return [], []
    if not isinstance(doc, dict):
        return [], [f"{filename}: a rule file must be a mapping with 'groups'"]
    for unknown in sorted(set(doc) - {"groups"}):
        errors.append(f"{filename}: field {unknown} not found in type rulefmt.RuleGroups")
    raw_groups = doc.get("groups") or []
    if not isinstance(raw_groups, list):
        return [], [*errors, f"{filename}: 'groups' must be a list"]
    groups: list[RuleGroup] = []
    seen: set[str] = set()
    for gi, raw in enumerate(raw_groups):
        group, group_errors = _parse_group(raw, gi, filename, default_interval_ms)
        errors += group_errors
        if group is None:
            continue
        if group.name in seen:
            errors.append(f'{filename}: {group.name}: groupname: "{group.name}" is repeated in the same file')
        seen.add(group.name)
        groups.append(group)
    return groups, errors


def _as_str_map(raw: Any, what: str, where: str, errors: list[str]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        errors.append(f"{where}: {what} must be a mapping")
        return {}
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def _duration(raw: Any, what: str, where: str, errors: list[str]) -> int | None:
    if raw is None:
        return None
    try:
        return parse_duration(str(raw))
    except ValueError:
        errors.append(f'{where}: {what}: not a valid duration string: "{raw}"')
        return None


def _parse_group(raw: Any, index: int, filename: str, default_interval_ms: int
                 ) -> tuple[RuleGroup | None, list[str]]:
    errors: list[str] = []
    if not isinstance(raw, dict):
        return None, [f"{filename}: group {index + 1}: must be a mapping"]
    name = str(raw.get("name") or "")
    where = f"{filename}: {name or f'group {index + 1}'}"
    for unknown in sorted(set(raw) - _GROUP_FIELDS):
        errors.append(f"{where}: field {unknown} not found in type rulefmt.RuleGroup")
    if not name:
        errors.append(f"{where}: Groupname must not be empty")
    interval = _duration(raw.get("interval"), "interval", where, errors)
    if interval is not None and interval <= 0:
        interval = None
    offset = _duration(raw.get("query_offset"), "query_offset", where, errors)
    limit = 0
    if raw.get("limit") is not None:
        try:
            limit = int(str(raw["limit"]))
        except ValueError:
            errors.append(f"{where}: limit must be an integer")
    group_labels = _as_str_map(raw.get("labels"), "labels", where, errors)
    for label in group_labels:
        if not LABEL_NAME_RE.match(label):
            errors.append(f'{where}: invalid label name: "{label}"')
    raw_rules = raw.get("rules") or []
    if not isinstance(raw_rules, list):
        errors.append(f"{where}: rules must be a list")
        raw_rules = []
    rules: list[Rule] = []
    for ri, raw_rule in enumerate(raw_rules):
        rule, rule_errors = _parse_rule(raw_rule, f"{where}: rule {ri + 1}", group_labels)
        errors += rule_errors
        if rule is not None:
            rules.append(rule)
    group = RuleGroup(
        name=name, file=filename, interval_ms=interval or default_interval_ms, rules=tuple(rules),
        limit=limit, query_offset_ms=offset, labels=from_dict(group_labels),
    )
    return group, errors


def _parse_rule(raw: Any, where: str, group_labels: Mapping[str, str]) -> tuple[Rule | None, list[str]]:
    errors: list[str] = []
    if not isinstance(raw, dict):
        return None, [f"{where}: must be a mapping"]
    for unknown in sorted(set(raw) - _RULE_FIELDS):
        errors.append(f"{where}: field {unknown} not found in type rulefmt.Rule")
    record, alert = raw.get("record"), raw.get("alert")
    name = str(record or alert or "")
    if name:
        where = f'{where}, "{name}"'
    if record and alert:
        errors.append(f"{where}: only one of 'record' and 'alert' must be set")
    elif not record and not alert:
        errors.append(f"{where}: one of 'record' or 'alert' must be set")
    expr_text = "" if raw.get("expr") is None else str(raw["expr"])
    ast: Expr | None = None
    if not expr_text:
        errors.append(f"{where}: field 'expr' must be set in rule")
    else:
        try:
            ast = parse(expr_text)
            if value_type(ast) not in ("vector", "scalar"):
                errors.append(f"{where}: could not parse expression: expression must evaluate to a "
                              f"vector or scalar, got {value_type(ast)}")
                ast = None
        except ParseError as exc:
            errors.append(f"{where}: could not parse expression: {exc}")
    labels = _as_str_map(raw.get("labels"), "labels", where, errors)
    annotations = _as_str_map(raw.get("annotations"), "annotations", where, errors)
    for label in labels:
        if not LABEL_NAME_RE.match(label):
            errors.append(f'{where}: invalid label name: "{label}"')
        if label == METRIC_NAME:
            errors.append(f"{where}: invalid label name: {METRIC_NAME}")
    for ann in annotations:
        if not LABEL_NAME_RE.match(ann):
            errors.append(f'{where}: invalid annotation name: "{ann}"')
    for_ms = _duration(raw.get("for"), "for", where, errors) or 0
    keep_ms = _duration(raw.get("keep_firing_for"), "keep_firing_for", where, errors) or 0
    if record:
        if raw.get("annotations"):
            errors.append(f"{where}: invalid field 'annotations' in recording rule")
        if raw.get("for") is not None:
            errors.append(f"{where}: invalid field 'for' in recording rule")
        if raw.get("keep_firing_for") is not None:
            errors.append(f"{where}: invalid field 'keep_firing_for' in recording rule")
        if not METRIC_NAME_RE.match(str(record)):
            errors.append(f'{where}: invalid recording rule name: {record}')
    else:
        for kind, mapping in (("label", labels), ("annotation", annotations)):
            for key, text in mapping.items():
                try:
                    Template.parse(text)
                except TemplateError as exc:
                    errors.append(f'{where}: template: __alert_{name}:1: {kind} "{key}": {exc}')
    if errors or ast is None:
        return None, errors
    merged = from_dict({**group_labels, **labels})
    if record:
        return RecordingRule(name=str(record), expr=expr_text, ast=ast, labels=merged), []
    return AlertingRule(
        name=str(alert), expr=expr_text, ast=ast, for_ms=for_ms, keep_firing_for_ms=keep_ms,
        labels=merged, annotations=from_dict(annotations) if annotations else (),
    ), []


# --- files ---------------------------------------------------------------------------------------


def expand_patterns(patterns: Iterable[str], base_dir: Path | None = None) -> list[Path]:
    """Files matching the globs (relative ones resolved against ``base_dir``), sorted, unique."""
    out: list[Path] = []
    for pattern in patterns:
        full = pattern if base_dir is None or Path(pattern).is_absolute() else str(base_dir / pattern)
        matches = sorted(glob.glob(full)) if glob.has_magic(full) else [full]
        out += [Path(m) for m in matches]
    return list(dict.fromkeys(out))


def load_rule_files(patterns: Iterable[str], *, base_dir: Path | None = None,
                    default_interval_ms: int = DEFAULT_EVALUATION_INTERVAL_MS) -> list[RuleGroup]:
    """All groups of the files matching ``patterns``; :class:`RuleFileError` lists every error."""
    groups: list[RuleGroup] = []
    errors: list[str] = []
    for path in expand_patterns(patterns, base_dir):
        try:
            text = path.read_text()
        except OSError as exc:
            errors.append(f"{path}: {exc.strerror or exc}")
            continue
        file_groups, file_errors = parse_rule_file(text, str(path), default_interval_ms=default_interval_ms)
        groups += file_groups
        errors += file_errors
    if errors:
        raise RuleFileError(errors)
    return groups
