"""Tokens and scopes over real HTTP: no token 401, wrong scope 403, each scope its endpoints."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from contextlib import redirect_stdout
from typing import Any

import httpx

from watchkeeper.cli import main as cli_main

from .conftest import ADMIN_TOKEN, READ_TOKEN, WRITE_TOKEN, tokens

SILENCE = {
    "matchers": [{"name": "alertname", "value": "Down", "isRegex": False, "isEqual": True}],
    "startsAt": "2026-01-01T00:00:00Z",
    "endsAt": "2099-01-01T00:00:00Z",
    "createdBy": "test",
    "comment": "test",
}
STATUS_PAGE = {"status_pages": [{"slug": "public", "title": "Public status"}]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_request_without_a_token_is_refused_with_401(serve_with: Callable[..., str]) -> None:
    base = serve_with(security={"tokens": tokens()})
    r = httpx.get(base + "/api/v1/query", params={"query": "1"})
    assert r.status_code == 401
    assert r.json()["errorType"] == "unauthorized"
    assert "authentication required" in r.json()["error"] and "Bearer" in r.json()["error"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    bad = httpx.get(base + "/api/v1/query", params={"query": "1"}, headers=bearer("not-a-valid-token-at-all"))
    assert bad.status_code == 401 and bad.json()["error"] == "invalid bearer token"
    basic = httpx.get(base + "/api/v1/query", params={"query": "1"}, auth=("user", "pw"))
    assert basic.status_code == 401 and "unsupported Authorization scheme" in basic.json()["error"]


def test_each_scope_opens_its_endpoints_and_no_more(serve_with: Callable[..., str]) -> None:
    base = serve_with(security={"tokens": tokens()})
    query = {"query": "1"}
    for token in (READ_TOKEN, WRITE_TOKEN, ADMIN_TOKEN):
        assert httpx.get(base + "/api/v1/query", params=query, headers=bearer(token)).status_code == 200
        assert httpx.post(base + "/api/v1/query", data=query, headers=bearer(token)).status_code == 200

    refused = httpx.post(base + "/api/v2/silences", json=SILENCE, headers=bearer(READ_TOKEN))
    assert refused.status_code == 403
    assert refused.json()["error"] == "token 'reader' (viewer) lacks the 'write' scope"
    assert httpx.post(base + "/api/v2/silences", json=SILENCE, headers=bearer(WRITE_TOKEN)).status_code == 200

    assert httpx.post(base + "/-/reload", headers=bearer(WRITE_TOKEN)).status_code == 403
    assert httpx.post(base + "/-/reload", headers=bearer(ADMIN_TOKEN)).status_code == 200

    text = b"security_test_metric 1\n"
    url = base + "/api/v1/import/prometheus"
    assert httpx.post(url, content=text).status_code == 401
    assert httpx.post(url, content=text, headers=bearer(READ_TOKEN)).status_code == 403
    assert httpx.post(url, content=text, headers=bearer(WRITE_TOKEN)).status_code == 204
    r = httpx.get(
        base + "/api/v1/query", params={"query": "security_test_metric"}, headers=bearer(READ_TOKEN)
    )
    assert r.json()["data"]["result"][0]["value"][1] == "1"


def test_anonymous_pages_stay_anonymous(serve_with: Callable[..., str]) -> None:
    base = serve_with(security={"tokens": tokens()}, slo=STATUS_PAGE)
    assert httpx.get(base + "/-/healthy").status_code == 200
    assert httpx.get(base + "/-/ready").status_code == 200
    status = httpx.get(base + "/status/public")
    assert status.status_code == 200 and "Public status" in status.text
    assert httpx.get(base + "/metrics").status_code == 200  # watchkeeper scrapes itself
    assert httpx.get(base + "/static/wk/style.css").status_code == 200
    for path in ("/dashboards", "/slo", "/uptime", "/api/v2/silences", "/api/v1/rules", "/api/v1/targets"):
        assert httpx.get(base + path).status_code == 401, path


def test_hashed_config_tokens_and_ingest_tokens_are_one_concept(serve_with: Callable[..., str]) -> None:
    secret = "grafana-token-0123456789"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    base = serve_with(
        security={"tokens": [{"name": "grafana", "token_sha256": digest, "scopes": ["read"]}]},
        ingest_auth={
            "tokens": [{"token": "ingest-token-123456", "tenant": "payments", "scopes": ["write", "read"]}]
        },
    )
    assert httpx.get(base + "/api/v1/labels", headers=bearer(secret)).status_code == 200
    assert (
        httpx.get(base + "/api/v1/labels", headers=bearer(digest)).status_code == 401
    )  # the hash is no token
    # an ingest token reads too, and a read-only API token cannot ingest
    assert httpx.get(base + "/api/v1/labels", headers=bearer("ingest-token-123456")).status_code == 200
    url = base + "/api/v1/import/prometheus"
    assert httpx.post(url, content=b"m 1\n", headers=bearer(secret)).status_code == 403
    assert httpx.post(url, content=b"m 1\n", headers=bearer("ingest-token-123456")).status_code == 204


def test_a_token_made_by_the_cli_works_at_once_and_ingests_as_its_tenant(
    serve_with: Callable[..., str], tmp_path: Any
) -> None:
    base = serve_with(security={"tokens": tokens()})
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli_main(
            ["tokens", "--data-dir", str(tmp_path / "data0"), "create", "--name", "ci", "--scopes", "write"]
        )
    assert code == 0
    token = out.getvalue().strip()
    assert token.startswith("wk_")
    url = base + "/api/v1/import/prometheus"
    posted = httpx.post(url, content=b"ci_metric 1\n", headers=bearer(token))
    assert posted.status_code == 204, posted.text
    # write without read: it cannot query
    assert httpx.get(base + "/api/v1/labels", headers=bearer(token)).status_code == 403


def test_nothing_configured_on_loopback_is_open(serve_with: Callable[..., str]) -> None:
    base = serve_with()
    assert httpx.get(base + "/api/v1/query", params={"query": "1"}).status_code == 200
    assert httpx.post(base + "/api/v2/silences", json=SILENCE).status_code == 200
    assert httpx.post(base + "/-/reload").status_code == 200


def test_nothing_configured_on_a_public_bind_reads_but_never_writes(serve_with: Callable[..., str]) -> None:
    base = serve_with(host="0.0.0.0")  # the settings' bind; the test server stays on loopback
    assert httpx.get(base + "/api/v1/query", params={"query": "1"}).status_code == 200
    r = httpx.post(base + "/api/v2/silences", json=SILENCE)
    assert r.status_code == 401 and "'write' scope" in r.json()["error"]
    assert "binds 0.0.0.0, not a loopback address" in r.json()["error"]
    assert httpx.post(base + "/-/reload").status_code == 401
    assert httpx.post(base + "/api/v1/import/prometheus", content=b"m 1\n").status_code == 401


def test_cross_origin_state_changes_are_refused_even_when_open(serve_with: Callable[..., str]) -> None:
    base = serve_with()
    evil = httpx.post(base + "/api/v2/silences", json=SILENCE, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403 and "cross-origin" in evil.json()["error"]
    site = httpx.post(base + "/-/reload", headers={"Sec-Fetch-Site": "cross-site"})
    assert site.status_code == 403
    same = httpx.post(base + "/api/v2/silences", json=SILENCE, headers={"Origin": base})
    assert same.status_code == 200


def test_request_bodies_are_limited_everywhere(serve_with: Callable[..., str]) -> None:
    base = serve_with(security={"max_request_bytes": 2000})
    big = {**SILENCE, "comment": "x" * 5000}
    r = httpx.post(base + "/api/v2/silences", json=big)
    assert r.status_code == 413 and "2000 bytes" in r.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
        yield b'{"comment": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}'

    chunked = httpx.post(
        base + "/api/v2/silences", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert chunked.status_code == 413
    assert httpx.post(base + "/api/v2/silences", json=SILENCE).status_code == 200


def test_tokens_in_the_database_alone_close_the_open_default(
    serve_with: Callable[..., str], tmp_path: Any
) -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli_main(["tokens", "--data-dir", str(tmp_path / "data0"), "create", "--name", "g"]) == 0
    base = serve_with()  # nothing in the config, loopback: open, were it not for that token
    assert httpx.get(base + "/api/v1/labels").status_code == 401
    assert httpx.get(base + "/api/v1/labels", headers=bearer(out.getvalue().strip())).status_code == 200
