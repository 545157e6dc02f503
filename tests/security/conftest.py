"""A real watchkeeper app (create_app) on uvicorn in a thread, with the security settings a test
gives; helpers to make API tokens and password hashes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from watchkeeper.app import create_app
from watchkeeper.config import Settings
from watchkeeper.dashboards.sample import free_port
from watchkeeper.security.passwords import hash_password

READ_TOKEN = "read-token-0123456789abcdef"
WRITE_TOKEN = "write-token-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
PASSWORDS = {"vera": "viewer-password", "ed": "editor-password", "ada": "admin-password"}
_HASHES = {name: hash_password(pw, n=1024) for name, pw in PASSWORDS.items()}


def users() -> list[dict[str, str]]:
    roles = {"vera": "viewer", "ed": "editor", "ada": "admin"}
    return [{"name": n, "password_hash": _HASHES[n], "role": roles[n]} for n in PASSWORDS]


def tokens() -> list[dict[str, Any]]:
    return [
        {"name": "reader", "token": READ_TOKEN, "scopes": ["read"]},
        {"name": "writer", "token": WRITE_TOKEN, "scopes": ["read", "write"]},
        {"name": "admin", "token": ADMIN_TOKEN, "scopes": ["read", "write", "admin"]},
    ]


@contextmanager
def running(settings: Settings) -> Iterator[str]:
    """create_app(settings) on 127.0.0.1 (whatever `settings.host` says), lifespan on, until ready."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            proxy_headers=False,  # as `watchkeeper serve` runs it
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the server did not become ready")
        try:
            if server.started and httpx.get(base + "/-/ready").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def serve_with(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """``base = serve_with(security={...}, host="0.0.0.0")``: one server per call, stopped after the test."""
    stack: list[Any] = []

    def start(**overrides: Any) -> str:
        data = tmp_path / f"data{len(stack)}"
        settings = Settings.load(
            None, overrides={"data_dir": data, "scrape_configs": [], "wal_fsync": False, **overrides}
        )
        ctx = running(settings)
        base = ctx.__enter__()
        stack.append(ctx)
        return base

    yield start
    for ctx in reversed(stack):
        ctx.__exit__(None, None, None)
