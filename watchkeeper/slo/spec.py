"""SLO specs: Sloth ``prometheus/v1`` and OpenSLO v1 (``SLO`` + ``SLI`` with ``ratioMetric``).

Both formats become one model, :class:`SloSpec`, that :mod:`watchkeeper.slo.generate` turns into
rules. Objectives are ``Decimal`` percentages read from the YAML *text* (``99.9`` stays ``99.9``).

>>> specs = parse_specs('''
... version: prometheus/v1
... service: checkout
... slos:
...   - name: availability
...     objective: 99.9
...     sli: {events: {error_query: 'sum(rate(e[{{.window}}]))', total_query: 'sum(rate(t[{{.window}}]))'}}
...     alerting: {name: CheckoutErrors}
... ''')
>>> specs[0].slo_id, specs[0].error_budget
('checkout-availability', Decimal('0.001'))

Extensions to Sloth's format: ``min_events`` on an SLO (an alert row needs at least that many
events in its long window) and ``period`` (``28d``, ``30d``; default 30d as in Sloth).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from watchkeeper.durations import parse_duration
from watchkeeper.errors import ConfigError
from watchkeeper.labels import LABEL_NAME_RE


class SpecError(ConfigError):
    """A spec is invalid; ``errors`` lists every reason (file, SLO, what to change)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class AlertSpec:
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    disabled: bool = False
    for_: str | None = None  # ``for:`` (Sloth's alert_for plugin): how long the rows must hold


@dataclass(frozen=True, slots=True)
class SloSpec:
    """One SLO. ``objective`` is a percentage; queries carry ``{{.window}}`` placeholders."""

    service: str
    name: str
    objective: Decimal
    error_query: str | None = None
    total_query: str | None = None
    error_ratio_query: str | None = None
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    alert_name: str = ""
    alert_labels: dict[str, str] = field(default_factory=dict)
    alert_annotations: dict[str, str] = field(default_factory=dict)
    page: AlertSpec = field(default_factory=AlertSpec)
    ticket: AlertSpec = field(default_factory=AlertSpec)
    period_days: int = 30
    min_events: int = 0
    source: str = "prometheus/v1"

    @property
    def slo_id(self) -> str:
        return f"{self.service}-{self.name}"

    @property
    def error_budget(self) -> Decimal:
        """The allowed error ratio: ``1 - objective/100`` exactly."""
        return (1 - self.objective / 100).normalize()

    @property
    def objective_ratio(self) -> Decimal:
        return (self.objective / 100).normalize()

    @property
    def has_events(self) -> bool:
        return self.error_query is not None and self.total_query is not None


_PERIOD_RE = re.compile(r"^(\d+)d$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _str_map(raw: Any, where: str, errors: list[str]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        errors.append(f"{where}: must be a mapping")
        return {}
    out = {str(k): "" if v is None else str(v) for k, v in raw.items()}
    for k in out:
        if not LABEL_NAME_RE.match(k):
            errors.append(f"{where}: invalid label name {k!r}")
    return out


def _decimal(raw: Any, where: str, errors: list[str]) -> Decimal | None:
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        errors.append(f"{where}: objective {raw!r} is not a number")
        return None
    if not value.is_finite():
        errors.append(f"{where}: objective {raw!r} is not a number")
        return None
    return value


def _period_days(raw: Any, where: str, errors: list[str]) -> int:
    if raw is None:
        return 30
    m = _PERIOD_RE.match(str(raw).strip())
    if not m or int(m.group(1)) <= 0:
        errors.append(f"{where}: period {raw!r} must be whole days, e.g. 28d or 30d")
        return 30
    return int(m.group(1))


def _load_docs(text: str) -> list[Any]:
    # BaseLoader keeps scalars as text: the objective 99.9 is read as "99.9", never as a float.
    return [d for d in yaml.load_all(text, Loader=yaml.BaseLoader) if d is not None]


def parse_specs(text: str, filename: str = "<spec>", *, default_period_days: int = 30) -> list[SloSpec]:
    """Every SLO in a Sloth or OpenSLO document; :class:`SpecError` lists every problem."""
    try:
        docs = _load_docs(text)
    except yaml.YAMLError as exc:
        raise SpecError([f"{filename}: {exc}"]) from None
    errors: list[str] = []
    specs: list[SloSpec] = []
    if any(isinstance(d, dict) and str(d.get("apiVersion", "")).startswith("openslo/") for d in docs):
        specs = _parse_openslo(docs, filename, errors, default_period_days)
    else:
        for doc in docs:
            specs += _parse_sloth(doc, filename, errors, default_period_days)
    for spec in specs:
        errors += validate(spec, f"{filename}: {spec.slo_id}")
    if errors:
        raise SpecError(errors)
    return specs


def load_spec_files(paths: list[Path], *, default_period_days: int = 30) -> list[SloSpec]:
    specs: list[SloSpec] = []
    errors: list[str] = []
    for path in paths:
        try:
            specs += parse_specs(
                path.read_text(encoding="utf-8"), str(path), default_period_days=default_period_days
            )
        except OSError as exc:
            errors.append(f"{path}: {exc.strerror or exc}")
        except SpecError as exc:
            errors += exc.errors
    if errors:
        raise SpecError(errors)
    return specs


# --- Sloth prometheus/v1 ------------------------------------------------------------------------


def _alert(raw: Any, where: str, errors: list[str]) -> AlertSpec:
    if raw is None:
        return AlertSpec()
    if not isinstance(raw, dict):
        errors.append(f"{where}: must be a mapping")
        return AlertSpec()
    for_ = raw.get("for")
    if for_ is not None:
        try:
            parse_duration(str(for_))
        except ValueError:
            errors.append(f"{where}.for: {for_!r} is not a duration (e.g. 5m)")
    return AlertSpec(
        labels=_str_map(raw.get("labels"), f"{where}.labels", errors),
        annotations=_str_map(raw.get("annotations"), f"{where}.annotations", errors),
        disabled=str(raw.get("disable", "false")).lower() == "true",
        for_=None if for_ is None else str(for_),
    )


def _parse_sloth(doc: Any, filename: str, errors: list[str], default_period_days: int) -> list[SloSpec]:
    if not isinstance(doc, dict):
        errors.append(f"{filename}: a spec must be a mapping")
        return []
    if doc.get("version") != "prometheus/v1":
        errors.append(f"{filename}: version must be prometheus/v1 (or use apiVersion: openslo/v1)")
        return []
    service = str(doc.get("service") or "")
    if not service:
        errors.append(f"{filename}: service is required")
    labels = _str_map(doc.get("labels"), f"{filename}: labels", errors)
    raw_slos = doc.get("slos")
    if not isinstance(raw_slos, list) or not raw_slos:
        errors.append(f"{filename}: slos must be a non-empty list")
        return []
    out: list[SloSpec] = []
    for i, raw in enumerate(raw_slos):
        where = f"{filename}: slos[{i}]"
        if not isinstance(raw, dict):
            errors.append(f"{where}: must be a mapping")
            continue
        name = str(raw.get("name") or "")
        if not _NAME_RE.match(name):
            errors.append(f"{where}: name {name!r} must be letters, digits, '-', '_' or '.'")
        where = f"{filename}: {service}-{name}"
        objective = _decimal(raw.get("objective"), where, errors)
        sli = raw.get("sli") or {}
        events = sli.get("events") if isinstance(sli, dict) else None
        raw_sli = sli.get("raw") if isinstance(sli, dict) else None
        error_q = total_q = ratio_q = None
        if isinstance(events, dict):
            error_q, total_q = events.get("error_query"), events.get("total_query")
            if not error_q or not total_q:
                errors.append(f"{where}: sli.events needs error_query and total_query")
        elif isinstance(raw_sli, dict):
            ratio_q = raw_sli.get("error_ratio_query")
            if not ratio_q:
                errors.append(f"{where}: sli.raw needs error_ratio_query")
        else:
            errors.append(
                f"{where}: sli needs events (error_query, total_query) or raw (error_ratio_query);"
                " plugins are not supported"
            )
        alerting = raw.get("alerting") or {}
        if not isinstance(alerting, dict):
            errors.append(f"{where}: alerting must be a mapping")
            alerting = {}
        min_events = 0
        if raw.get("min_events") is not None:
            try:
                min_events = int(str(raw["min_events"]))
            except ValueError:
                errors.append(f"{where}: min_events must be an integer")
        if objective is None:
            continue
        out.append(
            SloSpec(
                service=service,
                name=name,
                objective=objective,
                error_query=str(error_q) if error_q else None,
                total_query=str(total_q) if total_q else None,
                error_ratio_query=str(ratio_q) if ratio_q else None,
                description=str(raw.get("description") or ""),
                labels={**labels, **_str_map(raw.get("labels"), f"{where}.labels", errors)},
                alert_name=str(alerting.get("name") or ""),
                alert_labels=_str_map(alerting.get("labels"), f"{where}.alerting.labels", errors),
                alert_annotations=_str_map(
                    alerting.get("annotations"), f"{where}.alerting.annotations", errors
                ),
                page=_alert(alerting.get("page_alert"), f"{where}.alerting.page_alert", errors),
                ticket=_alert(alerting.get("ticket_alert"), f"{where}.alerting.ticket_alert", errors),
                period_days=_period_days(
                    raw.get("period", doc.get("period", f"{default_period_days}d")), where, errors
                ),
                min_events=min_events,
            )
        )
    return out


# --- OpenSLO v1 ----------------------------------------------------------------------------------


def _metric_query(raw: Any, counter: bool) -> str | None:
    """``{metricSource: {type: Prometheus, spec: {query}}}`` as a per-window rate query."""
    if not isinstance(raw, dict):
        return None
    source = raw.get("metricSource") or {}
    spec = source.get("spec") if isinstance(source, dict) else None
    query = spec.get("query") if isinstance(spec, dict) else None
    if not query:
        return None
    query = str(query).strip()
    if "{{.window}}" in query or not counter:
        return query
    return f"sum(rate({query}[{{{{.window}}}}]))"


def _parse_openslo(
    docs: list[Any], filename: str, errors: list[str], default_period_days: int
) -> list[SloSpec]:
    slis = {
        str(d.get("metadata", {}).get("name")): d.get("spec") or {}
        for d in docs
        if isinstance(d, dict) and d.get("kind") == "SLI"
    }
    out: list[SloSpec] = []
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != "SLO":
            continue
        meta, spec = doc.get("metadata") or {}, doc.get("spec") or {}
        name = str(meta.get("name") or "")
        where = f"{filename}: SLO {name}"
        if doc.get("apiVersion") != "openslo/v1":
            errors.append(f"{where}: apiVersion must be openslo/v1")
            continue
        indicator = spec.get("indicator")
        sli = (
            indicator.get("spec") if isinstance(indicator, dict) else slis.get(str(spec.get("indicatorRef")))
        )
        ratio = sli.get("ratioMetric") if isinstance(sli, dict) else None
        if not isinstance(ratio, dict):
            errors.append(f"{where}: only SLIs with ratioMetric are supported (indicator or indicatorRef)")
            continue
        counter = str(ratio.get("counter", "true")).lower() == "true"
        total = _metric_query(ratio.get("total"), counter)
        bad, good = _metric_query(ratio.get("bad"), counter), _metric_query(ratio.get("good"), counter)
        error_q: str | None = None
        if bad:
            error_q = bad
        elif good and total:
            error_q = f"({total}) - ({good})"
        if not error_q or not total:
            errors.append(f"{where}: ratioMetric needs total and good or bad (raw ratios are not supported)")
            continue
        objectives = spec.get("objectives") or []
        obj = objectives[0] if isinstance(objectives, list) and objectives else {}
        objective: Decimal | None = None
        if isinstance(obj, dict) and obj.get("targetPercent") is not None:
            objective = _decimal(obj["targetPercent"], where, errors)
        elif isinstance(obj, dict) and obj.get("target") is not None:
            target = _decimal(obj["target"], where, errors)
            objective = None if target is None else (target * 100).normalize()
        else:
            errors.append(f"{where}: objectives[0] needs target or targetPercent")
        if isinstance(objectives, list) and len(objectives) > 1:
            errors.append(f"{where}: only one objective per SLO is supported")
        if str(spec.get("budgetingMethod", "Occurrences")) != "Occurrences":
            errors.append(
                f"{where}: budgetingMethod {spec.get('budgetingMethod')} is not supported (Occurrences only)"
            )
        period = default_period_days
        windows = spec.get("timeWindow") or []
        # a calendar window (1M, 1Q) keeps the default period for the burn-rate factors; the
        # pages and reports show calendar months/quarters (slo.budget_window, reports[].window)
        rolling = isinstance(windows, list) and windows and isinstance(windows[0], dict)
        if rolling and windows[0].get("calendar") is None:
            period = _period_days(windows[0].get("duration"), where, errors)
        if objective is None:
            continue
        out.append(
            SloSpec(
                service=str(spec.get("service") or "default"),
                name=name,
                objective=objective,
                error_query=error_q,
                total_query=total,
                description=str(spec.get("description") or ""),
                labels=_str_map(meta.get("labels"), f"{where}.metadata.labels", errors),
                alert_name=f"{name.replace('-', '_')}_burn_rate",
                period_days=period,
                source="openslo/v1",
            )
        )
    if not out and not errors:
        errors.append(f"{filename}: no kind: SLO document found")
    return out


# --- validation ----------------------------------------------------------------------------------


def validate(spec: SloSpec, where: str) -> list[str]:
    """Problems that make the generated rules wrong or useless (alert feasibility is in ``generate``)."""
    errors: list[str] = []
    if not Decimal(0) < spec.objective < Decimal(100):
        errors.append(
            f"{where}: objective {spec.objective} must be above 0 and below 100 "
            "(at 100 the budget is zero and every error would page)"
        )
    for what, q in (
        ("error_query", spec.error_query),
        ("total_query", spec.total_query),
        ("error_ratio_query", spec.error_ratio_query),
    ):
        if q is not None and "{{.window}}" not in q:
            errors.append(
                f"{where}: {what} has no {{{{.window}}}}: every window would compute the same value"
            )
    if spec.min_events < 0:
        errors.append(f"{where}: min_events must be >= 0")
    if spec.min_events and not spec.has_events:
        errors.append(f"{where}: min_events needs an events SLI (a raw error ratio has no event count)")
    if not (spec.page.disabled and spec.ticket.disabled) and not spec.alert_name:
        errors.append(f"{where}: alerting.name is required unless both alerts are disabled")
    return errors
