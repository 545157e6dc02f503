"""The reference core API end to end through its ASGI app: endpoints, cache, rate limit, metrics."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from watchkeeper.demo import CoreApiSettings, coreapi_app

HOUR_MS = 3_600_000


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str | None:
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("redis_url")
    return url


def make_client(tmp_path: Path, redis_url: str | None = None, **overrides: object) -> TestClient:
    settings = CoreApiSettings(
        database_url=f"sqlite:///{tmp_path}/core.db",
        redis_url=redis_url,
        **overrides,  # type: ignore[arg-type]
    )
    return TestClient(coreapi_app(settings, registry=CollectorRegistry()))


@pytest.fixture
def client(tmp_path: Path, backend: str | None) -> Iterator[TestClient]:
    with make_client(tmp_path, backend) as c:
        yield c


def player(client: TestClient, name: str = "alice", region: str = "eu-west") -> int:
    r = client.post("/players", json={"name": name, "region": region, "skill": 1200})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def session(client: TestClient, host: int, **fields: object) -> dict[str, object]:
    body = {
        "title": "5-a-side",
        "sport": "football",
        "region": "eu-west",
        "host_id": host,
        "starts_at_ms": int(time.time() * 1000) + HOUR_MS,
        "lat": 48.85,
        "lon": 2.35,
        "max_players": 3,
    }
    body.update(fields)
    r = client.post("/sessions", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_players_sessions_join_leave_and_statistics(client: TestClient) -> None:
    alice, bob = player(client, "alice"), player(client, "bob")
    s = session(client, alice)
    assert s["players"] == [{"id": alice, "name": "alice"}] and s["player_count"] == 1

    joined = client.post(f"/sessions/{s['id']}/join", json={"player_id": bob}).json()
    assert [p["id"] for p in joined["players"]] == [alice, bob] and joined["player_count"] == 2
    assert client.post(f"/sessions/{s['id']}/join", json={"player_id": bob}).status_code == 409

    stats = client.get(f"/players/{bob}/statistics").json()
    assert stats["sessions_joined"] == 1 and stats["by_sport"] == {"football": 1}
    assert stats["upcoming_sessions"] == 1 and stats["sessions_hosted"] == 0

    left = client.post(f"/sessions/{s['id']}/leave", json={"player_id": bob}).json()
    assert left["player_count"] == 1
    assert client.get(f"/players/{bob}/statistics").json()["sessions_joined"] == 0
    assert client.post(f"/sessions/{s['id']}/leave", json={"player_id": bob}).status_code == 404


def test_a_full_session_refuses_a_join(client: TestClient) -> None:
    ids = [player(client, f"p{i}") for i in range(4)]
    s = session(client, ids[0], max_players=2)
    assert client.post(f"/sessions/{s['id']}/join", json={"player_id": ids[1]}).status_code == 200
    r = client.post(f"/sessions/{s['id']}/join", json={"player_id": ids[2]})
    assert r.status_code == 409 and "full" in r.json()["detail"]


def test_discovery_by_sport_region_time_and_distance(client: TestClient) -> None:
    host = player(client)
    now = int(time.time() * 1000)
    paris = session(client, host, starts_at_ms=now + HOUR_MS)
    session(client, host, sport="tennis", starts_at_ms=now + HOUR_MS)
    lyon = session(client, host, lat=45.76, lon=4.84, starts_at_ms=now + 5 * HOUR_MS)
    session(client, host, region="us-east", lat=40.7, lon=-74.0)

    def ids(**params: str | int) -> list[object]:
        r = client.get("/discovery", params=params)
        assert r.status_code == 200, r.text
        return [row["id"] for row in r.json()]

    assert ids(sport="football", region="eu-west") == [paris["id"], lyon["id"]]
    assert ids(sport="football", region="eu-west", starts_after_ms=now + 2 * HOUR_MS) == [lyon["id"]]
    near = client.get("/discovery", params={"lat": 48.86, "lon": 2.34, "radius_km": 50, "sport": "football"})
    assert [row["id"] for row in near.json()] == [paris["id"]] and near.json()[0]["distance_km"] < 2


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/players", {"name": "x", "region": "mars"}),
        ("/players", {"name": "", "region": "eu-west"}),
        ("/players", {"name": "x", "region": "eu-west", "admin": True}),
        (
            "/sessions",
            {
                "title": "t",
                "sport": "chess",
                "region": "eu-west",
                "host_id": 1,
                "starts_at_ms": 1,
                "lat": 0,
                "lon": 0,
            },
        ),
        (
            "/sessions",
            {
                "title": "t",
                "sport": "tennis",
                "region": "eu-west",
                "host_id": 1,
                "starts_at_ms": 1,
                "lat": 95,
                "lon": 0,
            },
        ),
    ],
)
def test_invalid_input_is_refused_with_422(tmp_path: Path, path: str, body: dict[str, object]) -> None:
    with make_client(tmp_path) as client:
        assert client.post(path, json=body).status_code == 422
        assert client.get("/discovery", params={"radius_km": -1}).status_code == 422
        assert client.get("/players/999").status_code == 404


def test_reads_are_cached_and_writes_invalidate(client: TestClient) -> None:
    alice, bob = player(client, "alice"), player(client, "bob")
    s = session(client, alice)
    sid = s["id"]
    assert client.get(f"/sessions/{sid}").headers["x-cache"] == "hit"  # written on create
    assert client.get(f"/players/{bob}").headers["x-cache"] == "hit"
    assert (
        client.get("/discovery", params={"sport": "football", "region": "eu-west"}).headers["x-cache"]
        == "miss"
    )
    same = client.get("/discovery", params={"region": "eu-west", "sport": "football", "limit": 20})
    assert same.headers["x-cache"] == "hit", "params are normalised: order and defaults do not matter"
    assert client.get(f"/players/{alice}/statistics").headers["x-cache"] == "miss"
    assert client.get(f"/players/{alice}/statistics").headers["x-cache"] == "hit"

    # a session update invalidates the session, its discovery keys and its players' statistics
    client.patch(f"/sessions/{sid}", json={"title": "renamed"})
    got = client.get(f"/sessions/{sid}")
    assert got.headers["x-cache"] == "miss" and got.json()["title"] == "renamed"
    disc = client.get("/discovery", params={"sport": "football", "region": "eu-west"})
    assert disc.headers["x-cache"] == "miss" and disc.json()[0]["title"] == "renamed"
    assert client.get(f"/players/{alice}/statistics").headers["x-cache"] == "miss"

    # moving the session to another region invalidates the new region's discovery as well
    assert client.get("/discovery", params={"region": "us-east"}).json() == []
    client.patch(f"/sessions/{sid}", json={"region": "us-east"})
    assert [r["id"] for r in client.get("/discovery", params={"region": "us-east"}).json()] == [sid]

    # a player change invalidates the player and the sessions showing it
    client.patch(f"/players/{alice}", json={"name": "alicia"})
    assert client.get(f"/players/{alice}").json()["name"] == "alicia"
    assert client.get(f"/sessions/{sid}").json()["players"][0]["name"] == "alicia"

    # a join is visible at once in the session and in the joiner's statistics
    client.get(f"/players/{bob}/statistics")
    client.post(f"/sessions/{sid}/join", json={"player_id": bob})
    assert client.get(f"/sessions/{sid}").json()["player_count"] == 2
    assert client.get(f"/players/{bob}/statistics").json()["sessions_joined"] == 1


def test_redis_keys_carry_the_documented_ttls(tmp_path: Path, redis_url: str) -> None:
    import redis

    with make_client(tmp_path, redis_url) as client:
        alice = player(client)
        sid = session(client, alice)["id"]
        client.get("/discovery", params={"sport": "football"})
        client.get(f"/players/{alice}/statistics")
    r = redis.Redis.from_url(redis_url)
    try:
        keys = [k if isinstance(k, bytes) else k.encode() for k in r.keys("*")]
        ttls = {k.decode().split(":")[0]: r.ttl(k) for k in keys if b"tags" not in k}
        assert 290 <= r.ttl(f"session:{sid}") <= 300
        assert 590 <= r.ttl(f"player:{alice}") <= 600
        assert 110 <= ttls["discovery"] <= 120 and 50 <= ttls["statistics"] <= 60
        assert b"discovery:limit=20&sport=football" in r.keys("discovery:*")
    finally:
        r.close()


def test_the_cache_warms_at_start_and_can_be_switched_off(tmp_path: Path) -> None:
    with make_client(tmp_path, seed_players=50) as client:
        first = client.get("/sessions/1")
        assert first.headers["x-cache"] == "hit"
        assert (
            client.get("/discovery", params={"sport": "tennis", "region": "eu-west"}).headers["x-cache"]
            == "hit"
        )
        host = first.json()["players"][0]["id"]
        stats = client.get(f"/players/{host}/statistics")
        assert stats.headers["x-cache"] == "hit", "the statistics of players in hot sessions"
        assert stats.json()["sessions_hosted"] >= 1 and stats.json()["sessions_joined"] >= 1
    with make_client(tmp_path, cache_enabled=False) as client:
        assert client.get("/sessions/1").headers["x-cache"] == "miss"
        assert client.get("/sessions/1").headers["x-cache"] == "miss"


def test_rate_limit_headers_then_429_with_retry_after(tmp_path: Path, backend: str | None) -> None:
    with make_client(tmp_path, backend, rate_limit_requests=3, rate_limit_window_seconds=30) as client:
        remaining = []
        for _ in range(3):
            r = client.get("/discovery", headers={"x-api-key": "k1"})
            assert r.status_code == 200 and r.headers["x-ratelimit-limit"] == "3"
            remaining.append(r.headers["x-ratelimit-remaining"])
            assert 1 <= int(r.headers["x-ratelimit-reset"]) <= 30
        assert remaining == ["2", "1", "0"]
        refused = client.get("/discovery", headers={"x-api-key": "k1"})
        assert refused.status_code == 429
        assert (
            1 <= int(refused.headers["retry-after"]) <= 30 and refused.headers["x-ratelimit-remaining"] == "0"
        )
        assert client.get("/discovery", headers={"x-api-key": "k2"}).status_code == 200, "per client"
        metrics = client.get("/metrics")
        assert metrics.status_code == 200, "the scrape is never limited"
        # refused before routing, so counted under the SDK's route for unrouted requests
        assert 'http_requests_total{method="GET",route="__unmatched__",status="429"} 1.0' in metrics.text
    with make_client(tmp_path, backend, rate_limit_enabled=False) as client:
        r = client.get("/discovery")
        assert r.status_code == 200 and "x-ratelimit-limit" not in r.headers


def test_sliding_window_frees_a_slot_when_the_oldest_request_leaves() -> None:
    import asyncio

    from watchkeeper.demo.ratelimit import MemoryLimiter

    now = [1000.0]
    limiter = MemoryLimiter(limit=2, window_seconds=10, clock=lambda: now[0])

    async def run() -> list[bool]:
        async def allowed() -> bool:
            decision, _ = await limiter.hit("c")
            return decision.allowed

        out = [await allowed()]
        now[0] += 5
        out += [await allowed(), await allowed()]
        now[0] += 5.001  # the first request left the window, the second has not
        out += [await allowed(), await allowed()]
        return out

    assert asyncio.run(run()) == [True, True, False, True, False]


def test_gzip_is_switchable(tmp_path: Path) -> None:
    with make_client(tmp_path, seed_players=100) as client:
        r = client.get("/discovery", params={"limit": 100}, headers={"accept-encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip" and len(r.json()) == 100
    with make_client(tmp_path, gzip_enabled=False) as client:
        r = client.get("/discovery", params={"limit": 100}, headers={"accept-encoding": "gzip"})
        assert "content-encoding" not in r.headers


def test_metrics_are_exposed(client: TestClient) -> None:
    alice, bob = player(client, "alice"), player(client, "bob")
    sid = session(client, alice, region="ap-south")["id"]
    client.post(f"/sessions/{sid}/join", json={"player_id": bob})
    client.get(f"/sessions/{sid}")  # the join wrote its new state: two hits
    client.get(f"/sessions/{sid}")
    client.get("/discovery", params={"lat": 1, "lon": 2, "radius_km": 5})
    text = client.get("/metrics").text
    expected = [
        'http_requests_total{method="GET",route="/sessions/{session_id}",status="200"} 2.0',
        'cache_requests_total{cache="session",result="hit"} 2.0',
        'coreapi_session_joins_total{region="ap-south",sport="football"} 1.0',
        'coreapi_sessions_created_total{region="ap-south",sport="football"} 1.0',
        'coreapi_players_registered_total{region="eu-west"} 2.0',
        'coreapi_feature_used_total{feature="discovery_by_distance",region="any"} 1.0',
        'coreapi_active_sessions{region="ap-south"} 1.0',
        'db_query_duration_seconds_count{operation="insert",table="session_players"}',
    ]
    for line in expected:
        assert line in text, line


def test_without_instrumentation_there_is_no_metrics_endpoint(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    settings = CoreApiSettings(database_url=f"sqlite:///{tmp_path}/core.db", instrument=False)
    with TestClient(coreapi_app(settings, registry=registry)) as client:
        assert client.get("/metrics").status_code == 404
        assert b"http_requests_total" not in generate_latest(registry)


def test_injected_faults_only_when_enabled(tmp_path: Path) -> None:
    with make_client(tmp_path, fault_injection=True) as client:
        assert client.get("/discovery", headers={"x-demo-fault": "error"}).status_code == 500
        started = time.monotonic()
        assert client.get("/discovery", headers={"x-demo-latency-ms": "200"}).status_code == 200
        assert time.monotonic() - started >= 0.2
    with make_client(tmp_path) as client:
        assert client.get("/discovery", headers={"x-demo-fault": "error"}).status_code == 200


def test_a_join_keeps_discovery_cached_but_refreshes_session_and_statistics(client: TestClient) -> None:
    alice, bob = player(client, "alice"), player(client, "bob")
    sid = session(client, alice)["id"]
    client.get("/discovery", params={"sport": "football"})
    client.get(f"/players/{bob}/statistics")
    client.post(f"/sessions/{sid}/join", json={"player_id": bob})
    assert client.get("/discovery", params={"sport": "football"}).headers["x-cache"] == "hit"
    assert client.get(f"/sessions/{sid}").json()["player_count"] == 2
    assert client.get(f"/players/{bob}/statistics").json()["sessions_joined"] == 1


def test_an_unreachable_redis_slows_the_api_down_but_does_not_fail_it(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with make_client(tmp_path, f"redis://127.0.0.1:{port}/0", cache_warming=False) as client:
        alice = player(client)
        r = client.get(f"/players/{alice}")
        assert r.status_code == 200 and r.headers["x-cache"] == "miss"
        assert "x-ratelimit-limit" not in r.headers, "the limiter's store is down: requests are served"


def test_a_title_change_invalidates_only_the_results_that_list_the_session(client: TestClient) -> None:
    host = player(client)
    football = session(client, host)["id"]
    tennis = session(client, host, sport="tennis")["id"]
    for sport in ("football", "tennis"):
        assert client.get("/discovery", params={"sport": sport}).headers["x-cache"] == "miss"
    client.patch(f"/sessions/{tennis}", json={"title": "doubles"})
    assert client.get("/discovery", params={"sport": "football"}).headers["x-cache"] == "hit"
    listed = client.get("/discovery", params={"sport": "tennis"})
    assert listed.headers["x-cache"] == "miss" and listed.json()[0]["title"] == "doubles"
    # a change of time may move it into searches that did not list it: those are dropped too
    later: dict[str, str | int] = {
        "sport": "tennis",
        "starts_after_ms": int(time.time() * 1000) + 90 * 60_000,
    }
    assert client.get("/discovery", params=later).json() == []
    client.patch(f"/sessions/{tennis}", json={"starts_at_ms": int(time.time() * 1000) + 2 * HOUR_MS})
    assert [r["id"] for r in client.get("/discovery", params=later).json()] == [tennis]
    assert client.get("/discovery", params={"sport": "football"}).headers["x-cache"] == "hit"
    assert football != tennis


def test_a_title_change_keeps_searches_of_every_sport_and_region_cached(client: TestClient) -> None:
    host = player(client)
    listed = session(client, host)["id"]
    other = player(client, "bob")
    unlisted = session(client, other, starts_at_ms=int(time.time() * 1000) + 5 * HOUR_MS)["id"]
    params = {"limit": 1}  # lists only the soonest session
    assert [r["id"] for r in client.get("/discovery", params=params).json()] == [listed]
    client.patch(f"/sessions/{unlisted}", json={"title": "renamed"})
    assert client.get("/discovery", params=params).headers["x-cache"] == "hit"
    client.patch(f"/sessions/{listed}", json={"title": "renamed too"})
    again = client.get("/discovery", params=params)
    assert again.headers["x-cache"] == "miss" and again.json()[0]["title"] == "renamed too"


def test_a_new_session_drops_only_the_searches_it_would_enter(client: TestClient) -> None:
    host = player(client)
    now = int(time.time() * 1000)
    for hours in (1, 2):
        session(client, host, starts_at_ms=now + hours * HOUR_MS)
    full = {"sport": "football", "region": "eu-west", "limit": 2}  # cutoff: the 2 h game
    open_ended = {"sport": "football", "region": "eu-west", "limit": 5}  # not full: any new game enters
    for params in (full, open_ended):
        assert client.get("/discovery", params=params).headers["x-cache"] == "miss"
    session(client, host, starts_at_ms=now + 3 * HOUR_MS)  # after the full result's last game
    assert client.get("/discovery", params=full).headers["x-cache"] == "hit"
    assert len(client.get("/discovery", params=open_ended).json()) == 3
    soon = session(client, host, starts_at_ms=now + 30 * 60_000)["id"]  # before the cutoff
    first = client.get("/discovery", params=full)
    assert first.headers["x-cache"] == "miss" and first.json()[0]["id"] == soon
    # moving a game earlier is the same: it may now enter a full result
    late = session(client, host, starts_at_ms=now + 10 * HOUR_MS)["id"]
    assert client.get("/discovery", params=full).headers["x-cache"] == "hit"
    client.patch(f"/sessions/{late}", json={"starts_at_ms": now + 10 * 60_000})
    assert [r["id"] for r in client.get("/discovery", params=full).json()] == [late, soon]


def _sample(text: str, line_start: str) -> float:
    found = [line for line in text.splitlines() if line.startswith(line_start + " ")]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


@pytest.mark.parametrize("prefetch", [True, False])
def test_the_rate_limiter_reads_the_cache_in_its_round_trip(
    tmp_path: Path, redis_url: str, prefetch: bool
) -> None:
    with make_client(tmp_path, redis_url, cache_prefetch=prefetch, seed_players=20) as client:
        gets = 'cache_operation_duration_seconds_count{cache="session",op="get"}'
        hits = 'cache_requests_total{cache="session",result="hit"}'
        before = client.get("/metrics").text
        for _ in range(3):
            r = client.get("/sessions/3")
            assert r.status_code == 200 and r.headers["x-cache"] == "hit" and r.json()["id"] == 3
        after = client.get("/metrics").text
        assert _sample(after, hits) - _sample(before, hits) == 3, "each lookup counted once"
        assert _sample(after, gets) - _sample(before, gets) == (0 if prefetch else 3)
        # a miss read on the way is a miss; the answer comes from the database and is cached
        assert client.get("/sessions/9999").status_code == 404
        for params in ({"sport": "tennis", "region": "eu-west"}, {"region": "eu-west", "sport": "tennis"}):
            d = client.get("/discovery", params=params)
            assert d.status_code == 200 and d.headers["x-cache"] == "hit"
        assert client.get("/discovery", params={"limit": 0}).status_code == 422
        assert client.get("/discovery", params={"lat": 1, "lon": 1, "radius_km": "inf"}).status_code == 422
        assert client.get("/players/x").status_code == 422


@pytest.mark.parametrize("cache_gzip", [True, False])
def test_large_answers_are_cached_compressed_and_served_to_either_client(
    tmp_path: Path, backend: str | None, cache_gzip: bool
) -> None:
    import redis

    with make_client(tmp_path, backend, seed_players=400, cache_gzip=cache_gzip) as client:
        params = {"sport": "tennis", "region": "eu-west"}  # warmed: a hit; 20 rows, > 1000 bytes
        zipped = client.get("/discovery", params=params, headers={"accept-encoding": "gzip"})
        plain = client.get("/discovery", params=params, headers={"accept-encoding": "identity"})
        assert zipped.headers["x-cache"] == plain.headers["x-cache"] == "hit"
        assert zipped.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
        assert zipped.json() == plain.json() and len(plain.json()) == 20
        small = client.get("/players/1", headers={"accept-encoding": "gzip"})
        assert "content-encoding" not in small.headers and small.json()["id"] == 1
        if backend is not None:
            key = "discovery:limit=20&region=eu-west&sport=tennis"
            stored = redis.Redis.from_url(backend).get(key)
            assert stored is not None and stored.startswith(b"\x1f\x8b") == cache_gzip


@pytest.mark.postgres
def test_a_seeded_postgresql_database_takes_new_players_and_sessions(postgres_url: str) -> None:
    settings = CoreApiSettings(database_url=postgres_url, seed_players=10)
    with TestClient(coreapi_app(settings, registry=CollectorRegistry())) as client:
        alice = player(client)
        assert alice == 11, "ids go on after the seeded ones"
        assert session(client, alice)["id"] == 21


def test_concurrent_joins_from_two_workers_all_land_on_sqlite(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from watchkeeper.demo import repository as repo

    url = f"sqlite:///{tmp_path}/core.db"
    engines = [repo.make_engine(url), repo.make_engine(url)]  # as two uvicorn workers would
    repo.create_schema(engines[0])
    repo.seed(engines[0], num_players=40, now_ms=0)
    repo.update_session(engines[0], 1, {"max_players": 100}, now_ms=0)
    joiners = [
        p for p in range(1, 41) if p not in {pl["id"] for pl in repo.get_session(engines[0], 1)["players"]}
    ]
    try:
        with ThreadPoolExecutor(16) as pool:
            rows = list(pool.map(lambda p: repo.join_session(engines[p % 2], 1, p, now_ms=p), joiners))
        assert len(rows) == len(joiners)
        final = repo.get_session(engines[1], 1)
        assert final["player_count"] == 1 + len(joiners) == len(final["players"])
    finally:
        for engine in engines:
            engine.dispose()


def test_a_join_writes_the_sessions_new_state_and_an_older_one_cannot_replace_it(
    client: TestClient,
) -> None:
    alice, bob = player(client, "alice"), player(client, "bob")
    sid = session(client, alice)["id"]
    joined = client.post(f"/sessions/{sid}/join", json={"player_id": bob}).json()
    after = client.get(f"/sessions/{sid}")
    assert after.headers["x-cache"] == "hit" and after.json() == joined and joined["player_count"] == 2

    core = client.app.state.core  # type: ignore[attr-defined]
    older = {**joined, "player_count": 1, "updated_at_ms": joined["updated_at_ms"] - 1}
    portal = client.portal  # the app's event loop (redis.asyncio clients are bound to it)
    assert portal is not None
    portal.call(core.cache.put_session, older, b'{"stale": true}')
    assert client.get(f"/sessions/{sid}").json()["player_count"] == 2, "a late, older answer lost"
    client.patch(f"/sessions/{sid}", json={"title": "renamed"})  # drops the entry
    renamed = client.get(f"/sessions/{sid}")
    assert renamed.headers["x-cache"] == "miss" and renamed.json()["title"] == "renamed"


def test_every_write_moves_a_sessions_version_forward(tmp_path: Path) -> None:
    from watchkeeper.demo import repository as repo

    engine = repo.make_engine(f"sqlite:///{tmp_path}/core.db")
    try:
        repo.create_schema(engine)
        repo.seed(engine, num_players=3, now_ms=1000)
        outsider = next(
            p for p in (1, 2, 3) if p not in {x["id"] for x in repo.get_session(engine, 1)["players"]}
        )
        versions = [repo.get_session(engine, 1)["updated_at_ms"]]
        versions.append(repo.join_session(engine, 1, outsider, now_ms=1000)["updated_at_ms"])  # same ms
        versions.append(repo.leave_session(engine, 1, outsider, now_ms=500)["updated_at_ms"])  # clock behind
        versions.append(repo.update_session(engine, 1, {"title": "t"}, now_ms=5000)[1]["updated_at_ms"])
        assert versions == [1000, 1001, 1002, 5000]
    finally:
        engine.dispose()


def test_an_expired_session_entry_is_filled_again_with_the_same_state() -> None:
    import asyncio

    from watchkeeper.demo.cache import ApiCache, MemoryBackend

    now = [0.0]
    cache = ApiCache(MemoryBackend(None, clock=lambda: now[0]), CoreApiSettings(gzip_enabled=False))
    row = {"id": 4, "updated_at_ms": 5}

    async def run() -> list[bytes | None]:
        await cache.put_session(row, b"v5")
        now[0] += cache.session_ttl + 1  # expired
        gone = await cache.get("session:4")
        await cache.put_session(row, b"v5 again")  # a reader's fill of the unchanged session
        again = await cache.get("session:4")
        await cache.put_session({"id": 4, "updated_at_ms": 4}, b"v4")  # older: refused
        return [gone, again, await cache.get("session:4")]

    assert asyncio.run(run()) == [None, b"v5 again", b"v5 again"]
