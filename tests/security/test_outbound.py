"""The outbound allow-list refuses receiver URLs and probe targets outside it, naming them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from watchkeeper.config import Settings
from watchkeeper.errors import ConfigError
from watchkeeper.security.outbound import AllowList, host_of

ALERTING = {
    "route": {"receiver": "chat"},
    "receivers": [
        {
            "name": "chat",
            "slack_configs": [{"api_url": "https://hooks.slack.com/services/T0/B0/X"}],
            "webhook_configs": [{"url": "http://10.1.2.3:8080/hook"}],
        }
    ],
}
PROBES = {
    "probes": [
        {"name": "api", "url": "https://api.example.com/health"},
        {"name": "db", "type": "tcp", "target": "db.internal:5432"},
    ]
}


def load(tmp_path: Path, allow: list[str] | None, **sections: Any) -> Settings:
    security = {"outbound_allow": allow} if allow is not None else {}
    return Settings.load(None, overrides={"data_dir": tmp_path, "security": security, **sections})


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("hooks.slack.com", True),
        ("HOOKS.slack.com.", True),
        ("evil-hooks.slack.com", False),
        ("example.com", True),
        ("deep.api.example.com", True),
        ("notexample.com", False),
        ("10.200.0.1", True),
        ("169.254.169.254", False),
        ("::1", False),
        ("fd00::5", True),
    ],
)
def test_allow_list_matching(host: str, allowed: bool) -> None:
    allow = AllowList.parse(["hooks.slack.com", "*.example.com", "10.0.0.0/8", "fd00::/8"])
    assert allow.allows(host) is allowed


def test_hosts_of_urls_and_host_ports() -> None:
    assert host_of("https://user:pw@Hooks.Slack.com:443/x?y") == "hooks.slack.com"
    assert host_of("db.internal:5432") == "db.internal"
    assert host_of("[::1]:25") == "::1"


def test_nothing_configured_allows_everything(tmp_path: Path) -> None:
    settings = load(tmp_path, None, alerting=ALERTING, slo=PROBES)
    assert settings.security.outbound_allow is None


def test_targets_inside_the_list_load(tmp_path: Path) -> None:
    allow = ["hooks.slack.com", "10.0.0.0/8", "*.example.com", "db.internal"]
    assert load(tmp_path, allow, alerting=ALERTING, slo=PROBES).security.outbound_allow == allow


def test_a_webhook_outside_the_list_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, ["hooks.slack.com"], alerting=ALERTING)
    message = str(info.value)
    assert (
        "alerting receiver 'chat' webhook_configs[0]: host '10.1.2.3' is not in security.outbound_allow"
        in message
    )
    assert "slack_configs" not in message


def test_a_probe_outside_the_list_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, ["*.example.com"], slo=PROBES)
    assert str(info.value) == "probe 'db': host 'db.internal' is not in security.outbound_allow"


def test_a_config_file_with_a_refused_target_does_not_load(tmp_path: Path) -> None:
    path = tmp_path / "watchkeeper.yml"
    path.write_text(
        "security:\n  outbound_allow: [hooks.slack.com]\n"
        "slo:\n  probes:\n    - {name: metadata, url: 'http://169.254.169.254/latest'}\n"
    )
    with pytest.raises(ConfigError, match=re.escape("probe 'metadata': host '169.254.169.254'")):
        Settings.load(path)


def test_an_allow_list_entry_that_is_no_host_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither a host name nor a CIDR block"):
        load(tmp_path, ["http://hooks.slack.com/"], alerting=ALERTING)
