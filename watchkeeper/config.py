"""Configuration: one `Settings` object, built once at start-up and passed down.

Sources, strongest first: explicit overrides (CLI flags), ``WATCHKEEPER_*`` environment variables
(nested sections with ``__``, e.g. ``WATCHKEEPER_LIMITS__MAX_BODY_BYTES``), the YAML file
(``watchkeeper.yml`` in the working directory unless another is named), then defaults that work on
a laptop. Nothing below this module reads ``os.environ``.

>>> settings = Settings.load(config_file=None, overrides={"port": 9999})
>>> settings.port, settings.retention_ms
(9999, 1296000000)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from watchkeeper.alerting.config import AlertingConfig
from watchkeeper.backup.config import BackupConfig
from watchkeeper.collector.auth import IngestAuthConfig
from watchkeeper.collector.targets import ScrapeConfig
from watchkeeper.durations import parse_duration
from watchkeeper.errors import ConfigError
from watchkeeper.exporters.builtin import ExportersConfig
from watchkeeper.forwarding.config import RemoteWriteConfig, check_unique_names
from watchkeeper.promql.cache import QueryCacheConfig
from watchkeeper.replication.config import ReplicationConfig
from watchkeeper.rules.model import RulesConfig
from watchkeeper.security.config import SecurityConfig
from watchkeeper.security.outbound import check_outbound
from watchkeeper.slo.config import SloConfig

ENV_PREFIX = "WATCHKEEPER_"
DEFAULT_CONFIG_FILE = Path("watchkeeper.yml")

def _check_duration(value: str) -> str:
    parse_duration(value)
    return value


class LimitsSettings(BaseModel):
    """Ingest limits (collector/limits.py enforces them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    """Largest request body, compressed and again decompressed."""
    max_labels_per_series: int = Field(default=64, gt=0)
    max_label_name_length: int = Field(default=1024, gt=0)
    max_label_value_length: int = Field(default=4096, gt=0)
    max_series_per_request: int = Field(default=100_000, gt=0)
    max_active_series: int = Field(default=2_000_000, gt=0)


_file_values: ContextVar[dict[str, Any]] = ContextVar("_file_values")


class _YamlFileSource(PydanticBaseSettingsSource):
    """The values read from the YAML file by `Settings.load` (weaker than the environment)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return _file_values.get({}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_values.get({}))


class Settings(BaseSettings):
    """All of watchkeeper's settings. Build with `Settings.load()`; durations are Prometheus strings."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    host: str = "127.0.0.1"
    port: int = Field(9470, ge=0, le=65535)
    data_dir: Path = Path("./data")
    database_url: str | None = None
    """SQLAlchemy URL; None means a SQLite file in `data_dir`."""
    redis_url: str | None = None
    leader_lease: str = "15s"
    """With ``redis_url``: the leader lease of replicas (one evaluates rules and sends notifications);
    another takes over within about 4/3 of it after the leader dies."""
    retention: str = "15d"
    out_of_order_window: str = "0s"
    query_timeout: str = "2m"
    query_max_samples: int = Field(50_000_000, gt=0)
    query_lookback_delta: str = "5m"
    query_cache: QueryCacheConfig = QueryCacheConfig()
    """With ``redis_url``: the range-query results cache (docs/query_cache.md)."""
    replication: ReplicationConfig = ReplicationConfig()
    """With ``redis_url``: replicas share their accepted writes (docs/deployment.md, scale-out)."""
    wal_fsync: bool = True
    select_cache_bytes: int = Field(256 << 20, ge=0)
    """Decoded samples the store keeps between selects for repeated dashboard, rule and API
    queries (least recently used first out; 0 turns it off). `tsdb.selectcache`."""
    malloc_tuning: bool = True
    """Fix glibc's mmap/trim thresholds at 128 KiB when the store opens (`tsdb.storage.tune_malloc`:
    about a third of the resident memory per series); not applied when glibc's own
    ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` are set."""
    retention_interval: str = "10m"
    limits: LimitsSettings = LimitsSettings()
    scrape_configs: list[ScrapeConfig] | None = None
    """Prometheus-style scrape jobs; None scrapes watchkeeper itself, ``[]`` scrapes nothing."""
    exporters: ExportersConfig = ExportersConfig()
    """Built-in host/Redis/PostgreSQL exporters, each scraped as a job of its own (docs/sdk.md)."""
    ingest_auth: IngestAuthConfig = IngestAuthConfig()
    remote_write: list[RemoteWriteConfig] = Field(default_factory=list)
    """Prometheus-style ``remote_write``: ingested samples are also sent to these stores."""
    remote_write_flush_deadline: str = "1m"
    """How long shutdown (or a reload that changes an endpoint) may spend sending what is queued."""
    rule_files: list[str] = Field(default_factory=list)
    """Globs of Prometheus rule files (and generated SLO rules), relative to the config file."""
    rules: RulesConfig = RulesConfig()
    alerting: AlertingConfig = AlertingConfig()
    slo: SloConfig = SloConfig()
    """SLO specs (their generated rules join the rule files), uptime probes, status pages, reports."""
    security: SecurityConfig = SecurityConfig()
    """API tokens, UI users, proxy auth, request limits, the outbound allow-list (docs/security.md)."""
    dashboards_dir: Path = Path("./dashboards")
    """Dashboard YAML files of this deployment, beside the built-ins (a file with a built-in's uid
    replaces it); Grafana dashboards imported with ``?save=true`` are written here."""
    scrape_interval: str = "15s"
    """The usual scrape/push interval: dashboards' smallest step and ``$__rate_interval``."""
    dashboards_min_refresh: str = "5s"
    """The shortest auto-refresh period a dashboard URL may ask for."""
    backup: BackupConfig = BackupConfig()
    """Scheduled backups (``dir``, ``interval``, ``keep``) and the admin backup API (docs/backup.md)."""
    config_file: Path | None = None
    """The YAML file these settings came from (set by `Settings.load`); relative paths in it are
    resolved against its directory."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    _overrides: dict[str, Any] = PrivateAttr(default_factory=dict)

    _durations = field_validator(
        "retention",
        "out_of_order_window",
        "query_timeout",
        "query_lookback_delta",
        "retention_interval",
        "scrape_interval",
        "dashboards_min_refresh",
        "leader_lease",
        "remote_write_flush_deadline",
    )(_check_duration)
    _remote_write_names = field_validator("remote_write")(check_unique_names)

    @model_validator(mode="after")
    def _outbound_allowed(self) -> Settings:
        check_outbound(self.security.outbound_allow, self.alerting, self.slo)
        return self

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlFileSource(settings_cls))

    @property
    def retention_ms(self) -> int:
        return parse_duration(self.retention)

    @property
    def out_of_order_window_ms(self) -> int:
        return parse_duration(self.out_of_order_window)

    @property
    def malloc_tuning_applies(self) -> bool:
        """`malloc_tuning`, unless the operator set glibc's thresholds in the environment."""
        glibc_own = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
        return self.malloc_tuning and not any(k in os.environ for k in glibc_own)

    @property
    def query_timeout_seconds(self) -> float:
        return parse_duration(self.query_timeout) / 1000

    @property
    def query_lookback_delta_ms(self) -> int:
        return parse_duration(self.query_lookback_delta)

    @property
    def retention_interval_seconds(self) -> float:
        return parse_duration(self.retention_interval) / 1000

    @property
    def scrape_interval_ms(self) -> int:
        return parse_duration(self.scrape_interval)

    @property
    def dashboards_min_refresh_ms(self) -> int:
        return parse_duration(self.dashboards_min_refresh)

    @property
    def leader_lease_ms(self) -> int:
        return parse_duration(self.leader_lease)

    @property
    def remote_write_flush_deadline_seconds(self) -> float:
        return parse_duration(self.remote_write_flush_deadline) / 1000

    @property
    def config_dir(self) -> Path:
        return self.config_file.parent if self.config_file is not None else Path(".")

    def rules_config(self) -> RulesConfig:
        """The rule settings with the top-level ``rule_files`` (Prometheus keeps them there)."""
        return self.rules.model_copy(update={"rule_files": [*self.rules.rule_files, *self.rule_files]})

    @classmethod
    def load(
        cls,
        config_file: Path | str | None = DEFAULT_CONFIG_FILE,
        *,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Settings from `config_file` (skipped when it is the default and absent), the environment
        and `overrides` (None values are ignored, so CLI flags that were not given do not count).

        Raises `ConfigError` naming the file and the field when anything is invalid.
        """
        path = Path(config_file) if config_file is not None else None
        file_data: dict[str, Any] = {}
        if path is not None:
            if path.exists():
                file_data = _read_yaml(path)
            elif config_file != DEFAULT_CONFIG_FILE:
                raise ConfigError(f"config file {path} does not exist")
            else:
                path = None
        init = {k: v for k, v in (overrides or {}).items() if v is not None}
        if path is not None:
            init.setdefault("config_file", path)
        token = _file_values.set(file_data)
        try:
            settings = cls(**init)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, path, file_data, init)) from None
        finally:
            _file_values.reset(token)
        settings._overrides = {k: v for k, v in init.items() if k != "config_file"}
        return settings

    def reloaded(self) -> Settings:
        """The settings read again from `config_file` and the environment, with the command-line
        overrides of the first `load` (a reload must not move ``--data-dir`` back to the default)."""
        if self.config_file is None:
            return self
        return Settings.load(self.config_file, overrides=self._overrides)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of settings at the top level")
    return _hoist_probes(data, path)


def _hoist_probes(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """A top-level ``probes:`` list is the ``slo.probes`` of the same file (probes are configured
    beside the rest of the SLO section, but operators look for them at the top level)."""
    if "probes" not in data:
        return data
    slo = data.get("slo") or {}
    if not isinstance(slo, dict):
        return data  # the slo section's own validation names the error
    if "probes" in slo:
        raise ConfigError(f"config file {path}: probes are given both at the top level and under slo:;"
                          " keep one")
    rest = {k: v for k, v in data.items() if k != "probes"}
    return {**rest, "slo": {**slo, "probes": data["probes"]}}


def _describe(
    exc: ValidationError, path: Path | None, file_data: Mapping[str, Any], init: Mapping[str, Any]
) -> str:
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        field = ".".join(loc) or "(top level)"
        top = loc[0] if loc else ""
        if top in init:
            origin = "command line"
        elif path is not None and top in file_data:
            origin = f"config file {path}"
        else:
            origin = f"environment {ENV_PREFIX}{'__'.join(loc).upper()}"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        lines.append(f"{origin}: {field}: {msg}")
    return "invalid configuration: " + "; ".join(lines)
