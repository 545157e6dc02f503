"""Read speed of `Storage.select` (and `select_concat` where present) on the shared workload.

Ingests ``/work/shared/bench/workload.py``'s ``app_series(instances)`` for ``--steps`` 15 s steps
(480 = 2 h) into a store (SQLite in a temporary data dir, and in memory), waits until every cut
chunk is committed, then times selecting every series over the whole range (``__name__=~".+"``)
and one metric (``http_requests_total``), best and median of ``--repeat`` runs::

    python bench/tsdb_select.py                          # 10 and 100 instances (9k, 90k series)
    python bench/tsdb_select.py --scales 10 --modes sqlite --profile

Cases: every series and one metric over the whole range, one metric over the last hour (a
dashboard's window: the cache keeps more than it returns) and the last 5 minutes (a rule's window:
mostly the open head chunks, whose frozen segments before it are not decoded). Printed: samples/s
per case, for ``legacy`` (the select of commit 50b1027, kept here), ``select`` and
``select_concat`` with the select cache off, and ``cached`` (``select_concat`` again with the cache
on and warmed by one select of the same series over a window starting a minute earlier), rounds
interleaved so that machine load hits them alike, with the ratio of uncached to cached.
``--steps 500`` leaves 20 samples per series in the head (480 leaves none).
``--profile`` prints the cProfile top functions of one uncached select.
Runs against whichever ``watchkeeper`` is importable (``PYTHONPATH=/some/checkout`` compares).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

WORKLOAD_DIR = Path("/work/shared/bench")
START_MS = 1_700_000_000_000
STEP_MS = 15_000


# --- the select of commit 50b1027 (before this bench existed), for same-run before/after figures ---


def _legacy_read(store: Any, series_ids: list[int], start_ms: int, end_ms: int) -> Any:
    import sqlalchemy as sa

    from watchkeeper.tsdb.chunkstore import _BATCH, SqlChunkStore, _batch
    from watchkeeper.tsdb.schema import chunks_table

    if not isinstance(store, SqlChunkStore):
        return store.read(series_ids, start_ms, end_ms)
    c = chunks_table.c
    ids = sorted(set(series_ids))
    rows: list[tuple[int, int, int, bytes]] = []
    with store.engine.connect() as conn:
        for i in range(0, len(ids), _BATCH):
            q = (sa.select(c.series_id, c.min_time, c.max_time, c.data)
                 .where(c.series_id.in_(ids[i : i + _BATCH]))
                 .where(c.min_time <= end_ms, c.max_time >= start_ms)
                 .order_by(c.series_id, c.min_time))
            rows.extend((r[0], r[1], r[2], bytes(r[3])) for r in conn.execute(q))
    return _batch(rows)


def legacy_select(self: Any, matchers: Any, start_ms: int, end_ms: int) -> list[Any]:
    from watchkeeper.tsdb.chunks import decode_concat
    from watchkeeper.tsdb.reader import SeriesData

    with self._lock:
        slots = self._slots(matchers, start_ms, end_ms)
        if not len(slots):
            return []
        ids = self._index.ids[slots]
        labels = [self._index.labels(s) for s in slots.tolist()]
        h = self._head
        h_slots, h_ts, h_vals = h.samples_of(slots)
        need_db = ~(h.has_samples(slots) & (h.base_ms[slots] <= start_ms))
        queued: list[Any] = []
        by_id = self._queue.by_id
        for sid in ids.tolist():
            queued.extend(r for r in by_id.get(sid, ()) if r[1] <= end_ms and r[2] >= start_ms)
    batch = _legacy_read(self._store, ids[need_db].tolist(), start_ms, end_ms) if need_db.any() else None
    rows: dict[tuple[int, int, int], bytes] = {}
    if batch is not None:
        for key, blob in zip(zip(batch.series_ids.tolist(), batch.min_times.tolist(),
                                 batch.max_times.tolist(), strict=True), batch.blobs, strict=True):
            rows[key] = blob
    for r in queued:
        rows.setdefault((r[0], r[1], r[2]), r[3])
    keys = sorted(rows)
    c_ts, c_vals, offsets = decode_concat([rows[k] for k in keys])
    by_id_order = np.argsort(ids)
    chunk_pos = by_id_order[np.searchsorted(ids[by_id_order], np.fromiter((k[0] for k in keys), np.int64,
                                                                       len(keys)))]
    pos = np.concatenate([np.repeat(chunk_pos, np.diff(offsets)), np.searchsorted(slots, h_slots)])
    ts = np.concatenate([c_ts, h_ts])
    vals = np.concatenate([c_vals, h_vals])
    keep = (ts >= start_ms) & (ts <= end_ms)
    pos, ts, vals = pos[keep], ts[keep], vals[keep]
    order = np.argsort(pos, kind="stable")
    pos, ts, vals = pos[order], ts[order], vals[order]
    same = pos[1:] == pos[:-1]
    if (same & (ts[1:] <= ts[:-1])).any():
        order = np.lexsort((ts, pos))
        pos, ts, vals = pos[order], ts[order], vals[order]
        last = np.append((pos[1:] != pos[:-1]) | (ts[1:] != ts[:-1]), True)
        pos, ts, vals = pos[last], ts[last], vals[last]
    bounds = np.searchsorted(pos, np.arange(len(slots) + 1)).tolist()
    out = [SeriesData(labels[i], ts[bounds[i] : bounds[i + 1]], vals[bounds[i] : bounds[i + 1]])
           for i in range(len(slots)) if bounds[i + 1] > bounds[i]]
    out.sort(key=lambda s: s.labels)
    return out


def build(instances: int, steps: int, data_dir: Path | None) -> tuple[Any, int]:
    sys.path.insert(0, str(WORKLOAD_DIR))
    import random

    import workload

    from watchkeeper.labels import from_dict
    from watchkeeper.tsdb.storage import Storage

    series = workload.app_series(instances)
    store = Storage.open(data_dir=data_dir, wal_fsync=False) if data_dir else Storage.open(data_dir=None)
    refs = store.series_refs([from_dict(s.labels) for s in series])
    rng = random.Random(11)
    for k in range(steps):
        workload.advance(series, rng)
        vals = np.fromiter((round(s.value, 3) for s in series), np.float64, len(series))
        res = store.append(refs, np.full(len(series), START_MS + k * STEP_MS + 1_234), vals)
        assert res.accepted == len(series), res
    while store.stats().pending_chunks:
        time.sleep(0.05)
    return store, len(series)


def run_cases(store: Any, matchers: list[Any], start: int, end: int, repeat: int,
              methods: list[str]) -> dict[str, tuple[float, float, int]]:
    """Each method once per round, rounds interleaved, so load changes hit all of them alike."""
    from watchkeeper.tsdb.selectcache import DEFAULT_MAX_BYTES

    times: dict[str, list[float]] = {m: [] for m in methods}
    counts: dict[str, int] = {}
    for _ in range(repeat):
        for method in methods:
            fn = {"legacy": lambda m, a, b: legacy_select(store, m, a, b), "cached": store.select_concat
                  }.get(method) or getattr(store, method)
            if hasattr(store, "resize_select_cache"):
                store.resize_select_cache(DEFAULT_MAX_BYTES if method == "cached" else 0)
                if method == "cached":  # warm, over a window starting a minute earlier
                    store.select_concat(matchers, start - 60_000, end)
            gc.collect()
            t0 = time.perf_counter()
            out = fn(matchers, start, end)
            times[method].append(time.perf_counter() - t0)
            counts[method] = len(out[1]) if isinstance(out, tuple) else sum(len(s.values) for s in out)
            del out
    return {m: (min(t), statistics.median(t), counts[m]) for m, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--steps", type=int, default=480)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--modes", nargs="+", default=["sqlite", "memory"], choices=["sqlite", "memory"])
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    from watchkeeper.labels import Matcher, MatchOp

    every = [Matcher(MatchOp.REGEX, "__name__", ".+")]
    requests = [Matcher(MatchOp.EQUAL, "__name__", "http_requests_total")]
    start, end = START_MS, START_MS + args.steps * STEP_MS
    cases = {  # name: (matchers, start, end)
        "all": (every, start, end),
        "http_requests_total": (requests, start, end),
        "requests last 1h": (requests, end - 3600_000, end),
        "requests last 5m": (requests, end - 300_000, end),
    }
    for inst in args.scales:
        for mode in args.modes:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                store, nseries = build(inst, args.steps, Path(tmp) / "data" if mode == "sqlite" else None)
                built = time.perf_counter() - t0
                print(f"{mode} {nseries} series x {args.steps} steps built in {built:.1f} s", flush=True)
                methods = ["legacy", "select"]
                methods += ["select_concat"] if hasattr(store, "select_concat") else []
                methods += ["cached"] if hasattr(store, "resize_select_cache") else []
                for name, (m, a, b) in cases.items():
                    results = run_cases(store, m, a, b, args.repeat, methods)
                    for method, (best, med, n) in results.items():
                        print(f"  {mode:6s} {nseries:6d} series {name:20s} {method:13s} {n:>11,d} samples  "
                              f"best {best * 1e3:8.1f} ms ({n / best / 1e6:6.1f} M samples/s)  "
                              f"median {med * 1e3:8.1f} ms", flush=True)
                    if "cached" in results:
                        ratio = results["select_concat"][1] / results["cached"][1]
                        label = f"{mode:6s} {nseries:6d} series {name:20s}"
                        print(f"  {label} uncached/cached median {ratio:.1f}x", flush=True)
                if args.profile:
                    if hasattr(store, "resize_select_cache"):
                        store.resize_select_cache(0)
                    prof = cProfile.Profile()
                    prof.enable()
                    store.select(every, start, end)
                    prof.disable()
                    pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
                store.close()


if __name__ == "__main__":
    main()
