"""Over-HTTP throughput loss of watchkeeper's ``instrument(app)`` and of the peers, in one run.

Each (round, variant) starts a fresh uvicorn (one worker, uvloop + httptools, no access log)
serving the app that ``bench/sdk_overhead.py`` builds for that variant, warms it up, and drives
``GET /items/42`` from a load generator on loopback: ``wrk`` when installed
(``apt-get install wrk``), else a built-in asyncio/httpx client (slower; compare ratios only).
The variant order rotates per round; every run must see 0 non-2xx responses, and for the
Prometheus variants ``/metrics`` must have counted at least every request wrk completed.

    python bench/sdk_http.py                       # 3 rounds x 10 s, wrk -t1 -c32
    python bench/sdk_http.py --rounds 5 --duration 10 --variants bare,watchkeeper,pfi
Needs the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
VARIANTS = ("bare", "watchkeeper", "pfi", "se", "otel", "native")
PEERS = ("pfi", "se", "otel", "native")
COUNTERS = {
    "watchkeeper": 'http_requests_total{method="GET",route="/items/{item_id}",status="200"}',
    "pfi": 'http_requests_total{handler="/items/{item_id}",method="GET",status="2xx"}',
    "se": (
        "starlette_requests_total"
        '{app_name="starlette",method="GET",path="/items/{item_id}",status_code="200"}'
    ),
}


def app_factory():  # type: ignore[no-untyped-def]
    """``uvicorn --factory sdk_http:app_factory``: the app of ``$WK_BENCH_VARIANT``."""
    sys.path.insert(0, str(HERE))
    from sdk_overhead import build

    return build(os.environ["WK_BENCH_VARIANT"])[0]


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    server_cpu_us: float = 0.0  # server process CPU (user + system) per completed request


def _cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from /proc (the server's own CPU, whatever else runs on the box)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, seconds: float, connections: int) -> Result:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    return Result(rps, p50, p99, requests)


def run_python_client(url: str, seconds: float, connections: int) -> Result:
    latencies: list[float] = []

    async def worker(client: httpx.AsyncClient, stop: float) -> None:
        while time.perf_counter() < stop:
            start = time.perf_counter()
            response = await client.get(url)
            if response.status_code != 200:
                raise SystemExit(f"status {response.status_code}")
            latencies.append(time.perf_counter() - start)

    async def main() -> float:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(limits=limits) as client:
            start = time.perf_counter()
            await asyncio.gather(*(worker(client, start + seconds) for _ in range(connections)))
            return time.perf_counter() - start

    elapsed = asyncio.run(main())
    latencies.sort()
    return Result(
        len(latencies) / elapsed,
        latencies[len(latencies) // 2] * 1000,
        latencies[int(len(latencies) * 0.99)] * 1000,
        len(latencies),
    )


def bench_variant(variant: str, seconds: float, warmup: float, connections: int) -> Result:
    port = _free_port()
    env = {**os.environ, "WK_BENCH_VARIANT": variant}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "sdk_http:app_factory", "--factory", "--app-dir", str(HERE),
         "--port", str(port), "--workers", "1", "--loop", "uvloop", "--http", "httptools",
         "--no-access-log", "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/items/1").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{variant}: server did not start: {server.stderr.read().decode()}")  # type: ignore[union-attr]
            time.sleep(0.1)
        drive = run_wrk if shutil.which("wrk") else run_python_client
        drive(f"{base}/items/42", warmup, connections)
        cpu_before = _cpu_seconds(server.pid)
        result = drive(f"{base}/items/42", seconds, connections)
        result.server_cpu_us = (_cpu_seconds(server.pid) - cpu_before) / result.requests * 1e6
        counter = COUNTERS.get(variant)
        if counter is not None:
            text = httpx.get(f"{base}/metrics").text
            counted = next(
                float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(counter)
            )
            if counted < result.requests:
                raise SystemExit(f"{variant}: /metrics counted {counted} < {result.requests} requests")
        return result
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stderr is not None:
            server.stderr.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)

    variants = [v for v in args.variants.split(",") if v]
    results: dict[str, list[Result]] = {v: [] for v in variants}
    for round_index in range(args.rounds):
        order = variants[round_index % len(variants) :] + variants[: round_index % len(variants)]
        for variant in order:
            result = bench_variant(variant, args.duration, args.warmup, args.connections)
            results[variant].append(result)
            print(f"round {round_index + 1} {variant:12s} {result.rps:8.0f} req/s p50 {result.p50_ms:.1f} ms "
                  f"p99 {result.p99_ms:.1f} ms, server CPU {result.server_cpu_us:.0f} µs/req",
                  file=sys.stderr)  # fmt: skip

    generator = "wrk -t1" if shutil.which("wrk") else "python asyncio/httpx client"
    print(f"over HTTP: uvicorn 1 worker (uvloop, httptools), {generator} -c{args.connections}, "
          f"{args.duration:g} s x {args.rounds} rounds (medians)")  # fmt: skip
    print("| variant | req/s | vs bare | p50 / p99 ms | server CPU µs/req | CPU-implied throughput vs bare |")
    print("|---|---|---|---|---|---|")
    median = {v: statistics.median(r.rps for r in rs) for v, rs in results.items()}
    cpu = {v: statistics.median(r.server_cpu_us for r in rs) for v, rs in results.items()}
    bare = median.get("bare")
    for v in variants:
        rs = results[v]
        p50 = statistics.median(r.p50_ms for r in rs)
        p99 = statistics.median(r.p99_ms for r in rs)
        if bare is None or v == "bare":
            print(f"| {v} | {median[v]:.0f} | – | {p50:.1f} / {p99:.1f} | {cpu[v]:.0f} | – |")
        else:
            loss = (median[v] / bare - 1) * 100
            implied = (cpu["bare"] / cpu[v] - 1) * 100
            print(
                f"| {v} | {median[v]:.0f} | {loss:+.1f}% | {p50:.1f} / {p99:.1f} "
                f"| {cpu[v]:.0f} | {implied:+.1f}% |"
            )
    if bare is not None and "watchkeeper" in median:
        print(
            f"\nwatchkeeper throughput loss: {(1 - median['watchkeeper'] / bare) * 100:.1f}% (target < 15%)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
