"""Security headers on every response.

The Content-Security-Policy lets pages run only scripts served by watchkeeper itself: no inline
``<script>``, no ``on*=`` handlers, no ``eval``, no other origin. Data for a page's script travels
in ``<script type="application/json">`` blocks, which are data, not code. Styles allow
``'unsafe-inline'``: Plotly sets ``style`` attributes and injects a ``<style>`` element when it
draws, and the public status page carries its own stylesheet; inline CSS cannot run code, so the
script policy is what stops injection. ``frame-ancestors 'none'`` (and ``X-Frame-Options``) keep
every page out of other sites' frames. HSTS is sent only on https (seen directly, or in
``X-Forwarded-Proto`` from a trusted proxy): on plain http it would be ignored, and on a laptop it
would pin ``localhost`` to https.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from watchkeeper.security.addresses import Network, address_in

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

_STATIC_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


def is_https(scope: MutableMapping[str, Any], trusted_proxies: tuple[Network, ...]) -> bool:
    """Whether the client reached us over https (directly or through a trusted proxy)."""
    if scope.get("scheme") == "https":
        return True
    client = scope.get("client")
    if not address_in(client[0] if client else None, trusted_proxies):
        return False
    for name, value in scope.get("headers", []):
        if name.lower() == b"x-forwarded-proto":
            return bool(value.split(b",")[0].strip().lower() == b"https")
    return False


@dataclass(frozen=True, slots=True)
class HeaderPolicy:
    """Whose ``X-Forwarded-Proto`` is believed, and the HSTS max-age sent on https."""

    trusted_proxies: tuple[Network, ...] = ()
    hsts_max_age_seconds: int = 31_536_000

    @property
    def hsts(self) -> bytes:
        return f"max-age={self.hsts_max_age_seconds}; includeSubDomains".encode()


class SecurityHeaders:
    """``app.add_middleware(SecurityHeaders, policy=lambda: current_policy)``: the policy in force
    is asked for per request (a reload replaces it); by default no proxy is trusted. A header the
    route set itself is kept."""

    def __init__(self, app: Callable[..., Any], *, policy: Callable[[], HeaderPolicy] = HeaderPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = list(_STATIC_HEADERS)
        policy = self.policy()
        if is_https(scope, policy.trusted_proxies):
            extra.append((b"strict-transport-security", policy.hsts))

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend((n, v) for n, v in extra if n not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
