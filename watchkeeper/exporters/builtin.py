"""The infrastructure exporters built into the watchkeeper server, scraped as jobs of its own.

```yaml
exporters:
  host: true                                                  # job="host": /proc of this machine
  redis_url: redis://127.0.0.1:6379/0                         # job="redis"
  postgres_dsn: postgresql://postgres@127.0.0.1:5432/postgres # job="postgres"
```
Each enabled exporter is answered by the server's own ``GET /metrics?exporter=<kind>`` (the same
access rule as ``/metrics``) and scraped by a job named after it, at the server's own address, with
the usual scrape interval. The collectors are the ones ``watchkeeper exporter <kind>`` serves alone.
"""

from __future__ import annotations

import anyio.to_thread
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict

from watchkeeper.collector.targets import ScrapeConfig, default_scrape_configs
from watchkeeper.exporters.cli import build_registry
from watchkeeper.exporters.exposition import render
from watchkeeper.exporters.safety import dropped


class ExportersConfig(BaseModel):
    """Which built-in exporters the server runs (none by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: bool = False
    redis_url: str | None = None
    postgres_dsn: str | None = None


class BuiltinExporters:
    """The registries of the enabled exporters, their scrape jobs, and their ``/metrics`` answers."""

    def __init__(self, config: ExportersConfig) -> None:
        targets = {"host": "/proc" if config.host else None, "redis": config.redis_url,
                   "postgres": config.postgres_dsn}  # fmt: skip
        # Process metrics are left out: they would describe the watchkeeper server, which exports
        # its own on /metrics.
        self.registries: dict[str, CollectorRegistry] = {
            kind: build_registry(kind, target, process=False)
            for kind, target in targets.items()
            if target is not None
        }

    def scrape_configs(self, host: str, port: int, interval: str = "15s") -> list[ScrapeConfig]:
        """One job per enabled exporter, scraping this server's ``/metrics?exporter=<kind>``."""
        own = default_scrape_configs(host, port)[0].static_configs
        return [
            ScrapeConfig(
                job_name=kind, scrape_interval=interval, static_configs=own, params={"exporter": [kind]}
            )
            for kind in self.registries
        ]

    async def render(
        self, kind: str, *, accept: str = "", accept_encoding: str = ""
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """The scrape answer of exporter ``kind``: 404 when it is not enabled; collected off the
        event loop (a Redis or PostgreSQL round trip), 500 if the collection itself fails."""
        registry = self.registries.get(kind)
        if registry is None:
            return 404, [("Content-Type", "text/plain; charset=utf-8")], f"no exporter {kind!r}\n".encode()
        try:
            return await anyio.to_thread.run_sync(
                lambda: render(registry, accept=accept, accept_encoding=accept_encoding)
            )
        except Exception as exc:
            dropped(f"exporter.{kind}", exc)
            return 500, [("Content-Type", "text/plain; charset=utf-8")], b"exporter failed\n"
