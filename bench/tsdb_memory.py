"""Memory per active series and bytes per sample on disk of the store, on the shared workload.

Ingests ``/work/shared/bench/workload.py`` (``app_series(instances)``, the samples of
``generate(series, start_ms, steps)``, computed step by step so the workload does not hold every
sample in memory) straight into `Storage` (SQLite in a temporary data dir), in remote-write
shaped batches of 2000 series x 1 sample. Each scale runs in its own subprocess so RSS figures
do not mix::

    python bench/tsdb_memory.py                      # 10 and 100 instances, 480 steps
    python bench/tsdb_memory.py --scales 1 10 --steps 240 --no-fsync

Printed: resident memory per *additional* series, ``(RSS(large) - RSS(small)) / (series(large) -
series(small))``, RSS measured as the growth since just before `Storage.open` (the workload's own
objects are excluded), after ``steps`` samples per series and also mid-chunk (60 samples in every
head chunk); and bytes per sample of the whole SQLite file after `flush_head` + `close`.

The store is opened as the server opens it, with glibc's malloc thresholds fixed
(``malloc_tuning``, `watchkeeper.tsdb.storage.tune_malloc`); ``--no-malloc-tuning`` measures
glibc's default behaviour for comparison.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WORKLOAD_DIR = Path("/work/shared/bench")
START_MS = 1_700_000_000_000
STEP_MS = 15_000
BATCH = 2000


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def child(instances: int, steps: int, fsync: bool, malloc_tuning: bool) -> dict[str, float]:
    sys.path.insert(0, str(WORKLOAD_DIR))
    import workload  # the shared workload, imported from its directory

    from watchkeeper.labels import from_dict
    from watchkeeper.tsdb.storage import Storage

    series = workload.app_series(instances)
    labels = [from_dict(s.labels) for s in series]
    rng = random.Random(11)  # what workload.generate uses, replayed step by step
    gc.collect()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        base = rss_bytes()
        store = Storage.open(data_dir=data_dir, wal_fsync=fsync, malloc_tuning=malloc_tuning)
        refs = store.series_refs(labels)  # `labels` stays alive: freeing it would offset the growth
        mid_step = steps - 60 if steps > 60 else steps
        rss_mid = 0
        started = time.perf_counter()
        in_append = 0.0
        for k in range(steps):
            workload.advance(series, rng)
            t = START_MS + k * STEP_MS + 1_234
            values = np.fromiter((round(s.value, 3) for s in series), np.float64, len(series))
            for lo in range(0, len(series), BATCH):
                t0 = time.perf_counter()
                res = store.append(refs[lo : lo + BATCH], np.full(min(BATCH, len(series) - lo), t),
                                   values[lo : lo + BATCH])
                in_append += time.perf_counter() - t0
                assert res.accepted == min(BATCH, len(series) - lo), res
            if k + 1 == mid_step:
                gc.collect()
                rss_mid = rss_bytes() - base
        ingest_seconds = time.perf_counter() - started
        gc.collect()
        rss_end = rss_bytes() - base
        st = store.stats()
        store.flush_head()
        store.close()
        db_bytes = (data_dir / "watchkeeper.db").stat().st_size
        extra = sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file()) - db_bytes
    samples = len(series) * steps
    return {
        "instances": instances, "series": len(series), "samples": samples, "steps": steps,
        "rss_growth_bytes": rss_end, "rss_growth_mid_chunk_bytes": rss_mid,
        "db_file_bytes": db_bytes, "other_data_dir_bytes": extra,
        "db_bytes_per_sample": db_bytes / samples,
        "ingest_seconds": ingest_seconds, "append_seconds": in_append,
        "samples_per_second": samples / in_append,
        "chunks_written": st.chunks_written_total, "wal_fsyncs": st.wal_fsyncs_total,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", type=int, nargs="+", default=[10, 100], help="instances per run")
    ap.add_argument("--steps", type=int, default=480, help="samples per series (15 s apart)")
    ap.add_argument("--no-fsync", action="store_true", help="skip WAL fsyncs (faster, same figures)")
    ap.add_argument("--no-malloc-tuning", action="store_true", help="keep glibc's default thresholds")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.steps, not args.no_fsync, not args.no_malloc_tuning)))
        return
    runs = []
    for inst in args.scales:
        cmd = [sys.executable, __file__, "--child", str(inst), "--steps", str(args.steps)]
        cmd += ["--no-fsync"] * args.no_fsync + ["--no-malloc-tuning"] * args.no_malloc_tuning
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        run = json.loads(out.strip().splitlines()[-1])
        runs.append(run)
        print(f"{inst:4d} instances: {run['series']:7d} series, {run['samples']:>10,d} samples, "
              f"RSS growth {run['rss_growth_bytes'] / 2**20:8.1f} MiB "
              f"(mid-chunk {run['rss_growth_mid_chunk_bytes'] / 2**20:.1f} MiB), "
              f"DB {run['db_file_bytes'] / 2**20:7.1f} MiB = {run['db_bytes_per_sample']:.3f} B/sample "
              f"(+ WAL {run['other_data_dir_bytes'] / run['samples']:.3f} B/sample), "
              f"{run['samples_per_second']:,.0f} samples/s inside Storage.append", flush=True)
    if len(runs) >= 2:
        small, large = runs[0], runs[-1]
        dn = large["series"] - small["series"]
        per = (large["rss_growth_bytes"] - small["rss_growth_bytes"]) / dn
        per_mid = (large["rss_growth_mid_chunk_bytes"] - small["rss_growth_mid_chunk_bytes"]) / dn
        print(f"RSS per additional series after {large['steps']} samples: {per:.0f} B "
              f"(mid-chunk: {per_mid:.0f} B); target <= 1024 B")
        print("bytes per sample on disk (whole SQLite file, after flush): "
              f"{large['db_bytes_per_sample']:.3f}; target <= 1.5")


if __name__ == "__main__":
    main()
