"""Sending a rendered request: HTTP with httpx, email with smtplib; the answer classified for retry.

2xx is delivered; 429, 408 and 5xx (and network errors) are retried, honouring ``Retry-After``
(seconds or an HTTP date) and the ``retry_after`` that Discord and Telegram put in their JSON;
any other 4xx is permanent (the payload is wrong, retrying cannot help) and goes to the dead letter.

>>> retry_after_ms({"retry-after": "7"}, b"", now_ms=0)
7000
>>> retry_after_ms({}, b'{"ok":false,"parameters":{"retry_after":3}}', now_ms=0)
3000
"""

from __future__ import annotations

import json
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import lru_cache

import certifi
import httpx

from watchkeeper.alerting.receivers.base import EmailRequest, HttpRequest, Request


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    ok: bool
    status: int | None
    body: str
    retry_after_ms: int | None = None
    permanent: bool = False


@lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certifi.where())


def http_client() -> httpx.Client:
    """The client receivers are sent with: no redirects followed, one TLS context per process
    (loading the CA bundle costs ~0.3 s, too much for every dispatcher)."""
    return httpx.Client(follow_redirects=False, verify=_tls_context())


def retry_after_ms(headers: Mapping[str, str], body: bytes, *, now_ms: int) -> int | None:
    value = {k.lower(): v for k, v in headers.items()}.get("retry-after")
    if value:
        value = value.strip()
        try:
            return max(int(float(value) * 1000), 0)
        except ValueError:
            try:
                return max(int(parsedate_to_datetime(value).timestamp() * 1000) - now_ms, 0)
            except (TypeError, ValueError):
                pass
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, dict):
        seconds = data.get("retry_after", (data.get("parameters") or {}).get("retry_after"))
        if isinstance(seconds, int | float) and not isinstance(seconds, bool):
            return max(int(seconds * 1000), 0)
    return None


def send_http(
    client: httpx.Client, req: HttpRequest, *, timeout_seconds: float, now_ms: int, idempotency_key: str = ""
) -> DeliveryResult:
    headers = dict(req.headers)
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    try:
        resp = client.post(req.url, content=req.body, headers=headers, timeout=timeout_seconds)
    except httpx.HTTPError as exc:
        return DeliveryResult(ok=False, status=None, body=f"{type(exc).__name__}: {exc}")
    text = resp.text[:2000]
    if 200 <= resp.status_code < 300:
        return DeliveryResult(ok=True, status=resp.status_code, body=text)
    retryable = resp.status_code in (408, 425, 429) or resp.status_code >= 500
    return DeliveryResult(
        ok=False,
        status=resp.status_code,
        body=text,
        retry_after_ms=retry_after_ms(resp.headers, resp.content, now_ms=now_ms) if retryable else None,
        permanent=not retryable,
    )


def send_email(req: EmailRequest, *, timeout_seconds: float) -> DeliveryResult:
    host, _, port = req.smarthost.rpartition(":")
    try:
        with smtplib.SMTP(host or req.smarthost, int(port or 25), timeout=timeout_seconds) as smtp:
            if req.require_tls:
                smtp.starttls()
            if req.auth_username:
                smtp.login(req.auth_username, req.auth_password or "")
            refused = smtp.sendmail(req.sender, list(req.to), req.message)
    except smtplib.SMTPResponseException as exc:
        permanent = 500 <= exc.smtp_code < 600
        return DeliveryResult(ok=False, status=exc.smtp_code, body=str(exc.smtp_error), permanent=permanent)
    except (OSError, smtplib.SMTPException) as exc:
        return DeliveryResult(ok=False, status=None, body=f"{type(exc).__name__}: {exc}")
    if refused:
        return DeliveryResult(ok=False, status=None, body=f"refused: {refused}")
    return DeliveryResult(ok=True, status=250, body="accepted")


def send(
    client: httpx.Client, req: Request, *, timeout_seconds: float, now_ms: int, idempotency_key: str = ""
) -> DeliveryResult:
    if isinstance(req, EmailRequest):
        return send_email(req, timeout_seconds=timeout_seconds)
    return send_http(
        client, req, timeout_seconds=timeout_seconds, now_ms=now_ms, idempotency_key=idempotency_key
    )
