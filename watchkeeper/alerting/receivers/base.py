"""What every receiver shares: the request it renders, the result of sending it, truncation.

A receiver is pure: ``render(notification) -> HttpRequest | EmailRequest``; `delivery` does the I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from watchkeeper.alerting.notification import Notification

ELLIPSIS = "…"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    url: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, url: str, payload: Any, headers: dict[str, str] | None = None) -> HttpRequest:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        return cls(url=url, body=body, headers={"Content-Type": "application/json", **(headers or {})})

    def payload(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class EmailRequest:
    smarthost: str
    sender: str
    to: tuple[str, ...]
    message: bytes
    auth_username: str | None = None
    auth_password: str | None = None
    require_tls: bool = False


Request = HttpRequest | EmailRequest


@dataclass(frozen=True, slots=True)
class Integration:
    """One configured target of a receiver (``slack_configs[0]``...)."""

    receiver: str
    kind: str
    index: int
    send_resolved: bool
    render: Callable[[Notification], Request]

    @property
    def name(self) -> str:
        """Stable id used by the notification log and the outbox: ``receiver/kind/index``."""
        return f"{self.receiver}/{self.kind}/{self.index}"


Measure = Callable[[str], int]


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units: what Telegram (and JavaScript-side limits) count; an emoji is 2.

    >>> len("🔴 up"), utf16_len("🔴 up")
    (4, 5)
    """
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


def truncate(text: str, limit: int, measure: Measure = len) -> str:
    """At most ``limit`` (as ``measure`` counts), an ellipsis marking the cut.

    >>> truncate("abcdef", 4), truncate("🔴🔴🔴", 4, utf16_len)
    ('abc…', '🔴…')
    """
    if measure(text) <= limit:
        return text
    if limit <= 0:
        return ""
    budget = limit - measure(ELLIPSIS)
    if measure is len:
        return text[: max(budget, 0)] + ELLIPSIS
    size, end = 0, 0
    for end, c in enumerate(text):  # noqa: B007 - end is used after the loop
        size += measure(c)
        if size > budget:
            break
    return text[:end] + ELLIPSIS


def fit_lines(
    lines: Sequence[str], limit: int, *, more: Callable[[int], str], sep: str = "\n", measure: Measure = len
) -> str:
    """Whole lines joined while they fit in ``limit``, then a ``more(n_left)`` line that fits too."""
    out: list[str] = []
    size = 0
    for i, line in enumerate(lines):
        add = measure(line) + (measure(sep) if out else 0)
        tail = more(len(lines) - i - 1) if i < len(lines) - 1 else ""
        reserve = measure(sep) + measure(tail) if tail else 0
        if size + add + reserve > limit:
            footer = more(len(lines) - i)
            if size + measure(sep) + measure(footer) > limit:
                footer = truncate(footer, max(limit - size - measure(sep), 0), measure)
            if not out:
                return truncate(line, limit, measure)
            return sep.join([*out, footer]) if footer else sep.join(out)
        out.append(line)
        size += add
    return sep.join(out)
