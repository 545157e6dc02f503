"""SLO spec -> Prometheus rule groups, Sloth-compatible names, counts kept, exact thresholds.

Per SLO three groups, as Sloth generates (``sloth-slo-sli-recordings-<id>``, ``…-meta-recordings-…``,
``…-alerts-…``), with Sloth's record names and ``sloth_*`` labels so Sloth dashboards work. What
differs, on purpose:

* for an ``events`` SLI the error and total rates are recorded per window
  (``slo:sli_error_events:rate<w>``, ``slo:sli_total_events:rate<w>``) and the period ratio is
  ``sum_over_time(errors[30d]) / sum_over_time(totals[30d])``, a ratio of sums; Sloth averages
  the 5m ratios (slok/sloth#526), so a quiet night weighs as much as a busy day;
* thresholds are computed with ``Decimal``: ``0.0144``, never ``14.4 * 0.0009999999999999432``;
* a row whose threshold is >= 1 can never fire (an error ratio cannot exceed 1): rejected;
* ``min_events``: a row fires only with at least that many events in its long window.

Burn-rate rows (Sloth's ``google-30d``, the SRE workbook's factors scaled to the period):
``factor = budget_percent x period / long_window``.

>>> from watchkeeper.slo.spec import parse_specs
>>> rows = alert_rows(parse_specs(open("rules/slo/checkout.yml").read())[0])   # doctest: +SKIP
>>> [(r.long, r.short, str(r.factor)) for r in rows]                            # doctest: +SKIP
[('1h', '5m', '14.4'), ('6h', '30m', '6'), ('1d', '2h', '3'), ('3d', '6h', '1')]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import yaml

from watchkeeper.slo.spec import SloSpec, SpecError

SHORT_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
_WINDOW_HOURS = {
    "5m": Decimal(5) / 60,
    "30m": Decimal("0.5"),
    "1h": Decimal(1),
    "2h": Decimal(2),
    "6h": Decimal(6),
    "1d": Decimal(24),
    "3d": Decimal(72),
}
_WINDOW_SECONDS = {"5m": 300, "30m": 1800, "1h": 3600, "2h": 7200, "6h": 21600, "1d": 86400, "3d": 259200}
#: (severity, long window, short window, share of the period's budget the row consumes)
ROWS: tuple[tuple[str, str, str, Decimal], ...] = (
    ("page", "1h", "5m", Decimal("0.02")),
    ("page", "6h", "30m", Decimal("0.05")),
    ("ticket", "1d", "2h", Decimal("0.10")),
    ("ticket", "3d", "6h", Decimal("0.10")),
)
GENERATOR = "watchkeeper"


@dataclass(frozen=True, slots=True)
class AlertRow:
    """One multi-window row: fires when both windows burn faster than ``factor``."""

    severity: str
    long: str
    short: str
    budget_share: Decimal
    factor: Decimal
    threshold: Decimal  # factor x error budget, the error ratio both windows must exceed

    def explain(self, period_days: int) -> str:
        return (
            f"{self.severity}: error ratio above {fmt(self.threshold)} ({fmt(self.factor)}x the budget) "
            f"over {self.long} and {self.short}: {fmt(self.budget_share * 100)}% of the "
            f"{period_days}d budget spent in {self.long}"
        )


def fmt(d: Decimal) -> str:
    """A Decimal as PromQL/YAML text, no exponent, no trailing zeros: ``0.0144``, ``6``."""
    exponent = d.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -12:
        d = d.quantize(Decimal("1e-12"))
    return f"{d.normalize():f}"


def alert_rows(spec: SloSpec) -> list[AlertRow]:
    """The four rows for the spec's period; factors exact (``0.1 x 672h / 72h`` is 0.9333…)."""
    period_hours = Decimal(spec.period_days * 24)
    out = []
    for severity, long, short, share in ROWS:
        factor = share * period_hours / _WINDOW_HOURS[long]
        out.append(AlertRow(severity, long, short, share, factor, factor * spec.error_budget))
    return out


def infeasible(spec: SloSpec) -> list[str]:
    """Why enabled alerts of ``spec`` could never fire (empty when they can)."""
    reasons = []
    for row in alert_rows(spec):
        if (spec.page if row.severity == "page" else spec.ticket).disabled:
            continue
        if row.threshold >= 1:
            reasons.append(
                f"{spec.slo_id}: {row.severity} alert {row.long}/{row.short} needs an error ratio above "
                f"{fmt(row.threshold)} ({fmt(row.factor)} x budget {fmt(spec.error_budget)}) but a ratio "
                f"cannot exceed 1, so it can never fire; raise the objective above "
                f"{fmt(100 - 100 / row.factor)}% or set {row.severity}_alert.disable: true"
            )
    return reasons


def _selector(spec: SloSpec) -> str:
    return f'{{sloth_id="{spec.slo_id}", sloth_service="{spec.service}", sloth_slo="{spec.name}"}}'


def _base_labels(spec: SloSpec) -> dict[str, str]:
    return {**spec.labels, "sloth_id": spec.slo_id, "sloth_service": spec.service, "sloth_slo": spec.name}


def _q(query: str, window: str) -> str:
    return query.replace("{{.window}}", window).strip()


def sli_rules(spec: SloSpec) -> list[dict[str, Any]]:
    sel = _selector(spec)
    period = f"{spec.period_days}d"
    rules: list[dict[str, Any]] = []
    for w in SHORT_WINDOWS:
        labels = {**_base_labels(spec), "sloth_window": w}
        if spec.has_events:
            assert spec.error_query is not None and spec.total_query is not None
            rules.append(
                {"record": f"slo:sli_error_events:rate{w}", "expr": _q(spec.error_query, w), "labels": labels}
            )
            rules.append(
                {"record": f"slo:sli_total_events:rate{w}", "expr": _q(spec.total_query, w), "labels": labels}
            )
            expr = f"slo:sli_error_events:rate{w}{sel}\n/\nslo:sli_total_events:rate{w}{sel}"
        else:
            assert spec.error_ratio_query is not None
            expr = _q(spec.error_ratio_query, w)
        rules.append({"record": f"slo:sli_error:ratio_rate{w}", "expr": expr, "labels": labels})
    labels = {**_base_labels(spec), "sloth_window": period}
    if spec.has_events:
        expr = (
            f"sum_over_time(slo:sli_error_events:rate5m{sel}[{period}])\n/ ignoring (sloth_window)\n"
            f"sum_over_time(slo:sli_total_events:rate5m{sel}[{period}])"
        )
    else:  # no counts: the only possible period ratio is Sloth's mean of 5m ratios (stated in docs)
        expr = (
            f"sum_over_time(slo:sli_error:ratio_rate5m{sel}[{period}])\n/ ignoring (sloth_window)\n"
            f"count_over_time(slo:sli_error:ratio_rate5m{sel}[{period}])"
        )
    rules.append({"record": f"slo:sli_error:ratio_rate{period}", "expr": expr, "labels": labels})
    return rules


def meta_rules(spec: SloSpec) -> list[dict[str, Any]]:
    sel = _selector(spec)
    period = f"{spec.period_days}d"
    base = _base_labels(spec)
    on = "on (sloth_id, sloth_slo, sloth_service) group_left"
    return [
        {"record": "slo:objective:ratio", "expr": f"vector({fmt(spec.objective_ratio)})", "labels": base},
        {"record": "slo:error_budget:ratio", "expr": f"vector({fmt(spec.error_budget)})", "labels": base},
        {"record": "slo:time_period:days", "expr": f"vector({spec.period_days})", "labels": base},
        {
            "record": "slo:current_burn_rate:ratio",
            "expr": f"slo:sli_error:ratio_rate5m{sel}\n/ {on}\nslo:error_budget:ratio{sel}",
            "labels": base,
        },
        {
            "record": "slo:period_burn_rate:ratio",
            "expr": f"slo:sli_error:ratio_rate{period}{sel}\n/ {on}\nslo:error_budget:ratio{sel}",
            "labels": base,
        },
        {
            "record": "slo:period_error_budget_remaining:ratio",
            "expr": f"1 - slo:period_burn_rate:ratio{sel}",
            "labels": base,
        },
        {
            "record": "sloth_slo_info",
            "expr": "vector(1)",
            "labels": {
                **base,
                "sloth_mode": "cli-gen-prom",
                "sloth_objective": fmt(spec.objective),
                "sloth_spec": spec.source,
                "sloth_version": GENERATOR,
            },
        },
    ]


def _row_expr(spec: SloSpec, row: AlertRow) -> str:
    sel = _selector(spec)
    t = fmt(row.threshold)
    parts = [
        f"max(slo:sli_error:ratio_rate{w}{sel} > {t}) without (sloth_window)" for w in (row.long, row.short)
    ]
    if spec.min_events:
        seconds = _WINDOW_SECONDS[row.long]
        parts.append(
            f"max(slo:sli_total_events:rate{row.long}{sel} * {seconds} >= {spec.min_events}) "
            "without (sloth_window)"
        )
    return "(\n    " + "\n    and\n    ".join(parts) + "\n)"


def alert_rules(spec: SloSpec) -> list[dict[str, Any]]:
    rules = []
    rows = alert_rows(spec)
    for severity, alert in (("page", spec.page), ("ticket", spec.ticket)):
        if alert.disabled:
            continue
        mine = [r for r in rows if r.severity == severity]
        expr = "\nor\n".join(_row_expr(spec, r) for r in mine)
        title = (
            f"({severity}) {{{{$labels.sloth_service}}}} {{{{$labels.sloth_slo}}}} SLO error budget "
            "burn rate is too fast."
        )
        rules.append(
            {
                "alert": spec.alert_name,
                "expr": expr,
                **({"for": alert.for_} if alert.for_ else {}),
                "labels": {**spec.alert_labels, **alert.labels, "sloth_severity": severity},
                "annotations": {
                    "title": title,
                    **spec.alert_annotations,
                    **alert.annotations,
                    "watchkeeper_windows": "; ".join(r.explain(spec.period_days) for r in mine),
                },
            }
        )
    return rules


def generate(specs: Sequence[SloSpec]) -> dict[str, Any]:
    """The rule file (``{"groups": [...]}``) for ``specs``; :class:`SpecError` if an alert can't fire."""
    reasons = [r for spec in specs for r in infeasible(spec)]
    if reasons:
        raise SpecError(reasons)
    groups: list[dict[str, Any]] = []
    for spec in specs:
        groups.append({"name": f"sloth-slo-sli-recordings-{spec.slo_id}", "rules": sli_rules(spec)})
        groups.append({"name": f"sloth-slo-meta-recordings-{spec.slo_id}", "rules": meta_rules(spec)})
        alerts = alert_rules(spec)
        if alerts:
            groups.append({"name": f"sloth-slo-alerts-{spec.slo_id}", "rules": alerts})
    return {"groups": groups}


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def to_yaml(doc: dict[str, Any]) -> str:
    header = "# Generated by watchkeeper slo generate; do not edit, edit the SLO spec.\n"
    return header + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=200)
