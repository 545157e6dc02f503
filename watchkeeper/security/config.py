"""The ``security`` section of ``watchkeeper.yml``.

```yaml
security:
  tokens:                               # API tokens; prefer token_sha256 over a plain token
    - name: grafana
      token_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
      scopes: [read]
  users:                                # the web UI's login (hash: watchkeeper users hash-password)
    - name: alice
      password_hash: "scrypt$16384$8$1$...$..."
      role: admin                       # viewer | editor | admin
  proxy_auth:                           # or: a reverse proxy says who the user is
    user_header: X-Forwarded-User
    role_header: X-Forwarded-Role
    default_role: viewer
    trusted_proxies: ["127.0.0.1/32"]
  session_secret: "..."                 # signs session cookies; set it when running replicas
  outbound_allow: ["hooks.slack.com", "10.0.0.0/8"]
```

API tokens made with ``watchkeeper tokens create`` live (hashed) in the database and need no
entry here. Everything has a default that keeps a loopback laptop install open.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from watchkeeper.security.scopes import Role, Scope

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ApiTokenConfig(BaseModel):
    """One API token of the config file: the token itself or, better, its SHA-256 in hex."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    token: SecretStr | None = None
    token_sha256: str | None = None
    scopes: list[Scope] = ["read"]
    tenant: str | None = None
    """The ingest tenant of a token with the ``write`` scope (default: its name)."""

    @model_validator(mode="after")
    def _one_secret(self) -> ApiTokenConfig:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError("give exactly one of token and token_sha256")
        if self.token is not None and len(self.token.get_secret_value()) < 16:
            raise ValueError("token: use at least 16 characters")
        if self.token_sha256 is not None and not _HEX64.match(self.token_sha256.lower()):
            raise ValueError("token_sha256: expected 64 hex digits (sha256sum of the token)")
        return self


class UserConfig(BaseModel):
    """A web UI user; `password_hash` comes from ``watchkeeper users hash-password``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    password_hash: SecretStr
    role: Role = "viewer"


class ProxyAuthConfig(BaseModel):
    """Identity headers set by a reverse proxy, believed only from `trusted_proxies`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_header: str = "X-Forwarded-User"
    role_header: str | None = "X-Forwarded-Role"
    default_role: Role = "viewer"
    trusted_proxies: list[str] = Field(min_length=1)
    """Addresses or CIDR blocks of the proxies; headers from anyone else are ignored."""


class SecurityConfig(BaseModel):
    """Authentication, authorization and hardening settings (see `watchkeeper.security`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: list[ApiTokenConfig] = []
    users: list[UserConfig] = []
    proxy_auth: ProxyAuthConfig | None = None
    session_secret: SecretStr | None = None
    """Signs session cookies; without it a random secret per process (sessions end at restart)."""
    session_max_age_seconds: int = Field(default=12 * 3600, gt=0)
    open_on_loopback: bool = True
    """With no tokens, users or proxy configured, a loopback bind leaves everything open."""
    anonymous_role: Role | None = None
    """What requests without credentials may do once tokens, users or a proxy are configured
    (None: nothing but the anonymous pages). With nothing configured on a non-loopback bind,
    anonymous requests may read (``viewer``) and never change anything."""
    public_metrics: bool = True
    """``GET /metrics`` (self-monitoring, scraped by watchkeeper itself) needs no credentials."""
    trusted_proxies: list[str] = []
    """Proxies whose ``X-Forwarded-Proto`` is believed (HSTS when it says https)."""
    max_request_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    """Largest body of a non-ingest request (ingest has ``limits.max_body_bytes``)."""
    hsts_max_age_seconds: int = Field(default=31_536_000, ge=0)
    outbound_allow: list[str] | None = None
    """Hosts (``example.com``, ``*.example.com``) and CIDR blocks that webhooks and probes may
    reach; None allows every target."""
