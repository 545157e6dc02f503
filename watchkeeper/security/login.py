"""The web UI's login: ``GET /login`` (the form), ``POST /login``, ``GET|POST /logout``.

The form carries a CSRF token that must match a cookie set with the form (double submit), so
another site cannot log a browser in as someone else. A successful login sets the signed session
cookie (HttpOnly, SameSite=Lax, Secure on https) and ``wk_csrf``, which the UI's script echoes as
``X-CSRF-Token`` on state-changing requests.
"""

from __future__ import annotations

import html
import secrets
import time
from collections.abc import Callable, Mapping
from urllib.parse import parse_qs

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from watchkeeper.security.passwords import hash_password, verify_password
from watchkeeper.security.sessions import CSRF_COOKIE, CSRF_FIELD, SESSION_COOKIE, SessionSigner
from watchkeeper.security.throttle import LoginThrottle

LOGIN_CSRF_COOKIE = "wk_login_csrf"
_MAX_FORM_BYTES = 16 * 1024
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16), n=2**14)
"""Checked when the user is unknown, so a wrong name costs as long as a wrong password."""


def login_router(
    users: Callable[[], Mapping[str, tuple[str, str]]],
    signer: Callable[[], SessionSigner],
    *,
    is_https: Callable[[Request], bool],
    throttle: LoginThrottle | None = None,
) -> APIRouter:
    """`users()`: name -> (password hash, role), and `signer()`, as the loaded config has them now
    (a reload changes both; with no users the login answers 404); `throttle` limits wrong
    passwords per user name."""
    router = APIRouter()
    throttle = throttle or LoginThrottle()

    @router.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_form(request: Request, next: str = "/") -> Response:
        if not users():
            return _no_users()
        return _form(request, _safe_next(next), error=None, status=200, secure=is_https(request))

    @router.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        known_users, session_signer = users(), signer()
        if not known_users:
            return _no_users()
        body = await request.body()
        if len(body) > _MAX_FORM_BYTES:
            return Response("login form too large\n", status_code=413)
        fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        target = _safe_next(fields.get("next", "/"))
        secure = is_https(request)
        expected = request.cookies.get(LOGIN_CSRF_COOKIE)
        if not expected or not secrets.compare_digest(fields.get(CSRF_FIELD, ""), expected):
            return _form(
                request, target, error="The form expired; please try again.", status=403, secure=secure
            )
        name, password = fields.get("username", ""), fields.get("password", "")
        wait = throttle.retry_after(name, now_seconds=time.monotonic())
        if wait is not None:
            response = _form(
                request,
                target,
                error=f"Too many failed logins for this user; try again in {wait} s.",
                status=429,
                secure=secure,
            )
            response.headers["Retry-After"] = str(wait)
            return response
        known = known_users.get(name)
        encoded = known[0] if known is not None else _DUMMY_HASH
        ok = await anyio.to_thread.run_sync(verify_password, password, encoded)
        if known is None or not ok:
            throttle.fail(name, now_seconds=time.monotonic())
            return _form(request, target, error="Invalid user name or password.", status=401, secure=secure)
        throttle.succeed(name)
        response = RedirectResponse(target, status_code=303)
        cookie = session_signer.issue(name, known[1], now_seconds=time.time())
        session = session_signer.read(cookie, now_seconds=time.time())
        if session is None:  # just issued with our own key: cannot happen
            raise RuntimeError("a fresh session cookie did not verify")
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=session_signer.max_age_seconds,
            httponly=True,
            samesite="lax",
            secure=secure,
        )
        response.set_cookie(
            CSRF_COOKIE,
            session.csrf,
            max_age=session_signer.max_age_seconds,
            samesite="strict",
            secure=secure,
        )
        response.delete_cookie(LOGIN_CSRF_COOKIE)
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        response.delete_cookie(CSRF_COOKIE)
        return response

    router.add_api_route("/logout", logout, methods=["GET", "POST"], include_in_schema=False)
    return router


def _no_users() -> Response:
    return Response("no UI users are configured (security.users)\n", status_code=404, media_type="text/plain")


def _safe_next(target: str) -> str:
    """Only a path on this server (no ``//host`` or ``https://``: no open redirect)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _form(request: Request, target: str, *, error: str | None, status: int, secure: bool) -> Response:
    token = secrets.token_urlsafe(24)
    message = f'<p class="login-error" role="alert">{html.escape(error)}</p>' if error else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in · watchkeeper</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/wk/style.css"></head>
<body><main class="login">
<h1>watchkeeper</h1>{message}
<form method="post" action="/login" id="login-form">
<input type="hidden" name="{CSRF_FIELD}" value="{token}">
<input type="hidden" name="next" value="{html.escape(target)}">
<p><label>User name<br><input name="username" autocomplete="username" required autofocus></label></p>
<p><label>Password<br>
<input name="password" type="password" autocomplete="current-password" required></label></p>
<p><button type="submit">Log in</button></p>
</form></main></body></html>
"""
    response = HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, max_age=3600, httponly=True, samesite="strict", secure=secure
    )
    return response
