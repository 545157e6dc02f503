"""Alertmanager's API v2 (the parts Prometheus, amtool and Grafana use) over a `Dispatcher`.

``POST /api/v2/alerts`` lets an existing Prometheus send here; silences are created, listed and
expired as in Alertmanager; ``POST /api/v2/receivers/{name}/test`` sends a sample notification
to every integration of a receiver and returns each answer. The app mounts it:

>>> from fastapi import FastAPI
>>> app = FastAPI()
>>> app.include_router(alertmanager_router(lambda: None))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import sys
from collections.abc import Callable
from typing import Any

import yaml
from fastapi import APIRouter, Body, HTTPException, Query
from fastapi.responses import JSONResponse

from watchkeeper.alerting.config import parse_matcher
from watchkeeper.alerting.dispatcher import AlertStatus, Dispatcher
from watchkeeper.alerting.model import Alert
from watchkeeper.alerting.notification import parse_rfc3339, rfc3339
from watchkeeper.alerting.runner import wall_ms
from watchkeeper.alerting.silences import Silence, matcher_to_api
from watchkeeper.labels import LABEL_NAME_RE, Matcher, compile_anchored, from_dict, get


def _alert_json(s: AlertStatus, now_ms: int) -> dict[str, Any]:
    a = s.alert
    return {
        "labels": dict(a.labels),
        "annotations": dict(a.annotations),
        "startsAt": rfc3339(a.starts_at_ms),
        "endsAt": rfc3339(a.ends_at_ms),
        "updatedAt": rfc3339(now_ms),
        "generatorURL": a.generator_url,
        "fingerprint": a.fingerprint,
        "receivers": [{"name": r} for r in s.receivers],
        "status": {
            "state": s.state,
            "silencedBy": s.silenced_by,
            "inhibitedBy": s.inhibited_by,
            "mutedBy": [],
        },
    }


def silence_json(s: Silence, now_ms: int) -> dict[str, Any]:
    return {
        "id": s.id,
        "status": {"state": s.state(now_ms=now_ms)},
        "updatedAt": rfc3339(s.updated_at_ms),
        "matchers": [matcher_to_api(m) for m in s.matchers],
        "startsAt": rfc3339(s.starts_at_ms),
        "endsAt": rfc3339(s.ends_at_ms),
        "createdBy": s.created_by,
        "comment": s.comment,
    }


def _filters(items: list[str]) -> list[Matcher]:
    try:
        return [parse_matcher(f) for f in items]
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc


def _labels(obj: Any, what: str) -> dict[str, str]:
    if obj is None:
        return {}
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in obj.items()
    ):
        raise HTTPException(400, f"{what} must be an object of strings")
    return obj


def _parse_alert(item: Any, now_ms: int) -> Alert:
    if not isinstance(item, dict):
        raise HTTPException(400, "each alert must be an object")
    labels = _labels(item.get("labels"), "labels")
    if not labels:
        raise HTTPException(400, "an alert needs at least one label")
    for name in labels:
        if not LABEL_NAME_RE.match(name):
            raise HTTPException(400, f"invalid label name {name!r}")
    try:
        ends = parse_rfc3339(item.get("endsAt"))
        # Alertmanager: a missing startsAt is now, or endsAt for an alert that is already resolved
        starts = parse_rfc3339(item.get("startsAt")) or (
            ends if ends is not None and ends <= now_ms else now_ms
        )
    except ValueError as exc:
        raise HTTPException(400, f"bad timestamp: {exc}") from exc
    if ends is not None and ends < starts:
        raise HTTPException(400, "endsAt is before startsAt")
    return Alert(
        labels=from_dict(labels),
        annotations=from_dict(_labels(item.get("annotations"), "annotations")),
        starts_at_ms=starts,
        ends_at_ms=ends,
        generator_url=str(item.get("generatorURL") or ""),
    )


def alertmanager_router(
    get_dispatcher: Callable[[], Dispatcher], *, clock: Callable[[], int] = wall_ms
) -> APIRouter:
    """The ``/api/v2`` routes; ``get_dispatcher`` raises (e.g. 503) when alerting is not ready."""
    router = APIRouter(prefix="/api/v2", tags=["alerting"])
    started_ms = clock()

    @router.get("/status")
    def status() -> dict[str, Any]:
        d = get_dispatcher()
        # every field Alertmanager's OpenAPI spec marks required: amtool validates the answer
        return {
            "cluster": {"name": "", "status": "disabled", "peers": []},
            "versionInfo": {
                "version": _version(),
                "revision": "",
                "branch": "",
                "buildUser": "",
                "buildDate": "",
                "goVersion": f"python{sys.version_info.major}.{sys.version_info.minor}",
            },
            "config": {"original": yaml.safe_dump(d.config.redacted(), sort_keys=False)},
            "uptime": rfc3339(started_ms),
        }

    @router.get("/receivers")
    def receivers() -> list[dict[str, str]]:
        return [{"name": r.name} for r in get_dispatcher().config.receivers]

    @router.get("/alerts")
    def get_alerts(
        active: bool = True,
        silenced: bool = True,
        inhibited: bool = True,
        unprocessed: bool = True,
        filter: list[str] = Query(default=[]),  # noqa: B008 - FastAPI's idiom
        receiver: str | None = None,
    ) -> list[dict[str, Any]]:
        d, now = get_dispatcher(), clock()
        matchers = _filters(filter)
        out = []
        for s in d.alert_statuses(now_ms=now):
            if s.alert.is_resolved(now_ms=now):
                continue
            if not all(m.matches(get(s.alert.labels, m.name)) for m in matchers):
                continue
            if receiver is not None and not any(_receiver_matches(receiver, r) for r in s.receivers):
                continue
            if (
                (s.state == "active" and not active)
                or (s.silenced_by and not silenced)
                or (s.inhibited_by and not inhibited)
            ):
                continue
            out.append(_alert_json(s, now))
        return out

    @router.post("/alerts")
    def post_alerts(body: Any = Body(...)) -> JSONResponse:  # noqa: B008 - FastAPI's idiom
        if not isinstance(body, list):
            raise HTTPException(400, "expected a JSON array of alerts")
        now = clock()
        alerts = [_parse_alert(item, now) for item in body]
        get_dispatcher().receive(alerts, now)
        return JSONResponse(None, status_code=200)

    @router.get("/alerts/groups")
    def groups(
        active: bool = True,
        silenced: bool = True,
        inhibited: bool = True,
        filter: list[str] = Query(default=[]),  # noqa: B008 - FastAPI's idiom
        receiver: str | None = None,
    ) -> list[dict[str, Any]]:
        d, now = get_dispatcher(), clock()
        matchers = _filters(filter)
        statuses = {s.alert.fingerprint: s for s in d.alert_statuses(now_ms=now)}
        out = []
        for group, alerts in d.groups():
            if receiver is not None and not _receiver_matches(receiver, group.route.receiver):
                continue
            shown = [
                _alert_json(statuses[a.fingerprint], now)
                for a in alerts
                if a.fingerprint in statuses
                and not a.is_resolved(now_ms=now)
                and _shown(statuses[a.fingerprint], active, silenced, inhibited)
                and all(m.matches(get(a.labels, m.name)) for m in matchers)
            ]
            if shown:
                out.append(
                    {
                        "labels": dict(group.labels),
                        "receiver": {"name": group.route.receiver},
                        "alerts": shown,
                    }
                )
        return out

    @router.get("/silences")
    def get_silences(
        filter: list[str] = Query(default=[]),  # noqa: B008 - FastAPI's idiom
        creator: list[str] = Query(default=[]),  # noqa: B008
    ) -> list[dict[str, Any]]:
        now = clock()
        wanted = _filters(filter)
        out = []
        for s in get_dispatcher().silences():
            if creator and s.created_by not in creator:
                continue
            if all(any(m.name == w.name and w.matches(m.value) for m in s.matchers) for w in wanted):
                out.append(silence_json(s, now))
        return out

    @router.post("/silences")
    def post_silence(body: Any = Body(...)) -> dict[str, str]:  # noqa: B008 - FastAPI's idiom
        if not isinstance(body, dict):
            raise HTTPException(400, "expected a silence object")
        d, now = get_dispatcher(), clock()
        silence_id = body.get("id") or None
        if silence_id is not None:
            existing = {s.id: s for s in d.silences()}.get(silence_id)
            if existing is None:
                raise HTTPException(404, f"silence {silence_id} not found")
            if existing.state(now_ms=now) == "expired":
                silence_id = None  # Alertmanager creates a new silence instead of reviving one
        try:
            starts = parse_rfc3339(body.get("startsAt")) or now
            ends = parse_rfc3339(body.get("endsAt"))
            if ends is None:
                raise ValueError("endsAt is required")
            silence = Silence.create(
                body.get("matchers") or [],
                starts_at_ms=starts,
                ends_at_ms=ends,
                created_by=str(body.get("createdBy") or ""),
                comment=str(body.get("comment") or ""),
                now_ms=now,
                id=silence_id,
            )
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        d.put_silence(silence)
        return {"silenceID": silence.id}

    @router.get("/silence/{silence_id}")
    def get_silence(silence_id: str) -> dict[str, Any]:
        for s in get_dispatcher().silences():
            if s.id == silence_id:
                return silence_json(s, clock())
        raise HTTPException(404, f"silence {silence_id} not found")

    @router.delete("/silence/{silence_id}")
    def delete_silence(silence_id: str) -> JSONResponse:
        try:
            get_dispatcher().expire_silence(silence_id, now_ms=clock())
        except KeyError:
            raise HTTPException(404, f"silence {silence_id} not found") from None
        return JSONResponse(None, status_code=200)

    @router.get("/notifications")
    def notifications(
        state: list[str] = Query(default=[]),  # noqa: B008 - FastAPI's idiom
        receiver: str | None = None,
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> list[dict[str, Any]]:
        """watchkeeper extension: the notification history with each target's result."""
        items = get_dispatcher().notifications(states=state or None, receiver=receiver, limit=limit)
        return [
            {
                "id": i.id,
                "receiver": i.receiver,
                "integration": i.integration,
                "groupKey": i.group_key,
                "status": json.loads(i.notification)["status"],
                "state": i.state,
                "attempts": i.attempts,
                "createdAt": rfc3339(i.created_at_ms),
                "sentAt": rfc3339(i.sent_at_ms) if i.sent_at_ms is not None else None,
                "nextAttemptAt": rfc3339(i.next_attempt_ms) if i.state == "pending" else None,
                "lastStatus": i.last_status,
                "lastError": i.last_error,
                "idempotencyKey": i.idempotency_key,
            }
            for i in items
        ]

    @router.post("/notifications/requeue")
    def requeue(receiver: str | None = None) -> dict[str, int]:
        """watchkeeper extension: retry the dead-lettered notifications (of one receiver)."""
        return {"requeued": get_dispatcher().requeue_dead(now_ms=clock(), receiver=receiver)}

    @router.post("/receivers/{name}/test")
    def test_receiver(name: str, body: Any = Body(default=None)) -> JSONResponse:  # noqa: B008
        d, now = get_dispatcher(), clock()
        alerts = None
        if isinstance(body, dict) and body.get("alerts"):
            alerts = [_parse_alert(item, now) for item in body["alerts"]]
        try:
            results = d.test_receiver(name, now_ms=now, alerts=alerts)
        except KeyError:
            raise HTTPException(404, f"receiver {name} not found") from None
        ok = all(r["ok"] for r in results)
        return JSONResponse({"receiver": name, "ok": ok, "results": results}, status_code=200 if ok else 502)

    return router


def _shown(s: AlertStatus, active: bool, silenced: bool, inhibited: bool) -> bool:
    """Alertmanager's ``active``/``silenced``/``inhibited`` query flags (each one excludes)."""
    if s.silenced_by and not silenced:
        return False
    if s.inhibited_by and not inhibited:
        return False
    return active or s.state != "active"


def _version() -> str:
    try:
        return importlib.metadata.version("watchkeeper")
    except importlib.metadata.PackageNotFoundError:
        return "dev"


def _receiver_matches(pattern: str, name: str) -> bool:
    """Alertmanager's ``receiver`` query parameter is an anchored regex."""
    try:
        return compile_anchored(pattern).match(name) is not None
    except re.error:
        return pattern == name
