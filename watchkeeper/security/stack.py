"""Wiring: the security middleware, the login routes and the shared token registry of one app.

>>> app = create_app(settings)          # create_app calls this once  # doctest: +SKIP
>>> install_security(app, settings, ingest_auth)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import sqlalchemy as sa
from fastapi import FastAPI, Request

from watchkeeper.collector.auth import IngestAuth, is_loopback
from watchkeeper.config import Settings
from watchkeeper.security.addresses import parse_networks
from watchkeeper.security.gate import Gatekeeper, SecurityGate
from watchkeeper.security.headers import SecurityHeaders, is_https
from watchkeeper.security.login import login_router
from watchkeeper.security.sessions import SessionSigner
from watchkeeper.security.tokens import TokenRecord, TokenRegistry, TokenStore, hash_token
from watchkeeper.tsdb.schema import make_engine, sqlite_url

log = logging.getLogger("watchkeeper.security")


def configured_tokens(settings: Settings) -> list[TokenRecord]:
    """The tokens of ``security.tokens`` and ``ingest_auth.tokens``, as hashes."""
    records = []
    for t in settings.security.tokens:
        digest = t.token_sha256.lower() if t.token_sha256 else hash_token(t.token.get_secret_value())  # type: ignore[union-attr]
        records.append(TokenRecord(t.name, digest, tuple(t.scopes), t.tenant))
    for i in settings.ingest_auth.tokens:
        records.append(TokenRecord(f"ingest:{i.tenant}", i.digest_hex(), tuple(i.scopes), i.tenant))
    return records


def install_security(app: FastAPI, settings: Settings, ingest_auth: IngestAuth) -> Gatekeeper:
    """Add the gate and the headers middleware to `app` (outermost), the login routes when users
    are configured, and let `ingest_auth` accept every API token with the ``write`` scope."""
    sec = settings.security
    store = TokenStore(make_engine(_database_url(settings)))
    app_state = getattr(app.state, "watchkeeper", None)  # create_app's AppState: is the store open?
    registry = TokenRegistry(
        configured_tokens(settings), store, ready=lambda: getattr(app_state, "storage", True) is not None
    )
    ingest_auth.resolver = registry
    _first_read(registry, settings)
    secret = sec.session_secret.get_secret_value().encode() if sec.session_secret else secrets.token_bytes(32)
    signer = SessionSigner(secret, max_age_seconds=sec.session_max_age_seconds)
    proxy = sec.proxy_auth
    trusted = parse_networks(sec.trusted_proxies)
    gatekeeper = Gatekeeper(
        registry=registry,
        signer=signer,
        users={u.name: u.role for u in sec.users},
        bind_host=settings.host,
        open_on_loopback=sec.open_on_loopback,
        anonymous_role=sec.anonymous_role,
        proxy_networks=parse_networks(proxy.trusted_proxies, setting="proxy_auth.trusted_proxies")
        if proxy
        else (),
        proxy_user_header=proxy.user_header if proxy else None,
        proxy_role_header=proxy.role_header if proxy else None,
        proxy_default_role=proxy.default_role if proxy else "viewer",
        public_metrics=sec.public_metrics,
    )
    if sec.users:
        users = {u.name: (u.password_hash.get_secret_value(), u.role) for u in sec.users}
        https_proxies = trusted + gatekeeper.proxy_networks

        def request_is_https(request: Request) -> bool:
            return is_https(request.scope, https_proxies)

        app.include_router(login_router(users, signer, is_https=request_is_https))
    app.add_middleware(SecurityGate, gatekeeper=gatekeeper, max_request_bytes=sec.max_request_bytes)
    app.add_middleware(
        SecurityHeaders,
        trusted_proxies=trusted + gatekeeper.proxy_networks,
        hsts_max_age_seconds=sec.hsts_max_age_seconds,
    )
    if not is_loopback(settings.host) and not (registry.has_tokens() or sec.users or proxy):
        log.warning(
            "no API tokens, users or proxy_auth configured on a non-loopback bind: anonymous requests "
            "may only read; see docs/security.md",
            extra={"host": settings.host, "anonymous_role": sec.anonymous_role},
        )
    app.state.security = gatekeeper
    return gatekeeper


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
