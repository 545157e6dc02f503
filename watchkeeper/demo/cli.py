"""``watchkeeper demo``: watchkeeper, the reference core API and simulated users in one process,
with watchkeeper scraping the core API (and itself) so every query and dashboard has live data.

    watchkeeper demo [--port 9470] [--coreapi-port 8080] [--users 50] [--error-rate 0.2]
                     [--latency-ms 300] [--redis-url redis://...] [--duration SECONDS]

``--error-rate`` / ``--latency-ms`` make that share of requests fail / every request slow (the
core API runs with fault injection on), to watch alerts fire; restart without them to see them
resolve. ``--no-coreapi --scrape-target HOST:PORT`` monitors a core API running elsewhere (the
load test uses it); ``--no-traffic`` leaves the traffic to you.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("watchkeeper.demo")

EXAMPLE_QUERIES = (
    'sum by (route) (rate(http_requests_total{job="coreapi"}[1m]))',
    'histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{job="coreapi"}[1m])))',
    'sum(rate(cache_requests_total{result="hit"}[1m])) / sum(rate(cache_requests_total[1m]))',
    "sum by (region) (coreapi_active_sessions)",
    "sum by (region) (rate(coreapi_session_joins_total[5m]))",
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="watchkeeper demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address of both servers (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9470, help="watchkeeper's port (default 9470)")
    p.add_argument("--coreapi-port", type=int, default=8080, help="the core API's port (default 8080)")
    p.add_argument("--data-dir", type=Path, default=Path("./data/demo"), help="default ./data/demo")
    p.add_argument("--redis-url", default=None, help="cache and rate limits in Redis (default: in memory)")
    p.add_argument("--users", type=int, default=50, help="simulated users (default 50)")
    p.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered 500 (0..1)")
    p.add_argument("--latency-ms", type=int, default=0, help="latency added to every request")
    p.add_argument("--scrape-interval", default="5s", help="how often watchkeeper scrapes (default 5s)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--no-coreapi", action="store_true", help="do not run the core API here")
    p.add_argument("--scrape-target", default=None, help="HOST:PORT of the core API to scrape")
    p.add_argument("--no-traffic", action="store_true", help="do not run simulated users")
    return p


def demo_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``watchkeeper demo``; returns the exit status."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if not 0.0 <= args.error_rate <= 1.0:
        print("watchkeeper demo: --error-rate must be between 0 and 1", file=sys.stderr)
        return 2
    from watchkeeper.config import Settings
    from watchkeeper.errors import ConfigError
    from watchkeeper.logging import configure_logging

    target = args.scrape_target or f"{_loopback(args.host)}:{args.coreapi_port}"
    scrape_configs = [
        {
            "job_name": "coreapi",
            "scrape_interval": args.scrape_interval,
            "static_configs": [{"targets": [target], "labels": {"service": "core-api"}}],
        },
        {
            "job_name": "watchkeeper",
            "scrape_interval": args.scrape_interval,
            "static_configs": [{"targets": [f"{_loopback(args.host)}:{args.port}"]}],
        },
    ]
    overrides = {
        "host": args.host,
        "port": args.port,
        "data_dir": args.data_dir,
        "scrape_configs": scrape_configs,
        "scrape_interval": args.scrape_interval,
        "rule_files": [str(Path(__file__).with_name("alerts.yml"))],
    }
    try:
        settings = Settings.load(config_file=None, overrides=overrides)
    except ConfigError as exc:
        print(f"watchkeeper demo: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"watchkeeper demo: cannot create {settings.data_dir}: {exc.strerror}", file=sys.stderr)
        return 1
    return asyncio.run(_run(args, settings, target))


def _loopback(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # nosec B104


class _Server:
    """A uvicorn server that leaves signals to `demo_main` (two servers share one process)."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        config = uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, server_header=False
        )
        self.server = Quiet(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                raise SystemExit(f"cannot start the server on port {self.server.config.port}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task


async def _run(args: argparse.Namespace, settings: Any, target: str) -> int:
    from watchkeeper.app import create_app
    from watchkeeper.demo.api import coreapi_app
    from watchkeeper.demo.settings import CoreApiSettings
    from watchkeeper.demo.traffic import TrafficConfig, run_traffic

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    servers: list[_Server] = []
    wk_app = create_app(settings)
    wk = _Server(wk_app, args.host, args.port)
    try:
        await wk.start()
        servers.append(wk)
        if not args.no_coreapi:
            core_settings = CoreApiSettings(
                database_url=f"sqlite:///{settings.data_dir.resolve()}/coreapi.db",
                redis_url=args.redis_url,
                seed_players=2000,
                fault_injection=True,
            )
            core = _Server(coreapi_app(core_settings), args.host, args.coreapi_port)
            await core.start()
            servers.append(core)
        state = wk_app.state.watchkeeper
        while state.storage is None and state.startup_error is None:
            await asyncio.sleep(0.05)
        if state.startup_error is not None:
            return 1
        traffic: asyncio.Task[Any] | None = None
        if not args.no_traffic:
            config = TrafficConfig(
                f"http://{target}", users=args.users, error_rate=args.error_rate, latency_ms=args.latency_ms
            )
            traffic = asyncio.create_task(run_traffic(config))
        _banner(args, target)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=args.duration)
        if traffic is not None:
            traffic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await traffic
    finally:
        for server in reversed(servers):
            await server.stop()
    return 0


def _banner(args: argparse.Namespace, target: str) -> None:
    base = f"http://{args.host}:{args.port}"
    lines = [
        f"watchkeeper demo: watchkeeper on {base}, core API on http://{target} (docs: /docs)",
        f"  {0 if args.no_traffic else args.users} simulated users; scraping every {args.scrape_interval};"
        f" error rate {args.error_rate}, added latency {args.latency_ms} ms. Ctrl-C stops.",
        "  try:",
        *(f"    curl -s {base}/api/v1/query --data-urlencode 'query={q}'" for q in EXAMPLE_QUERIES),
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(demo_main())
