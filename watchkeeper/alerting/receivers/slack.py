"""Slack incoming webhook: Block Kit with a top-level ``text`` fallback.

Limits (api.slack.com/reference/block-kit): at most 50 blocks, a header's text 150 characters,
a section's text 3,000; ``text`` is what notifications and screen readers show. Alerts beyond
the block budget are counted in a closing context block. ``&``, ``<``, ``>`` are escaped (mrkdwn).
"""

from __future__ import annotations

from typing import Any

from watchkeeper.alerting.config import SlackConfig
from watchkeeper.alerting.notification import Notification
from watchkeeper.alerting.receivers.base import HttpRequest, truncate
from watchkeeper.alerting.templating import alert_summary, text_of, title_of

MAX_BLOCKS = 50
MAX_HEADER_CHARS = 150
MAX_SECTION_CHARS = 3000
MAX_TEXT_CHARS = 4000


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render(cfg: SlackConfig, n: Notification) -> HttpRequest:
    title = title_of(n, cfg.title)
    custom = text_of(n, cfg.text)
    emoji = ":red_circle:" if n.status == "firing" else ":large_green_circle:"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(title, MAX_HEADER_CHARS)}}
    ]
    if custom is not None:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": truncate(custom, MAX_SECTION_CHARS)}}
        )
    else:
        budget = MAX_BLOCKS - len(blocks) - 1  # keep one for the "more" context block
        shown = n.alerts if len(n.alerts) <= budget + 1 else n.alerts[:budget]
        for a in shown:
            icon = emoji if a.status == "firing" else ":large_green_circle:"
            line = f"{icon} *{escape(a.label('alertname'))}* ({a.status})\n{escape(alert_summary(a))}"
            if a.generator_url:
                line += f"\n<{escape(a.generator_url)}|source>"
            blocks.append(
                {"type": "section", "text": {"type": "mrkdwn", "text": truncate(line, MAX_SECTION_CHARS)}}
            )
        if len(shown) < len(n.alerts):
            more = len(n.alerts) - len(shown)
            blocks.append(
                {"type": "context", "elements": [{"type": "mrkdwn", "text": f"…and {more} more alerts"}]}
            )
    payload: dict[str, Any] = {
        "text": truncate(title if custom is None else f"{title}\n{custom}", MAX_TEXT_CHARS),
        "blocks": blocks,
    }
    for key in ("channel", "username", "icon_emoji"):
        value = getattr(cfg, key)
        if value:
            payload[key] = value
    return HttpRequest.json(cfg.api_url, payload)
