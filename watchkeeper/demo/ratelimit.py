"""Sliding-window rate limiting: at most `limit` requests per client in any `window_seconds`.

Every response carries ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset``
(seconds until a request slot frees up); a refused request gets 429 with ``Retry-After``. A
client is its ``X-Api-Key`` header, else its address. With Redis the window is a sorted set of
request times per client, trimmed and counted in one Lua script (atomic across workers and
replicas); without Redis it is a deque per client in this process.

Prefetch: given ``prefetch(scope)`` (the cache key the request is about to read, or None), an
allowed request's script also GETs that key, and the value rides in ``scope[PREFETCHED]`` to the
handler -- one Redis round trip per cached read instead of two (on this 2-core machine each round
trip's send and wake-up cost the API as much CPU as the rest of a cached request).

```python
app = RateLimitMiddleware(app, MemoryLimiter(limit=100, window_seconds=60))
```
"""

from __future__ import annotations

import collections
import itertools
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SCRIPT = """
local key, now, window, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
local allowed = 0
if count < limit then
  redis.call('ZADD', key, now, ARGV[4])
  count = count + 1
  allowed = 1
end
redis.call('PEXPIRE', key, window)
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
local value = false
if allowed == 1 and KEYS[2] then
  value = redis.call('GET', KEYS[2])
end
return {allowed, count, tostring(oldest[2] or now), value}
"""
PREFETCHED = "coreapi.prefetched"
"""Scope key of ``(cache key, value or None)`` read by the limiter's script."""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    """Seconds until the oldest request in the window leaves it (a slot frees up)."""


def decide(
    allowed: bool, count: int, oldest_ms: float, *, now_ms: float, limit: int, window_ms: int
) -> Decision:
    reset = max(1, math.ceil((oldest_ms + window_ms - now_ms) / 1000))
    return Decision(allowed, limit, max(0, limit - count), reset)


class Limiter(Protocol):
    limit: int

    async def hit(self, client: str, prefetch: str | None = None) -> tuple[Decision, bytes | None]:
        """The decision, and (if the limiter can read it on the way) the value of ``prefetch``."""
        ...


class MemoryLimiter:
    def __init__(self, *, limit: int, window_seconds: int, clock: Callable[[], float] = time.time) -> None:
        self.limit, self.window_ms, self.clock = limit, window_seconds * 1000, clock
        self.windows: dict[str, collections.deque[float]] = {}

    async def hit(self, client: str, prefetch: str | None = None) -> tuple[Decision, bytes | None]:
        now_ms = self.clock() * 1000
        window = self.windows.setdefault(client, collections.deque())
        while window and window[0] <= now_ms - self.window_ms:
            window.popleft()
        allowed = len(window) < self.limit
        if allowed:
            window.append(now_ms)
        if len(self.windows) > 100_000:  # forget idle clients
            self.windows = {k: v for k, v in self.windows.items() if v and v[-1] > now_ms - self.window_ms}
        oldest = window[0] if window else now_ms
        decision = decide(
            allowed, len(window), oldest, now_ms=now_ms, limit=self.limit, window_ms=self.window_ms
        )
        return decision, None


class RedisLimiter:
    def __init__(
        self, client: Any, *, limit: int, window_seconds: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.limit, self.window_ms, self.clock = limit, window_seconds * 1000, clock
        self.script = client.register_script(_SCRIPT)
        self._member = f"{os.getpid()}-{time.time_ns()}-"  # unique per process; a counter after it
        self._count = itertools.count()

    async def hit(self, client: str, prefetch: str | None = None) -> tuple[Decision, bytes | None]:
        now_ms = self.clock() * 1000
        keys = [f"ratelimit:{client}"] if prefetch is None else [f"ratelimit:{client}", prefetch]
        allowed, count, oldest, value = await self.script(
            keys=keys, args=[now_ms, self.window_ms, self.limit, f"{self._member}{next(self._count)}"]
        )
        decision = decide(
            bool(allowed),
            int(count),
            float(oldest),
            now_ms=now_ms,
            limit=self.limit,
            window_ms=self.window_ms,
        )
        return decision, None if value is None else bytes(value)


class RateLimitMiddleware:
    """Pure ASGI: one limiter call per HTTP request outside `exempt`, headers on every answer."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: Limiter,
        *,
        exempt: frozenset[str] = frozenset({"/metrics", "/health"}),
        prefetch: Callable[[Scope], str | None] | None = None,
    ) -> None:
        self.app, self.limiter, self.exempt, self.prefetch = app, limiter, exempt, prefetch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        client = _client_id(scope)
        key = self.prefetch(scope) if self.prefetch is not None else None
        try:
            decision, value = await self.limiter.hit(client, key)
        except Exception:  # the limiter's store is down: serve rather than refuse everyone
            await self.app(scope, receive, send)
            return
        if key is not None:
            scope[PREFETCHED] = (key, value)
        headers = [
            (b"x-ratelimit-limit", str(decision.limit).encode()),
            (b"x-ratelimit-remaining", str(decision.remaining).encode()),
            (b"x-ratelimit-reset", str(decision.reset_seconds).encode()),
        ]
        if not decision.allowed:
            body = b'{"detail":"rate limit exceeded"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [
                        *headers,
                        (b"retry-after", str(decision.reset_seconds).encode()),
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _client_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-api-key":
            return "key:" + bytes(value).decode("latin-1")[:64]
    client = scope.get("client")
    return "ip:" + (client[0] if client else "unknown")
