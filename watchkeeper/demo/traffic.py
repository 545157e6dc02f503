"""Simulated users of the core API (asyncio + httpx): each user browses, searches, looks at
statistics and now and then joins, leaves or edits, with a think time between actions.

```python
stats = asyncio.run(run_traffic(TrafficConfig("http://127.0.0.1:8080", users=100, duration_seconds=30)))
print(stats.summary())
```

``error_rate`` / ``latency_ms`` ask the core API (started with ``fault_injection``) to fail or
slow down that share of requests, so alerts can be seen firing and then resolving.
Session popularity is skewed (exponential over session rank, mean rank `hot_sessions`), as real
traffic is: most users look at the few sessions starting soon. Users also follow what they were
shown, as people browsing do: a session is most often one of those their last search listed
(`follow_share`), a player one of the last session's roster, and statistics are those of the
player just viewed (a profile shows them) or their own. A user edits only the games it created
(until it has one, an edit action views a game instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from watchkeeper.demo.repository import REGION_CENTRES
from watchkeeper.demo.settings import REGIONS, SPORTS

# (action, weight): reads dominate, as in the product's story
ACTIONS = (
    ("view_session", 40),
    ("discover", 25),
    ("view_player", 15),
    ("statistics", 10),
    ("join_leave", 4),
    ("discover_near", 3),
    ("update_session", 1),
    ("update_player", 1),
    ("create_session", 1),
)


@dataclass(frozen=True, slots=True)
class TrafficConfig:
    base_url: str
    users: int = 50
    duration_seconds: float | None = None
    """None: until cancelled."""
    think_seconds: tuple[float, float] = (1.0, 3.0)
    num_players: int = 2000
    num_sessions: int = 4000
    hot_sessions: int = 200
    follow_share: float = 0.6
    """Share of session/player/statistics views that follow the user's last search or view."""
    error_rate: float = 0.0
    latency_ms: int = 0
    seed: int = 1
    timeout_seconds: float = 30.0
    ramp_up_seconds: float = 5.0


@dataclass
class TrafficStats:
    latencies_seconds: list[float] = field(default_factory=list)
    by_kind: dict[str, list[float]] = field(default_factory=dict)
    """Latencies of cache hits, cache misses and writes (``hit``, ``miss``, ``write``)."""
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    cache: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    @property
    def requests(self) -> int:
        return len(self.latencies_seconds)

    @property
    def errors(self) -> int:
        """5xx answers and requests that got no answer; 4xx are the API's expected refusals
        (a full session, a 429), counted apart."""
        return sum(n for s, n in self.statuses.items() if s >= 500) + sum(self.transport_errors.values())

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_seconds)
        elapsed = (self.ended or time.monotonic()) - self.started

        looked_up = self.cache["hit"] + self.cache["miss"]
        return {
            "requests": self.requests,
            "seconds": round(elapsed, 1),
            "throughput_rps": round(self.requests / elapsed, 1) if elapsed else 0.0,
            "avg_ms": round(sum(lat) / len(lat) * 1000, 1) if lat else float("nan"),
            "p50_ms": round(percentile_ms(lat, 0.50), 1),
            "p95_ms": round(percentile_ms(lat, 0.95), 1),
            "p99_ms": round(percentile_ms(lat, 0.99), 1),
            "error_rate": round(self.errors / self.requests, 5) if self.requests else 0.0,
            "status_4xx": sum(n for s, n in self.statuses.items() if 400 <= s < 500),
            "status_429": self.statuses[429],
            "transport_errors": dict(self.transport_errors),
            "cache_hit_rate": round(self.cache["hit"] / looked_up, 4) if looked_up else float("nan"),
            "p95_ms_by_kind": {
                k: round(percentile_ms(sorted(v), 0.95), 1) for k, v in sorted(self.by_kind.items())
            },
        }


def percentile_ms(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else float("nan")


class User:
    def __init__(
        self, uid: int, transport: httpx.AsyncHTTPTransport, config: TrafficConfig, stats: TrafficStats
    ) -> None:
        self.config, self.transport, self.stats = config, transport, stats
        self.base_url = config.base_url.rstrip("/")
        seconds = config.timeout_seconds
        self.extensions = {
            "timeout": {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}
        }
        self.rng = random.Random(config.seed * 1_000_003 + uid)
        self.player_id = 1 + uid % config.num_players
        self.region = REGIONS[self.player_id % len(REGIONS)]
        # what httpx.AsyncClient would add; the API compresses large answers for such clients
        self.headers = {"x-api-key": f"user-{uid}", "accept-encoding": "gzip", "user-agent": "demo-traffic"}
        self.joined: list[int] = []
        self.listed: list[int] = []
        """Session ids of the user's last search."""
        self.roster: list[int] = []
        """Player ids of the last session viewed."""
        self.viewed_player: int | None = None
        self.hosted: list[int] = []
        """Sessions this user created (the ones it may edit)."""

    def session_id(self) -> int:
        return min(self.config.num_sessions, 1 + int(self.rng.expovariate(1 / self.config.hot_sessions)))

    def next_session(self) -> int:
        if self.listed and self.rng.random() < self.config.follow_share:
            return self.rng.choice(self.listed)
        return self.session_id()

    def next_player(self) -> int:
        if self.roster and self.rng.random() < self.config.follow_share:
            return self.rng.choice(self.roster)
        return 1 + int(self.rng.expovariate(1 / 300)) % self.config.num_players

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        headers = dict(self.headers)
        if self.config.error_rate and self.rng.random() < self.config.error_rate:
            headers["x-demo-fault"] = "error"
        if self.config.latency_ms:
            headers["x-demo-latency-ms"] = str(self.config.latency_ms)
        started = time.perf_counter()
        try:
            request = httpx.Request(
                method, self.base_url + path, headers=headers, extensions=self.extensions, **kwargs
            )
            response = await self.transport.handle_async_request(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            self.stats.latencies_seconds.append(time.perf_counter() - started)
            self.stats.transport_errors[type(exc).__name__] += 1
            return None
        elapsed = time.perf_counter() - started
        self.stats.latencies_seconds.append(elapsed)
        self.stats.statuses[response.status_code] += 1
        cache = response.headers.get("x-cache")
        if cache is not None and method == "GET":
            self.stats.cache[cache] += 1
        kind = "write" if method != "GET" else cache or "other"
        self.stats.by_kind.setdefault(kind, []).append(elapsed)
        return response

    async def act(self, action: str) -> None:
        rng = self.rng
        if action == "update_session" and not self.hosted:
            action = "view_session"  # one edits only a game one hosts: without one, look at a game
        if action == "view_session":
            r = await self.request("GET", f"/sessions/{self.next_session()}")
            if r is not None and r.status_code == 200:
                self.roster = [p["id"] for p in orjson.loads(r.content)["players"]]
        elif action == "view_player":
            self.viewed_player = self.next_player()
            await self.request("GET", f"/players/{self.viewed_player}")
        elif action == "statistics":
            # a profile shows its statistics: mostly the player just viewed, sometimes one's own
            follow = self.viewed_player is not None and rng.random() < self.config.follow_share
            pid = self.viewed_player if follow else self.player_id
            await self.request("GET", f"/players/{pid}/statistics")
        elif action == "discover":
            params = {
                "sport": rng.choice(SPORTS),
                "region": self.region if rng.random() < 0.8 else rng.choice(REGIONS),
            }
            self.remember_listed(await self.request("GET", "/discovery", params=params))
        elif action == "discover_near":
            lat, lon = REGION_CENTRES[self.region]
            near: dict[str, float] = {"lat": lat, "lon": lon, "radius_km": 25}
            self.remember_listed(await self.request("GET", "/discovery", params=near))
        elif action == "join_leave":
            if self.joined:
                sid = self.joined.pop()
                await self.request("POST", f"/sessions/{sid}/leave", json={"player_id": self.player_id})
            else:
                sid = self.next_session()
                r = await self.request("POST", f"/sessions/{sid}/join", json={"player_id": self.player_id})
                if r is not None and r.status_code == 200:
                    self.joined.append(sid)
        elif action == "update_session":
            sid = rng.choice(self.hosted)
            await self.request(
                "PATCH", f"/sessions/{sid}", json={"title": f"game {sid} ({rng.randint(1, 99)})"}
            )
        elif action == "update_player":
            await self.request("PATCH", f"/players/{self.player_id}", json={"skill": rng.randint(800, 2000)})
        elif action == "create_session":
            lat, lon = REGION_CENTRES[self.region]
            starts_at_ms = int(time.time() * 1000) + rng.randint(1, 72) * 3_600_000
            body = {
                "title": "pickup game",
                "sport": rng.choice(SPORTS),
                "region": self.region,
                "host_id": self.player_id,
                "starts_at_ms": starts_at_ms,
                "lat": lat + rng.uniform(-0.2, 0.2),
                "lon": lon + rng.uniform(-0.2, 0.2),
                "max_players": 10,
            }
            r = await self.request("POST", "/sessions", json=body)
            if r is not None and r.status_code == 201:
                self.hosted.append(orjson.loads(r.content)["id"])

    def remember_listed(self, response: httpx.Response | None) -> None:
        if response is not None and response.status_code == 200:
            self.listed = [row["id"] for row in orjson.loads(response.content)]

    async def run(self, deadline: float | None) -> None:
        names = [a for a, _ in ACTIONS]
        weights = [w for _, w in ACTIONS]
        await asyncio.sleep(self.rng.uniform(0, self.config.ramp_up_seconds))
        while deadline is None or time.monotonic() < deadline:
            await self.act(self.rng.choices(names, weights)[0])
            await asyncio.sleep(self.rng.uniform(*self.config.think_seconds))
        for sid in self.joined:  # leave the database as it was
            await self.request("POST", f"/sessions/{sid}/leave", json={"player_id": self.player_id})


async def run_traffic(config: TrafficConfig, stats: TrafficStats | None = None) -> TrafficStats:
    """Run `config.users` users until `duration_seconds` passes (or the task is cancelled).

    Each user has its own connection, as separate people do; one shared httpx pool with hundreds
    of connections became the bottleneck (~60 req/s at 100 connections on the test machine,
    against ~1,500 req/s with a client per user). A user sends through its httpx transport
    directly: the client layer (URL merging, cookies, redirects, auth) cost the generator a
    quarter of its CPU, which it shares with the server it measures. The TLS context is built once.
    """
    stats = stats or TrafficStats()
    deadline = None if config.duration_seconds is None else time.monotonic() + config.duration_seconds
    tls = ssl.create_default_context()
    # a connection stays open across think times (httpx's default keep-alive expiry is 5 s)
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=1, keepalive_expiry=60)
    async with contextlib.AsyncExitStack() as stack:
        users = []
        for uid in range(config.users):
            transport = httpx.AsyncHTTPTransport(limits=limits, verify=tls)
            await stack.enter_async_context(transport)
            users.append(User(uid, transport, config, stats))
        stats.started = time.monotonic()
        try:
            await asyncio.gather(*(u.run(deadline) for u in users))
        finally:
            stats.ended = time.monotonic()
    return stats
