"""Read speed of `Storage.select` (and `select_concat` where present) on the shared workload.

Ingests ``/work/shared/bench/workload.py``'s ``app_series(instances)`` for ``--steps`` 15 s steps
(480 = 2 h) into a store (SQLite in a temporary data dir, and in memory), waits until every cut
chunk is committed, then times selecting every series over the whole range (``__name__=~".+"``)
and one metric (``http_requests_total``), best and median of ``--repeat`` runs::

    python bench/tsdb_select.py                          # 10 and 100 instances (9k, 90k series)
    python bench/tsdb_select.py --scales 10 --modes sqlite --profile

Printed: samples/s per case. ``--profile`` prints the cProfile top functions of one select.
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


def run_case(store: Any, matchers: list[Any], start: int, end: int, repeat: int,
             method: str) -> tuple[float, float, int]:
    fn = getattr(store, method)
    times = []
    n = 0
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        out = fn(matchers, start, end)
        times.append(time.perf_counter() - t0)
        n = sum(len(s.values) for s in out) if method == "select" else len(out[1])
        del out
    return min(times), statistics.median(times), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--steps", type=int, default=480)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--modes", nargs="+", default=["sqlite", "memory"], choices=["sqlite", "memory"])
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    from watchkeeper.labels import Matcher, MatchOp

    cases = {
        "all": [Matcher(MatchOp.REGEX, "__name__", ".+")],
        "http_requests_total": [Matcher(MatchOp.EQUAL, "__name__", "http_requests_total")],
    }
    start, end = START_MS, START_MS + args.steps * STEP_MS
    for inst in args.scales:
        for mode in args.modes:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                store, nseries = build(inst, args.steps, Path(tmp) / "data" if mode == "sqlite" else None)
                built = time.perf_counter() - t0
                print(f"{mode} {nseries} series x {args.steps} steps built in {built:.1f} s", flush=True)
                methods = ["select"] + (["select_concat"] if hasattr(store, "select_concat") else [])
                for name, m in cases.items():
                    for method in methods:
                        best, med, n = run_case(store, m, start, end, args.repeat, method)
                        print(f"  {mode:6s} {nseries:6d} series {name:20s} {method:13s} {n:>11,d} samples  "
                              f"best {best * 1e3:8.1f} ms ({n / best / 1e6:6.1f} M samples/s)  "
                              f"median {med * 1e3:8.1f} ms", flush=True)
                if args.profile:
                    prof = cProfile.Profile()
                    prof.enable()
                    store.select(cases["all"], start, end)
                    prof.disable()
                    pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
                store.close()


if __name__ == "__main__":
    main()
