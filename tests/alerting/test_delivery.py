from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from watchkeeper.alerting.delivery import http_client, retry_after_ms, send_http
from watchkeeper.alerting.receivers.base import HttpRequest

from .conftest import FakeService

NOW_MS = 1_795_867_200_000


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"Retry-After": "120"}, b"", 120_000),
        ({"retry-after": "1.5"}, b"", 1500),
        (
            {"Retry-After": format_datetime(datetime.fromtimestamp(NOW_MS / 1000 + 90, tz=UTC), usegmt=True)},
            b"",
            90_000,
        ),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, b"", 0),  # in the past: now
        ({"Retry-After": "soon"}, b"", None),
        ({}, b'{"retry_after": 0.25, "global": false}', 250),  # Discord
        ({}, b'{"ok": false, "error_code": 429, "parameters": {"retry_after": 7}}', 7000),  # Telegram
        ({}, b"<html>busy</html>", None),
    ],
)
def test_retry_after(headers: dict[str, str], body: bytes, expected: int | None) -> None:
    assert retry_after_ms(headers, body, now_ms=NOW_MS) == expected


@pytest.mark.parametrize(
    ("status", "ok", "permanent"),
    [
        (200, True, False),
        (204, True, False),
        (202, True, False),
        (400, False, True),
        (404, False, True),
        (410, False, True),
        (408, False, False),
        (429, False, False),
        (500, False, False),
        (503, False, False),
    ],
)
def test_answers_are_classified(service: FakeService, status: int, ok: bool, permanent: bool) -> None:
    service.fail(1, status=status, headers={"Retry-After": "3"}, body=b"answer")
    with http_client() as client:
        result = send_http(
            client,
            HttpRequest.json(f"{service.url}/x", {"a": 1}),
            timeout_seconds=5,
            now_ms=NOW_MS,
            idempotency_key="k1",
        )
    body = "" if status == 204 else "answer"  # 204 has no body (Discord's answer without ?wait=true)
    assert (result.ok, result.permanent, result.status, result.body) == (ok, permanent, status, body)
    assert result.retry_after_ms == (None if ok or permanent else 3000)
    assert service.seen[0].headers["idempotency-key"] == "k1" and service.seen[0].json() == {"a": 1}


def test_network_errors_are_retryable() -> None:
    with http_client() as client:
        result = send_http(
            client, HttpRequest.json("http://127.0.0.1:1/", {}), timeout_seconds=2, now_ms=NOW_MS
        )
    assert not result.ok and not result.permanent and result.status is None and "ConnectError" in result.body
