"""``/api/v1/rules``, ``/api/v1/alerts`` in Prometheus' JSON shape, and ``/api/v1/alerts/history``.

The routes only read the manager's state; the JSON is built by :func:`rules_data` and
:func:`alerts_data` (pure, tested directly).

>>> app.include_router(rules_router(lambda: manager))   # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response

from watchkeeper.errors import QueryError
from watchkeeper.labels import Labels, Matcher
from watchkeeper.promql.api import BadData, error_response, parse_selector, parse_time_ms
from watchkeeper.promql.formatting import format_go_float
from watchkeeper.rules.evaluation import GroupRuntime, RuleHealth
from watchkeeper.rules.manager import RuleManager
from watchkeeper.rules.model import AlertingRule, RuleGroup, rule_key
from watchkeeper.rules.state import AlertState, State

_ZERO_TIME = "0001-01-01T00:00:00Z"


def rfc3339(ms: int | None) -> str:
    """Go's ``time.Time`` JSON form in UTC (``2024-01-01T00:00:00.5Z``); Go's zero time for None."""
    if ms is None:
        return _ZERO_TIME
    t = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if ms % 1000:
        text += f".{ms % 1000:03d}".rstrip("0")
    return text + "Z"


def _value(v: float) -> str:
    """Prometheus writes alert values with ``FormatFloat(v, 'e', -1, 64)``."""
    return format_go_float(v, "e") if not math.isnan(v) and not math.isinf(v) else format_go_float(v)


def _map(labels: Labels) -> dict[str, str]:
    return dict(labels)


def alert_json(a: AlertState) -> dict[str, Any]:
    out: dict[str, Any] = {
        "labels": _map(a.labels), "annotations": _map(a.annotations), "state": a.state.value,
        "activeAt": rfc3339(a.active_at_ms), "value": _value(a.value),
    }
    if a.keep_firing_since_ms is not None:
        out["keepFiringSince"] = rfc3339(a.keep_firing_since_ms)
    return out


def _rule_state(alerts: Sequence[AlertState]) -> str:
    states = {a.state for a in alerts}
    if State.FIRING in states:
        return "firing"
    return "pending" if State.PENDING in states else "inactive"


def _matches(labels: Labels, selectors: Sequence[Sequence[Matcher]]) -> bool:
    """Prometheus' ``match[]`` for rules: the rule's configured labels satisfy one selector."""
    if not selectors:
        return True
    values = dict(labels)
    return any(all(m.matches(values.get(m.name, "")) for m in sel) for sel in selectors)


def _group_json(group: RuleGroup, runtime: GroupRuntime, *, kind: str | None, names: set[str],
                exclude_alerts: bool, selectors: Sequence[Sequence[Matcher]] = ()) -> dict[str, Any] | None:
    rules: list[dict[str, Any]] = []
    for rule in group.rules:
        if kind == "alert" and not isinstance(rule, AlertingRule):
            continue
        if kind == "record" and isinstance(rule, AlertingRule):
            continue
        if names and rule.name not in names:
            continue
        if not _matches(rule.labels, selectors):
            continue
        key = rule_key(rule)
        health = runtime.health.get(key, RuleHealth())
        common = {
            "name": rule.name, "query": rule.expr, "labels": _map(rule.labels), "health": health.health,
            "lastError": health.last_error or None, "evaluationTime": health.evaluation_seconds,
            "lastEvaluation": rfc3339(health.last_evaluation_ms),
        }
        if isinstance(rule, AlertingRule):
            active = sorted((a for a in runtime.alerts.get(key, {}).values() if a.is_active),
                            key=lambda a: a.labels)
            entry: dict[str, Any] = {
                "state": _rule_state(active), **common, "duration": rule.for_ms / 1000,
                "keepFiringFor": rule.keep_firing_for_ms / 1000, "annotations": _map(rule.annotations),
                "type": "alerting",
            }
            if not exclude_alerts:
                entry["alerts"] = [alert_json(a) for a in active]
        else:
            entry = {**common, "type": "recording"}
        if entry["lastError"] is None:
            del entry["lastError"]
        rules.append(entry)
    if (kind or names or selectors) and not rules:
        return None
    return {
        "name": group.name, "file": group.file, "rules": rules, "interval": group.interval_ms / 1000,
        "limit": group.limit, "evaluationTime": runtime.evaluation_seconds,
        "lastEvaluation": rfc3339(runtime.last_evaluation_ms),
    }


def rules_data(
    manager: RuleManager,
    *,
    kind: str | None = None,
    rule_names: Sequence[str] = (),
    group_names: Sequence[str] = (),
    files: Sequence[str] = (),
    exclude_alerts: bool = False,
    match: Sequence[str] = (),
) -> dict[str, Any]:
    """The ``data`` of ``GET /api/v1/rules``."""
    if kind not in (None, "", "alert", "record"):
        raise BadData(f'unsupported type "{kind}"')
    try:
        selectors = [parse_selector(m) for m in match]
    except QueryError as exc:
        raise BadData(f'invalid parameter "match[]": {exc}') from exc
    groups = []
    for group in manager.groups:
        if group_names and group.name not in group_names:
            continue
        if files and group.file not in files:
            continue
        g = _group_json(group, manager.runtime(group.key), kind=kind or None, names=set(rule_names),
                        exclude_alerts=exclude_alerts, selectors=selectors)
        if g is not None:
            groups.append(g)
    return {"groups": groups}


def alerts_data(manager: RuleManager) -> dict[str, Any]:
    """The ``data`` of ``GET /api/v1/alerts``: every pending or firing alert."""
    alerts = [
        alert_json(a)
        for group in manager.groups for by_labels in manager.runtime(group.key).alerts.values()
        for a in by_labels.values() if a.is_active
    ]
    return {"alerts": alerts}


def _ok(data: Any) -> Response:
    return Response(json.dumps({"status": "success", "data": data}, separators=(",", ":")),
                    media_type="application/json")


def rules_router(get_manager: Callable[[], RuleManager]) -> APIRouter:
    """Routes over the manager ``get_manager()`` returns (it may raise while not ready)."""
    router = APIRouter()

    @router.get("/api/v1/rules")
    async def rules(request: Request) -> Response:
        q = request.query_params
        try:
            data = rules_data(
                get_manager(), kind=q.get("type"), rule_names=q.getlist("rule_name[]"),
                group_names=q.getlist("rule_group[]"), files=q.getlist("file[]"),
                exclude_alerts=q.get("exclude_alerts", "false").lower() == "true",
                match=q.getlist("match[]"),
            )
        except QueryError as exc:
            return error_response(exc)
        return _ok(data)

    @router.get("/api/v1/alerts")
    async def alerts() -> Response:
        return _ok(alerts_data(get_manager()))

    @router.get("/api/v1/alerts/history")
    async def history(request: Request) -> Response:
        """Alert transitions, newest first (``alertname``, ``fingerprint``, ``start``, ``end``, ``limit``)."""
        q = request.query_params
        manager = get_manager()
        if manager.alert_store is None:
            return error_response(BadData("alert history needs a database"))
        try:
            start = parse_time_ms(q["start"]) if "start" in q else None
            end = parse_time_ms(q["end"]) if "end" in q else None
            limit = int(q.get("limit", "1000"))
        except (QueryError, ValueError) as exc:
            return error_response(exc if isinstance(exc, QueryError) else BadData(str(exc)))
        store = manager.alert_store
        entries = await anyio.to_thread.run_sync(
            lambda: store.history(alertname=q.get("alertname"), fingerprint=q.get("fingerprint"),
                                  start_ms=start, end_ms=end, limit=max(1, min(limit, 10_000))))
        return _ok([
            {"time": rfc3339(e.at_ms), "group": e.group_key, "alertname": e.alertname,
             "fingerprint": e.fingerprint, "labels": _map(e.labels), "from": e.from_state, "to": e.to_state,
             "value": _value(e.value)}
            for e in entries
        ])

    return router
