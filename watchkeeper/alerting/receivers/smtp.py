"""Email over SMTP: a plain-text and an HTML part, the title as subject."""

from __future__ import annotations

import html
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from watchkeeper.alerting.config import EmailConfig
from watchkeeper.alerting.notification import Notification
from watchkeeper.alerting.receivers.base import EmailRequest, truncate
from watchkeeper.alerting.templating import alert_summary, text_of, title_of


def render(cfg: EmailConfig, n: Notification) -> EmailRequest:
    subject = truncate(title_of(n, cfg.title).replace("\n", " "), 200)
    custom = text_of(n, cfg.text)
    lines = [f"[{a.status}] {a.label('alertname')}: {alert_summary(a)}" for a in n.alerts]
    text = custom if custom is not None else "\n".join([subject, "", *lines])
    rows = "".join(
        f"<li><b>{html.escape(a.label('alertname'))}</b> ({a.status}): {html.escape(alert_summary(a))}</li>"
        for a in n.alerts
    )
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = cfg.from_
    msg["To"] = cfg.to
    msg["Date"] = formatdate(n.created_at_ms / 1000)
    msg["Message-ID"] = make_msgid(domain="watchkeeper")
    msg.set_content(text)
    if custom is None:
        msg.add_alternative(f"<h3>{html.escape(subject)}</h3><ul>{rows}</ul>", subtype="html")
    return EmailRequest(
        smarthost=cfg.smarthost,
        sender=cfg.from_,
        to=tuple(a.strip() for a in cfg.to.split(",") if a.strip()),
        message=msg.as_bytes(),
        auth_username=cfg.auth_username,
        auth_password=cfg.auth_password,
        require_tls=cfg.require_tls,
    )
