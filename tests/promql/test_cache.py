"""The range-query results cache against the real Redis: answers through the cache (cold and warm)
must equal the uncached evaluation exactly, and only finished buckets may be stored."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from watchkeeper.errors import QueryError
from watchkeeper.labels import Labels, from_dict
from watchkeeper.promql import ast
from watchkeeper.promql.api import query_router
from watchkeeper.promql.cache import (
    CachedEngine,
    Piece,
    QueryCache,
    QueryCacheConfig,
    QueryCacheMetrics,
    bucket_span_ms,
    connect,
    data_reach,
    decode,
    encode,
    store_namespace,
)
from watchkeeper.promql.engine import Engine
from watchkeeper.promql.parser import parse
from watchkeeper.promql.values import QueryResult, ResultSeries
from watchkeeper.tsdb.reader import STALE_NAN
from watchkeeper.tsdb.storage import Storage

pytestmark = pytest.mark.redis

STEP = 15_000
END = 1_700_000_100_000  # data end; a multiple of 15 s (and of the 15 min bucket)
HOURS = 6
PINNED = END - 3 * 3_600_000 + 7_000

QUERIES = [
    "rate(http_requests_total[5m])",
    "sum by (job) (rate(http_requests_total[5m]))",
    "sum(rate(http_requests_total[5m])) / sum(rate(http_requests_total[5m] offset 1h))",
    "topk(2, rate(http_requests_total[5m]))",
    "bottomk(1, memory_bytes)",
    "sort_desc(rate(http_requests_total[5m]))",
    'absent(http_requests_total{instance="late"})',
    'absent(nonexistent{job="x"})',
    f"http_requests_total @ {PINNED / 1000:.3f}",
    f"rate(http_requests_total[10m] @ {PINNED / 1000:.3f}) + on(instance, job, code) memory_bytes * 0",
    "memory_bytes offset 30m",
    "memory_bytes offset -10m",
    "max_over_time(rate(http_requests_total[5m])[30m:1m])",
    "min_over_time(memory_bytes[20m:45s] offset -5m)",
    "histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[5m])))",
    "sum_over_time(memory_bytes[10m])",
    "avg_over_time(memory_bytes[7m])",
    "stddev_over_time(memory_bytes[30m])",
    "quantile_over_time(0.9, memory_bytes[30m])",
    "deriv(memory_bytes[10m])",
    "predict_linear(memory_bytes[30m], 3600)",
    "increase(http_requests_total[1h])",
    "irate(http_requests_total[5m]) - idelta(memory_bytes[5m])",
    "resets(http_requests_total[30m]) + changes(memory_bytes[30m])",
    'count_values("v", round(memory_bytes / 1e8))',
    "quantile(0.5, memory_bytes)",
    "stddev(memory_bytes)",
    'label_replace(memory_bytes, "host", "$1", "instance", "(.*)")',
    "memory_bytes > 5e8",
    "memory_bytes > bool 5e8",
    "rate(requests[5m])",
    "time() - timestamp(memory_bytes)",
    "scalar(sum(memory_bytes)) * 2",
    "vector(1) + step()",
    "hour(memory_bytes) * day_of_week()",
    "memory_bytes and on(instance) http_requests_total",
    "last_over_time(memory_bytes[10m])",
    "count(http_requests_total) by (instance)",
]


def _load(store: Storage) -> None:
    rng = np.random.default_rng(7)
    start = END - HOURS * 3_600_000
    times = np.arange(start, END + 1, STEP, dtype=np.int64) + 1_234
    series: list[tuple[Labels, np.ndarray, np.ndarray]] = []
    for instance in ("a", "b", "c"):
        for code in ("200", "500"):
            name = "http_requests_total"
            lbls = from_dict({"__name__": name, "job": "api", "instance": instance, "code": code})
            values = np.cumsum(rng.integers(0, 50, times.size)).astype(np.float64)
            values[times.size // 3 :] -= values[times.size // 3] - 3  # a counter reset
            series.append((lbls, times, values))
        gauge = 5e8 + np.cumsum(rng.normal(0, 1e7, times.size))
        gauge[rng.integers(0, times.size, 5)] = np.nan
        gauge[7] = -0.0
        series.append((from_dict({"__name__": "memory_bytes", "instance": instance}), times, gauge))
    late = times[times >= END - 2 * 3_600_000]  # starts two hours before the end
    series.append((
        from_dict({"__name__": "http_requests_total", "job": "api", "instance": "late", "code": "200"}),
        late, np.arange(late.size, dtype=np.float64),
    ))
    gone = times[times < END - 4 * 3_600_000]  # stops (with a staleness marker) four hours before
    series.append((
        from_dict({"__name__": "memory_bytes", "instance": "gone"}),
        np.append(gone, gone[-1] + STEP), np.append(np.full(gone.size, 3e8), STALE_NAN),
    ))
    for le in ("0.1", "0.5", "1", "+Inf"):
        lbls = from_dict({"__name__": "request_duration_seconds_bucket", "le": le, "job": "api"})
        series.append((lbls, times, np.arange(times.size) * (1 + float(le.replace("+Inf", "9")))))
    series.append((from_dict({"__name__": "requests", "job": "api"}), times, np.arange(times.size) * 2.0))
    early = times[times < END - 5 * 3_600_000 - 1_800_000]  # a non-counter name, the first half hour only
    series.append((from_dict({"__name__": "queue_depth"}), early, np.arange(early.size) * 3.0))
    refs = store.series_refs([s[0] for s in series])
    for ref, (_, ts, vs) in zip(refs, series, strict=True):
        store.append(np.full(ts.size, ref), ts, vs.astype(np.float64))


@pytest.fixture(scope="module")
def store() -> Iterator[Storage]:
    s = Storage.open(data_dir=None)
    _load(s)
    yield s
    s.close()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def make_cache(client: redis.Redis, **config: Any) -> QueryCache:
    return QueryCache(client, QueryCacheConfig(**config), namespace="test", metrics=QueryCacheMetrics())


def assert_same(got: QueryResult, want: QueryResult) -> None:
    assert got.result_type == want.result_type == "matrix"
    assert [s.labels for s in got.series] == [s.labels for s in want.series]
    for g, w in zip(got.series, want.series, strict=True):
        assert g.timestamps_ms.tolist() == w.timestamps_ms.tolist(), g.labels
        assert g.values.dtype == w.values.dtype == np.float64
        assert g.values.tobytes() == w.values.tobytes(), g.labels  # bit-identical, NaNs and -0.0 too
    # annotations: never fewer; a bucket keeps those of the (wider) evaluation that stored it
    assert set(got.warnings) >= set(want.warnings)
    assert set(got.infos) >= set(want.infos)


def metric(cache: QueryCache, name: str, **labels: str) -> float:
    return cache.metrics.registry.get_sample_value(f"watchkeeper_query_cache_{name}_total", labels) or 0.0


def hits(cache: QueryCache) -> float:
    return metric(cache, "hits")


@pytest.mark.parametrize("query", QUERIES)
def test_cold_and_warm_answers_equal_the_uncached_evaluation(
    store: Storage, client: redis.Redis, query: str
) -> None:
    engine, cache = Engine(store), make_cache(client)
    start, end = END - 4 * 3_600_000, END
    want = engine.range(query, start, end, STEP)
    assert_same(cache.range(engine, query, start, end, STEP, now_ms=END), want)
    assert client.dbsize() > 0
    before = hits(cache)
    assert_same(cache.range(engine, query, start, end, STEP, now_ms=END), want)
    assert hits(cache) - before >= 14  # 4 h of 15 min buckets, the last 10 min and up not finished
    # a later dashboard load: the window moved on 45 s; the old buckets are cut to the new start
    later = engine.range(query, start + 45_000, end, STEP)
    assert_same(cache.range(engine, query, start + 45_000, end, STEP, now_ms=END), later)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    query=st.sampled_from(QUERIES),
    step=st.sampled_from([15_000, 30_000, 45_000, 60_000, 7_000]),
    first=st.integers(0, 300),
    steps=st.integers(2, 400),
    ago_ms=st.integers(0, 3 * 3_600_000),
)
def test_any_aligned_range_equals_the_uncached_evaluation(
    store: Storage, client: redis.Redis, query: str, step: int, first: int, steps: int, ago_ms: int
) -> None:
    # the cache keeps what earlier examples stored: every answer must still be exact
    engine, cache = Engine(store), make_cache(client, bucket="10m")
    start = (END - HOURS * 3_600_000) // step * step + first * step
    end = start + (steps - 1) * step
    want = engine.range(query, start, end, step)
    assert_same(cache.range(engine, query, start, end, step, now_ms=END - ago_ms), want)


def test_buckets_younger_than_freshness_are_never_stored(store: Storage, client: redis.Redis) -> None:
    engine, cache = Engine(store), make_cache(client, freshness="20m")
    now = END - 3_600_000
    cache.range(engine, "memory_bytes", now - 3 * 3_600_000, now, STEP, now_ms=now)
    span = bucket_span_ms(cache.bucket_ms, STEP)
    keys: list[bytes] = client.keys("*")  # type: ignore[assignment]  # bytes: no decode_responses
    starts = sorted(int(k.rsplit(b":", 1)[1]) for k in keys)
    assert starts == list(range(now - 3 * 3_600_000, now - 20 * 60_000 - span + STEP, span))


def test_new_samples_in_the_fresh_tail_are_seen(client: redis.Redis) -> None:
    store = Storage.open(data_dir=None)
    try:
        ref = store.series_refs([from_dict({"__name__": "g"})])
        ts = np.arange(END - 3 * 3_600_000, END - 15 * 60_000, STEP)
        store.append(np.full(ts.size, ref[0]), ts, np.ones(ts.size))
        engine, cache = Engine(store), make_cache(client)
        queries = ["g", "g offset -20m", "max_over_time(g[5m:1m] offset -20m)"]
        for q in queries:
            cache.range(engine, q, END - 3 * 3_600_000, END, STEP, now_ms=END)
        # a late sample within the freshness window, and one at "now"
        store.append(ref, np.array([END - 5 * 60_000]), np.array([2.0]))
        store.append(ref, np.array([END]), np.array([3.0]))
        for q in queries:
            want = engine.range(q, END - 3 * 3_600_000, END, STEP)
            assert_same(cache.range(engine, q, END - 3 * 3_600_000, END, STEP, now_ms=END), want)
    finally:
        store.close()


@pytest.mark.parametrize("query", ["vector(1) + step()", "sort(memory_bytes)"])
def test_a_one_step_tail_is_evaluated_as_a_range(store: Storage, client: redis.Redis, query: str) -> None:
    # the last finished bucket ends one step before the end: one step is left to evaluate
    engine, cache = Engine(store), make_cache(client, freshness="10m")
    for _ in range(2):
        got = cache.range(engine, query, END - 3_600_000, END, STEP, now_ms=END + 10 * 60_000)
        assert_same(got, engine.range(query, END - 3_600_000, END, STEP))
    assert hits(cache) == 4


def test_buckets_keep_the_annotations_of_the_evaluation_that_stored_them(
    store: Storage, client: redis.Redis
) -> None:
    engine, cache = Engine(store), make_cache(client)
    query = "rate(queue_depth[5m]) or rate(http_requests_total[5m])"
    whole = cache.range(engine, query, END - HOURS * 3_600_000, END, STEP, now_ms=END)
    assert len(whole.infos) == 1  # queue_depth (first half hour only) is not named like a counter
    later = cache.range(engine, query, END - 4 * 3_600_000, END, STEP, now_ms=END)
    assert engine.range(query, END - 4 * 3_600_000, END, STEP).infos == []
    assert later.infos == whole.infos  # kept with the buckets (which steps raised it is not known)
    want = engine.range(query, END - 4 * 3_600_000, END, STEP)
    later.infos = []
    assert_same(later, want)


@pytest.mark.parametrize(
    ("query", "forward_ms", "pinned_ms", "dependent"),
    [
        ("a", 0, None, False),
        ("a offset 5m", 0, None, False),
        ("a offset -5m + b offset -1m", 300_000, None, False),
        ("rate(a[5m] offset -2m)", 120_000, None, False),
        ("max_over_time((a offset -1m)[10m:1m] offset -2m)", 180_000, None, False),
        ("a @ 100 offset -5s", 0, 105_000, False),
        ("max_over_time((a offset -1m)[10m:1m] @ 100)", 0, 160_000, False),
        ("a @ end()", 0, None, True),
        ("sum(rate(a[5m] @ start()))", 0, None, True),
        ("a * end()", 0, None, True),
        ("vector(range())", 0, None, True),
        ("time() + step()", 0, None, False),
    ],
)
def test_data_reach(query: str, forward_ms: int, pinned_ms: int | None, dependent: bool) -> None:
    reach = data_reach(parse(query))
    assert (reach.forward_ms, reach.pinned_ms, reach.range_dependent) == (forward_ms, pinned_ms, dependent)


@pytest.mark.parametrize(
    ("query", "start", "end", "step", "reason"),
    [
        ("memory_bytes @ end()", END - 3_600_000, END, STEP, "range_dependent"),
        ("memory_bytes * start()", END - 3_600_000, END, STEP, "range_dependent"),
        ("memory_bytes", END - 3_600_000 + 1_000, END, STEP, "unaligned"),
        ("memory_bytes", END - 3_600_000, END - 3_600_000, STEP, "single_step"),
        ("memory_bytes", END - 5 * 60_000, END, STEP, "fresh"),
        (f"memory_bytes @ {(END + 60_000) / 1000}", END - 3_600_000, END, STEP, "fresh"),
    ],
)
def test_bypassed_queries_are_answered_as_uncached(
    store: Storage, client: redis.Redis, query: str, start: int, end: int, step: int, reason: str
) -> None:
    engine, cache = Engine(store), make_cache(client)
    got = cache.range(engine, query, start, end, step, now_ms=END)
    assert_same(got, engine.range(query, start, end, step))
    assert metric(cache, "bypassed_queries", reason=reason) == 1
    assert client.dbsize() == 0


def test_key_ignores_whitespace_but_not_lookback(store: Storage, client: redis.Redis) -> None:
    cache = make_cache(client)
    start = END - 2 * 3_600_000
    cache.range(Engine(store), "sum(rate(http_requests_total[5m]))", start, END, STEP, now_ms=END)
    stored = client.dbsize()
    cache.range(Engine(store), "sum (\n rate( http_requests_total [5m] ))", start, END, STEP, now_ms=END)
    assert client.dbsize() == stored and hits(cache) == stored
    other = Engine(store, lookback_ms=60_000)
    got = cache.range(other, "sum(rate(http_requests_total[5m]))", start, END, STEP, now_ms=END)
    assert client.dbsize() == 2 * stored and hits(cache) == stored
    assert_same(got, other.range("sum(rate(http_requests_total[5m]))", start, END, STEP))


def test_redis_down_never_fails_a_query(store: Storage, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    engine, cache = Engine(store), make_cache(down)
    start = END - 2 * 3_600_000
    with caplog.at_level(logging.WARNING, logger="watchkeeper.promql.cache"):
        for _ in range(3):
            got = cache.range(engine, "rate(http_requests_total[5m])", start, END, STEP, now_ms=END)
            assert_same(got, engine.range("rate(http_requests_total[5m])", start, END, STEP))
    assert metric(cache, "errors", operation="get") == 1
    assert metric(cache, "bypassed_queries", reason="redis_unavailable") == 2
    assert len([r for r in caplog.records if "query cache unavailable" in r.message]) == 1
    down.close()


def test_corrupt_items_are_misses(store: Storage, client: redis.Redis) -> None:
    engine, cache = Engine(store), make_cache(client)
    start, query = END - 2 * 3_600_000, "sum by (code) (rate(http_requests_total[5m]))"
    cache.range(engine, query, start, END, STEP, now_ms=END)
    keys = client.keys("*")
    for key in keys:
        client.set(key, b"\x01garbage")
    want = engine.range(query, start, END, STEP)
    assert_same(cache.range(engine, query, start, END, STEP, now_ms=END), want)
    assert metric(cache, "errors", operation="decode") == len(keys)
    assert hits(cache) == 0
    assert_same(cache.range(engine, query, start, END, STEP, now_ms=END), want)
    assert hits(cache) == len(keys)  # rewritten by the previous load


def test_items_over_max_bytes_are_not_stored(store: Storage, client: redis.Redis) -> None:
    engine, cache = Engine(store), make_cache(client, max_item_bytes=200)
    got = cache.range(engine, "memory_bytes", END - 2 * 3_600_000, END, STEP, now_ms=END)
    assert_same(got, engine.range("memory_bytes", END - 2 * 3_600_000, END, STEP))
    assert client.dbsize() == 0
    assert metric(cache, "stored_bytes") == 0
    assert metric(cache, "oversized_buckets") == 7  # 2 h of 15 min buckets, but the last 15 min


def test_encoding_round_trip_is_bit_exact() -> None:
    labels = (("__name__", "x"), ("path", "/ü\"\\"))
    ts = np.array([1_000, 3_000, 4_000], dtype=np.int64)
    values = np.array([-0.0, STALE_NAN, np.inf])
    piece = Piece(1_000, 5_000, [ResultSeries(labels, ts, values)], ["w"], ["i"])
    back = decode(encode(piece, 1_000), 1_000, 1_000)
    assert (back.first_ms, back.last_ms, back.warnings, back.infos) == (1_000, 5_000, ["w"], ["i"])
    assert back.series[0].labels == labels
    assert back.series[0].timestamps_ms.tolist() == ts.tolist()
    assert back.series[0].values.tobytes() == values.tobytes()
    with pytest.raises(ValueError, match="truncated"):
        decode(encode(piece, 1_000)[:-8], 1_000, 1_000)
    with pytest.raises(ValueError):
        decode(encode(piece, 1_000)[:-1], 1_000, 1_000)


def test_config_validation() -> None:
    assert QueryCacheConfig(freshness="0s").freshness == "0s"
    with pytest.raises(ValueError, match="positive"):
        QueryCacheConfig(bucket="0s")
    with pytest.raises(ValueError):
        QueryCacheConfig(ttl="soon")


def test_freshness_is_at_least_the_out_of_order_window(client: redis.Redis) -> None:
    config = QueryCacheConfig(freshness="1m")
    cache = QueryCache(client, config, namespace="t", out_of_order_window_ms=3_600_000)
    assert cache.freshness_ms == 3_600_000


def test_query_range_api_uses_the_cache(store: Storage, client: redis.Redis) -> None:
    registry = CollectorRegistry()
    cache = QueryCache(client, QueryCacheConfig(), namespace="api", metrics=QueryCacheMetrics(registry))
    engine = Engine(store)
    app = FastAPI()
    app.include_router(query_router(lambda: engine, lambda: store, lambda: cache))
    plain = FastAPI()
    plain.include_router(query_router(lambda: engine, lambda: store))
    # a range that ended well before the wall clock: every bucket is finished
    params = {
        "query": "topk(2, rate(http_requests_total[5m]))",
        "start": str((END - 7_200_000) / 1000),
        "end": str(END / 1000),
        "step": "15s",
    }
    with TestClient(app) as c, TestClient(plain) as p:
        first = c.get("/api/v1/query_range", params=params)
        second = c.get("/api/v1/query_range", params=params)
        assert first.status_code == 200
        assert first.text == second.text == p.get("/api/v1/query_range", params=params).text
    assert registry.get_sample_value("watchkeeper_query_cache_hits_total") == 9  # 2 h, and END itself
    assert registry.get_sample_value("watchkeeper_query_cache_misses_total") == 9


def test_cached_engine_for_callers_that_take_an_engine(store: Storage, client: redis.Redis) -> None:
    engine = Engine(store)
    cached = CachedEngine(engine, make_cache(client), clock_ms=lambda: END)
    query = "sum by (instance) (memory_bytes)"
    for _ in range(2):
        want = engine.range(query, END - 3_600_000, END, STEP)
        assert_same(cached.range(query, END - 3_600_000, END, STEP), want)
    assert hits(cached.cache) == 3
    instant = cached.instant(query, END)
    assert instant.result_type == "vector" and len(instant.series) == 3


def test_ast_queries_are_cached_like_text(store: Storage, client: redis.Redis) -> None:
    engine, cache = Engine(store), make_cache(client)
    expr: ast.Expr = parse("memory_bytes")
    cache.range(engine, expr, END - 3_600_000, END, STEP, now_ms=END)
    cache.range(engine, "memory_bytes", END - 3_600_000, END, STEP, now_ms=END)
    assert hits(cache) == 3


def test_store_namespace(tmp_path: Path) -> None:
    pg = "postgresql+psycopg://wk@db/wk"
    assert store_namespace(pg, tmp_path / "a") == store_namespace(pg, tmp_path / "b")  # replicas
    assert store_namespace(None, tmp_path / "a") != store_namespace(None, tmp_path / "b")
    assert store_namespace(None, tmp_path / "a") != store_namespace(pg, tmp_path / "a")


def test_connect(store: Storage, redis_url: str) -> None:
    registry = CollectorRegistry()
    cache = connect(redis_url, QueryCacheConfig(), namespace="c", registry=registry)
    engine = Engine(store)
    for _ in range(2):
        cache.range(engine, "memory_bytes", END - 3_600_000, END, STEP, now_ms=END)
    assert registry.get_sample_value("watchkeeper_query_cache_hits_total") == 3
    assert (registry.get_sample_value("watchkeeper_query_cache_stored_bytes_total") or 0) > 0


def test_the_app_caches_range_queries_when_redis_is_configured(tmp_path: Path, redis_url: str) -> None:
    from tests.collector.encode import body
    from tests.test_app import HEADERS, wait_ready
    from watchkeeper.app import create_app
    from watchkeeper.config import Settings

    overrides = {"data_dir": tmp_path / "data", "redis_url": redis_url, "scrape_configs": []}
    samples = [(END - 60_000 * k, float(60 - k)) for k in range(60, 0, -1)]
    items = [([("__name__", "req_total"), ("i", str(i))], samples) for i in range(3)]
    params = {"query": "sum(rate(req_total[5m]))", "start": str((END - 3_600_000) / 1000),
              "end": str(END / 1000), "step": "15s"}
    with TestClient(create_app(Settings.load(None, overrides=overrides))) as c:
        wait_ready(c)
        assert c.post("/api/v1/write", content=body(items), headers=HEADERS).status_code == 204
        answers = [c.get("/api/v1/query_range", params=params).json() for _ in range(2)]
        metrics = c.get("/metrics").text
        # the dashboards' panels too
        explore = {"expr": "sum(rate(req_total[5m]))", "from": str(END - 3_600_000), "to": str(END),
                   "step": "15s"}
        graphs = [c.get("/explore/query.json", params=explore).json()["graph"] for _ in range(2)]
        after = c.get("/metrics").text
    assert answers[0] == answers[1] and answers[0]["status"] == "success"
    assert len(answers[0]["data"]["result"][0]["values"]) > 200
    assert "watchkeeper_query_cache_hits_total 5.0" in metrics  # 4 x 15 min + the bucket of END
    assert graphs[0]["series"] == graphs[1]["series"] and len(graphs[0]["series"][0]["x"]) > 200
    # the panel's query is the API's: both explore loads are answered from the API's buckets
    assert "watchkeeper_query_cache_hits_total 15.0" in after.splitlines()
    assert "watchkeeper_query_cache_misses_total 5.0" in after.splitlines()


def test_an_error_only_in_the_widened_steps_does_not_fail_the_request(client: redis.Redis) -> None:
    store = Storage.open(data_dir=None)
    try:
        x = END - 3 * 3_600_000  # a bucket start
        a, b = np.arange(x, x + 60_001, STEP), np.arange(x + 30_000, END, STEP)
        refs = store.series_refs([from_dict({"__name__": "a_total"}), from_dict({"__name__": "b_total"})])
        store.append(np.full(a.size, refs[0]), a, np.arange(a.size, dtype=np.float64))
        store.append(np.full(b.size, refs[1]), b, np.arange(b.size, dtype=np.float64))
        engine, cache = Engine(store), make_cache(client)
        query = "rate({__name__=~\"a_total|b_total\"}[1m])"  # both {} once the names are dropped
        with pytest.raises(QueryError, match="same labelset"):
            engine.range(query, x, END, STEP)
        want = engine.range(query, x + 5 * 60_000, END, STEP)  # after a_total's last rate
        assert_same(cache.range(engine, query, x + 5 * 60_000, END, STEP, now_ms=END), want)
    finally:
        store.close()
