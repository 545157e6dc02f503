"""Mattermost incoming webhook: Markdown ``text`` (posts are limited to 16,383 characters)."""

from __future__ import annotations

from typing import Any

from watchkeeper.alerting.config import MattermostConfig
from watchkeeper.alerting.notification import Notification
from watchkeeper.alerting.receivers.base import HttpRequest, fit_lines, truncate
from watchkeeper.alerting.templating import alert_summary, text_of, title_of

MAX_POST_CHARS = 16_383


def render(cfg: MattermostConfig, n: Notification) -> HttpRequest:
    title = title_of(n, cfg.title)
    custom = text_of(n, cfg.text)
    head = f"#### {title}"
    room = MAX_POST_CHARS - len(head) - 1
    if custom is not None:
        body = truncate(custom, room)
    else:
        lines = [
            f"- {':red_circle:' if a.status == 'firing' else ':large_green_circle:'} "
            f"**{a.label('alertname')}**"
            f" ({a.status}): {truncate(alert_summary(a), 2000)}"
            for a in n.alerts
        ]
        body = fit_lines(lines, room, more=lambda k: f"- …and {k} more alerts")
    payload: dict[str, Any] = {"text": truncate(f"{head}\n{body}", MAX_POST_CHARS)}
    if cfg.channel:
        payload["channel"] = cfg.channel
    if cfg.username:
        payload["username"] = cfg.username
    return HttpRequest.json(cfg.webhook_url, payload)
