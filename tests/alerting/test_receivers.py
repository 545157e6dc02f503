"""Each receiver's payload: the documented shape, and the service's limits on large groups."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from email import message_from_bytes
from html.parser import HTMLParser
from typing import Any

import pytest

from watchkeeper.alerting.config import (
    DiscordConfig,
    EmailConfig,
    MattermostConfig,
    MSTeamsV2Config,
    SlackConfig,
    TelegramConfig,
    WebhookConfig,
)
from watchkeeper.alerting.delivery import send_email
from watchkeeper.alerting.dispatcher import sample_notification
from watchkeeper.alerting.model import Alert
from watchkeeper.alerting.notification import Notification
from watchkeeper.alerting.receivers import discord, mattermost, slack, smtp, teams, telegram, webhook
from watchkeeper.alerting.receivers.base import EmailRequest, HttpRequest
from watchkeeper.alerting.templating import render
from watchkeeper.errors import NotificationError
from watchkeeper.labels import from_dict

NOW = 1_795_867_200_000


def group(n: int, *, summary: str = "disk <90%> & rising", resolved: int = 0) -> Notification:
    alerts = [
        Alert(
            from_dict({"alertname": "DiskFull", "instance": f"host-{i}:9100", "severity": "page"}),
            from_dict({"summary": f"{summary} on host-{i}"}),
            NOW - 60_000,
            NOW - 1000 if i < resolved else None,
            f"http://wk/graph?g={i}",
        )
        for i in range(n)
    ]
    return Notification.build(
        "ops",
        '{}:{alertname="DiskFull"}',
        from_dict({"alertname": "DiskFull"}),
        alerts,
        now_ms=NOW,
        external_url="http://wk",
    )


def payload(req: object) -> dict[str, Any]:
    assert isinstance(req, HttpRequest) and req.headers["Content-Type"] == "application/json"
    result: dict[str, Any] = req.payload()
    return result


# --- Slack ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "sections", "more"), [(1, 1, None), (49, 49, None), (50, 48, 2), (500, 48, 452)]
)
def test_slack_block_kit_within_50_blocks(n: int, sections: int, more: int | None) -> None:
    p = payload(slack.render(SlackConfig(api_url="http://x", channel="#ops"), group(n)))
    blocks = p["blocks"]
    assert len(blocks) <= 50 and p["channel"] == "#ops"
    assert p["text"].startswith(f"[FIRING:{n}] DiskFull")  # the notification / screen-reader fallback
    assert blocks[0]["type"] == "header" and blocks[0]["text"]["type"] == "plain_text"
    assert len(blocks[0]["text"]["text"]) <= 150
    assert sum(b["type"] == "section" for b in blocks) == sections
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section")
    if more is None:
        assert blocks[-1]["type"] == "section"
    else:
        assert blocks[-1] == {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"…and {more} more alerts"}],
        }


def test_slack_escapes_mrkdwn_control_characters() -> None:
    p = payload(slack.render(SlackConfig(api_url="http://x"), group(1)))
    text = p["blocks"][1]["text"]["text"]
    assert "disk &lt;90%&gt; &amp; rising" in text and "<http://wk/graph?g=0|source>" in text


def test_slack_long_texts_are_cut() -> None:
    p = payload(slack.render(SlackConfig(api_url="http://x", title="T" * 500), group(2, summary="x" * 5000)))
    assert len(p["blocks"][0]["text"]["text"]) == 150 and p["blocks"][0]["text"]["text"].endswith("…")
    assert all(len(b["text"]["text"]) <= 3000 for b in p["blocks"][1:])


# --- Teams (Workflows) --------------------------------------------------------------------------------


def test_teams_workflows_adaptive_card() -> None:
    p = payload(
        teams.render(MSTeamsV2Config(webhook_url="https://prod.logic.azure.com/x"), group(3, resolved=1))
    )
    assert p["type"] == "message"
    (att,) = p["attachments"]
    assert att["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = att["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert card["body"][0]["text"] == "[FIRING:2] DiskFull (page)"
    assert {b["type"] for b in card["body"]} <= {"TextBlock", "FactSet"}
    assert card["actions"][0] == {"type": "Action.OpenUrl", "title": "Source", "url": "http://wk/graph?g=0"}


# Allowed properties per element in the Adaptive Card 1.4 schema (microsoft/AdaptiveCards
# schemas/1.4.0/adaptive-card.json: additionalProperties is false everywhere); "msteams" is the
# Teams extension documented for full-width cards.
_AC14_PROPS = {
    "AdaptiveCard": {
        "type",
        "version",
        "refresh",
        "body",
        "actions",
        "selectAction",
        "fallbackText",
        "backgroundImage",
        "minHeight",
        "speak",
        "lang",
        "verticalContentAlignment",
        "$schema",
        "msteams",
    },
    "TextBlock": {
        "type",
        "text",
        "color",
        "fontType",
        "horizontalAlignment",
        "isSubtle",
        "maxLines",
        "size",
        "weight",
        "wrap",
        "fallback",
        "height",
        "separator",
        "spacing",
        "id",
        "isVisible",
        "requires",
    },
    "FactSet": {"type", "facts", "fallback", "height", "separator", "spacing", "id", "isVisible", "requires"},
    "Action.OpenUrl": {"type", "url", "title", "iconUrl", "style", "fallback", "requires"},
}
_AC14_COLORS = {"default", "dark", "light", "accent", "good", "warning", "attention"}


def _check_card(card: dict[str, Any]) -> None:
    assert set(card) <= _AC14_PROPS["AdaptiveCard"]
    for element in [*card["body"], *card.get("actions", [])]:
        assert set(element) <= _AC14_PROPS[element["type"]], element
        if element["type"] == "TextBlock":
            assert isinstance(element["text"], str)
            assert element.get("color", "default").lower() in _AC14_COLORS
            assert element.get("size", "default").lower() in {
                "default",
                "small",
                "medium",
                "large",
                "extralarge",
            }
            assert element.get("weight", "default").lower() in {"default", "lighter", "bolder"}
        if element["type"] == "FactSet":
            assert all(
                set(f) == {"title", "value"} and all(isinstance(v, str) for v in f.values())
                for f in element["facts"]
            )


@pytest.mark.parametrize("n", [1, 3, 1000])
def test_teams_card_uses_only_adaptive_card_1_4_properties(n: int) -> None:
    _check_card(
        payload(teams.render(MSTeamsV2Config(webhook_url="https://x"), group(n, resolved=1)))["attachments"][
            0
        ]["content"]
    )


def test_teams_card_stays_under_the_message_size_limit() -> None:
    req = teams.render(MSTeamsV2Config(webhook_url="https://x"), group(1000))
    assert len(req.body) <= teams.MAX_PAYLOAD_BYTES
    assert payload(req)["attachments"][0]["content"]["body"][-1]["text"].endswith("more alerts")


# --- Discord ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 30, 2000])
def test_discord_embed_limits(n: int) -> None:
    cfg = DiscordConfig(webhook_url="http://x", title="T" * 3000, username="watchkeeper")
    p = payload(discord.render(cfg, group(n, summary="y" * 1500)))
    (embed,) = p["embeds"]
    assert len(p["content"]) <= 2000
    assert len(embed["title"]) <= 256 and len(embed["description"]) <= 4096
    assert discord.embed_size(embed) <= 6000
    assert not {"type", "provider", "video"} & set(embed)  # not allowed in webhook embeds
    assert p["allowed_mentions"] == {"parse": []}
    assert embed["color"] == discord.COLOR_FIRING and embed["timestamp"] == "2026-11-28T12:00:00.000Z"


def test_discord_custom_text_is_cut_to_fit() -> None:
    cfg = DiscordConfig(
        webhook_url="http://x", text="{% for a in Alerts %}{{ a.Labels.instance }} {% endfor %}" * 50
    )
    embed = payload(discord.render(cfg, group(200)))["embeds"][0]
    assert len(embed["description"]) <= 4096 and discord.embed_size(embed) <= 6000


# --- Telegram -----------------------------------------------------------------------------------------


class _TagChecker(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.text = ""

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack.pop() == tag

    def handle_data(self, data: str) -> None:
        self.text += data


@pytest.mark.parametrize("n", [1, 5000])
def test_telegram_html_escaped_and_within_4096(n: int) -> None:
    cfg = TelegramConfig(bot_token="123:abc", chat_id=-100, message_thread_id=7)
    req = telegram.render(cfg, group(n, summary="<script>alert(1)</script> & <b"))
    p = payload(req)
    assert req.url == "https://api.telegram.org/bot123:abc/sendMessage"
    assert p["parse_mode"] == "HTML" and p["chat_id"] == -100 and p["message_thread_id"] == 7
    assert len(p["text"]) <= 4096
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b" in p["text"]
    checker = _TagChecker()
    checker.feed(p["text"])
    checker.close()
    assert checker.stack == []  # no tag left open by the cut
    assert set(tag for tag in ["b"]) and "<script>" not in p["text"]
    if n > 1:
        assert p["text"].rstrip().endswith("more alerts")


def test_emoji_count_twice_towards_telegram_and_discord_limits() -> None:
    from watchkeeper.alerting.receivers.base import utf16_len

    n = group(3000, summary="🔥" * 40)
    text = payload(telegram.render(TelegramConfig(bot_token="1:x", chat_id=1), n))["text"]
    assert 4000 < utf16_len(text) <= 4096
    embed = payload(discord.render(DiscordConfig(webhook_url="http://x", title="🔥" * 300), n))["embeds"][0]
    assert utf16_len(embed["title"]) <= 256 and utf16_len(embed["description"]) <= 4096
    assert discord.embed_size(embed) <= 6000


# --- Mattermost, webhook ------------------------------------------------------------------------------


def test_mattermost_markdown_post() -> None:
    p = payload(
        mattermost.render(MattermostConfig(webhook_url="http://x", channel="town-square"), group(3000))
    )
    assert p["channel"] == "town-square" and p["text"].startswith("#### [FIRING:3000] DiskFull")
    assert len(p["text"]) <= 16_383


def test_webhook_is_alertmanager_version_4() -> None:
    p = payload(webhook.render(WebhookConfig(url="http://x", max_alerts=2), group(3, resolved=1)))
    assert set(p) == {
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    }
    assert (p["version"], p["status"], p["truncatedAlerts"], p["receiver"]) == ("4", "firing", 1, "ops")
    assert p["commonLabels"] == {"alertname": "DiskFull", "severity": "page"}
    first = p["alerts"][0]
    assert set(first) == {
        "status",
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
    }
    assert first["status"] == "resolved" and first["endsAt"] == "2026-11-28T11:59:59.000Z"
    assert p["alerts"][1]["endsAt"] == "0001-01-01T00:00:00Z"
    assert len(first["fingerprint"]) == 16


# --- templates ----------------------------------------------------------------------------------------


def test_template_override_with_alertmanager_names() -> None:
    cfg = SlackConfig(
        api_url="http://x",
        title="{{ .Status | upper }} {{ .GroupLabels.alertname }}",
        text="{% for a in Alerts.Firing %}{{ a.Labels.instance }};{% endfor %}",
    )
    p = payload(slack.render(cfg, group(2)))
    assert p["blocks"][0]["text"]["text"] == "FIRING DiskFull"
    assert p["blocks"][1]["text"]["text"] == "host-0:9100;host-1:9100;"


@pytest.mark.parametrize(
    "source", ["{{ ''.__class__.__mro__ }}", "{{ Alerts.__init__.__globals__ }}", "{% if %}"]
)
def test_templates_are_sandboxed(source: str) -> None:
    with pytest.raises(NotificationError):
        render(source, group(1))


# --- email over a real SMTP conversation ---------------------------------------------------------------


class _SMTPHandler(socketserver.StreamRequestHandler):
    received: list[tuple[str, list[str], bytes]]

    def handle(self) -> None:
        self.wfile.write(b"220 test ESMTP\r\n")
        sender, rcpts = "", []
        while line := self.rfile.readline():
            cmd = line.decode().strip()
            verb = cmd.split(" ")[0].upper()
            if verb in ("EHLO", "HELO"):
                self.wfile.write(b"250 test\r\n")
            elif verb == "MAIL":
                sender = cmd.split(":", 1)[1].strip(" <>")
                self.wfile.write(b"250 ok\r\n")
            elif verb == "RCPT":
                rcpts.append(cmd.split(":", 1)[1].strip(" <>"))
                self.wfile.write(b"250 ok\r\n")
            elif verb == "DATA":
                self.wfile.write(b"354 go\r\n")
                data = b""
                while (chunk := self.rfile.readline()) != b".\r\n":
                    data += chunk
                self.received.append((sender, rcpts, data))
                self.wfile.write(b"250 queued\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


@pytest.fixture
def smtp_server() -> Iterator[tuple[str, list[tuple[str, list[str], bytes]]]]:
    received: list[tuple[str, list[str], bytes]] = []
    handler = type("H", (_SMTPHandler,), {"received": received})
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_email_over_smtp(smtp_server: tuple[str, list[tuple[str, list[str], bytes]]]) -> None:
    host, received = smtp_server
    cfg = EmailConfig.model_validate(
        {"to": "a@example.com, b@example.com", "from": "wk@example.com", "smarthost": host}
    )
    req = smtp.render(cfg, group(2))
    assert isinstance(req, EmailRequest)
    result = send_email(req, timeout_seconds=5)
    assert result.ok, result
    ((sender, rcpts, data),) = received
    assert sender == "wk@example.com" and rcpts == ["a@example.com", "b@example.com"]
    msg = message_from_bytes(data)
    assert msg["Subject"] == "[FIRING:2] DiskFull (page)"
    parts = {
        p.get_content_type(): bytes(p.get_payload(decode=True)).decode()
        for p in msg.walk()
        if not p.is_multipart()
    }
    assert "disk <90%> & rising on host-0" in parts["text/plain"]
    assert "disk &lt;90%&gt; &amp; rising on host-0" in parts["text/html"]


def test_sample_notification_renders_for_every_receiver() -> None:
    n = sample_notification("ops", now_ms=NOW)
    for req in (
        slack.render(SlackConfig(api_url="http://x"), n),
        discord.render(DiscordConfig(webhook_url="h"), n),
    ):
        assert json.loads(req.body)
    assert n.status == "firing" and len(n.firing) == 2 and len(n.resolved) == 1
