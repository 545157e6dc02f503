"""Scrape manager throughput: N local targets x M series every interval, on this machine.

    python bench/scrape.py [--targets 100] [--series 1000] [--interval 15] [--intervals 4] [--memory]

The targets run in a separate process (one asyncio server listening on N loopback ports, each
answering a Prometheus text body of M series whose values change every scrape), so their CPU is
not counted. watchkeeper's side runs here: a `ScrapeManager` appending through the remote-write
ingest core into a `Storage` (SQLite + WAL with fsync, the embedded default; `--memory` for the
in-memory store). Prints the CPU used by this process (cores), scrape lag (how late each scrape
started against its slot), scrape durations, samples appended, and scrapes done against the slots
of the measured window (a manager that falls behind more than an interval skips slots: counted).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from watchkeeper.collector.limits import Limits
from watchkeeper.collector.remote_write import RemoteWriteIngester
from watchkeeper.collector.scrape import ScrapeManager
from watchkeeper.collector.targets import ScrapeConfig, StaticConfig
from watchkeeper.tsdb.storage import Storage


def body(series: int, k: int) -> bytes:
    lines = ["# HELP bench_requests_total Requests.", "# TYPE bench_requests_total counter"]
    for i in range(series):
        labels = f'route="/r{i % 50}",code="{200 + i % 5}",shard="{i}"'
        lines.append(f"bench_requests_total{{{labels}}} {k * 3 + i}")
    return ("\n".join(lines) + "\n").encode()


def serve_targets(base_port: int, count: int, series: int, ready: multiprocessing.Event) -> None:  # type: ignore[valid-type]
    bodies = [body(series, k) for k in range(8)]
    counter = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    return
                counter[0] += 1
                payload = bodies[counter[0] % len(bodies)]
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                             b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        servers = [await asyncio.start_server(handle, "127.0.0.1", base_port + i) for i in range(count)]
        ready.set()  # type: ignore[attr-defined]
        await asyncio.gather(*(s.serve_forever() for s in servers))

    asyncio.run(main())


def free_base_port(count: int) -> int:
    import socket

    for base in range(20000, 60000, count + 7):
        try:
            socks = []
            for i in range(count):
                s = socket.socket()
                s.bind(("127.0.0.1", base + i))
                socks.append(s)
            for s in socks:
                s.close()
            return base
        except OSError:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def watch_gc() -> list[tuple[int, float]]:
    """(generation, seconds) of each garbage collection from now on."""
    pauses: list[tuple[int, float]] = []
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append((info["generation"], time.perf_counter() - started[0]))

    gc.callbacks.append(callback)
    return pauses


async def run(args: argparse.Namespace, data_dir: Path | None) -> None:
    storage = Storage.open(data_dir=data_dir)
    ingester = RemoteWriteIngester(storage, Limits())
    base = free_base_port(args.targets)
    ready = multiprocessing.Event()
    proc = multiprocessing.Process(target=serve_targets, args=(base, args.targets, args.series, ready),
                                   daemon=True)
    proc.start()
    ready.wait(30)
    addresses = [f"127.0.0.1:{base + i}" for i in range(args.targets)]
    cfg = ScrapeConfig(job_name="bench", scrape_interval=f"{int(args.interval * 1000)}ms",
                       static_configs=[StaticConfig(targets=addresses)])
    manager = ScrapeManager([cfg], lambda: ingester)
    lags: list[float] = []
    durations: list[float] = []
    await manager.start()
    # the first interval warms up (first scrapes create the series); measure the following ones
    await asyncio.sleep(args.interval)
    before_samples = storage.stats().samples_appended_total
    gc_pauses = watch_gc()
    stalls: list[float] = []

    async def heartbeat() -> None:  # how long the event loop is kept from running a 10 ms timer
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.01)
            stalls.append(loop.time() - t - 0.01)

    beat = asyncio.create_task(heartbeat())
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.monotonic()
    scrapes0 = sum(loop.scrapes for loop in manager.loops())
    skipped0 = sum(loop.skipped_slots for loop in manager.loops())
    for _ in range(args.intervals):
        await asyncio.sleep(args.interval)
        for loop in manager.loops():
            lags.append(loop.last_lag)
            durations.append(loop.last_duration)
    wall = time.monotonic() - wall0
    beat.cancel()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    scrapes = sum(loop.scrapes for loop in manager.loops()) - scrapes0
    skipped = sum(loop.skipped_slots for loop in manager.loops()) - skipped0
    samples = storage.stats().samples_appended_total - before_samples
    health = [t["health"] for t in manager.targets_api()["activeTargets"]]
    await manager.stop()
    proc.terminate()
    storage.close()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    expected = args.targets * (args.series + 4) * wall / args.interval
    lags.sort()
    print(f"targets={args.targets} series/target={args.series} interval={args.interval}s "
          f"measured={wall:.0f}s store={'memory' if data_dir is None else 'sqlite+wal'} "
          f"load average at the end={os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    print(f"samples appended: {samples} ({samples / wall:,.0f}/s; expected ~{expected:,.0f})")
    print(f"CPU: {cpu:.1f} s over {wall:.0f} s = {cpu / wall:.2f} cores "
          f"({cpu / max(samples, 1) * 1e6:.1f} us/sample)")
    p99 = lags[max(0, int(len(lags) * 0.99) - 1)]
    print(f"scrape lag: median {statistics.median(lags) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
          f"max {lags[-1] * 1000:.1f} ms")
    print(f"scrape duration: median {statistics.median(durations) * 1000:.1f} ms, "
          f"max {max(durations) * 1000:.1f} ms")
    print(f"targets up: {health.count('up')}/{len(health)}")
    slots = args.targets * wall / args.interval
    print(f"scrapes: {scrapes} in {slots:,.0f} slots of the measured window; "
          f"slots skipped for falling behind: {skipped}")
    stalls.sort()
    print(f"event loop stalls: p99 {stalls[int(len(stalls) * 0.99)] * 1000:.1f} ms, "
          f"max {stalls[-1] * 1000:.1f} ms, over 100 ms: {sum(1 for s in stalls if s > 0.1)}")
    full = [s for g, s in gc_pauses if g == 2]
    print(f"GC: {len(gc_pauses)} collections, {sum(s for _, s in gc_pauses):.2f} s; "
          f"{len(full)} full, longest {max(full, default=0) * 1000:.0f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", type=int, default=100)
    p.add_argument("--series", type=int, default=1000)
    p.add_argument("--interval", type=float, default=15)
    p.add_argument("--intervals", type=int, default=4)
    p.add_argument("--memory", action="store_true", help="in-memory store instead of SQLite + WAL")
    args = p.parse_args()
    if args.memory:
        asyncio.run(run(args, None))
    else:
        with tempfile.TemporaryDirectory(prefix="wk-scrape-bench-") as tmp:
            asyncio.run(run(args, Path(tmp) / "data"))


if __name__ == "__main__":
    main()
