"""The ``slo:`` section of ``watchkeeper.yml``: SLO spec files, probes, maintenance, status pages, reports.

>>> cfg = SloConfig.model_validate({
...     "spec_files": ["rules/slo/*.yml"],
...     "probes": [{"name": "checkout", "url": "https://shop.example/health", "keyword": "ok",
...                 "degraded_after": "800ms", "interval": "30s"}],
...     "maintenance": [{"name": "db upgrade", "weekdays": ["sun"], "at": "02:00", "duration": "1h",
...                      "timezone": "Europe/Paris"}],
...     "reports": [{"name": "weekly-slo", "kind": "slo", "schedule": "0 9 * * mon",
...                  "receiver": "team-chat"}],
... })
>>> cfg.probes[0].interval_ms, cfg.probes[0].degraded_after_seconds
(30000, 0.8)
"""

from __future__ import annotations

import re
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from watchkeeper.alerting.config import ReceiverConfig
from watchkeeper.durations import parse_duration
from watchkeeper.slo.budget import Window
from watchkeeper.slo.uptime import MaintenanceWindow

_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


class ProbeConfig(_Model):
    """An uptime monitor. ``type: http`` (``url``) or ``tcp`` (``target: host:port``)."""

    name: str
    type: Literal["http", "tcp"] = "http"
    url: str = ""
    target: str = ""
    method: str = "GET"
    headers: dict[str, str] = {}
    body: str | None = None
    expected_status: list[int] = []
    """Accepted HTTP status codes; empty = any 2xx."""
    keyword: str | None = None
    regex: str | None = None
    json_path: str | None = None
    """Dotted path into a JSON body (``status.db`` or ``checks.0.ok``) compared with ``json_equals``."""
    json_equals: Any = None
    degraded_after: str | None = None
    """Up, but slower than this: degraded (still counts as up in uptime, shown apart)."""
    interval: str = "60s"
    timeout: str = "10s"
    tls_verify: bool = True
    ca_file: str | None = None
    """CA bundle to verify the server with (a private CA); default: the system's."""
    follow_redirects: bool = True
    component: str = ""
    """Name shown on public status pages (defaults to ``name``)."""

    _durations = field_validator("degraded_after", "interval", "timeout")(_duration)

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            re.compile(value)
        return value

    @model_validator(mode="after")
    def _target(self) -> ProbeConfig:
        if self.type == "http" and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"probe {self.name}: an http probe needs url: http(s)://...")
        if self.type == "tcp" and not re.match(r"^.+:\d+$", self.target):
            raise ValueError(f"probe {self.name}: a tcp probe needs target: host:port")
        if parse_duration(self.timeout) > parse_duration(self.interval):
            raise ValueError(f"probe {self.name}: timeout must not exceed interval")
        return self

    @property
    def interval_ms(self) -> int:
        return parse_duration(self.interval)

    @property
    def timeout_seconds(self) -> float:
        return parse_duration(self.timeout) / 1000

    @property
    def degraded_after_seconds(self) -> float | None:
        return None if self.degraded_after is None else parse_duration(self.degraded_after) / 1000

    @property
    def instance(self) -> str:
        return self.url if self.type == "http" else self.target

    @property
    def display_name(self) -> str:
        return self.component or self.name


class StatusPageConfig(_Model):
    slug: str
    title: str = "Status"
    monitors: list[str] = []
    """Probe names shown (empty = all); only names, status and uptime are shown, never URLs."""

    @field_validator("slug")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _SLUG_RE.match(value):
            raise ValueError("slug: lower-case letters, digits and '-'")
        return value


class KpiConfig(_Model):
    """A business metric: an instant PromQL query evaluated at the end of each period."""

    name: str
    query: str
    unit: str = ""
    breakdown_by: str | None = None
    """A label: the KPI is also shown per value of it (e.g. region), top movers first."""


class ReportConfig(_Model):
    name: str
    kind: Literal["slo", "uptime", "business"]
    title: str = ""
    window: str = "30d"
    """``28d``/``30d`` (rolling, ending now) or ``month``/``quarter`` (calendar, see ``period``)."""
    timezone: str = "UTC"
    period: Literal["current", "previous"] = "current"
    """Calendar windows: ``previous`` reports the last full month/quarter (for a digest sent on the
    1st); ``current`` the period to date. Rolling windows always end now."""
    schedule: str | None = None
    """Cron (``minute hour day month weekday``, in ``timezone``) for the chat digest."""
    receiver: str | None = None
    """A receiver of the ``alerting:`` section the digest is posted to."""
    chat: ReceiverConfig | None = None
    """Or a receiver defined here (same fields as ``alerting.receivers[]``)."""
    slos: list[str] = []
    monitors: list[str] = []
    kpis: list[KpiConfig] = []

    @model_validator(mode="after")
    def _check(self) -> ReportConfig:
        Window.parse(self.window, self.timezone)
        if self.schedule is not None and len(self.schedule.split()) != 5:
            raise ValueError(f"report {self.name}: schedule must be a 5-field cron expression")
        if self.kind == "business" and not self.kpis:
            raise ValueError(f"report {self.name}: a business report needs kpis")
        return self

    def window_(self) -> Window:
        return Window.parse(self.window, self.timezone)


class SloConfig(_Model):
    """``Settings.slo``. Spec files are globs (relative to the config file's directory)."""

    spec_files: list[str] = []
    default_period: str = "30d"
    budget_window: str = "30d"
    """What pages show by default: ``28d``, ``30d``, ``month`` or ``quarter``."""
    timezone: str = "UTC"
    probes: list[ProbeConfig] = []
    maintenance: list[MaintenanceWindow] = []
    status_pages: list[StatusPageConfig] = []
    reports: list[ReportConfig] = []
    external_url: str = "http://127.0.0.1:9470"
    """Base of the links in chat digests."""
    rules_dir: str = "slo-rules"
    """Where generated rule files are written (under ``data_dir``) for the rules engine to load."""
    max_probe_concurrency: int = Field(default=50, gt=0)

    @model_validator(mode="after")
    def _check(self) -> SloConfig:
        ZoneInfo(self.timezone)
        Window.parse(self.budget_window, self.timezone)
        names = [p.name for p in self.probes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"probe names must be unique: {dupes}")
        for page in self.status_pages:
            unknown = sorted(set(page.monitors) - set(names))
            if unknown:
                raise ValueError(f"status page {page.slug}: unknown monitors {unknown}")
        return self

    @property
    def default_period_days(self) -> int:
        return Window.parse(self.default_period).days
