"""Receivers: one module per service, each rendering its native payload within its limits.

>>> from watchkeeper.alerting.config import ReceiverConfig
>>> [i.name for i in integrations(ReceiverConfig.model_validate(
...     {"name": "ops", "slack_configs": [{"api_url": "http://x"}], "webhook_configs": [{"url": "http://y"}]}))]
['ops/slack/0', 'ops/webhook/0']
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from watchkeeper.alerting.config import ReceiverConfig
from watchkeeper.alerting.notification import Notification
from watchkeeper.alerting.receivers import discord, mattermost, slack, smtp, teams, telegram, webhook
from watchkeeper.alerting.receivers.base import EmailRequest, HttpRequest, Integration, Request

__all__ = ["EmailRequest", "HttpRequest", "Integration", "Request", "integrations"]

_RENDERERS: dict[str, Callable[[Any, Notification], Request]] = {
    "slack": slack.render,
    "msteamsv2": teams.render,
    "discord": discord.render,
    "mattermost": mattermost.render,
    "telegram": telegram.render,
    "webhook": webhook.render,
    "email": smtp.render,
}


def integrations(cfg: ReceiverConfig) -> list[Integration]:
    """Every configured target of a receiver, in config order."""
    out = []
    for kind, render in _RENDERERS.items():
        for i, c in enumerate(getattr(cfg, f"{kind}_configs")):
            out.append(Integration(cfg.name, kind, i, c.send_resolved, partial(render, c)))
    return out
