"""Generic webhook: Alertmanager's version-4 JSON, unchanged, so existing consumers keep working."""

from __future__ import annotations

from watchkeeper.alerting.config import WebhookConfig
from watchkeeper.alerting.notification import Notification
from watchkeeper.alerting.receivers.base import HttpRequest


def render(cfg: WebhookConfig, n: Notification) -> HttpRequest:
    return HttpRequest.json(cfg.url, n.webhook_body(max_alerts=cfg.max_alerts))
