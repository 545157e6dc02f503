"""Wiring: the security middleware, the login routes and the shared token registry of one app,
and the ``security`` section reloaded while the server runs.

>>> stack = install_security(app, settings, ingest_auth)  # create_app calls this once  # doctest: +SKIP
>>> stack.reload(Settings.load(settings.config_file))     # SIGHUP, POST /-/reload      # doctest: +SKIP

A reload applies from the next request on: the API tokens of ``security.tokens``, the UI users
and their roles (a removed user's session stops working, a changed role applies to open
sessions), ``proxy_auth``, ``anonymous_role``, ``open_on_loopback``, ``public_metrics``,
``max_request_bytes``, ``trusted_proxies`` and the HSTS max-age, and the session key: a new
``session_secret`` or ``session_max_age_seconds`` ends the sessions signed before; unchanged, they
survive (also the random key drawn at start when no secret is set). ``outbound_allow`` is checked
when the file is read, against its receivers and probes: a file it refuses is not loaded at all.
``ingest_auth`` (tokens, tenants and their limits) is held by the ingest endpoints built at start: a
changed section is logged as needing a restart, and the tokens loaded at start stay in force.
The address the server binds is never reloaded.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from fastapi import FastAPI, Request

from watchkeeper.collector.auth import IngestAuth, IngestAuthConfig, is_loopback
from watchkeeper.config import Settings
from watchkeeper.security.addresses import parse_networks
from watchkeeper.security.config import SecurityConfig
from watchkeeper.security.gate import Gatekeeper, SecurityGate
from watchkeeper.security.headers import HeaderPolicy, SecurityHeaders, is_https
from watchkeeper.security.login import login_router
from watchkeeper.security.sessions import SessionSigner
from watchkeeper.security.tokens import TokenRecord, TokenRegistry, TokenStore, hash_token
from watchkeeper.tsdb.schema import make_engine, sqlite_url

log = logging.getLogger("watchkeeper.security")


def configured_tokens(security: SecurityConfig, ingest_auth: IngestAuthConfig) -> list[TokenRecord]:
    """The tokens of ``security.tokens`` and ``ingest_auth.tokens``, as hashes."""
    records = []
    for t in security.tokens:
        digest = t.token_sha256.lower() if t.token_sha256 else hash_token(t.token.get_secret_value())  # type: ignore[union-attr]
        records.append(TokenRecord(t.name, digest, tuple(t.scopes), t.tenant))
    for i in ingest_auth.tokens:
        records.append(TokenRecord(f"ingest:{i.tenant}", i.digest_hex(), tuple(i.scopes), i.tenant))
    return records


@dataclass(frozen=True, slots=True)
class InForce:
    """One loaded ``security`` section, as the middlewares and the login routes use it."""

    config: SecurityConfig
    gatekeeper: Gatekeeper
    headers: HeaderPolicy
    users: Mapping[str, tuple[str, str]]
    """Name -> (password hash, role), for the login form."""
    signer: SessionSigner


class SecurityStack:
    """The security configuration of one app. Everything that uses it asks for `current` per
    request, and `reload` replaces it in one assignment, so a request sees the old or the new
    configuration, never a mix."""

    def __init__(self, settings: Settings, registry: TokenRegistry) -> None:
        self.bind_host = settings.host
        self.registry = registry
        self.ingest_auth = settings.ingest_auth
        sec = settings.security
        self.current = self._in_force(sec, _signer(sec))

    def _in_force(self, sec: SecurityConfig, signer: SessionSigner) -> InForce:
        proxy = sec.proxy_auth
        gatekeeper = Gatekeeper(
            registry=self.registry,
            signer=signer,
            users={u.name: u.role for u in sec.users},
            bind_host=self.bind_host,
            open_on_loopback=sec.open_on_loopback,
            anonymous_role=sec.anonymous_role,
            proxy_networks=parse_networks(proxy.trusted_proxies, setting="proxy_auth.trusted_proxies")
            if proxy
            else (),
            proxy_user_header=proxy.user_header if proxy else None,
            proxy_role_header=proxy.role_header if proxy else None,
            proxy_default_role=proxy.default_role if proxy else "viewer",
            public_metrics=sec.public_metrics,
            max_request_bytes=sec.max_request_bytes,
        )
        headers = HeaderPolicy(
            trusted_proxies=parse_networks(sec.trusted_proxies) + gatekeeper.proxy_networks,
            hsts_max_age_seconds=sec.hsts_max_age_seconds,
        )
        users = {u.name: (u.password_hash.get_secret_value(), u.role) for u in sec.users}
        return InForce(sec, gatekeeper, headers, users, signer)

    def reload(self, settings: Settings) -> None:
        """Apply `settings`' ``security`` section (and log what needs a restart instead)."""
        sec, old = settings.security, self.current.config
        if settings.ingest_auth != self.ingest_auth:
            log.warning(
                "ingest_auth changed, which needs a restart: its tokens, tenants and limits stay as "
                "loaded at start until watchkeeper restarts"
            )
        signer = self.current.signer
        if (sec.session_secret, sec.session_max_age_seconds) != (
            old.session_secret,
            old.session_max_age_seconds,
        ):
            signer = _signer(sec)
            log.warning(
                "session_secret or session_max_age_seconds changed: UI sessions from before the reload end"
            )
        self.registry.configure(configured_tokens(sec, self.ingest_auth))
        self.current = self._in_force(sec, signer)
        log.info(
            "security settings reloaded",
            extra={
                "tokens": len(sec.tokens),
                "users": len(sec.users),
                "proxy_auth": sec.proxy_auth is not None,
            },
        )
        self.warn_if_anonymous_reads()

    def warn_if_anonymous_reads(self) -> None:
        sec = self.current.config
        identified = self.registry.has_tokens() or sec.users or sec.proxy_auth
        if not is_loopback(self.bind_host) and not identified:
            log.warning(
                "no API tokens, users or proxy_auth configured on a non-loopback bind: anonymous requests "
                "may only read; see docs/security.md",
                extra={"host": self.bind_host, "anonymous_role": sec.anonymous_role},
            )


def install_security(app: FastAPI, settings: Settings, ingest_auth: IngestAuth) -> SecurityStack:
    """Add the gate and the headers middleware to `app` (outermost) and the login routes, and let
    `ingest_auth` accept every API token with the ``write`` scope."""
    store = TokenStore(make_engine(_database_url(settings)))
    app_state = getattr(app.state, "watchkeeper", None)  # create_app's AppState: is the store open?
    registry = TokenRegistry(
        configured_tokens(settings.security, settings.ingest_auth),
        store,
        ready=lambda: getattr(app_state, "storage", True) is not None,
    )
    ingest_auth.resolver = registry
    _first_read(registry, settings)
    stack = SecurityStack(settings, registry)

    def request_is_https(request: Request) -> bool:
        return is_https(request.scope, stack.current.headers.trusted_proxies)

    app.include_router(
        login_router(lambda: stack.current.users, lambda: stack.current.signer, is_https=request_is_https)
    )
    app.add_middleware(SecurityGate, gatekeeper=lambda: stack.current.gatekeeper)
    app.add_middleware(SecurityHeaders, policy=lambda: stack.current.headers)
    stack.warn_if_anonymous_reads()
    return stack


def _signer(sec: SecurityConfig) -> SessionSigner:
    secret = sec.session_secret.get_secret_value().encode() if sec.session_secret else secrets.token_bytes(32)
    return SessionSigner(secret, max_age_seconds=sec.session_max_age_seconds)


def _database_url(settings: Settings) -> str:
    return settings.database_url or sqlite_url(settings.data_dir)


def _first_read(registry: TokenRegistry, settings: Settings) -> None:
    """Read a SQLite file's tokens now, before the store opens (a local file answers at once; a
    missing one holds none). A database server is read once the store is open: until then its
    tokens are unknown and the server is closed rather than open."""
    url = sa.engine.make_url(_database_url(settings))
    if url.get_backend_name() != "sqlite":
        return
    if not url.database or not Path(url.database).exists():
        registry.assume_empty()
        return
    registry.refresh()
