"""The ASGI middleware in front of every route: size limit, who is asking, may they, CSRF.

For each HTTP request, in order:

1. a body larger than ``security.max_request_bytes`` is refused with 413 (ingest paths keep their
   own ``limits.max_body_bytes``, enforced by the collector);
2. the caller is found: a bearer token (`TokenRegistry`), a trusted proxy's identity header, a
   session cookie, or nobody;
3. the request's scope (`required_scope`) is checked: nobody -> 401 (a browser asking for a page
   is sent to ``/login``), somebody without the scope -> 403;
4. a state-changing request that relies on ambient credentials (cookie, proxy header, or none) is
   refused when it comes from another origin (``Origin``/``Sec-Fetch-Site``), and a cookie
   session must echo its CSRF token (``X-CSRF-Token`` header or ``csrf_token`` form field).
   Bearer-token requests are exempt: a browser never adds that header by itself.

The principal lands in ``request.state.principal``. The middleware asks for the `Gatekeeper`
in force at the start of each request, so a configuration reload swaps it for the next request
without touching one in flight.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import anyio.to_thread

from watchkeeper.collector.auth import is_loopback
from watchkeeper.security.addresses import Network, address_in
from watchkeeper.security.scopes import Principal, is_ingest, is_safe, required_scope, scopes_of_role
from watchkeeper.security.sessions import CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE, SessionSigner
from watchkeeper.security.tokens import TokenRegistry

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]

ALL_SCOPES = frozenset({"read", "write", "admin"})
INVALID_TOKEN = "invalid bearer token"  # an error message, no password # nosec B105


class _TooLarge(Exception):
    pass


class Gatekeeper:
    """Who a request comes from and what it may send, independent of ASGI (the middleware's pure
    half); one per loaded ``security`` configuration."""

    def __init__(
        self,
        *,
        registry: TokenRegistry,
        signer: SessionSigner,
        users: Mapping[str, str],
        bind_host: str,
        open_on_loopback: bool = True,
        anonymous_role: str | None = None,
        proxy_networks: tuple[Network, ...] = (),
        proxy_user_header: str | None = None,
        proxy_role_header: str | None = None,
        proxy_default_role: str = "viewer",
        public_metrics: bool = True,
        max_request_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.registry, self.signer = registry, signer
        self.users = dict(users)
        """User name -> role (the login checks the password; a session only names the user)."""
        self.bind_host = bind_host
        self.open_on_loopback = open_on_loopback
        self.anonymous_role = anonymous_role
        self.proxy_networks = proxy_networks
        self.proxy_user_header = proxy_user_header.lower() if proxy_user_header else None
        self.proxy_role_header = proxy_role_header.lower() if proxy_role_header else None
        self.proxy_default_role = proxy_default_role
        self.public_metrics = public_metrics
        self.max_request_bytes = max_request_bytes

    def unconfigured(self) -> bool:
        """No tokens, users or proxy: nobody can identify, so anonymous requests decide."""
        return not self.registry.has_tokens() and not self.users and self.proxy_user_header is None

    def is_open(self) -> bool:
        """Nothing configured on a loopback bind: everyone may do everything."""
        return self.open_on_loopback and is_loopback(self.bind_host) and self.unconfigured()

    def identify(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], client_host: str | None, *, now: float
    ) -> Principal | str:
        """The caller's principal, or the reason (401) why the credentials they sent are invalid."""
        open_ = self.is_open()
        authorization = headers.get("authorization")
        if authorization and not open_:
            kind, _, token = authorization.partition(" ")
            if kind.lower() != "bearer" or not token.strip():
                return "unsupported Authorization scheme (expected 'Bearer <token>')"
            record = self.registry.lookup(token.strip())
            if record is None:
                return INVALID_TOKEN
            return record.principal()
        if self.proxy_user_header and address_in(client_host, self.proxy_networks):
            user = headers.get(self.proxy_user_header, "").strip()
            if user:
                role = (
                    headers.get(self.proxy_role_header, "").strip().lower() if self.proxy_role_header else ""
                )
                if role not in ("viewer", "editor", "admin"):
                    role = self.proxy_default_role
                return Principal(user, scopes_of_role(role), kind="proxy")
        session = self.signer.read(cookies.get(SESSION_COOKIE), now_seconds=now)
        if session is not None and session.user in self.users:
            role = self.users[session.user]  # the config's role now, not the one at login
            return Principal(session.user, scopes_of_role(role), kind="user", csrf=session.csrf)
        if open_:
            return Principal("anonymous", ALL_SCOPES, kind="anonymous")
        anonymous = "viewer" if self.unconfigured() else self.anonymous_role
        scopes = scopes_of_role(anonymous) if anonymous else frozenset()
        return Principal("anonymous", scopes, kind="anonymous")

    def required(self, method: str, path: str) -> str | None:
        return required_scope(method, path, public_metrics=self.public_metrics)


class SecurityGate:
    """The middleware: ``app.add_middleware(SecurityGate, gatekeeper=lambda: current_gatekeeper)``."""

    def __init__(self, app: ASGIApp, *, gatekeeper: Callable[[], Gatekeeper]) -> None:
        self.app = app
        self.gatekeeper = gatekeeper

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        gk = self.gatekeeper()
        max_bytes = gk.max_request_bytes
        limited = not is_ingest(path)
        if limited:
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > max_bytes:
                await _refuse(send, path, 413, f"request body over {max_bytes} bytes")
                return
        if gk.registry.is_stale():
            await anyio.to_thread.run_sync(gk.registry.refresh)
        client = scope.get("client")
        cookies, client_host = _cookies(headers), (client[0] if client else None)
        principal = gk.identify(headers, cookies, client_host, now=time.time())
        if principal == INVALID_TOKEN and gk.registry.may_refresh_on_miss():
            await anyio.to_thread.run_sync(gk.registry.refresh)
            principal = gk.identify(headers, cookies, client_host, now=time.time())
        if isinstance(principal, str):
            await _refuse(send, path, 401, principal)
            return
        needed = gk.required(method, path)
        if needed is not None and not principal.may(needed):
            if principal.kind == "anonymous":
                if method == "GET" and gk.users and "text/html" in headers.get("accept", ""):
                    target = path + (
                        "?" + scope["query_string"].decode() if scope.get("query_string") else ""
                    )
                    await _redirect(send, "/login?next=" + quote(target, safe=""))
                    return
                how = "send 'Authorization: Bearer <token>' or log in"
                if gk.unconfigured():
                    how = (
                        f"no API token or user is configured and the server binds {gk.bind_host}, not a "
                        "loopback address, so anonymous requests may only read; create one with "
                        "'watchkeeper tokens create' (docs/security.md)"
                    )
                await _refuse(
                    send,
                    path,
                    401,
                    f"authentication required: this request needs the {needed!r} scope ({how})",
                )
                return
            await _refuse(
                send,
                path,
                403,
                f"{principal.kind} {principal.name!r} ({principal.role}) lacks the {needed!r} scope",
            )
            return
        if not is_safe(method) and principal.kind != "token":
            reason = _cross_origin(headers)
            if reason is not None:
                await _refuse(send, path, 403, reason)
                return
        state = {"started": False, "refused": False}
        too_large = f"request body over {max_bytes} bytes"

        async def refuse_too_large() -> None:
            # answered here, whatever the route makes of the exception (FastAPI turns it into a 400)
            if not state["started"]:
                state["started"] = state["refused"] = True
                await _refuse(send, path, 413, too_large)

        receive = _limited(receive, max_bytes, refuse_too_large) if limited else receive
        if not is_safe(method) and principal.kind == "user" and principal.csrf is not None:
            sent = headers.get(CSRF_HEADER)
            if sent is None and headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"
            ):
                try:
                    body = await _read_body(receive)
                except _TooLarge:
                    return
                values = parse_qs(body.decode("latin-1")).get(CSRF_FIELD)
                sent = values[0] if values else None
                receive = _replay(body, receive)
            if sent != principal.csrf:
                await _refuse(send, path, 403, "missing or wrong CSRF token (reload the page and try again)")
                return
        scope.setdefault("state", {})["principal"] = principal

        async def send_tracking(message: Message) -> None:
            if state["refused"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        with contextlib.suppress(_TooLarge):  # already answered 413
            await self.app(scope, receive, send_tracking)


def _limited(receive: Receive, limit: int, on_too_large: Callable[[], Any]) -> Receive:
    seen = 0

    async def limited_receive() -> Message:
        nonlocal seen
        message: Message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                await on_too_large()
                raise _TooLarge
        return message

    return limited_receive


def _cookies(headers: Mapping[str, str]) -> dict[str, str]:
    raw = headers.get("cookie")
    if not raw:
        return {}
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # a malformed Cookie header means no cookies, not a 500
        return {}
    return {k: m.value for k, m in jar.items()}


def _cross_origin(headers: Mapping[str, str]) -> str | None:
    """Why a state-changing request looks cross-site, or None."""
    if headers.get("sec-fetch-site") == "cross-site":
        return "cross-site request refused (Sec-Fetch-Site: cross-site)"
    origin = headers.get("origin")
    if origin and origin != "null":
        host = urlsplit(origin).netloc
        if host and host != headers.get("x-forwarded-host", headers.get("host")):
            return f"cross-origin request from {origin} refused"
    elif origin == "null":
        return "request from an opaque origin refused"
    return None


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    done = False

    async def replay() -> Message:
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": body, "more_body": False}
        message: Message = await receive()
        return message

    return replay


async def _refuse(send: Send, path: str, status: int, message: str) -> None:
    """The API's error body (JSON under /api/ except ingest, plain text elsewhere)."""
    headers = [(b"cache-control", b"no-store")]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="watchkeeper"'))
    if path.startswith("/api/") and not is_ingest(path):
        error_type = {401: "unauthorized", 403: "forbidden", 413: "bad_data"}.get(status, "bad_data")
        body = json.dumps({"status": "error", "errorType": error_type, "error": message}).encode()
        headers.append((b"content-type", b"application/json"))
    else:
        body = (message + "\n").encode()
        headers.append((b"content-type", b"text/plain; charset=utf-8"))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})
