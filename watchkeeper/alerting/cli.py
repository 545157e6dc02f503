"""``watchkeeper test notify``: render every receiver's payload for a sample group, send nothing.

::

    watchkeeper test notify --config alertmanager.yml                 # every receiver, sample alerts
    watchkeeper test notify --config watchkeeper.yml --receiver pager  # the ``alerting:`` section
    watchkeeper test notify --config am.yml --labels severity=page,team=db   # route, then render
    watchkeeper test notify --config am.yml --alerts alerts.json      # POST /api/v2/alerts body

Prints one JSON document: per integration its URL (tokens redacted), headers and payload, or
the rendering error. Exit status: 0 rendered, 1 a template or payload failed, 2 bad usage/config.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from email import message_from_bytes
from pathlib import Path
from typing import Any, TextIO

from watchkeeper.alerting.config import AlertingConfig, redact_url
from watchkeeper.alerting.dispatcher import sample_notification
from watchkeeper.alerting.model import Alert
from watchkeeper.alerting.notification import Notification, parse_rfc3339
from watchkeeper.alerting.receivers import EmailRequest, integrations
from watchkeeper.alerting.routing import build_routes, group_key, match_routes
from watchkeeper.alerting.runner import wall_ms
from watchkeeper.errors import ConfigError, NotificationError
from watchkeeper.labels import from_dict


def _text(payload: object) -> str:
    return payload.decode(errors="replace") if isinstance(payload, bytes) else str(payload)


def _render_one(integ_render: Any, n: Notification, *, show_secrets: bool) -> dict[str, Any]:
    req = integ_render(n)
    if isinstance(req, EmailRequest):
        msg = message_from_bytes(req.message)
        parts = {
            p.get_content_type(): _text(p.get_payload(decode=True))
            for p in msg.walk()
            if not p.is_multipart()
        }
        return {
            "smarthost": req.smarthost,
            "from": req.sender,
            "to": list(req.to),
            "subject": msg["Subject"],
            "parts": parts,
        }
    return {
        "url": req.url if show_secrets else redact_url(req.url),
        "headers": req.headers,
        "payload": req.payload(),
        "size_bytes": len(req.body),
    }


def _alerts_from_file(path: Path, now_ms: int) -> list[Alert]:
    items = json.loads(path.read_text())
    if not isinstance(items, list):
        raise ConfigError(f"{path}: expected a JSON array of alerts (the POST /api/v2/alerts body)")
    return [
        Alert(
            from_dict(i.get("labels") or {}),
            from_dict(i.get("annotations") or {}),
            parse_rfc3339(i.get("startsAt")) or now_ms,
            parse_rfc3339(i.get("endsAt")),
            i.get("generatorURL", ""),
        )
        for i in items
    ]


def render_all(
    cfg: AlertingConfig,
    *,
    receiver: str | None = None,
    labels: dict[str, str] | None = None,
    alerts: Sequence[Alert] | None = None,
    now_ms: int,
    show_secrets: bool = False,
) -> tuple[list[dict[str, Any]], bool]:
    """Rendered payloads per integration and whether all rendered; routing decides when ``labels`` given."""
    targets: list[tuple[str, Notification]] = []
    if labels is not None:
        route = build_routes(cfg.route)
        for r in match_routes(route, from_dict(labels)):
            if receiver is None or r.receiver == receiver:
                group_alerts = alerts or [
                    Alert(from_dict(labels), from_dict({"summary": "sample"}), now_ms - 60_000)
                ]
                key = group_key(r, from_dict(labels))
                targets.append(
                    (
                        r.receiver,
                        Notification.build(
                            r.receiver,
                            key,
                            r.group_labels(from_dict(labels)),
                            group_alerts,
                            now_ms=now_ms,
                            external_url=cfg.global_.external_url,
                        ),
                    )
                )
    else:
        names = [receiver] if receiver is not None else [r.name for r in cfg.receivers]
        for name in names:
            targets.append(
                (
                    name,
                    sample_notification(
                        name, now_ms=now_ms, alerts=alerts, external_url=cfg.global_.external_url
                    ),
                )
            )
    out: list[dict[str, Any]] = []
    ok = True
    for name, n in targets:
        try:
            receiver_cfg = cfg.receiver(name)
        except KeyError:
            raise ConfigError(f"no receiver named {name!r}") from None
        for integ in integrations(receiver_cfg):
            entry: dict[str, Any] = {"receiver": name, "integration": integ.name}
            try:
                entry.update(_render_one(integ.render, n, show_secrets=show_secrets))
            except NotificationError as exc:
                ok = False
                entry["error"] = str(exc)
            out.append(entry)
    return out, ok


def test_notify_main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    """Entry point of ``watchkeeper test notify``."""
    out = stdout or sys.stdout
    parser = argparse.ArgumentParser(prog="watchkeeper test notify", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config",
        type=Path,
        default=Path("watchkeeper.yml"),
        help="Alertmanager YAML, or watchkeeper.yml with an alerting: section",
    )
    parser.add_argument("--receiver", help="only this receiver")
    parser.add_argument(
        "--labels", help="route an alert with these labels (a=b,c=d) and render what it reaches"
    )
    parser.add_argument(
        "--alerts", type=Path, help="JSON array of alerts (POST /api/v2/alerts body) to render"
    )
    parser.add_argument("--show-secrets", action="store_true", help="print webhook URLs and tokens in full")
    args = parser.parse_args(argv)
    now = wall_ms()
    try:
        cfg = AlertingConfig.from_file(args.config)
        labels = None
        if args.labels is not None:
            labels = dict(p.split("=", 1) for p in args.labels.split(",") if "=" in p)
        alerts = _alerts_from_file(args.alerts, now) if args.alerts else None
        rendered, ok = render_all(
            cfg,
            receiver=args.receiver,
            labels=labels,
            alerts=alerts,
            now_ms=now,
            show_secrets=args.show_secrets,
        )
    except (ConfigError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    json.dump(rendered, out, indent=2, ensure_ascii=False)
    out.write("\n")
    return 0 if ok else 1
