"""Query speed without Prometheus: the side-by-side harness' queries on its workload, in process.

    python bench/query_profile.py [--instances 10] [--minutes 120] [--repeat 5] [--http]
                                  [--data-dir DIR] [--profile 'QUERY'] [--only SUBSTRING]
                                  [--query 'QUERY' ...] [--synthetic]
                                  [--server URL [--prometheus URL] [--load]]

Builds the workload of ``../shared/bench/workload.py`` (``app_series`` + ``generate``, the same
deterministic samples ``sidebyside.py`` sends to both servers, ~900 series per instance, one
sample every 15 s) and appends it straight into a ``Storage`` (in memory by default; with
``--data-dir`` the SQLite-backed store the server uses, so persisted chunks are read through
SQL), then times every harness query at both harness spans (1 h / 15 s and ``minutes - 10`` /
60 s) through ``Engine.range``, and with ``--http`` through the HTTP API as well (FastAPI
``TestClient``: parameter parsing, parse, evaluation, JSON). Times are the best of ``--repeat``.
Each query line also shows where the engine's time goes: ``select`` (the store) and the rest.

``--profile QUERY`` runs cProfile on that query (through HTTP with ``--http``) and prints the top
functions by cumulative time instead of the table.

``--server URL`` times the queries through a running watchkeeper instead (real uvicorn, sockets,
middleware: what the harness sees), and with ``--prometheus URL`` a Prometheus holding the same
workload, request by request in turn (A, B, B, A, …) so that both see the same machine load; it
prints both best times and their ratio per query, then the medians and the worst ratio.
``--load`` first remote-writes the workload (ending now) into every server given, as the
harness does (give it fresh servers: a Prometheus that already holds newer data rejects the
older samples as out of bounds, and the write errors are printed); without it each server's
newest ``sessions_active`` sample is the end.

    python bench/query_profile.py --server http://127.0.0.1:9480 \
        --prometheus http://127.0.0.1:19090 --load --repeat 10
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import json
import os
import pstats
import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from watchkeeper.labels import Labels, Matcher
from watchkeeper.promql.engine import Engine
from watchkeeper.tsdb.reader import SeriesData
from watchkeeper.tsdb.storage import Storage

SHARED = Path(__file__).resolve().parents[2] / "shared" / "bench"
if not SHARED.is_dir():  # a copy of this script elsewhere (to time another checkout)
    SHARED = Path("/work/shared/bench")
sys.path.insert(0, str(SHARED))
sidebyside = importlib.import_module("sidebyside")  # the harness' query list
workload = importlib.import_module("workload")

STEP_MS = 15_000
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


class TimedReader:
    """A ``SeriesReader`` that adds up the time spent in ``select``/``select_concat`` (the engine
    uses the latter, as with the store itself: no per-series arrays to join again)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.select_s = 0.0

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[SeriesData]:
        t0 = time.perf_counter()
        try:
            return self.storage.select(matchers, start_ms, end_ms)
        finally:
            self.select_s += time.perf_counter() - t0

    def select_concat(self, matchers: Sequence[Matcher], start_ms: int,
                      end_ms: int) -> tuple[list[Labels], I64, F64, I64]:
        t0 = time.perf_counter()
        try:
            return self.storage.select_concat(matchers, start_ms, end_ms)
        finally:
            self.select_s += time.perf_counter() - t0

    def label_names(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        return self.storage.label_names(matchers, start_ms, end_ms)

    def label_values(self, name: str, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        return self.storage.label_values(name, matchers, start_ms, end_ms)


def workload_arrays(instances: int, minutes: int) -> tuple[list[Labels], I64, F64]:
    """Labels, timestamps (from 0) and values (series x steps) of the harness' workload, cached in
    the temporary directory (generating it takes about a minute per 10 instances)."""
    steps = minutes * 4
    cache = Path(tempfile.gettempdir()) / f"qprof-workload-{instances}x{steps}.npz"
    if cache.exists():
        data = np.load(cache)
        labels = [tuple(tuple(p) for p in json.loads(s)) for s in data["labels"].tolist()]
        return labels, data["ts"], data["vals"]
    series = workload.app_series(instances)
    workload.generate(series, 0, steps)
    labels = [tuple(sorted(s.labels.items())) for s in series]
    ts = np.array([[t for t, _ in s.samples] for s in series], dtype=np.int64)
    vals = np.array([[v for _, v in s.samples] for s in series], dtype=np.float64)
    np.savez(cache, labels=np.array([json.dumps(lab) for lab in labels]), ts=ts, vals=vals)
    return labels, ts, vals


def synthetic_arrays(instances: int, minutes: int) -> tuple[list[Labels], I64, F64]:
    """The workload's series (labels, counter or gauge) with NumPy-generated samples of the same
    shape: seconds to build at 100 instances (90k series), for scale and memory runs (answers
    are not comparable with the harness')."""
    steps = minutes * 4
    series = workload.app_series(instances)
    labels: list[Labels] = [tuple(sorted(s.labels.items())) for s in series]
    rng = np.random.default_rng(11)
    rates = np.array([s.rate for s in series])[:, None]
    gauge = np.array([s.kind == "gauge" for s in series])[:, None]
    steps_inc = np.maximum(0.0, rng.normal(rates, rates * 0.2, size=(len(series), steps))).round()
    level = np.maximum(0, np.round(rates + rng.normal(0, 1, size=steps_inc.shape) * rates * 0.1))
    vals = np.where(gauge, level, np.cumsum(steps_inc, axis=1))
    ts = np.broadcast_to(np.arange(steps, dtype=np.int64) * STEP_MS + 1_234, vals.shape)
    return labels, np.ascontiguousarray(ts), vals


def load(
    storage: Storage, instances: int, minutes: int, now_ms: int, *, synthetic: bool = False
) -> tuple[int, int]:
    """The harness' workload ending at ``now_ms`` (as ``sidebyside.py`` builds it); (series, samples)."""
    steps = minutes * 4
    labels, ts, vals = (synthetic_arrays if synthetic else workload_arrays)(instances, minutes)
    ts = ts + (now_ms - steps * STEP_MS)
    refs = storage.series_refs(labels)
    for k in range(steps):  # the remote-write order: every series' k-th sample, then the next
        storage.append(refs, ts[:, k], vals[:, k])
    return len(labels), len(labels) * steps


def http_client(engine: Engine, storage: Storage) -> Any:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from watchkeeper.promql.api import query_router

    app = FastAPI()
    app.include_router(query_router(lambda: engine, lambda: storage))
    return TestClient(app)


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def newest_sample_ms(client: Any, url: str) -> int:
    """The end of the workload in a server: its newest ``sessions_active`` sample."""
    r = client.get(f"{url}/api/v1/query", params={
        "query": "max(max_over_time(timestamp(sessions_active)[3h:15s]))"})
    r.raise_for_status()
    result = r.json()["data"]["result"]
    if not result:
        raise SystemExit(f"{url} holds no sessions_active sample in the last 3 h: load it (--load)")
    return round(float(result[0]["value"][1]) * 1000)


def served(args: argparse.Namespace, spans: list[tuple[int, int]]) -> None:
    """``--server`` (and ``--prometheus``): the harness' queries through running servers, in turn."""
    import httpx

    urls = [u.rstrip("/") for u in (args.server, args.prometheus) if u]
    names = ["watchkeeper", "prometheus"][: len(urls)]
    if args.load:
        steps = args.minutes * 4
        now_ms = (int(time.time()) // 15) * 15 * 1000
        series = workload.app_series(args.instances)
        workload.generate(series, now_ms - steps * STEP_MS, steps)
        bodies = workload.write_requests(series)
        for url in urls:
            seconds, errors = sidebyside.ingest(url + "/api/v1/write", bodies)
            print(f"loaded {url} in {seconds:.1f} s ({errors} errors)", file=sys.stderr)
    with httpx.Client(timeout=300) as client:
        ends = [newest_sample_ms(client, url) for url in urls]
        head = " ".join(f"{n + ' ms':>16}" for n in names) + ("     ratio" if len(urls) == 2 else "")
        print(f"{head}  query @span/step")
        best_of_each: list[list[float]] = [[] for _ in urls]
        ratios: list[float] = []
        for q in args.query or sidebyside.QUERIES:
            if args.only and args.only not in q:
                continue
            for span, step in spans:
                best = [float("inf")] * len(urls)
                for i in range(args.repeat + 1):  # the first round warms up
                    for k in (range(len(urls)) if i % 2 else reversed(range(len(urls)))):
                        params = {"query": q, "start": (ends[k] - span * 1000) / 1000,
                                  "end": ends[k] / 1000, "step": step}
                        t0 = time.perf_counter()
                        r = client.get(urls[k] + "/api/v1/query_range", params=params)
                        elapsed = time.perf_counter() - t0
                        r.raise_for_status()
                        if i:
                            best[k] = min(best[k], elapsed)
                for k, b in enumerate(best):
                    best_of_each[k].append(b)
                line = " ".join(f"{b * 1000:16.1f}" for b in best)
                if len(urls) == 2:
                    ratios.append(best[0] / best[1])
                    line += f" {ratios[-1]:9.2f}"
                print(f"{line}  {q[:80]} @{span}s/{step}", flush=True)
    for name, times in zip(names, best_of_each, strict=True):
        times.sort()
        if times:
            print(f"{name}: median {times[len(times) // 2] * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms")
    if ratios:
        middle = sorted(ratios)[len(ratios) // 2]
        print(f"ratio watchkeeper/prometheus: worst {max(ratios):.2f}, median {middle:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=10)
    ap.add_argument("--minutes", type=int, default=120)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--http", action="store_true", help="also time through the HTTP API (TestClient)")
    ap.add_argument("--data-dir", default="", help="SQLite-backed store here (default: in memory)")
    ap.add_argument("--profile", default="", help="cProfile this query instead of the table")
    ap.add_argument("--only", default="", help="only queries containing this text")
    ap.add_argument("--query", action="append", default=[], help="time this query instead of the harness'")
    ap.add_argument("--memory", action="store_true", help="also each query's peak allocations (tracemalloc)")
    ap.add_argument("--span", action="append", default=[],
                    help="SECONDS/STEP_SECONDS instead of the harness' two spans (e.g. 7200/15)")
    ap.add_argument("--synthetic", action="store_true",
                    help="NumPy-generated samples of the workload's shape (fast at 100 instances)")
    ap.add_argument("--server", default="", help="time through this running watchkeeper instead")
    ap.add_argument("--prometheus", default="", help="with --server: also this Prometheus, in turn")
    ap.add_argument("--load", action="store_true", help="with --server: remote-write the workload first")
    args = ap.parse_args()
    spans = [(int(a), int(b)) for a, b in (x.split("/") for x in args.span)] or [
        (3600, 15), (args.minutes * 60 - 600, 60)]
    if args.server:
        served(args, spans)
        return

    now_ms = (int(time.time()) // 15) * 15 * 1000
    tmp = None
    if args.data_dir == "tmp":
        tmp = tempfile.TemporaryDirectory(prefix="qprof-")
        args.data_dir = tmp.name
    storage = Storage.open(data_dir=Path(args.data_dir) if args.data_dir else None, wal_fsync=False)
    t0 = time.perf_counter()
    if storage.num_series:  # a store loaded by an earlier run (--data-dir): reuse it
        max_time = storage.stats().max_time or now_ms
        now_ms = (max_time // STEP_MS + 1) * STEP_MS
        print(f"reusing {storage.num_series} series in {args.data_dir}", file=sys.stderr)
    else:
        n_series, n_samples = load(storage, args.instances, args.minutes, now_ms, synthetic=args.synthetic)
        print(f"loaded {n_series} series, {n_samples:,} samples in {time.perf_counter() - t0:.1f} s"
              f" ({'SQLite ' + args.data_dir if args.data_dir else 'in memory'})", file=sys.stderr)
    if args.data_dir:  # let the persister commit the cut chunks, as a server would have by now
        while storage.stats().pending_chunks:
            time.sleep(0.2)
    reader = TimedReader(storage)
    engine = Engine(reader)
    client = http_client(engine, storage) if args.http else None
    end_ms = now_ms

    def run(query: str, span: int, step: int, via_http: bool) -> Callable[[], object]:
        start_ms = end_ms - span * 1000
        if via_http:
            params = {"query": query, "start": start_ms / 1000, "end": end_ms / 1000, "step": step}

            def call() -> object:
                assert client is not None
                r = client.get("/api/v1/query_range", params=params)
                r.raise_for_status()
                return r.content
            return call
        return lambda: engine.range(query, start_ms, end_ms, step * 1000)

    if args.profile:
        span, step = spans[-1]
        fn = run(args.profile, span, step, args.http)
        fn()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.repeat):
            fn()
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(45)
        return

    header = f"{'engine ms':>9} {'select ms':>9} {'eval ms':>8}"
    header += f" {'peak MiB':>8}" if args.memory else ""
    header += f" {'http ms':>8}" if client else ""
    print(f"{header}  series  query @span/step")
    totals: list[float] = []
    for q in args.query or sidebyside.QUERIES:
        if args.only and args.only not in q:
            continue
        for span, step in spans:
            fn = run(q, span, step, False)
            fn()  # warm (parse cache, imports)
            reader.select_s = 0.0
            best = float("inf")
            best_select = 0.0
            for _ in range(args.repeat):
                reader.select_s = 0.0
                t0 = time.perf_counter()
                result = engine.range(q, end_ms - span * 1000, end_ms, step * 1000)
                elapsed = time.perf_counter() - t0
                if elapsed < best:
                    best, best_select = elapsed, reader.select_s
            line = f"{best * 1000:9.1f} {best_select * 1000:9.1f} {(best - best_select) * 1000:8.1f}"
            if args.memory:  # one more run, traced: the peak of the query's own allocations
                tracemalloc.start()
                engine.range(q, end_ms - span * 1000, end_ms, step * 1000)
                line += f" {tracemalloc.get_traced_memory()[1] / 2**20:8.0f}"
                tracemalloc.stop()
            measured = best
            if client is not None:
                http = best_of(args.repeat, run(q, span, step, True))
                line += f" {http * 1000:8.1f}"
                measured = http
            totals.append(measured)
            print(f"{line}  {len(result.series):6d}  {q[:80]} @{span}s/{step}", flush=True)
    totals.sort()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS of this process {peak_kib / 1024:,.0f} MiB (store included)")
    if totals:
        print(f"median {totals[len(totals) // 2] * 1000:.1f} ms, max {totals[-1] * 1000:.1f} ms"
              f" ({'http' if client else 'engine'})")
    storage.close()
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
