"""The reference core API under load: N simulated users on loopback for a bounded time.

Starts the core API with uvicorn (``--workers 2``, uvloop + httptools, no access log) on a
freshly seeded database, optionally watchkeeper scraping it (``watchkeeper.demo.cli
--no-coreapi --no-traffic``), then runs `watchkeeper.demo.traffic` users (asyncio + httpx; a
think time between actions, session popularity skewed towards the sessions starting soonest)
and prints average/p50/p95/p99 latency, error rate, throughput and cache hit rate.

    python bench/load_coreapi.py                                # 1000 users, 60 s, monitoring on and off
    python bench/load_coreapi.py --users 200 --duration 20 --monitoring on
    python bench/load_coreapi.py --redis-url none               # in-process caches (per worker)
    python bench/load_coreapi.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test

Monitoring **on**: the SDK instruments the app (multiprocess export over both workers, cache
and database metrics) and watchkeeper scrapes ``/metrics`` every ``--scrape-interval``.
Monitoring **off**: ``COREAPI_INSTRUMENT=false`` (no SDK middleware, no ``/metrics``) and no
watchkeeper. The load generator shares the machine with the servers, so its own scheduling delay
is part of the latency it reports. CPU seconds during the load are printed for the generator,
the core API (workers included), watchkeeper, the Redis server and (``--database-url``) the
PostgreSQL backends serving the load's database, and ``machine_cpu_busy`` is
the share of both CPUs busy with anything (other tenants included), from /proc/stat.
Errors are 5xx answers and requests with no answer; 4xx (a full session, a 429) are the API's
expected refusals and are printed apart. Cache hit rate: hits / (hits + misses) over the GETs of
the four cached resources (session, player, discovery, statistics), from the ``X-Cache`` header
the clients saw, and (monitoring on) from ``cache_requests_total`` of those four caches on the
core API's ``/metrics``; the rate limiter's Redis calls are not cache lookups and are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvloop

from watchkeeper.demo import repository as repo
from watchkeeper.demo.traffic import TrafficConfig, TrafficStats, percentile_ms, run_traffic

CACHES = ("session", "player", "discovery", "statistics")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_seconds: float = 60) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server for {url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def cache_counts(port: int) -> dict[tuple[str, str], float]:
    """``cache_requests_total`` of the core API's four caches, by (cache, result)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out = {(c, r): 0.0 for c in CACHES for r in ("hit", "miss")}
    for m in re.finditer(r'^cache_requests_total\{cache="(\w+)",result="(hit|miss)"\} (\S+)$', text, re.M):
        if m.group(1) in CACHES:
            out[(m.group(1), m.group(2))] += float(m.group(3))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live children (uvicorn's workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / tick
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += cpu_seconds(int(child))
    except (OSError, IndexError, ValueError):
        pass
    return total


def redis_pid() -> int | None:
    for stat in Path("/proc").glob("[0-9]*/comm"):
        try:
            if stat.read_text().strip() == "redis-server":
                return int(stat.parent.name)
        except OSError:
            continue
    return None


def postgres_backends(db_url: str) -> list[int]:
    """PIDs of the PostgreSQL backends connected to the load's database (a server on this machine);
    none for SQLite."""
    import sqlalchemy as sa

    url = sa.make_url(db_url)
    if url.get_backend_name() != "postgresql":
        return []
    engine = sa.create_engine(url.set(database="postgres"))
    try:
        with engine.connect() as conn:
            query = sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :d")
            return [int(r[0]) for r in conn.execute(query, {"d": url.database})]
    finally:
        engine.dispose()


def hit_rate(hits: float, misses: float) -> float | None:
    return round(hits / (hits + misses), 4) if hits + misses else None


@contextlib.contextmanager
def fresh_database(server_url: str | None, work: Path, monitoring: bool) -> Iterator[str]:
    """A fresh SQLite file, or a fresh database on the PostgreSQL server of ``server_url``
    (created from it, dropped afterwards), so every run starts from the same seed."""
    if server_url is None:
        yield f"sqlite:///{work}/coreapi-{monitoring}-{time.monotonic_ns()}.db"
        return
    import sqlalchemy as sa

    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    name = f"coreapi_load_{os.getpid()}_{time.monotonic_ns()}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield str(sa.make_url(server_url).set(database=name).render_as_string(hide_password=False))
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run_once(args: argparse.Namespace, monitoring: bool, work: Path) -> dict[str, Any]:
    with fresh_database(args.database_url, work, monitoring) as db_url:
        summary = _run(args, monitoring, work, db_url)
    summary["database"] = "postgresql" if args.database_url else "sqlite"
    return summary


def _run(args: argparse.Namespace, monitoring: bool, work: Path, db_url: str) -> dict[str, Any]:
    engine = repo.make_engine(db_url)
    repo.create_schema(engine)
    repo.seed(engine, num_players=args.players, now_ms=int(time.time() * 1000))
    engine.dispose()
    redis_url = None if args.redis_url == "none" else args.redis_url
    if redis_url:
        import redis

        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        client.close()

    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "COREAPI_DATABASE_URL": db_url,
            "COREAPI_INSTRUMENT": str(monitoring).lower(),
            "COREAPI_LOG_LEVEL": "warning",
        }
    )
    if redis_url:
        env["COREAPI_REDIS_URL"] = redis_url
    if monitoring:
        env["COREAPI_METRICS_MULTIPROCESS_DIR"] = str(work / f"metrics-{time.monotonic_ns()}")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        core = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "watchkeeper.demo.api:app_from_env",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
                "--no-access-log",
                "--timeout-keep-alive",
                "120",
                "--log-level",
                "warning",
                "--loop",
                "uvloop",
                "--http",
                "httptools",
            ],
            env=env,
        )
        procs.append(core)
        wait_http(f"http://127.0.0.1:{port}/health", core)
        wk_port = None
        if monitoring:
            wk_port = free_port()
            wk = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "watchkeeper.demo.cli",
                    "--no-coreapi",
                    "--no-traffic",
                    "--scrape-target",
                    f"127.0.0.1:{port}",
                    "--port",
                    str(wk_port),
                    "--data-dir",
                    str(work / f"wk-{time.monotonic_ns()}"),
                    "--scrape-interval",
                    args.scrape_interval,
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append(wk)
            wait_http(f"http://127.0.0.1:{wk_port}/-/ready", wk)
        before = cache_counts(port) if monitoring else None
        config = TrafficConfig(
            f"http://127.0.0.1:{port}",
            users=args.users,
            duration_seconds=args.duration,
            think_seconds=(args.think_min, args.think_max),
            num_players=args.players,
            num_sessions=2 * args.players,
            ramp_up_seconds=args.ramp_up,
        )
        watched = {"coreapi": core.pid, "watchkeeper": procs[1].pid if monitoring else None}
        watched["redis"] = redis_pid() if redis_url else None
        cpu_before = {name: cpu_seconds(pid) for name, pid in watched.items() if pid is not None}
        pg_before = {pid: cpu_seconds(pid) for pid in postgres_backends(db_url)}
        load0 = _machine_cpu_seconds()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            stats, lags = runner.run(_traffic_and_lag(config))
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        elapsed = (stats.ended or time.monotonic()) - stats.started
        summary = stats.summary()
        lags.sort()
        summary["generator_lag_p95_ms"] = round(percentile_ms(lags, 0.95), 1)
        summary["generator_lag_max_ms"] = round(lags[-1] * 1000, 1) if lags else None
        summary["monitoring"] = "on" if monitoring else "off"
        summary["generator_cpu_seconds"] = round(
            (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime), 1
        )
        for name, before_s in cpu_before.items():
            summary[f"{name}_cpu_seconds"] = round(cpu_seconds(watched[name] or 0) - before_s, 1)
        if args.database_url:  # backends that ended during the load are not counted
            pg_after = {pid: cpu_seconds(pid) for pid in postgres_backends(db_url)}
            used = sum(cpu - pg_before.get(pid, 0.0) for pid, cpu in pg_after.items())
            summary["postgres_cpu_seconds"] = round(used, 1)
            summary["postgres_backends"] = len(pg_after)
        busy = _machine_cpu_seconds() - load0
        summary["machine_cpu_busy"] = round(busy / (elapsed * (os.cpu_count() or 1)), 2)
        if monitoring and before is not None and wk_port is not None:
            after = cache_counts(port)
            delta = {k: after[k] - before[k] for k in after}
            hits = sum(v for (_, r), v in delta.items() if r == "hit")
            summary["server_cache_hit_rate"] = hit_rate(hits, sum(delta.values()) - hits)
            summary["server_cache_hit_rate_by_cache"] = {
                c: hit_rate(delta[(c, "hit")], delta[(c, "miss")]) for c in CACHES
            }
            up = httpx.get(
                f"http://127.0.0.1:{wk_port}/api/v1/query",
                params={"query": 'count_over_time(up{job="coreapi"}[10m])'},
            ).json()
            result = up["data"]["result"]
            summary["watchkeeper_scrapes"] = int(float(result[0]["value"][1])) if result else 0
        return summary
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


async def _traffic_and_lag(config: TrafficConfig) -> tuple[TrafficStats, list[float]]:
    """Run the traffic, and measure the generator's own event-loop lag meanwhile (how late a
    50 ms sleep wakes up): a request's latency includes the time its answer waited for the loop."""
    lags: list[float] = []

    async def probe() -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.05)
            lags.append(time.perf_counter() - started - 0.05)

    task = asyncio.create_task(probe())
    try:
        return await run_traffic(config), lags
    finally:
        task.cancel()


def _machine_cpu_seconds() -> float:
    """Seconds all CPUs spent busy (not idle or waiting on I/O), from /proc/stat: the other
    helpers' and tenants' load shows here too."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]
    return busy / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load per run (default 60)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--monitoring", choices=("on", "off", "both"), default="both")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="'none': in-process caches")
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL URL (postgresql+psycopg://postgres@127.0.0.1:5432/test): each run gets a fresh "
        "database created from it; default: a fresh SQLite file per run",
    )
    parser.add_argument("--players", type=int, default=2000, help="seeded players (sessions: 2x)")
    parser.add_argument("--think-min", type=float, default=1.0)
    parser.add_argument("--think-max", type=float, default=3.0)
    parser.add_argument("--ramp-up", type=float, default=5.0, help="users start spread over this many s")
    parser.add_argument("--scrape-interval", default="5s")
    args = parser.parse_args()
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.monitoring]
    results = []
    with tempfile.TemporaryDirectory(prefix="wk-load-") as tmp:
        for monitoring in modes:
            results.append(run_once(args, monitoring, Path(tmp)))
            print(json.dumps(results[-1]), flush=True)
    load = os.getloadavg()
    print(
        f"\n{args.users} users, {args.duration:.0f} s, {args.workers} workers, think {args.think_min}-"
        f"{args.think_max} s, redis={args.redis_url}; load average now {load[0]:.1f} on {os.cpu_count()} CPUs"
    )
    header = (
        "monitoring",
        "requests",
        "throughput_rps",
        "avg_ms",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "error_rate",
        "status_4xx",
        "cache_hit_rate",
        "server_cache_hit_rate",
        "generator_cpu_seconds",
        "generator_lag_p95_ms",
        "coreapi_cpu_seconds",
        "watchkeeper_cpu_seconds",
        "redis_cpu_seconds",
        "postgres_cpu_seconds",
        "machine_cpu_busy",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        print("| " + " | ".join(str(r.get(h, "-")) for h in header) + " |")


if __name__ == "__main__":
    main()
