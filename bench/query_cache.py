"""Repeated dashboard loads with and without the range-query results cache (Redis).

    python bench/query_cache.py [--instances 10] [--minutes 120] [--span-minutes 110] [--step 15]
                                [--loads 6] [--refresh 30] [--redis redis://127.0.0.1:6379/14]

Loads the harness' workload (``query_profile.load``: ~900 series per instance, one sample every
15 s, ending now) into an in-memory ``Storage``, then plays a dashboard of the harness' queries
(``sidebyside.QUERIES``, one panel each) over the last ``--span-minutes`` at ``--step`` seconds,
``--loads`` times, each load ``--refresh`` seconds later than the one before (the clock is
simulated, as a browser refreshing the page would move it; the window start is aligned to the
step as Grafana and watchkeeper's dashboards do). Every load is timed without the cache
(``Engine.range``) and with it (``QueryCache.range``, cold on the first load); the two answers
of every panel are compared (they must be identical). Prints per-load times, the medians over
the warm loads, the ratios, the bucket hit rate and the bytes stored.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import redis

from watchkeeper.promql.cache import QueryCache, QueryCacheConfig, QueryCacheMetrics
from watchkeeper.promql.engine import Engine
from watchkeeper.promql.values import QueryResult
from watchkeeper.tsdb.storage import Storage

sys.path.insert(0, str(Path(__file__).resolve().parent))
query_profile = importlib.import_module("query_profile")  # the workload loader (and the harness)
QUERIES: list[str] = query_profile.sidebyside.QUERIES
PREFIX = "watchkeeper:bench-qc:"


def same(a: QueryResult, b: QueryResult) -> bool:
    return [s.labels for s in a.series] == [s.labels for s in b.series] and all(
        np.array_equal(x.timestamps_ms, y.timestamps_ms) and x.values.tobytes() == y.values.tobytes()
        for x, y in zip(a.series, b.series, strict=True)
    )


def counted(metrics: QueryCacheMetrics, name: str) -> float:
    return metrics.registry.get_sample_value(f"watchkeeper_query_cache_{name}_total") or 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=10)
    ap.add_argument("--minutes", type=int, default=120, help="workload length")
    ap.add_argument("--span-minutes", type=int, default=110, help="dashboard time range")
    ap.add_argument("--step", type=int, default=15, help="seconds")
    ap.add_argument("--loads", type=int, default=6)
    ap.add_argument("--refresh", type=int, default=30, help="seconds between loads")
    ap.add_argument("--bucket", default="15m")
    ap.add_argument("--freshness", default="10m")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    args = ap.parse_args()

    step_ms = args.step * 1000
    now_ms = int(time.time()) // 15 * 15_000
    storage = Storage.open(data_dir=None)
    t0 = time.perf_counter()
    n_series, n_samples = query_profile.load(storage, args.instances, args.minutes, now_ms)
    took = time.perf_counter() - t0
    print(f"loaded {n_series} series, {n_samples:,} samples in {took:.1f} s", file=sys.stderr)
    engine = Engine(storage)
    client = redis.Redis.from_url(args.redis)
    for key in client.scan_iter(f"{PREFIX}*"):
        client.delete(key)
    metrics = QueryCacheMetrics()
    config = QueryCacheConfig(bucket=args.bucket, freshness=args.freshness, key_prefix=PREFIX)
    cache = QueryCache(client, config, namespace="bench", metrics=metrics)
    for q in QUERIES:  # imports, parser and first-call costs out of the first timed load
        engine.range(q, now_ms - 600_000, now_ms, step_ms)

    print(f"dashboard: {len(QUERIES)} panels, last {args.span_minutes} min at {args.step} s steps, "
          f"a load every {args.refresh} s; bucket {args.bucket}, freshness {args.freshness}")
    print(f"{'load':>4} {'no cache ms':>11} {'cache ms':>9} {'hits':>5} {'misses':>6}  identical")
    plain_ms: list[float] = []
    cached_ms: list[float] = []
    warm_hits = warm_misses = 0.0
    all_same = True
    for i in range(args.loads):
        at = now_ms + i * args.refresh * 1000
        start = (at - args.span_minutes * 60_000) // step_ms * step_ms
        hits0, misses0 = counted(metrics, "hits"), counted(metrics, "misses")
        t0 = time.perf_counter()
        cached = [cache.range(engine, q, start, at, step_ms, now_ms=at) for q in QUERIES]
        cached_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        plain = [engine.range(q, start, at, step_ms) for q in QUERIES]
        plain_ms.append((time.perf_counter() - t0) * 1000)
        hits, misses = counted(metrics, "hits") - hits0, counted(metrics, "misses") - misses0
        if i:
            warm_hits, warm_misses = warm_hits + hits, warm_misses + misses
        identical = all(same(a, b) for a, b in zip(cached, plain, strict=True))
        all_same &= identical
        label = "cold" if i == 0 else str(i)
        print(f"{label:>4} {plain_ms[-1]:11.1f} {cached_ms[-1]:9.1f} {hits:5.0f} {misses:6.0f}  {identical}")

    no_cache = statistics.median(plain_ms)
    warm = statistics.median(cached_ms[1:]) if len(cached_ms) > 1 else float("nan")
    keys = list(client.scan_iter(f"{PREFIX}*"))
    stored = counted(metrics, "stored_bytes")
    print(f"median load: no cache {no_cache:.1f} ms, cold {cached_ms[0]:.1f} ms, warm {warm:.1f} ms")
    print(f"warm speed-up x{no_cache / warm:.1f}; cold/no-cache x{cached_ms[0] / no_cache:.2f}")
    total = warm_hits + warm_misses
    print(f"warm bucket hit rate {warm_hits / total if total else 0:.0%} ({warm_hits:.0f}/{total:.0f})")
    each = stored / max(1, len(keys)) / 1024
    print(f"stored {len(keys)} buckets, {stored / 1024:,.0f} KiB ({each:,.1f} KiB each)")
    errors = sum(
        metrics.registry.get_sample_value("watchkeeper_query_cache_errors_total", {"operation": op}) or 0.0
        for op in ("get", "set", "decode")
    )
    print(f"cache errors {errors:.0f}; cached answers identical to uncached: {'yes' if all_same else 'NO'}")
    for key in keys:
        client.delete(key)
    client.close()
    storage.close()


if __name__ == "__main__":
    main()
