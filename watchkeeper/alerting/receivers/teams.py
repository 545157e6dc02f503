"""Microsoft Teams through a Workflows (Power Automate) webhook: an Adaptive Card message.

The O365 connector webhooks are retired; the Workflows "Post to a channel when a webhook request
is received" template takes ``{"type": "message", "attachments": [{"contentType":
"application/vnd.microsoft.card.adaptive", "content": <AdaptiveCard>}]}``. Cards are version 1.4
and kept under Teams' ~28 KB message limit by dropping alerts (counted in a closing line).
"""

from __future__ import annotations

import json
from typing import Any

from watchkeeper.alerting.config import MSTeamsV2Config
from watchkeeper.alerting.notification import Notification, NotifiedAlert
from watchkeeper.alerting.receivers.base import HttpRequest, truncate
from watchkeeper.alerting.templating import alert_summary, text_of, title_of

MAX_PAYLOAD_BYTES = 28_000
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"


def _alert_items(a: NotifiedAlert) -> list[dict[str, Any]]:
    return [
        {
            "type": "TextBlock",
            "text": f"**{a.label('alertname')}** ({a.status})",
            "wrap": True,
            "color": "Attention" if a.status == "firing" else "Good",
            "separator": True,
        },
        {"type": "TextBlock", "text": truncate(alert_summary(a), 2000), "wrap": True},
        {"type": "FactSet", "facts": [{"title": k, "value": truncate(v, 500)} for k, v in a.labels]},
    ]


def _payload(title: str, body: list[dict[str, Any]], n: Notification) -> dict[str, Any]:
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": [
            {
                "type": "TextBlock",
                "text": title,
                "size": "Large",
                "weight": "Bolder",
                "wrap": True,
                "color": "Attention" if n.status == "firing" else "Good",
            },
            *body,
        ],
    }
    urls = [a.generator_url for a in n.alerts if a.generator_url]
    if urls:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Source", "url": urls[0]}]
    return {
        "type": "message",
        "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": card}],
    }


def render(cfg: MSTeamsV2Config, n: Notification) -> HttpRequest:
    title = truncate(title_of(n, cfg.title), 500)
    custom = text_of(n, cfg.text)
    if custom is not None:
        body: list[dict[str, Any]] = [{"type": "TextBlock", "text": truncate(custom, 20_000), "wrap": True}]
        return HttpRequest.json(cfg.webhook_url, _payload(title, body, n))
    body = []
    for i, a in enumerate(n.alerts):
        candidate = body + _alert_items(a)
        rest = len(n.alerts) - i - 1
        tail = [{"type": "TextBlock", "text": f"…and {rest} more alerts", "wrap": True}] if rest else []
        if len(json.dumps(_payload(title, candidate + tail, n)).encode()) > MAX_PAYLOAD_BYTES:
            body.append({"type": "TextBlock", "text": f"…and {len(n.alerts) - i} more alerts", "wrap": True})
            break
        body = candidate
    return HttpRequest.json(cfg.webhook_url, _payload(title, body, n))
