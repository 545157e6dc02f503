"""Providers for the /alerts, /silences, /targets and /rules pages from Prometheus-shaped data.

Rule evaluation, alerting and the scrape manager already answer the Prometheus and Alertmanager
APIs; these adapters read the same ``data`` objects, so the pages need no other coupling:

>>> from watchkeeper.rules.api import alerts_data, rules_data            # doctest: +SKIP
>>> DashboardOptions(
...     get_rules=lambda: PrometheusRules(lambda: rules_data(manager)),
...     get_alerts=lambda: PrometheusAlerts(
...         lambda: alerts_data(manager), history=stored_history(lambda: manager.alert_store)),
...     get_targets=lambda: PrometheusTargets(scrape_manager.targets_api),
...     get_silences=lambda: AlertmanagerSilences(lambda: silences_json),
... )                                                                    # doctest: +SKIP

Shapes: ``GET /api/v1/rules`` data, ``GET /api/v1/alerts`` data, ``GET /api/v1/targets`` data, and
the list ``GET /api/v2/silences`` answers; the alert history is read from the store behind
``GET /api/v1/alerts/history`` (the rule manager's ``alert_store``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from watchkeeper.dashboards.providers import (
    AlertTransitionView,
    AlertView,
    RuleGroupView,
    RuleView,
    SilenceView,
    TargetView,
)
from watchkeeper.labels import Labels, from_dict


def rfc3339_ms(text: Any) -> int | None:
    """Epoch ms of an RFC 3339 time; None for missing or Go's zero time (year 1)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.year <= 1:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return round(when.timestamp() * 1000)


def _labels(obj: Any) -> Labels:
    return from_dict({str(k): str(v) for k, v in obj.items()}) if isinstance(obj, Mapping) else ()


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


class PrometheusAlerts:
    """Pending and firing alerts from ``/api/v1/alerts`` data; history from an optional callable."""

    def __init__(
        self,
        data: Callable[[], Mapping[str, Any]],
        history: Callable[[int], Sequence[AlertTransitionView]] | None = None,
    ) -> None:
        self._data = data
        self._history = history

    def alerts(self) -> list[AlertView]:
        out = []
        for a in self._data().get("alerts") or []:
            labels = _labels(a.get("labels"))
            out.append(
                AlertView(
                    name=dict(labels).get("alertname", ""),
                    state=str(a.get("state", "")),
                    labels=labels,
                    annotations=_labels(a.get("annotations")),
                    active_at_ms=rfc3339_ms(a.get("activeAt")) or 0,
                    value=_float(a.get("value")),
                )
            )
        return out

    def history(self, limit: int) -> Sequence[AlertTransitionView]:
        return list(self._history(limit))[:limit] if self._history else []


class StoredTransition(Protocol):
    """One stored alert transition (``watchkeeper.rules.persistence.HistoryEntry``)."""

    @property
    def at_ms(self) -> int: ...
    @property
    def alertname(self) -> str: ...
    @property
    def labels(self) -> Labels: ...
    @property
    def from_state(self) -> str: ...
    @property
    def to_state(self) -> str: ...
    @property
    def value(self) -> float: ...


class TransitionStore(Protocol):
    """Where alert transitions are kept (``watchkeeper.rules.persistence.AlertStore``)."""

    def history(self, *, limit: int) -> Sequence[StoredTransition]: ...


def stored_history(
    get_store: Callable[[], TransitionStore | None],
) -> Callable[[int], list[AlertTransitionView]]:
    """The ``history`` of :class:`PrometheusAlerts`: the newest ``limit`` transitions from the
    store ``get_store()`` returns (none without a database)."""

    def history(limit: int) -> list[AlertTransitionView]:
        store = get_store()
        if store is None:
            return []
        return [
            AlertTransitionView(
                name=e.alertname,
                labels=e.labels,
                from_state=e.from_state,
                to_state=e.to_state,
                at_ms=e.at_ms,
                value=e.value,
            )
            for e in store.history(limit=limit)
        ]

    return history


class PrometheusRules:
    """Rule groups from ``/api/v1/rules`` data."""

    def __init__(self, data: Callable[[], Mapping[str, Any]]) -> None:
        self._data = data

    def rule_groups(self) -> list[RuleGroupView]:
        groups = []
        for g in self._data().get("groups") or []:
            rules = []
            for r in g.get("rules") or []:
                kind = "alerting" if r.get("type") == "alerting" else "recording"
                duration = r.get("duration")
                rules.append(
                    RuleView(
                        name=str(r.get("name", "")),
                        kind=kind,
                        expr=str(r.get("query", "")),
                        health=str(r.get("health", "unknown")),
                        state=str(r.get("state", "")),
                        last_error=str(r.get("lastError", "")),
                        last_evaluation_ms=rfc3339_ms(r.get("lastEvaluation")),
                        evaluation_seconds=_seconds(r.get("evaluationTime")),
                        for_=f"{duration:g}s" if isinstance(duration, int | float) and duration else "",
                        labels=_labels(r.get("labels")),
                    )
                )
            groups.append(
                RuleGroupView(
                    name=str(g.get("name", "")),
                    file=str(g.get("file", "")),
                    interval_seconds=_seconds(g.get("interval")) or 0.0,
                    rules=tuple(rules),
                )
            )
        return groups


class PrometheusTargets:
    """Active scrape targets from ``/api/v1/targets`` data."""

    def __init__(self, data: Callable[[], Mapping[str, Any]]) -> None:
        self._data = data

    def targets(self) -> list[TargetView]:
        out = []
        for t in self._data().get("activeTargets") or []:
            labels = _labels(t.get("labels"))
            out.append(
                TargetView(
                    job=str(t.get("scrapePool") or dict(labels).get("job", "")),
                    url=str(t.get("scrapeUrl", "")),
                    health=str(t.get("health", "unknown")),
                    labels=labels,
                    last_scrape_ms=rfc3339_ms(t.get("lastScrape")),
                    last_scrape_duration_seconds=_seconds(t.get("lastScrapeDuration")),
                    last_error=str(t.get("lastError", "")),
                )
            )
        return out


def _matcher_text(m: Mapping[str, Any]) -> str:
    op = ("=" if m.get("isEqual", True) else "!") + ("~" if m.get("isRegex") else "")
    op = {"=": "=", "!": "!=", "=~": "=~", "!~": "!~"}[op]
    value = str(m.get("value", "")).replace("\\", "\\\\").replace('"', '\\"')
    return f'{m.get("name", "")}{op}"{value}"'


class AlertmanagerSilences:
    """Silences from the list ``/api/v2/silences`` answers (expired ones last)."""

    def __init__(self, data: Callable[[], Sequence[Mapping[str, Any]]]) -> None:
        self._data = data

    def silences(self) -> list[SilenceView]:
        out = []
        for s in self._data():
            raw_status = s.get("status")
            status: Mapping[str, Any] = raw_status if isinstance(raw_status, Mapping) else {}
            out.append(
                SilenceView(
                    id=str(s.get("id", "")),
                    matchers="{" + ", ".join(_matcher_text(m) for m in s.get("matchers") or []) + "}",
                    starts_at_ms=rfc3339_ms(s.get("startsAt")) or 0,
                    ends_at_ms=rfc3339_ms(s.get("endsAt")) or 0,
                    created_by=str(s.get("createdBy", "")),
                    comment=str(s.get("comment", "")),
                    state=str(status.get("state", "active")),
                )
            )
        order = {"active": 0, "pending": 1, "expired": 2}
        return sorted(out, key=lambda v: (order.get(v.state, 3), -v.ends_at_ms))
