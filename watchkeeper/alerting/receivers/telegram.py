"""Telegram bot API ``sendMessage`` with ``parse_mode: HTML``.

Every dynamic part is HTML-escaped (``&``, ``<``, ``>``; Telegram accepts no other entities
unescaped), and the message is cut on line boundaries to at most 4,096 characters *as sent*
(never inside a tag or an entity), counted in UTF-16 code units as Telegram counts, so the
limit on the parsed text (which is never longer than the HTML) holds too.
"""

from __future__ import annotations

import html
from typing import Any

from watchkeeper.alerting.config import TelegramConfig
from watchkeeper.alerting.notification import Notification
from watchkeeper.alerting.receivers.base import HttpRequest, fit_lines, truncate, utf16_len
from watchkeeper.alerting.templating import alert_summary, text_of, title_of

MAX_MESSAGE_CHARS = 4096


def escape(text: str) -> str:
    return html.escape(text, quote=False)


def render(cfg: TelegramConfig, n: Notification) -> HttpRequest:
    title = f"<b>{escape(truncate(title_of(n, cfg.title), 500))}</b>"
    custom = text_of(n, cfg.text)
    room = MAX_MESSAGE_CHARS - utf16_len(title) - 1
    if custom is not None:
        # an override is trusted HTML: cut on lines so no tag is split
        body = fit_lines(custom.splitlines(), room, more=lambda k: "…", measure=utf16_len)
    else:
        lines = [
            f"{'🔴' if a.status == 'firing' else '🟢'} <b>{escape(a.label('alertname'))}</b>: "
            f"{escape(truncate(alert_summary(a), 1000))}"
            for a in n.alerts
        ]
        body = fit_lines(lines, room, more=lambda k: f"…and {k} more alerts", measure=utf16_len)
    payload: dict[str, Any] = {
        "chat_id": cfg.chat_id,
        "text": f"{title}\n{body}",
        "parse_mode": "HTML",
        "disable_notification": cfg.disable_notifications,
        "link_preview_options": {"is_disabled": True},
    }
    if cfg.message_thread_id is not None:
        payload["message_thread_id"] = cfg.message_thread_id
    return HttpRequest.json(f"{cfg.api_url.rstrip('/')}/bot{cfg.bot_token}/sendMessage", payload)
