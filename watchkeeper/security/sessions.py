"""Signed session cookies: who is logged in, their role, their CSRF token, until when.

The cookie is ``base64(json) . base64(hmac-sha256)``; nothing in it is secret, only unforgeable.
It is HttpOnly and SameSite=Lax, and Secure when the request came over https.

>>> signer = SessionSigner(b"k" * 32, max_age_seconds=60)
>>> value = signer.issue("alice", "viewer", now_seconds=1000)
>>> signer.read(value, now_seconds=1030).user, signer.read(value, now_seconds=1061)
('alice', None)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

SESSION_COOKIE = "wk_session"
CSRF_COOKIE = "wk_csrf"
"""Readable by the page's script, which sends it back as ``X-CSRF-Token``."""
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    role: str
    csrf: str
    expires_at: int


class SessionSigner:
    """Issues and checks session cookie values with one secret."""

    def __init__(self, secret: bytes, *, max_age_seconds: int) -> None:
        self._key = hashlib.sha256(b"watchkeeper-session\0" + secret).digest()
        self.max_age_seconds = max_age_seconds

    def issue(self, user: str, role: str, *, now_seconds: float) -> str:
        payload = {
            "u": user,
            "r": role,
            "c": secrets.token_urlsafe(24),
            "e": int(now_seconds) + self.max_age_seconds,
        }
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{self._sign(body)}"

    def read(self, value: str | None, *, now_seconds: float) -> Session | None:
        """The session in a cookie value, or None when missing, forged, malformed or expired."""
        if not value or "." not in value:
            return None
        body, _, signature = value.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(body)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            session = Session(str(data["u"]), str(data["r"]), str(data["c"]), int(data["e"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        return session if session.expires_at > now_seconds else None

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
