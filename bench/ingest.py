"""Remote-write ingest, watchkeeper against Prometheus, on the shared side-by-side harness.

    python bench/ingest.py [--instances 10 100] [--minutes 120] [--shared ../shared/bench]
    python bench/ingest.py --instances 10 --in-process     # per-stage cost of one request, no HTTP

For each scale: starts `watchkeeper serve` on a fresh temporary data dir, runs
``sidebyside.py --no-queries`` (which starts a real Prometheus, sends it the workload, then sends the
same requests to watchkeeper, one request at a time), and prints both ingest rates, the server's
resident memory before and after, and -- after a graceful shutdown (SIGTERM) -- the bytes on disk per
sample. The last line gives resident memory per additional active series between the two scales.
Needs `prometheus` on PATH (Debian: apt-get install prometheus).

``--in-process`` needs no server: it sends the same request bodies straight to a
`RemoteWriteIngester` over a `Storage` on a temporary data dir (WAL fsync on, as served) and prints
each stage's CPU time per request (snappy, protobuf decode, series refs, head append + WAL write)
and the fsync wall time, the numbers to look at before and after a change to the ingest path.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def start_watchkeeper(tmp: Path, extra_env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """`watchkeeper serve` on a free port with its data dir and log in `tmp`, once it is ready."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp / "server.log").open("wb") as log:  # the child keeps its own descriptor
        server = subprocess.Popen(
            [sys.executable, "-m", "watchkeeper.cli", "serve", "--port", str(port),
             "--data-dir", str(tmp / "data"), "--retention", "30d"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **extra_env},
        )
    for _ in range(600):
        try:
            if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                return server, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.kill()
    raise SystemExit(f"watchkeeper did not become ready; see {tmp / 'server.log'}")


def run_scale(instances: int, minutes: int, shared: Path, extra_env: dict[str, str]) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="wk-bench-"))
    data = tmp / "data"
    server, url = start_watchkeeper(tmp, extra_env)
    try:
        rss_before = rss_bytes(server.pid)
        report_path = tmp / "report.json"
        subprocess.run(
            [
                sys.executable,
                str(shared / "sidebyside.py"),
                "--minutes",
                str(minutes),
                "--instances",
                str(instances),
                "--no-queries",
                "--port",
                str(free_port()),
                "--project-url",
                url,
                "--json",
                str(report_path),
            ],
            check=True,
        )
        report = json.loads(report_path.read_text())
        rss_after = rss_bytes(server.pid)
        status = httpx.get(url + "/api/v1/status/tsdb", timeout=600).json()["data"]
        server.send_signal(signal.SIGTERM)
        shutdown_started = time.monotonic()
        server.wait(600)
        shutdown_s = time.monotonic() - shutdown_started
        on_disk = dir_bytes(data)
        samples = report["samples"]
        targets = report["targets"]
        return {
            "instances": instances,
            "series": report["series"],
            "samples": samples,
            "prometheus_samples_per_s": targets["prometheus"]["ingest_samples_per_s"],
            "watchkeeper_samples_per_s": targets["watchkeeper"]["ingest_samples_per_s"],
            "watchkeeper_write_errors": targets["watchkeeper"]["write_errors"],
            "rss_before_mib": rss_before / 2**20,
            "rss_after_mib": rss_after / 2**20,
            "rss_after_bytes": rss_after,
            "head_series": status["headStats"]["numSeries"],
            "shutdown_s": shutdown_s,
            "bytes_on_disk": on_disk,
            "bytes_per_sample": on_disk / samples,
        }
    finally:
        if server.poll() is None:
            server.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_interleaved(
    instances: int, minutes: int, shared: Path, extra_env: dict[str, str], block: int
) -> None:
    """The same requests to Prometheus and watchkeeper, alternating blocks of `block` requests, so
    both see the same background load on a shared machine; also the servers' CPU time per sample."""
    sys.path.insert(0, str(shared))
    import sidebyside  # type: ignore[import-not-found]
    import workload  # type: ignore[import-not-found]

    steps = minutes * 4
    now_ms = (int(time.time()) // 15) * 15 * 1000
    series = workload.app_series(instances)
    workload.generate(series, now_ms - steps * 15_000, steps)
    bodies = workload.write_requests(series)
    total_samples = len(series) * steps
    tmp = Path(tempfile.mkdtemp(prefix="wk-bench-"))
    wk, wk_url = start_watchkeeper(tmp, extra_env)
    prom, prom_dir = sidebyside.start_prometheus(free_port())
    prom_url = next(a for a in prom.args if a.startswith("--web.listen-address=")).split("=", 1)[1]
    try:
        headers = {
            "Content-Encoding": "snappy",
            "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
        }
        targets = {
            "prometheus": (f"http://{prom_url}/api/v1/write", prom.pid),
            "watchkeeper": (wk_url + "/api/v1/write", wk.pid),
        }
        wall = dict.fromkeys(targets, 0.0)
        errors = dict.fromkeys(targets, 0)
        cpu0 = {name: cpu_seconds(pid) for name, (_, pid) in targets.items()}
        clients = {name: httpx.Client(timeout=60) for name in targets}
        for lo in range(0, len(bodies), block):
            for name, (url, _) in targets.items():
                t0 = time.perf_counter()
                for b in bodies[lo : lo + block]:
                    if clients[name].post(url, content=b, headers=headers).status_code >= 300:
                        errors[name] += 1
                wall[name] += time.perf_counter() - t0
        cpu = {name: cpu_seconds(pid) - cpu0[name] for name, (_, pid) in targets.items()}
        for name in targets:
            print(
                f"interleaved instances={instances}: {name} {total_samples / wall[name]:,.0f} samples/s "
                f"(errors {errors[name]}), server CPU {cpu[name] / total_samples * 1e6:.2f} us/sample",
                flush=True,
            )
        print(f"ratio watchkeeper/prometheus {wall['prometheus'] / wall['watchkeeper']:.2f}")
    finally:
        wk.send_signal(signal.SIGTERM)
        wk.wait(600)
        prom.terminate()
        prom.wait(30)
        shutil.rmtree(prom_dir, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def run_in_process(instances: int, minutes: int, shared: Path) -> None:
    """Per-stage cost of the ingest path on the harness' requests, without HTTP (see docstring)."""
    import numpy as np

    sys.path.insert(0, str(shared))
    import workload  # type: ignore[import-not-found]

    from watchkeeper.collector.limits import Limits
    from watchkeeper.collector.remote_write import (
        RemoteWriteIngester,
        decode_write_request,
        decompress_snappy,
    )
    from watchkeeper.tsdb.storage import Storage

    steps = minutes * 4
    now_ms = (int(time.time()) // 15) * 15 * 1000
    series = workload.app_series(instances)
    workload.generate(series, now_ms - steps * 15_000, steps)
    bodies = workload.write_requests(series)
    per_step = len(bodies) // steps
    tmp = Path(tempfile.mkdtemp(prefix="wk-bench-"))
    store = Storage.open(data_dir=tmp / "data", retention_ms=30 * 86_400_000)
    fsync_s = 0.0

    def timed(seconds: float) -> None:
        nonlocal fsync_s
        fsync_s += seconds

    store._wal.on_fsync = timed  # type: ignore[union-attr]
    try:
        ingester = RemoteWriteIngester(store, Limits())
        for body in bodies[:per_step]:  # creates the series (measured apart: once per series)
            ingester.ingest(body)
        stages = dict.fromkeys(("snappy", "decode", "refs", "append (head + WAL write + fsync wait)"), 0.0)
        names = list(stages)
        clock = time.thread_time
        fsync_s = 0.0
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for body in bodies[per_step:]:
            t0 = clock()
            raw = decompress_snappy(body, ingester.limits.max_body_bytes)
            t1 = clock()
            decoded = decode_write_request(raw, ingester._refs)
            t2 = clock()
            refs = np.array(decoded.refs, dtype=np.int64)[decoded.sample_series]
            t3 = clock()
            store.append(refs, decoded.timestamps_ms, decoded.values)
            t4 = clock()
            for name, dt in zip(names, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                stages[name] += dt
        n = len(bodies) - per_step
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        samples = sum(len(s.samples) for s in series) * (n / len(bodies))
        print(f"in process, instances={instances}: {n} requests, {samples / wall:,.0f} samples/s; "
              f"per request {wall / n * 1e3:.2f} ms wall, {cpu / n * 1e3:.2f} ms CPU (all threads)")
        for name, total in stages.items():
            print(f"  {name}: {total / n * 1e3:.3f} ms CPU")
        print(f"  WAL fsync: {fsync_s / n * 1e3:.3f} ms wall ({store.stats().wal_fsyncs_total} fsyncs)")
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--minutes", type=int, default=120)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "bench")
    parser.add_argument(
        "--no-fsync", action="store_true", help="WATCHKEEPER_WAL_FSYNC=false (not the default)"
    )
    parser.add_argument(
        "--interleaved",
        type=int,
        metavar="BLOCK",
        default=0,
        help="instead of sidebyside.py: alternate blocks of BLOCK requests between the two servers",
    )
    parser.add_argument("--in-process", action="store_true", help="per-stage cost without HTTP")
    args = parser.parse_args()
    if args.in_process:
        for n in args.instances:
            run_in_process(n, args.minutes, args.shared)
        return
    env = {"WATCHKEEPER_WAL_FSYNC": "false"} if args.no_fsync else {}
    if args.interleaved:
        for n in args.instances:
            run_interleaved(n, args.minutes, args.shared, env, args.interleaved)
        return
    results = []
    for n in args.instances:
        r = run_scale(n, args.minutes, args.shared, env)
        results.append(r)
        print(
            f"instances={n} series={r['series']} samples={r['samples']}: "
            f"prometheus {r['prometheus_samples_per_s']:,.0f} samples/s, "
            f"watchkeeper {r['watchkeeper_samples_per_s']:,.0f} samples/s "
            f"(ratio {r['watchkeeper_samples_per_s'] / r['prometheus_samples_per_s']:.2f}, "
            f"errors {r['watchkeeper_write_errors']}); "
            f"RSS {r['rss_before_mib']:.0f} -> {r['rss_after_mib']:.0f} MiB; "
            f"after SIGTERM ({r['shutdown_s']:.1f} s) {r['bytes_on_disk'] / 2**20:.1f} MiB on disk = "
            f"{r['bytes_per_sample']:.3f} bytes/sample",
            flush=True,
        )
    if len(results) >= 2:
        lo, hi = results[0], results[-1]
        per_series = (hi["rss_after_bytes"] - lo["rss_after_bytes"]) / (hi["series"] - lo["series"])
        print(f"resident memory per additional active series: {per_series:,.0f} bytes")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
