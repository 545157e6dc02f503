"""The notification configuration: Alertmanager's YAML format (a subset), validated by pydantic.

An ``alertmanager.yml`` that uses only the supported parts loads unchanged:

>>> cfg = AlertingConfig.from_yaml('''
... route:
...   receiver: team
...   group_by: [alertname]
...   routes:
...     - matchers: ['severity="page"']
...       receiver: pager
...       group_wait: 0s
... receivers:
...   - name: team
...     slack_configs: [{api_url: "http://127.0.0.1:1/hook"}]
...   - name: pager
...     webhook_configs: [{url: "http://127.0.0.1:1/page"}]
... ''')
>>> cfg.route.routes[0].receiver, cfg.receiver("pager").webhook_configs[0].max_alerts
('pager', 0)

Differences from Alertmanager, on purpose: ``send_resolved`` defaults to true for every receiver
(Alertmanager: false for Slack), resolved notifications go out after ``resolved_wait`` (route
field, default 0s) instead of at the next ``group_interval`` tick, Teams is the Workflows webhook
(``msteamsv2_configs``), and ``mattermost_configs`` exists.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from watchkeeper.alerting.templating import check as check_template
from watchkeeper.alerting.timeintervals import validate_spec
from watchkeeper.errors import ConfigError, NotificationError
from watchkeeper.labels import Matcher

_DURATION_RE = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_DURATION_UNITS_MS = (365 * 86_400_000, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000, 1)


def duration_ms(text: str) -> int:
    """A Prometheus duration in milliseconds (``watchkeeper.config`` imports this package, hence a copy).

    >>> duration_ms("1h30m"), duration_ms("0s"), duration_ms("250ms")
    (5400000, 0, 250)
    """
    text = text.strip()
    if text == "0":
        return 0
    m = _DURATION_RE.match(text)
    if not text or m is None or not any(g is not None for g in m.groups()):
        raise ValueError(f"not a valid duration: {text!r} (examples: 30s, 5m, 4h)")
    return sum(int(g) * unit for g, unit in zip(m.groups(), _DURATION_UNITS_MS, strict=True) if g)


_MATCHER_RE = re.compile(
    r'^\s*(?P<name>[a-zA-Z_][a-zA-Z0-9_]*|"(?:[^"\\]|\\.)*")\s*(?P<op>=~|!~|!=|=)\s*(?P<value>.*?)\s*$', re.S
)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        body = text[1:-1]
        return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)
    return text


def parse_matcher(text: str) -> Matcher:
    """One Alertmanager matcher: ``severity="page"``, ``job=~"api|web"``, ``env!=prod``.

    >>> str(parse_matcher('team =~ "db.*"'))
    'team=~"db.*"'
    """
    m = _MATCHER_RE.match(text)
    if m is None:
        raise ValueError(f'bad matcher {text!r} (expected name="value", with =, !=, =~ or !~)')
    return Matcher.parse_op(m.group("op"), _unquote(m.group("name")), _unquote(m.group("value")))


def parse_matchers(items: list[str]) -> tuple[Matcher, ...]:
    """A ``matchers:`` list; an item may itself be a ``{a="b", c=~"d"}`` set."""
    out: list[Matcher] = []
    for item in items:
        text = item.strip()
        if text.startswith("{") and text.endswith("}"):
            out.extend(parse_matcher(part) for part in _split_top(text[1:-1]) if part.strip())
        else:
            out.append(parse_matcher(text))
    return tuple(out)


def _split_top(text: str) -> list[str]:
    parts, cur, quoted, i = [], [], False, 0
    while i < len(text):
        c = text[i]
        if c == "\\" and quoted:
            cur.append(text[i : i + 2])
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        if c == "," and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _check_duration(value: str | None) -> str | None:
    if value is not None:
        duration_ms(value)
    return value


_SECRET_FIELDS = {"auth_password", "bot_token"}
_URL_FIELDS = {"api_url", "webhook_url", "url"}


def redact_url(url: str) -> str:
    """Keep scheme and host, hide the rest: webhook URLs *are* the secret (Slack, Discord, Teams).

    >>> redact_url("https://hooks.slack.com/services/T0/B0/XYZ"), redact_url("not a url")
    ('https://hooks.slack.com/<secret>', '<secret>')
    """
    m = re.match(r"^([a-z][a-z0-9+.-]*://[^/?#]+)", url, re.I)
    return f"{m.group(1)}/<secret>" if m else "<secret>"


def _redact(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, key) for v in value]
    if key in _SECRET_FIELDS and value:
        return "<secret>"
    if key in _URL_FIELDS and isinstance(value, str):
        return redact_url(value)
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RouteConfig(_Model):
    """A node of the routing tree; unset timings and ``group_by`` are inherited from the parent."""

    receiver: str | None = None
    group_by: list[str] | None = None
    continue_: bool = Field(default=False, alias="continue")
    matchers: list[str] = []
    match: dict[str, str] = {}
    match_re: dict[str, str] = {}
    group_wait: str | None = None
    group_interval: str | None = None
    repeat_interval: str | None = None
    resolved_wait: str | None = None
    """watchkeeper: how long after an alert resolves its group is flushed (default 0s)."""
    mute_time_intervals: list[str] = []
    active_time_intervals: list[str] = []
    routes: list[RouteConfig] = []

    _durations = field_validator("group_wait", "group_interval", "repeat_interval", "resolved_wait")(
        _check_duration
    )

    @field_validator("matchers")
    @classmethod
    def _matchers_parse(cls, value: list[str]) -> list[str]:
        parse_matchers(value)
        return value

    def all_matchers(self) -> tuple[Matcher, ...]:
        legacy = [Matcher.parse_op("=", k, v) for k, v in sorted(self.match.items())]
        legacy += [Matcher.parse_op("=~", k, v) for k, v in sorted(self.match_re.items())]
        return (*legacy, *parse_matchers(self.matchers))


class TimeRange(_Model):
    start_time: str
    end_time: str

    @field_validator("start_time", "end_time")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d|24:00", value):
            raise ValueError(f"bad time {value!r} (expected HH:MM, 00:00 to 24:00)")
        return value


class TimeIntervalSpec(_Model):
    """One ``time_intervals`` entry; every field that is set must match (empty = any)."""

    times: list[TimeRange] = []
    weekdays: list[str] = []
    days_of_month: list[str] = []
    months: list[str] = []
    years: list[str] = []
    location: str = "UTC"

    @model_validator(mode="after")
    def _valid(self) -> TimeIntervalSpec:
        validate_spec(self)
        return self


class TimeIntervalConfig(_Model):
    name: str
    time_intervals: list[TimeIntervalSpec]


class InhibitRuleConfig(_Model):
    source_matchers: list[str] = []
    target_matchers: list[str] = []
    source_match: dict[str, str] = {}
    target_match: dict[str, str] = {}
    equal: list[str] = []

    @field_validator("source_matchers", "target_matchers")
    @classmethod
    def _matchers_parse(cls, value: list[str]) -> list[str]:
        parse_matchers(value)
        return value


class _ReceiverBase(_Model):
    send_resolved: bool = True
    title: str | None = None
    """Template overriding the title (Jinja2 sandbox; see `templating`)."""
    text: str | None = None
    """Template overriding the body text."""

    @field_validator("title", "text")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_template(value)
            except NotificationError as exc:
                raise ValueError(str(exc)) from exc
        return value


class SlackConfig(_ReceiverBase):
    api_url: str
    channel: str | None = None
    username: str | None = None
    icon_emoji: str | None = None


class MSTeamsV2Config(_ReceiverBase):
    webhook_url: str


class DiscordConfig(_ReceiverBase):
    webhook_url: str
    username: str | None = None


class MattermostConfig(_ReceiverBase):
    webhook_url: str
    channel: str | None = None
    username: str | None = None


class TelegramConfig(_ReceiverBase):
    api_url: str = "https://api.telegram.org"
    bot_token: str
    chat_id: int | str
    message_thread_id: int | None = None
    disable_notifications: bool = False


class WebhookConfig(_ReceiverBase):
    url: str
    max_alerts: int = Field(default=0, ge=0)


class EmailConfig(_ReceiverBase):
    to: str
    from_: str = Field(default="watchkeeper@localhost", alias="from")
    smarthost: str
    auth_username: str | None = None
    auth_password: str | None = None
    require_tls: bool = False
    """STARTTLS before sending (Alertmanager defaults to true; local relays rarely offer it)."""


class ReceiverConfig(_Model):
    name: str
    slack_configs: list[SlackConfig] = []
    msteamsv2_configs: list[MSTeamsV2Config] = []
    discord_configs: list[DiscordConfig] = []
    mattermost_configs: list[MattermostConfig] = []
    telegram_configs: list[TelegramConfig] = []
    webhook_configs: list[WebhookConfig] = []
    email_configs: list[EmailConfig] = []


class OutboxConfig(_Model):
    """Delivery: retries with exponential backoff and jitter, then the dead letter."""

    max_attempts: int = Field(default=20, ge=1)
    initial_backoff: str = "1s"
    max_backoff: str = "5m"
    request_timeout: str = "10s"
    poll_interval: str = "1s"
    retention: str = "7d"
    """How long delivered notifications (the history) and idle notification-log entries are kept."""
    dead_letter_alert: bool = True
    """Raise ``WatchkeeperNotificationDeadLetter{receiver=...}`` when a notification is given up."""

    _durations = field_validator(
        "initial_backoff", "max_backoff", "request_timeout", "poll_interval", "retention"
    )(_check_duration)


class GlobalConfig(_Model):
    resolve_timeout: str = "5m"
    external_url: str = "http://localhost:9470"

    _durations = field_validator("resolve_timeout")(_check_duration)


class AlertingConfig(_Model):
    """Routing, receivers, inhibition, time intervals and the outbox (``alerting:`` in watchkeeper.yml)."""

    global_: GlobalConfig = Field(default=GlobalConfig(), alias="global")
    route: RouteConfig = RouteConfig(receiver="default")
    receivers: list[ReceiverConfig] = [ReceiverConfig(name="default")]
    inhibit_rules: list[InhibitRuleConfig] = []
    time_intervals: list[TimeIntervalConfig] = []
    mute_time_intervals: list[TimeIntervalConfig] = []
    """Alertmanager's older name for ``time_intervals``; both are read."""
    outbox: OutboxConfig = OutboxConfig()
    templates: list[str] = []
    """Accepted for compatibility; Go template files are not read (override per receiver)."""

    @model_validator(mode="after")
    def _references(self) -> AlertingConfig:
        names = [r.name for r in self.receivers]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate receiver names in {names}")
        if self.route.receiver is None:
            raise ValueError("the root route needs a receiver")
        if self.route.all_matchers():
            raise ValueError("the root route must not have matchers")
        if self.route.mute_time_intervals or self.route.active_time_intervals:
            raise ValueError("the root route cannot have time intervals")
        intervals = {t.name for t in self.all_time_intervals()}

        def walk(route: RouteConfig) -> None:
            if route.receiver is not None and route.receiver not in names:
                raise ValueError(f"route uses undefined receiver {route.receiver!r}")
            for name in (*route.mute_time_intervals, *route.active_time_intervals):
                if name not in intervals:
                    raise ValueError(f"route uses undefined time interval {name!r}")
            for child in route.routes:
                walk(child)

        walk(self.route)
        return self

    def all_time_intervals(self) -> list[TimeIntervalConfig]:
        return [*self.time_intervals, *self.mute_time_intervals]

    def redacted(self) -> dict[str, Any]:
        """The configuration as YAML-ready data, passwords, tokens and webhook URLs hidden."""
        data: dict[str, Any] = _redact(self.model_dump(mode="json", by_alias=True, exclude_defaults=True))
        return data

    def receiver(self, name: str) -> ReceiverConfig:
        for r in self.receivers:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def resolve_timeout_ms(self) -> int:
        return duration_ms(self.global_.resolve_timeout)

    @classmethod
    def from_file(cls, path: Path) -> AlertingConfig:
        """An ``alertmanager.yml``, or a ``watchkeeper.yml`` whose ``alerting:`` section holds the same."""
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        if isinstance(data, dict) and "alerting" in data and "route" not in data:
            data = data["alerting"] or {}
        try:
            return cls.model_validate(data)
        except (ValidationError, ValueError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    @classmethod
    def from_yaml(cls, text: str) -> AlertingConfig:
        """Parse an Alertmanager-style YAML document; errors become `ConfigError`."""
        try:
            data: Any = yaml.safe_load(text) or {}
            return cls.model_validate(data)
        except (yaml.YAMLError, ValidationError, ValueError) as exc:
            raise ConfigError(f"alerting config: {exc}") from exc


ReceiverKind = Literal["slack", "msteamsv2", "discord", "mattermost", "telegram", "webhook", "email"]
