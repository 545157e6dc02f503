"""``watchkeeper exporter host|redis|postgres --port N``: an infrastructure exporter on its own.

```
watchkeeper exporter host --port 9100
watchkeeper exporter redis --url redis://127.0.0.1:6379/0 --port 9121
watchkeeper exporter postgres --dsn postgresql://postgres@127.0.0.1:5432/postgres --port 9187
watchkeeper exporter redis --once        # print one scrape to stdout and exit
```
``main(argv)`` takes the arguments after ``exporter``. Inside watchkeeper the same collectors are
built by :func:`build_registry` for in-process scrape jobs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from watchkeeper.exporters.exposition import MetricsEndpoint

DEFAULT_PORTS = {"host": 9100, "redis": 9121, "postgres": 9187}


def build_registry(kind: str, target: str | None = None, *, process: bool = True) -> CollectorRegistry:
    """A registry holding the collector of ``kind`` (``host``, ``redis``, ``postgres``) for ``target``."""
    registry = CollectorRegistry()
    if kind == "host":
        from prometheus_client import PlatformCollector, ProcessCollector

        from watchkeeper.exporters.host import HostCollector

        registry.register(HostCollector(target or "/proc"))
        if process:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
    elif kind == "redis":
        from watchkeeper.exporters.redis_info import RedisCollector

        registry.register(RedisCollector(target or "redis://127.0.0.1:6379/0"))
    elif kind == "postgres":
        from watchkeeper.exporters.postgres_stats import PostgresCollector

        registry.register(PostgresCollector(target or "postgresql://postgres@127.0.0.1:5432/postgres"))
    else:
        raise ValueError(f"unknown exporter {kind!r}; use host, redis or postgres")
    return registry


def exporter_app(registry: CollectorRegistry) -> Callable[..., Any]:
    """An ASGI app: ``/metrics`` serves the registry, ``/`` links to it, anything else is 404."""
    endpoint = MetricsEndpoint(registry)

    async def app(
        scope: MutableMapping[str, Any], receive: Callable[[], Any], send: Callable[..., Any]
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics":
            await endpoint(scope, receive, send)
            return
        status, body = (
            (200, b'<a href="/metrics">metrics</a>\n') if scope["path"] == "/" else (404, b"not found\n")
        )
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/html; charset=utf-8")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    return app


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="watchkeeper exporter", description="Run an infrastructure exporter.")
    p.add_argument("kind", choices=sorted(DEFAULT_PORTS))
    p.add_argument("--port", type=int, help="listen port (host 9100, redis 9121, postgres 9187)")
    p.add_argument("--listen", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--url", "--dsn", "--proc", dest="target",
                   help="Redis URL, PostgreSQL DSN, or /proc root for host")  # fmt: skip
    p.add_argument("--once", action="store_true", help="print one scrape to stdout and exit")
    return p


def main(argv: list[str]) -> int:
    """Entry point for ``watchkeeper exporter ...``; returns the exit status."""
    args = parser().parse_args(argv)
    try:
        registry = build_registry(args.kind, args.target)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.once:
        sys.stdout.write(generate_latest(registry).decode())
        return 0
    import uvicorn

    port = args.port if args.port is not None else DEFAULT_PORTS[args.kind]
    uvicorn.run(exporter_app(registry), host=args.listen, port=port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
