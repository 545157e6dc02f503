"""Scopes, roles, and the scope a request needs.

A token carries scopes; a UI user has a role, which stands for a set of scopes. Every request
needs one scope (or none, for the few anonymous pages):

| request                                                     | scope  |
| ----------------------------------------------------------- | ------ |
| ``/-/healthy``, ``/-/ready``, ``/status/<slug>``, ``/login``, static assets | none |
| ingest (remote-write, OTLP, push, import, Pushgateway), ``POST /api/v2/alerts`` | write |
| ``POST /-/reload``, ``/api/v1/admin/*`` (backups), ``POST /api/v2/notifications/requeue`` | admin |
| any other ``POST``/``PUT``/``PATCH``/``DELETE`` (silences, dashboard import, receiver test) | write |
| everything else, and POSTed queries (``/api/v1/query`` ...) | read   |

>>> required_scope("GET", "/api/v1/query")
'read'
>>> required_scope("DELETE", "/api/v2/silence/abc")
'write'
>>> required_scope("GET", "/status/public") is None
True
"""

from __future__ import annotations

from typing import Literal

Scope = Literal["read", "write", "admin"]
Role = Literal["viewer", "editor", "admin"]

SCOPES: tuple[Scope, ...] = ("read", "write", "admin")
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "editor": frozenset({"read", "write"}),
    "admin": frozenset({"read", "write", "admin"}),
}

_ANONYMOUS_EXACT = frozenset({"/-/healthy", "/-/ready", "/login", "/logout", "/favicon.ico"})
_ANONYMOUS_PREFIXES = ("/status/", "/static/")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_READ_POSTS = frozenset(
    {
        "/api/v1/query",
        "/api/v1/query_range",
        "/api/v1/series",
        "/api/v1/labels",
        "/api/v1/query_exemplars",
        "/api/v1/format_query",
    }
)
_INGEST_EXACT = frozenset(
    {
        "/api/v1/write",
        "/v1/metrics",
        "/api/v1/otlp/v1/metrics",
        "/api/v1/push",
        "/api/v2/alerts",
    }
)
_INGEST_PREFIXES = ("/api/v1/import/", "/metrics/")
_ADMIN_EXACT = frozenset({"/api/v2/notifications/requeue"})
_ADMIN_PREFIXES = ("/-/", "/api/v1/admin/")


def is_safe(method: str) -> bool:
    """GET, HEAD and OPTIONS change nothing (CSRF checks skip them)."""
    return method.upper() in _SAFE_METHODS


def required_scope(method: str, path: str, *, public_metrics: bool = True) -> Scope | None:
    """The scope a request needs, or None when anyone may make it."""
    method = method.upper()
    if path in _ANONYMOUS_EXACT or path.startswith(_ANONYMOUS_PREFIXES):
        return None
    if path == "/metrics" and method in _SAFE_METHODS:
        return None if public_metrics else "read"
    if path.startswith("/api/v1/admin/"):  # Prometheus' admin API (backups): any method
        return "admin"
    if method in _SAFE_METHODS or path in _READ_POSTS:
        return "read"
    if path.startswith(_ADMIN_PREFIXES) or path in _ADMIN_EXACT:
        return "admin"
    return "write"


def is_ingest(path: str) -> bool:
    """Ingest paths have their own (larger) body limit."""
    return path in _INGEST_EXACT or path.startswith(_INGEST_PREFIXES)


def scopes_of_role(role: str) -> frozenset[str]:
    """The scopes a UI role stands for (an unknown role has none)."""
    return ROLE_SCOPES.get(role, frozenset())


class Principal:
    """Who made a request and what they may do.

    >>> Principal("alice", scopes_of_role("viewer"), kind="user").may("write")
    False
    """

    __slots__ = ("csrf", "kind", "name", "scopes", "tenant")

    def __init__(
        self,
        name: str,
        scopes: frozenset[str],
        *,
        kind: Literal["token", "user", "proxy", "anonymous"],
        tenant: str | None = None,
        csrf: str | None = None,
    ) -> None:
        self.name, self.scopes, self.kind, self.tenant, self.csrf = name, scopes, kind, tenant, csrf

    def may(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def role(self) -> str:
        """The highest role whose scopes this principal has (for the UI)."""
        for role in ("admin", "editor", "viewer"):
            if ROLE_SCOPES[role] <= self.scopes:
                return role
        return "none"

    def __repr__(self) -> str:
        return f"Principal({self.name!r}, {sorted(self.scopes)}, kind={self.kind!r})"
