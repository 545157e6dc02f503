"""Ingest authentication and per-tenant limits.

Each bearer token names a tenant and its scopes; a tenant may have a samples-per-second rate (a
token bucket that may run into debt, so one large batch passes and the next waits) and an
active-series limit (series seen in the last `active_window`). Over either limit the answer is 429
with ``Retry-After``. With no tokens configured, ingest is open only when the server binds a
loopback address, so a fresh laptop install works and a public bind is never silently open.

```yaml
ingest_auth:
  tokens:
    - token: "s3cret"           # sent as "Authorization: Bearer s3cret"
      tenant: payments
      scopes: [write]
      samples_per_second: 50000
      max_active_series: 200000
```

>>> auth = IngestAuth(IngestAuthConfig(), bind_host="127.0.0.1")
>>> auth.authorize(None).name
'anonymous'
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from watchkeeper.collector.remote_write import Admit
from watchkeeper.errors import IngestError, LimitExceeded


class Unauthorized(IngestError):
    status = 401


class Forbidden(IngestError):
    status = 403


class TokenConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    token: str | None = Field(default=None, min_length=8, repr=False)
    token_sha256: str | None = Field(default=None, pattern="^[0-9a-fA-F]{64}$")
    """The token's hex SHA-256 instead of the token (``printf %s TOKEN | sha256sum``)."""
    tenant: str = Field(min_length=1)
    scopes: list[Literal["write", "read", "admin"]] = ["write"]
    samples_per_second: float | None = Field(default=None, gt=0)
    burst_seconds: float = Field(default=10.0, gt=0)
    """The bucket holds this many seconds of `samples_per_second`."""
    max_active_series: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_secret(self) -> TokenConfig:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError("give exactly one of token and token_sha256")
        return self

    def digest_hex(self) -> str:
        return self.token_sha256.lower() if self.token_sha256 else _digest(self.token or "").hex()


class TokenResolver(Protocol):
    """More tokens than the config's (watchkeeper.security.tokens.TokenRegistry: API tokens)."""

    def has_tokens(self) -> bool: ...

    def resolve(self, token: str) -> tuple[str, frozenset[str]] | None:
        """(tenant, scopes) of a valid token."""
        ...


class IngestAuthConfig(BaseModel):
    """The ``ingest_auth`` section of ``watchkeeper.yml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: list[TokenConfig] = []
    active_window_seconds: float = Field(default=3600.0, gt=0)
    """A tenant's series count as active for this long after their last sample."""
    open_on_loopback: bool = True
    """With no tokens, accept unauthenticated ingest when the server binds a loopback address."""


@dataclass(slots=True)
class Tenant:
    name: str
    scopes: frozenset[str]
    samples_per_second: float | None = None
    burst_seconds: float = 10.0
    max_active_series: int | None = None
    _tokens: float = 0.0
    _refilled_at: float | None = None
    _series: dict[int, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class IngestAuth:
    """Who may write, and how much. `authorize` runs per request; `admit` checks the tenant's
    limits for a batch (series keys, sample count) at time `now_seconds` (monotonic)."""

    def __init__(self, config: IngestAuthConfig, *, bind_host: str) -> None:
        self.config = config
        self._by_digest: dict[bytes, Tenant] = {}
        tenants: dict[str, Tenant] = {}
        for t in config.tokens:
            tenant = tenants.get(t.tenant)
            if tenant is None:
                tenant = tenants[t.tenant] = Tenant(
                    t.tenant, frozenset(t.scopes), t.samples_per_second, t.burst_seconds, t.max_active_series
                )
            self._by_digest[bytes.fromhex(t.digest_hex())] = tenant
        self._tenants = tenants
        self.resolver: TokenResolver | None = None
        self._open = not config.tokens and config.open_on_loopback and is_loopback(bind_host)
        self._anonymous = Tenant("anonymous", frozenset({"write", "read"}))
        self.bind_host = bind_host

    def authorize(self, authorization: str | None, scope: str = "write") -> Tenant:
        """The tenant of an ``Authorization`` header value, or 401/403."""
        if not self._by_digest and (self.resolver is None or not self.resolver.has_tokens()):
            if self._open:
                return self._anonymous
            raise Forbidden(
                f"ingest is closed: no ingest tokens are configured and the server binds {self.bind_host}, "
                "not a loopback address; add ingest_auth.tokens to watchkeeper.yml"
            )
        if not authorization:
            raise Unauthorized("missing Authorization header (expected 'Bearer <token>')")
        kind, _, token = authorization.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise Unauthorized("unsupported Authorization scheme (expected 'Bearer <token>')")
        tenant = self._by_digest.get(_digest(token.strip()))
        scopes = tenant.scopes if tenant is not None else frozenset()
        found = self.resolver.resolve(token.strip()) if tenant is None and self.resolver is not None else None
        if found is not None:
            tenant, scopes = self._tenant_named(found[0]), found[1]
        if tenant is None:
            raise Unauthorized("invalid bearer token")
        if scope not in scopes:
            raise Forbidden(f"token of tenant {tenant.name!r} lacks the {scope!r} scope")
        return tenant

    def _tenant_named(self, name: str) -> Tenant:
        """The tenant of a resolver's token: a configured tenant's limits apply to it too."""
        tenant = self._tenants.get(name)
        if tenant is None:
            tenant = self._tenants[name] = Tenant(name, frozenset())
        return tenant

    def admitter(self, tenant: Tenant) -> Admit:
        """`admit` for this tenant, now, in the form `RemoteWriteIngester.ingest` calls it."""
        return lambda keys, samples: self.admit(tenant, keys, samples, time.monotonic())

    def admit(self, tenant: Tenant, keys: Sequence[bytes], samples: int, now_seconds: float) -> None:
        """Charge `samples` samples and the distinct series in `keys` (label bytes) to the tenant,
        or raise `LimitExceeded` (429, Retry-After) without charging anything."""
        if tenant.samples_per_second is None and tenant.max_active_series is None:
            return
        with tenant._lock:
            if tenant.samples_per_second is not None:
                rate = tenant.samples_per_second
                capacity = rate * tenant.burst_seconds
                if tenant._refilled_at is None:
                    tenant._tokens = capacity
                else:
                    refill = (now_seconds - tenant._refilled_at) * rate
                    tenant._tokens = min(capacity, tenant._tokens + refill)
                tenant._refilled_at = now_seconds
                if tenant._tokens <= 0:
                    wait = math.ceil(-tenant._tokens / rate) or 1
                    raise LimitExceeded(
                        f"tenant {tenant.name!r} is over its rate of {rate:g} samples/s; retry in {wait} s",
                        status=429,
                        retry_after_seconds=wait,
                    )
            if tenant.max_active_series is not None:
                series = tenant._series
                hashes = {hash(k) for k in keys}
                new = sum(1 for h in hashes if h not in series)
                if new and len(series) + new > tenant.max_active_series:
                    horizon = now_seconds - self.config.active_window_seconds
                    for h in [h for h, seen in series.items() if seen < horizon]:
                        del series[h]
                    if len(series) + new > tenant.max_active_series:
                        raise LimitExceeded(
                            f"tenant {tenant.name!r} has {len(series)} active series; {new} new would exceed "
                            f"its limit of {tenant.max_active_series}",
                            status=429,
                            retry_after_seconds=60,
                        )
                for h in hashes:
                    series[h] = now_seconds
            if tenant.samples_per_second is not None:
                tenant._tokens -= samples


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
