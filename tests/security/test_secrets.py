"""Secrets never reach the logs or a printed configuration."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from watchkeeper.config import Settings

from .conftest import ADMIN_TOKEN, PASSWORDS, READ_TOKEN, tokens, users


def test_settings_never_print_tokens_or_password_hashes(tmp_path: Path) -> None:
    settings = Settings.load(
        None,
        overrides={
            "data_dir": tmp_path,
            "security": {"tokens": tokens(), "users": users(), "session_secret": "session-secret-xyz"},
            "ingest_auth": {"tokens": [{"token": "ingest-secret-123456", "tenant": "t"}]},
        },
    )
    shown = repr(settings) + str(settings)  # what a log line or traceback would show
    for secret in (
        READ_TOKEN,
        ADMIN_TOKEN,
        "session-secret-xyz",
        "ingest-secret-123456",
        users()[0]["password_hash"],
    ):
        assert secret not in shown


def test_requests_with_tokens_and_passwords_log_none_of_them(
    serve_with: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    base = serve_with(security={"tokens": tokens(), "users": users()})
    wrong = "wrong-token-that-must-not-be-logged"
    httpx.get(base + "/api/v1/labels", headers={"Authorization": f"Bearer {wrong}"})
    httpx.get(base + "/api/v1/labels", headers={"Authorization": f"Bearer {READ_TOKEN}"})
    httpx.post(base + "/-/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with httpx.Client(base_url=base) as client:
        client.get("/login")
        client.post("/login", data={"username": "vera", "password": PASSWORDS["vera"], "csrf_token": "x"})
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert caplog.records  # the server did log (startup, reload)
    for secret in (wrong, READ_TOKEN, ADMIN_TOKEN, PASSWORDS["vera"]):
        assert secret not in logged
