"""A running server re-reads its ``security`` section (and ingest limits) on ``POST /-/reload`` and
SIGHUP: tokens, users and roles, proxy headers, HSTS, size limits and the outbound allow-list take
effect on the next request; ``ingest_auth`` is logged as needing a restart."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.collector.encode import body
from tests.integration.conftest import WRITE_HEADERS, Server
from watchkeeper.config import Settings

from .conftest import ADMIN_TOKEN, READ_TOKEN, WRITE_TOKEN, running, tokens, users
from .test_gate import SILENCE, bearer
from .test_login import csrf, login

NEW_ADMIN_TOKEN = "new-admin-token-0123456789abcdef"


class Deployment:
    """A server started from a config file in `directory`; `reload(**security)` rewrites the file
    and asks the server to reload it."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "watchkeeper.yml"
        self.data_dir = directory / "data"
        self.base = ""
        self.admin = ADMIN_TOKEN

    def write(self, **sections: Any) -> None:
        base = {"data_dir": str(self.data_dir), "scrape_configs": [], "wal_fsync": False}
        self.path.write_text(yaml.safe_dump({**base, **sections}))

    def reload(self, **sections: Any) -> httpx.Response:
        """Write the file, then ``POST /-/reload`` with the admin token of the configuration in force."""
        self.write(**sections)
        return httpx.post(self.base + "/-/reload", headers=bearer(self.admin), timeout=30)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    contexts: list[Any] = []

    def start(**sections: Any) -> Deployment:
        d = Deployment(tmp_path / f"server{len(contexts)}")
        d.path.parent.mkdir()
        d.write(**sections)
        ctx = running(Settings.load(d.path))
        d.base = ctx.__enter__()
        contexts.append(ctx)
        return d

    yield start
    for ctx in reversed(contexts):
        ctx.__exit__(None, None, None)


def admin_token(token: str = ADMIN_TOKEN) -> dict[str, Any]:
    return {"name": "admin", "token": token, "scopes": ["read", "write", "admin"]}


def test_tokens_are_added_removed_and_rescoped(deployment: Callable[..., Deployment]) -> None:
    d = deployment()  # nothing configured on loopback: open
    assert httpx.post(d.base + "/api/v2/silences", json=SILENCE).status_code == 200
    assert d.reload(security={"tokens": tokens()}).status_code == 200
    assert httpx.get(d.base + "/api/v1/labels").status_code == 401, "tokens close the open default"
    assert httpx.get(d.base + "/api/v1/labels", headers=bearer(READ_TOKEN)).status_code == 200
    refused = httpx.post(d.base + "/api/v2/silences", json=SILENCE, headers=bearer(READ_TOKEN))
    assert refused.status_code == 403

    reader_writes = {"name": "reader", "token": READ_TOKEN, "scopes": ["read", "write"]}
    assert d.reload(security={"tokens": [reader_writes, admin_token(NEW_ADMIN_TOKEN)]}).status_code == 200
    assert (
        httpx.post(d.base + "/api/v2/silences", json=SILENCE, headers=bearer(READ_TOKEN)).status_code == 200
    )
    assert httpx.get(d.base + "/api/v1/labels", headers=bearer(WRITE_TOKEN)).status_code == 401, "removed"
    assert httpx.post(d.base + "/-/reload", headers=bearer(ADMIN_TOKEN)).status_code == 401, "replaced"
    assert httpx.post(d.base + "/-/reload", headers=bearer(NEW_ADMIN_TOKEN)).status_code == 200


def test_users_and_roles_change_for_open_sessions(deployment: Callable[..., Deployment]) -> None:
    d = deployment(security={"tokens": [admin_token()]})
    assert httpx.get(d.base + "/login").status_code == 404, "no users yet"
    assert d.reload(security={"tokens": [admin_token()], "users": users()}).status_code == 200
    vera = login(d.base, "vera")
    assert vera.post("/api/v2/silences", json=SILENCE, headers=csrf(vera)).status_code == 403

    promoted = [{**u, "role": "editor"} if u["name"] == "vera" else u for u in users()]
    assert d.reload(security={"tokens": [admin_token()], "users": promoted}).status_code == 200
    assert vera.post("/api/v2/silences", json=SILENCE, headers=csrf(vera)).status_code == 200, (
        "the same session, with the role the config gives now"
    )

    others = [u for u in users() if u["name"] != "vera"]
    assert d.reload(security={"tokens": [admin_token()], "users": others}).status_code == 200
    assert vera.get("/api/v1/labels").status_code == 401, "a removed user's session ends"
    ada = login(d.base, "ada")
    assert ada.get("/api/v1/labels").status_code == 200


def test_sessions_survive_a_reload_unless_the_session_key_changes(
    deployment: Callable[..., Deployment],
) -> None:
    d = deployment(security={"tokens": [admin_token()], "users": users()})  # a random key per process
    ada = login(d.base, "ada")
    assert d.reload(security={"tokens": [admin_token()], "users": users()}).status_code == 200
    assert ada.get("/api/v1/labels").status_code == 200, "the random key is kept"

    secret = "a-session-secret-0123456789abcdef"
    assert (
        d.reload(security={"tokens": [admin_token()], "users": users(), "session_secret": secret}).status_code
        == 200
    )
    assert ada.get("/api/v1/labels").status_code == 401, "signed with the previous key"
    ada = login(d.base, "ada")
    assert (
        d.reload(security={"tokens": [admin_token()], "users": users(), "session_secret": secret}).status_code
        == 200
    )
    assert ada.get("/api/v1/labels").status_code == 200


def test_proxy_identity_headers_follow_the_config(deployment: Callable[..., Deployment]) -> None:
    d = deployment(security={"tokens": [admin_token()]})
    as_bob = {"X-Remote-User": "bob", "X-Remote-Role": "editor"}
    assert httpx.get(d.base + "/api/v1/labels", headers=as_bob).status_code == 401

    proxy = {
        "user_header": "X-Remote-User",
        "role_header": "X-Remote-Role",
        "trusted_proxies": ["127.0.0.1/32"],
    }
    assert d.reload(security={"tokens": [admin_token()], "proxy_auth": proxy}).status_code == 200
    assert httpx.post(d.base + "/api/v2/silences", json=SILENCE, headers=as_bob).status_code == 200

    moved = {**proxy, "user_header": "X-Auth-User"}
    assert d.reload(security={"tokens": [admin_token()], "proxy_auth": moved}).status_code == 200
    assert httpx.get(d.base + "/api/v1/labels", headers=as_bob).status_code == 401, "the old header"
    assert httpx.get(d.base + "/api/v1/labels", headers={"X-Auth-User": "bob"}).status_code == 200


def test_hsts_and_trusted_proxies_follow_the_config(deployment: Callable[..., Deployment]) -> None:
    d = deployment()
    https = {"X-Forwarded-Proto": "https"}
    assert "strict-transport-security" not in httpx.get(d.base + "/-/healthy", headers=https).headers
    d.reload(security={"trusted_proxies": ["127.0.0.1/32"], "hsts_max_age_seconds": 600})
    hsts = httpx.get(d.base + "/-/healthy", headers=https).headers.get("strict-transport-security")
    assert hsts == "max-age=600; includeSubDomains"


def test_request_and_ingest_size_limits_follow_the_config(deployment: Callable[..., Deployment]) -> None:
    d = deployment()
    big = {**SILENCE, "comment": "x" * 5000}
    samples = body(
        [
            ([("__name__", "wk_reload_limit"), ("i", str(i))], [(int(time.time() * 1000), 1.0)])
            for i in range(50)
        ]
    )
    assert httpx.post(d.base + "/api/v2/silences", json=big).status_code == 200
    assert httpx.post(d.base + "/api/v1/write", content=samples, headers=WRITE_HEADERS).status_code == 204

    r = d.reload(security={"max_request_bytes": 2000}, limits={"max_body_bytes": 100})
    assert r.status_code == 200, r.text
    refused = httpx.post(d.base + "/api/v2/silences", json=big)
    assert refused.status_code == 413 and "2000 bytes" in refused.json()["error"]
    ingest = httpx.post(d.base + "/api/v1/write", content=samples, headers=WRITE_HEADERS)
    assert ingest.status_code == 413 and "100 bytes" in ingest.text


def test_a_file_the_allow_list_refuses_is_not_loaded(deployment: Callable[..., Deployment]) -> None:
    def alerting(*hosts: str) -> dict[str, Any]:
        receivers = [{"name": h, "webhook_configs": [{"url": f"http://{h}:9/hook"}]} for h in hosts]
        return {"route": {"receiver": hosts[0]}, "receivers": receivers}

    d = deployment(alerting=alerting("127.0.0.1"), security={"outbound_allow": ["127.0.0.1"]})

    def receivers() -> list[str]:
        return sorted(r["name"] for r in httpx.get(d.base + "/api/v2/receivers").json())

    refused = d.reload(
        alerting=alerting("127.0.0.1", "hooks.example.org"), security={"outbound_allow": ["127.0.0.1"]}
    )
    assert refused.status_code == 500
    assert "'hooks.example.org'" in refused.json()["error"] and "outbound_allow" in refused.json()["error"]
    assert receivers() == ["127.0.0.1"], "the previous configuration stays"

    allowed = {"outbound_allow": ["127.0.0.1", "*.example.org"]}
    assert d.reload(alerting=alerting("127.0.0.1", "hooks.example.org"), security=allowed).status_code == 200
    assert receivers() == ["127.0.0.1", "hooks.example.org"]

    tightened = d.reload(
        alerting=alerting("127.0.0.1", "hooks.example.org"), security={"outbound_allow": ["127.0.0.1"]}
    )
    assert tightened.status_code == 500 and receivers() == ["127.0.0.1", "hooks.example.org"]


def test_an_ingest_auth_change_is_logged_as_needing_a_restart(
    deployment: Callable[..., Deployment], caplog: pytest.LogCaptureFixture
) -> None:
    def ingest_auth(token: str) -> dict[str, Any]:
        return {"tokens": [{"token": token, "tenant": "shop", "scopes": ["write"]}]}

    d = deployment(security={"tokens": [admin_token()]}, ingest_auth=ingest_auth(WRITE_TOKEN))
    caplog.set_level(logging.INFO, logger="watchkeeper.security")
    assert (
        d.reload(security={"tokens": [admin_token()]}, ingest_auth=ingest_auth(WRITE_TOKEN)).status_code
        == 200
    )
    assert not [r for r in caplog.records if "restart" in r.getMessage()]

    assert (
        d.reload(
            security={"tokens": [admin_token()]}, ingest_auth=ingest_auth("another-ingest-token-0123")
        ).status_code
        == 200
    )
    restart = [r for r in caplog.records if "restart" in r.getMessage()]
    assert len(restart) == 1 and "ingest_auth" in restart[0].getMessage()
    assert restart[0].levelno == logging.WARNING
    samples = body([([("__name__", "wk_reload_ingest")], [(int(time.time() * 1000), 1.0)])])
    kept = httpx.post(
        d.base + "/api/v1/write", content=samples, headers={**WRITE_HEADERS, **bearer(WRITE_TOKEN)}
    )
    assert kept.status_code == 204, "the tokens loaded at start stay until the restart"


def test_sighup_reloads_the_security_section(tmp_path: Path) -> None:
    config = tmp_path / "watchkeeper.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": [], "security": {"tokens": [admin_token()]}}))
    server = Server(tmp_path / "data", extra_args=["--config", str(config)])
    try:
        server.start()
        assert server.client.get("/api/v1/labels", headers=bearer(ADMIN_TOKEN)).status_code == 200
        config.write_text(
            yaml.safe_dump({"scrape_configs": [], "security": {"tokens": [admin_token(NEW_ADMIN_TOKEN)]}})
        )
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while server.client.get("/api/v1/labels", headers=bearer(NEW_ADMIN_TOKEN)).status_code != 200:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        assert server.client.get("/api/v1/labels", headers=bearer(ADMIN_TOKEN)).status_code == 401
        assert "security settings reloaded" in server.log()
    finally:
        server.close()
