"""``remote_write:`` in Prometheus' configuration format (the part watchkeeper implements).

```yaml
remote_write:
  - url: http://mimir:9009/api/v1/push
    name: mimir
    remote_timeout: 30s
    headers: {X-Scope-OrgID: team-a}
    basic_auth: {username: wk, password_file: /run/secrets/mimir}
    write_relabel_configs:
      - {source_labels: [__name__], regex: "go_.*", action: drop}
    queue_config: {capacity: 10000, max_shards: 4, max_samples_per_send: 2000}
```

>>> cfg = RemoteWriteConfig(url="http://127.0.0.1:9090/api/v1/write")
>>> cfg.queue_config.max_samples_per_send, cfg.timeout_seconds, len(cfg.remote_name)
(2000, 30.0, 6)
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from watchkeeper.collector.relabel import RelabelConfig
from watchkeeper.collector.targets import Authorization, BasicAuth, ScrapeConfig
from watchkeeper.durations import parse_duration

#: Headers the protocol sets itself; Prometheus refuses them in ``headers`` too.
RESERVED_HEADERS = frozenset(
    {"authorization", "content-encoding", "content-type", "user-agent", "x-prometheus-remote-write-version"}
)


class QueueConfig(BaseModel):
    """How samples are buffered and sent. Differences from Prometheus: the number of shards is
    fixed at `max_shards` (no dynamic resharding; each shard is a thread, hence the default of 4
    rather than 200), and `capacity` bounds each shard's buffer in samples."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    capacity: int = Field(default=10_000, gt=0)
    max_shards: int = Field(default=4, gt=0, le=256)
    min_shards: int = Field(default=1, gt=0)
    """Accepted for compatibility; shards are fixed at `max_shards`."""
    max_samples_per_send: int = Field(default=2000, gt=0)
    batch_send_deadline: str = "5s"
    min_backoff: str = "30ms"
    max_backoff: str = "5s"
    retry_on_http_429: bool = False
    """As in Prometheus 2.x: off, so a 429 drops the batch (counted as failed)."""

    @field_validator("batch_send_deadline", "min_backoff", "max_backoff")
    @classmethod
    def _duration(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("must be a positive duration")
        return value

    @model_validator(mode="after")
    def _check(self) -> QueueConfig:
        if self.min_shards > self.max_shards:
            raise ValueError("min_shards must not be greater than max_shards")
        if parse_duration(self.min_backoff) > parse_duration(self.max_backoff):
            raise ValueError("min_backoff must not be greater than max_backoff")
        return self

    @property
    def batch_send_deadline_seconds(self) -> float:
        return parse_duration(self.batch_send_deadline) / 1000

    @property
    def min_backoff_seconds(self) -> float:
        return parse_duration(self.min_backoff) / 1000

    @property
    def max_backoff_seconds(self) -> float:
        return parse_duration(self.max_backoff) / 1000


class TLSConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False


class RemoteWriteConfig(BaseModel):
    """One entry of ``remote_write`` (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://[^/\s]+")
    name: str | None = None
    """Names the queue in logs and metrics (``remote_name``); default: a hash of the config."""
    remote_timeout: str = "30s"
    headers: dict[str, str] = {}
    basic_auth: BasicAuth | None = None
    authorization: Authorization | None = None
    bearer_token: str | None = None
    bearer_token_file: str | None = None
    tls_config: TLSConfig = TLSConfig()
    write_relabel_configs: list[RelabelConfig] = []
    queue_config: QueueConfig = QueueConfig()
    send_exemplars: bool = False
    """Accepted for compatibility: watchkeeper stores no exemplars, so none are sent."""
    send_native_histograms: bool = False
    """Accepted for compatibility: watchkeeper stores no native histograms."""

    @field_validator("remote_timeout")
    @classmethod
    def _timeout(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("must be a positive duration")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"{name} is a reserved header: it cannot be set in headers")
        return value

    @model_validator(mode="after")
    def _check(self) -> RemoteWriteConfig:
        self._auth  # noqa: B018 -- validates: at most one of basic_auth, authorization, bearer_token
        return self

    @cached_property
    def _auth(self) -> ScrapeConfig:
        # The scrape config's auth settings are the same Prometheus HTTP client settings; its
        # `auth_header` reads secret files at each call, so a rotated secret is picked up.
        return ScrapeConfig(
            job_name="remote_write",
            basic_auth=self.basic_auth,
            authorization=self.authorization,
            bearer_token=self.bearer_token,
            bearer_token_file=self.bearer_token_file,
        )

    def auth_header(self) -> str | None:
        """The ``Authorization`` header value, or None."""
        return self._auth.auth_header()

    @property
    def timeout_seconds(self) -> float:
        return parse_duration(self.remote_timeout) / 1000

    @property
    def remote_name(self) -> str:
        """`name`, or the first 6 hex digits of a hash of the config (as Prometheus names them)."""
        if self.name:
            return self.name
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:6]


def check_unique_names(configs: list[RemoteWriteConfig]) -> list[RemoteWriteConfig]:
    """Two queues may not share a name (their metrics would mix)."""
    seen: set[str] = set()
    for c in configs:
        if c.remote_name in seen:
            raise ValueError(f"remote_write name {c.remote_name!r} is used twice (give each a unique name)")
        seen.add(c.remote_name)
    return configs
