"""Replication between replicas: what publishing costs the ingest path, how fast a replica
applies the others' samples, and the lag from one replica's ingest to another's store.

    python bench/replication.py [--series 2000] [--requests 100] [--lag-requests 50] [--repeat 3]
                                [--store wal|memory]

In one process, on a private ``redis-server``: stores (``wal``: WAL with fsync + SQLite, as a
server's; ``memory``: no WAL, which makes publishing's share look largest) and the ingest core
take `--requests` remote-write requests of `--series` series x 1 sample (the shape Prometheus
sends), alternately with replication off and on (publishing to a stream of the run's own; best of
`--repeat` each). Then a second replica starts from the beginning of the last run's stream and
applies it (catch-up rate). Then, with both running, `--lag-requests` requests go to the first
one 50 ms apart, and each time the second replica's store is polled until the sample is there:
the visibility lag.
Both replicas share the process (and the GIL); in production they are separate processes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.forwarding import workload  # noqa: E402
from tests.collector.encode import body  # noqa: E402
from tests.replication.conftest import RedisProcess, Replica, now_ms  # noqa: E402
from watchkeeper.collector.limits import Limits  # noqa: E402
from watchkeeper.collector.remote_write import RemoteWriteIngester  # noqa: E402
from watchkeeper.replication import ReplicationConfig  # noqa: E402
from watchkeeper.tsdb.storage import Storage  # noqa: E402


def open_store(kind: str, data_dir: Path) -> Storage:
    if kind == "memory":
        return Storage.open(data_dir=None)
    return Storage.open(data_dir=data_dir / "store")


def ingest(
    bodies: list[bytes], ingester: RemoteWriteIngester, published: Callable[[], object]
) -> tuple[float, float]:
    """(samples/s through the ingest core, process CPU microseconds per sample until `published`);
    series are created outside the timing."""
    ingester.ingest(bodies[0])
    samples = ingester.ingest(bodies[1]).accepted * (len(bodies) - 2)
    wait("the warm-up published", published)
    cpu = time.process_time()
    started = time.perf_counter()
    for b in bodies[2:]:
        ingester.ingest(b)
    rate = samples / (time.perf_counter() - started)
    wait("every sample published", published)
    return rate, (time.process_time() - cpu) / samples * 1e6


def wait(what: str, check: Callable[[], object], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {what}")
        time.sleep(0.002)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--lag-requests", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each, alternating; the best counts")
    ap.add_argument("--store", choices=("wal", "memory"), default="wal")
    args = ap.parse_args()
    bodies = workload(args.series, args.requests)
    tmp = Path(tempfile.mkdtemp(prefix="wk-bench-repl-"))
    redis = RedisProcess(tmp)
    redis.start()
    replicas: list[Replica] = []

    def replica(stream: str) -> Replica:
        data_dir = tmp / f"replica{len(replicas)}"
        data_dir.mkdir()
        config = ReplicationConfig(enabled=True, stream=stream, max_len=100_000, block="100ms")
        r = Replica(data_dir, redis.url, config, open_store(args.store, data_dir))
        replicas.append(r)
        r.start()
        return r

    try:
        off = on = 0.0
        cpu_off = cpu_on = float("inf")
        publisher: Replica | None = None
        for run in range(args.repeat):
            storage = open_store(args.store, tmp / f"off{run}")
            rate, cpu = ingest(bodies, RemoteWriteIngester(storage, Limits()), lambda: True)
            off, cpu_off = max(off, rate), min(cpu_off, cpu)
            storage.close()
            if publisher is not None:
                publisher.close()
            publisher = replica(f"bench:{run}")
            p = publisher
            rate, cpu = ingest(bodies, p.ingester, lambda: p.metric("queue_samples") == 0)  # noqa: B023
            on, cpu_on = max(on, rate), min(cpu_on, cpu)
        assert publisher is not None
        entries = publisher.metric("published_entries_total")
        backlog = publisher.metric("published_samples_total")

        # catch-up: a new replica applies the last run's stream
        started = time.perf_counter()
        follower = replica(publisher.config.stream)
        wait("the backlog applied", lambda: follower.metric("applied_entries_total") >= entries)
        catch_up = backlog / (time.perf_counter() - started)

        # lag: one request at a time to the publisher, polled on the follower
        lags: list[float] = []
        probe = [("__name__", "bench_lag"), ("replica", "a")]
        for i in range(args.lag_requests):
            ts = now_ms()
            load = [([("__name__", "bench_lag_load"), ("series", str(k))], [(ts, float(i))])
                    for k in range(args.series)]
            lag_body = body([(probe, [(ts, float(i))]), *load])
            publisher.ingester.ingest(lag_body)
            sent = time.perf_counter()
            wait("the lag sample", lambda: (s := follower.samples("bench_lag")) and s[-1][0] == ts, 30)  # noqa: B023
            lags.append((time.perf_counter() - sent) * 1000)
            time.sleep(0.05)
    finally:
        for r in replicas:
            r.close()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    lag = np.array(lags)
    print(f"workload: {args.requests} requests x {args.series} series x 1 sample, {args.store} stores")
    print(f"ingest, replication off: {off:12,.0f} samples/s  {cpu_off:5.2f} us CPU/sample")
    print(f"ingest, replication on:  {on:12,.0f} samples/s  {cpu_on:5.2f} us CPU/sample (until published)")
    print(f"on/off: throughput {on / off:.2f}x, CPU per sample {cpu_on / cpu_off:.2f}x")
    print(f"catch-up (apply {backlog:,.0f} samples in {entries:.0f} entries): {catch_up:12,.0f} samples/s")
    print(f"lag, ingest returned on A -> visible on B ({args.lag_requests} requests of {args.series + 1} "
          f"samples, 50 ms apart): p50 {np.percentile(lag, 50):.1f} ms, p95 {np.percentile(lag, 95):.1f} ms, "
          f"max {lag.max():.1f} ms")
    print(f"best of {args.repeat} runs each")


if __name__ == "__main__":
    main()
