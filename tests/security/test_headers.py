"""Security headers on every response; HSTS only over https (or a trusted proxy's https)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from watchkeeper.security.scopes import required_scope

from .conftest import tokens


def test_every_response_carries_the_headers_refusals_too(serve_with: Callable[..., str]) -> None:
    base = serve_with(security={"tokens": tokens()}, slo={"status_pages": [{"slug": "public"}]})
    for path, status in (
        ("/status/public", 200),
        ("/api/v1/labels", 401),
        ("/-/healthy", 200),
        ("/nope", 401),
    ):
        r = httpx.get(base + path)
        assert r.status_code == status, path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
        assert "unsafe-eval" not in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "same-origin"
        assert r.headers["x-frame-options"] == "DENY"
        assert "strict-transport-security" not in r.headers  # plain http


def test_hsts_only_when_a_trusted_proxy_says_https(serve_with: Callable[..., str]) -> None:
    trusting = serve_with(security={"trusted_proxies": ["127.0.0.1"]})
    https = {"X-Forwarded-Proto": "https"}
    assert (
        httpx.get(trusting + "/-/healthy", headers=https)
        .headers["strict-transport-security"]
        .startswith("max-age=31536000")
    )
    assert "strict-transport-security" not in httpx.get(trusting + "/-/healthy").headers
    untrusting = serve_with(security={"trusted_proxies": ["192.0.2.1"]})
    assert "strict-transport-security" not in httpx.get(untrusting + "/-/healthy", headers=https).headers


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/-/healthy", None),
        ("GET", "/status/public", None),
        ("GET", "/static/wk/common.js", None),
        ("POST", "/login", None),
        ("GET", "/metrics", None),
        ("GET", "/dashboards", "read"),
        ("POST", "/api/v1/query_range", "read"),
        ("GET", "/api/v2/silences", "read"),
        ("POST", "/api/v2/silences", "write"),
        ("DELETE", "/api/v2/silence/x", "write"),
        ("POST", "/api/dashboards/import", "write"),
        ("POST", "/api/v1/write", "write"),
        ("PUT", "/metrics/job/batch", "write"),
        ("POST", "/api/v2/alerts", "write"),
        ("POST", "/-/reload", "admin"),
        ("POST", "/api/v2/notifications/requeue", "admin"),
        ("POST", "/api/v1/admin/backup", "admin"),
        ("GET", "/api/v1/admin/anything", "admin"),
    ],
)
def test_the_scope_each_request_needs(method: str, path: str, scope: str | None) -> None:
    assert required_scope(method, path) == scope
    assert required_scope("GET", "/metrics", public_metrics=False) == "read"
