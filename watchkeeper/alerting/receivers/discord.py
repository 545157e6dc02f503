"""Discord webhook: a short ``content`` line and one embed.

Limits (discord.com/developers/docs/resources/message#embed-object-embed-limits): ``content``
2,000 characters, embed title 256, description 4,096, footer 2,048, all embeds together 6,000;
overflow is an HTTP 400, so everything is cut to fit here, counting UTF-16 code units (an emoji
counts 2), which is never less than what Discord counts. ``allowed_mentions`` is empty so an
alert text never pings ``@everyone``.
"""

from __future__ import annotations

from typing import Any

from watchkeeper.alerting.config import DiscordConfig
from watchkeeper.alerting.notification import Notification, rfc3339
from watchkeeper.alerting.receivers.base import HttpRequest, fit_lines, truncate, utf16_len
from watchkeeper.alerting.templating import alert_summary, text_of, title_of

MAX_CONTENT = 2000
MAX_TITLE = 256
MAX_DESCRIPTION = 4096
MAX_FOOTER = 2048
MAX_EMBED_TOTAL = 6000
COLOR_FIRING = 0xE01E5A
COLOR_RESOLVED = 0x2EB67D


def embed_size(embed: dict[str, Any]) -> int:
    """Characters Discord counts towards the 6,000 total."""
    n = utf16_len
    size = n(embed.get("title", "")) + n(embed.get("description", ""))
    size += n(embed.get("footer", {}).get("text", "")) + n(embed.get("author", {}).get("name", ""))
    return size + sum(n(f["name"]) + n(f["value"]) for f in embed.get("fields", []))


def render(cfg: DiscordConfig, n: Notification) -> HttpRequest:
    title = truncate(title_of(n, cfg.title), MAX_TITLE, utf16_len)
    custom = text_of(n, cfg.text)
    footer = truncate(f"watchkeeper · {n.receiver}", MAX_FOOTER, utf16_len)
    room = min(MAX_DESCRIPTION, MAX_EMBED_TOTAL - utf16_len(title) - utf16_len(footer))
    if custom is not None:
        description = truncate(custom, room, utf16_len)
    else:
        lines = [
            f"{'🔴' if a.status == 'firing' else '🟢'} **{a.label('alertname')}** — "
            f"{truncate(alert_summary(a), 1000)}"
            for a in n.alerts
        ]
        description = fit_lines(lines, room, more=lambda k: f"…and {k} more alerts", measure=utf16_len)
    embed: dict[str, Any] = {
        "title": title,
        "description": description,
        "color": COLOR_FIRING if n.status == "firing" else COLOR_RESOLVED,
        "footer": {"text": footer},
        "timestamp": rfc3339(n.created_at_ms),
    }
    urls = [a.generator_url for a in n.alerts if a.generator_url]
    if urls and urls[0].startswith(("http://", "https://")):
        embed["url"] = urls[0]
    payload: dict[str, Any] = {
        "content": truncate(title, MAX_CONTENT, utf16_len),
        "embeds": [embed],
        "allowed_mentions": {"parse": []},
    }
    if cfg.username:
        payload["username"] = truncate(cfg.username, 80)
    return HttpRequest.json(cfg.webhook_url, payload)
