from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from watchkeeper.alerting.cli import test_notify_main as notify_main

AM = """
route:
  receiver: team
  routes:
    - matchers: ['severity="page"']
      receiver: pager
receivers:
  - name: team
    slack_configs: [{api_url: "https://hooks.slack.com/services/T/B/X"}]
    email_configs: [{to: "ops@example.com", smarthost: "localhost:25"}]
  - name: pager
    telegram_configs: [{bot_token: "123:secret", chat_id: 1}]
    discord_configs: [{webhook_url: "https://discord.com/api/webhooks/1/x", title: "{{ .Status | upper }}"}]
"""


def run(tmp_path: Path, text: str, *args: str) -> tuple[int, Any]:
    cfg = tmp_path / "am.yml"
    cfg.write_text(text)
    out = io.StringIO()
    code = notify_main(["--config", str(cfg), *args], stdout=out)
    return code, json.loads(out.getvalue()) if out.getvalue() else None


def test_renders_every_receiver_without_sending(tmp_path: Path) -> None:
    code, rendered = run(tmp_path, AM)
    assert code == 0
    assert [r["integration"] for r in rendered] == [
        "team/slack/0",
        "team/email/0",
        "pager/discord/0",
        "pager/telegram/0",
    ]
    slack = rendered[0]
    assert slack["url"] == "https://hooks.slack.com/<secret>" and len(slack["payload"]["blocks"]) <= 50
    assert rendered[1]["subject"].startswith("[FIRING:2] TestAlert") and "text/html" in rendered[1]["parts"]
    assert rendered[2]["payload"]["embeds"][0]["title"] == "FIRING"
    assert rendered[3]["url"] == "https://api.telegram.org/<secret>"  # the bot token is not printed
    code, shown = run(tmp_path, AM, "--receiver", "pager", "--show-secrets")
    assert shown[1]["url"] == "https://api.telegram.org/bot123:secret/sendMessage"


def test_routes_labels_first(tmp_path: Path) -> None:
    code, rendered = run(tmp_path, AM, "--labels", "alertname=Down,severity=page")
    assert code == 0 and {r["receiver"] for r in rendered} == {"pager"}


def test_watchkeeper_yml_alerting_section_and_own_alerts(tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.json"
    alerts.write_text(json.dumps([{"labels": {"alertname": "Mine"}, "annotations": {"summary": "<hi>"}}]))
    wk = "alerting:\n" + "\n".join("  " + line for line in AM.splitlines())
    code, rendered = run(tmp_path, wk, "--receiver", "pager", "--alerts", str(alerts))
    assert code == 0
    assert "&lt;hi&gt;" in rendered[1]["payload"]["text"]


def test_template_error_exits_1_and_config_error_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = AM.replace('title: "{{ .Status | upper }}"', 'title: "{{ 1 / 0 }}"')  # compiles, fails to render
    code, rendered = run(tmp_path, bad, "--receiver", "pager")
    assert code == 1 and "ZeroDivisionError" in rendered[0]["error"]
    code, _ = run(tmp_path, AM.replace("| upper", "| nosuchfilter"))  # refused when the config loads
    assert code == 2 and "No filter named 'nosuchfilter'" in capsys.readouterr().err
    code, _ = run(tmp_path, "route: {receiver: nope}\nreceivers: []")
    assert code == 2 and "undefined receiver" in capsys.readouterr().err
