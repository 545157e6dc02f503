"""Scrape configuration (Prometheus' ``scrape_configs`` format, a subset) and target discovery:
static targets, ``file_sd_configs`` files re-read when they change, relabelling into targets.

```yaml
scrape_configs:
  - job_name: api
    scrape_interval: 15s
    static_configs: [{targets: ["localhost:8000"], labels: {env: dev}}]
    file_sd_configs: [{files: ["targets/*.json"]}]
    relabel_configs: [{source_labels: [__address__], regex: "(.*):.*", target_label: host}]
```

>>> cfg = ScrapeConfig(job_name="api", static_configs=[StaticConfig(targets=["localhost:8000"])])
>>> active, dropped = build_targets(cfg, static_groups(cfg))
>>> active[0].url, active[0].labels
('http://localhost:8000/metrics', (('instance', 'localhost:8000'), ('job', 'api')))
"""

from __future__ import annotations

import glob
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from watchkeeper.collector.relabel import RelabelConfig, compile_rules, relabel
from watchkeeper.durations import parse_duration
from watchkeeper.labels import Labels

log = logging.getLogger(__name__)


class StaticConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: list[str] = []
    labels: dict[str, str] = {}


class FileSDConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    files: list[str] = Field(min_length=1)
    refresh_interval: str = "5m"
    """Files are also checked for changes every few seconds (see `ScrapeManager`)."""


class BasicAuth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str
    password: str | None = None
    password_file: str | None = None


class Authorization(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = "Bearer"
    credentials: str | None = None
    credentials_file: str | None = None


class ScrapeConfig(BaseModel):
    """One entry of ``scrape_configs`` (Prometheus' format; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_name: str = Field(min_length=1)
    scrape_interval: str = "15s"
    scrape_timeout: str | None = None
    """Default: 10s, or the interval when it is shorter."""
    metrics_path: str = "/metrics"
    scheme: Literal["http", "https"] = "http"
    params: dict[str, list[str]] = {}
    honor_labels: bool = False
    honor_timestamps: bool = True
    sample_limit: int = Field(default=0, ge=0)
    """0: no limit. Over the limit the whole scrape fails (up 0), as in Prometheus."""
    static_configs: list[StaticConfig] = []
    file_sd_configs: list[FileSDConfig] = []
    relabel_configs: list[RelabelConfig] = []
    metric_relabel_configs: list[RelabelConfig] = []
    basic_auth: BasicAuth | None = None
    authorization: Authorization | None = None
    bearer_token: str | None = None
    bearer_token_file: str | None = None
    tls_insecure_skip_verify: bool = False

    @field_validator("scrape_interval", "scrape_timeout")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and parse_duration(value) <= 0:
            raise ValueError("must be a positive duration")
        return value

    @model_validator(mode="after")
    def _check(self) -> ScrapeConfig:
        if self.scrape_timeout is not None and parse_duration(self.scrape_timeout) > parse_duration(
            self.scrape_interval
        ):
            raise ValueError("scrape_timeout must not be greater than scrape_interval")
        auths = [self.basic_auth is not None, self.authorization is not None,
                 bool(self.bearer_token or self.bearer_token_file)]
        if sum(auths) > 1:
            raise ValueError("at most one of basic_auth, authorization and bearer_token may be set")
        return self

    @property
    def interval_seconds(self) -> float:
        return parse_duration(self.scrape_interval) / 1000

    @property
    def timeout_seconds(self) -> float:
        if self.scrape_timeout is not None:
            return parse_duration(self.scrape_timeout) / 1000
        return min(10.0, self.interval_seconds)

    def auth_header(self) -> str | None:
        """The ``Authorization`` header value (files read now, so a rotated secret is picked up)."""
        import base64

        if self.basic_auth is not None:
            b = self.basic_auth
            password = _read_secret(b.password_file) if b.password_file else (b.password or "")
            return "Basic " + base64.b64encode(f"{b.username}:{password}".encode()).decode()
        if self.authorization is not None:
            a = self.authorization
            cred = _read_secret(a.credentials_file) if a.credentials_file else (a.credentials or "")
            return f"{a.type} {cred}"
        if self.bearer_token_file:
            return "Bearer " + _read_secret(self.bearer_token_file)
        if self.bearer_token:
            return "Bearer " + self.bearer_token
        return None


def _read_secret(path: str) -> str:
    return Path(path).read_text(encoding="utf-8").strip()


def default_scrape_configs(host: str, port: int) -> list[ScrapeConfig]:
    """watchkeeper scraping itself, so a fresh install has data."""
    if host in ("0.0.0.0", "", "::"):  # compares, binds nothing # nosec B104
        host = "127.0.0.1"
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return [ScrapeConfig(job_name="watchkeeper", static_configs=[StaticConfig(targets=[address])])]


@dataclass(frozen=True, slots=True)
class TargetGroup:
    targets: tuple[str, ...]
    labels: tuple[tuple[str, str], ...]
    source: str


@dataclass(frozen=True, slots=True)
class Target:
    """A target after relabelling: its final labels (job, instance, ...), where and how to scrape."""

    labels: Labels
    discovered: tuple[tuple[str, str], ...]
    url: str

    @property
    def key(self) -> tuple[Labels, str]:
        return self.labels, self.url


def static_groups(cfg: ScrapeConfig) -> list[TargetGroup]:
    return [TargetGroup(tuple(s.targets), tuple(s.labels.items()), f"static/{i}")
            for i, s in enumerate(cfg.static_configs)]


_GROUPS = TypeAdapter(list[StaticConfig])


class FileDiscovery:
    """Target groups from ``file_sd_configs`` files (JSON or YAML lists of ``{targets, labels}``).
    `groups()` re-reads a file only when its mtime or size changed; a file that turns invalid keeps
    its last good groups (and the error is logged), as Prometheus does."""

    def __init__(self, configs: list[FileSDConfig]) -> None:
        self.patterns = [p for c in configs for p in c.files]
        self._cache: dict[str, tuple[tuple[int, int], list[TargetGroup]]] = {}
        self.errors: dict[str, str] = {}

    def groups(self) -> list[TargetGroup]:
        paths = sorted({p for pattern in self.patterns for p in glob.glob(pattern)})
        out: list[TargetGroup] = []
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                continue
            stamp = (st.st_mtime_ns, st.st_size)
            cached = self._cache.get(path)
            if cached is None or cached[0] != stamp:
                try:
                    groups = _read_groups(path)
                    self.errors.pop(path, None)
                except (OSError, ValueError, yaml.YAMLError, ValidationError) as exc:
                    self.errors[path] = str(exc)[:300]
                    log.warning("file_sd file is invalid; keeping its last targets",
                                extra={"path": path, "error": str(exc)[:300]})
                    groups = cached[1] if cached is not None else []
                self._cache[path] = cached = (stamp, groups)
            out.extend(cached[1])
        for gone in set(self._cache) - set(paths):
            del self._cache[gone]
        return out


def _read_groups(path: str) -> list[TargetGroup]:
    text = Path(path).read_text(encoding="utf-8")
    data: Any = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    statics = _GROUPS.validate_python(data or [])
    return [TargetGroup(tuple(s.targets), (*s.labels.items(), ("__meta_filepath", path)), f"{path}/{i}")
            for i, s in enumerate(statics)]


def build_targets(cfg: ScrapeConfig, groups: list[TargetGroup]) -> tuple[list[Target], list[dict[str, str]]]:
    """(active targets, discovered label sets dropped by relabelling), as Prometheus builds them."""
    rules = compile_rules(cfg.relabel_configs)
    active: list[Target] = []
    dropped: list[dict[str, str]] = []
    seen: set[tuple[Labels, str]] = set()
    for group in groups:
        for address in group.targets:
            discovered = {
                **dict(group.labels),
                "__address__": address,
                "__scheme__": cfg.scheme,
                "__metrics_path__": cfg.metrics_path,
                "__scrape_interval__": cfg.scrape_interval,
                "__scrape_timeout__": f"{cfg.timeout_seconds:g}s",
                "job": cfg.job_name,
            }
            for name, vals in cfg.params.items():
                if vals:
                    discovered[f"__param_{name}"] = vals[0]
            labels = relabel(discovered, rules)
            if labels is None or not labels.get("__address__"):
                dropped.append(discovered)
                continue
            labels.setdefault("instance", labels["__address__"])
            params = {n: [v] for n, v in ((k[8:], v) for k, v in labels.items() if k.startswith("__param_"))}
            params = {**cfg.params, **params}
            query = urlencode([(n, v) for n, vs in params.items() for v in vs])
            url = f"{labels['__scheme__']}://{labels['__address__']}{labels['__metrics_path__']}"
            if query:
                url += "?" + query
            final = tuple(sorted((k, v) for k, v in labels.items() if not k.startswith("__") and v))
            target = Target(final, tuple(sorted(discovered.items())), url)
            if target.key not in seen:
                seen.add(target.key)
                active.append(target)
    return active, dropped
