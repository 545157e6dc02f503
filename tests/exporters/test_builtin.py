"""The exporters built into the server: scrape jobs of a real watchkeeper process, reading the real
Redis and PostgreSQL servers and this machine's /proc."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.conftest import Server
from watchkeeper.exporters.builtin import BuiltinExporters, ExportersConfig


def test_no_exporter_is_enabled_by_default() -> None:
    assert BuiltinExporters(ExportersConfig()).scrape_configs("127.0.0.1", 9470) == []


def test_each_enabled_exporter_is_a_job_scraping_the_server_itself() -> None:
    exporters = BuiltinExporters(ExportersConfig(host=True, redis_url="redis://127.0.0.1:1/0"))
    jobs = exporters.scrape_configs("0.0.0.0", 9470, "5s")  # nosec B104 - compared, never bound
    assert [(j.job_name, j.params, j.scrape_interval) for j in jobs] == [
        ("host", {"exporter": ["host"]}, "5s"),
        ("redis", {"exporter": ["redis"]}, "5s"),
    ]
    assert [t for j in jobs for s in j.static_configs for t in s.targets] == ["127.0.0.1:9470"] * 2


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
def test_the_server_scrapes_its_builtin_exporters(tmp_path: Path, redis_url: str, postgres_url: str) -> None:
    dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    server = Server(
        tmp_path / "data",
        {
            "WATCHKEEPER_EXPORTERS__HOST": "true",
            "WATCHKEEPER_EXPORTERS__REDIS_URL": redis_url,
            "WATCHKEEPER_EXPORTERS__POSTGRES_DSN": dsn,
            "WATCHKEEPER_SCRAPE_INTERVAL": "1s",
        },
    )
    server.start()
    try:
        host = server.client.get("/metrics", params={"exporter": "host"})
        assert host.status_code == 200 and 'node_cpu_seconds_total{mode="idle"}' in host.text
        assert "process_open_fds" not in host.text  # the server's own process metrics are on /metrics
        redis_text = server.client.get("/metrics", params={"exporter": "redis"}).text
        assert "redis_up 1.0" in redis_text
        assert "pg_up 1.0" in server.client.get("/metrics", params={"exporter": "postgres"}).text
        assert server.client.get("/metrics", params={"exporter": "mysql"}).status_code == 404

        wanted = {
            'up{job="host"}': 1.0, 'up{job="redis"}': 1.0, 'up{job="postgres"}': 1.0,
            'redis_up{job="redis"}': 1.0, 'pg_up{job="postgres"}': 1.0,
            f'pg_database_size_bytes{{job="postgres",datname="{dsn.rsplit("/", 1)[1]}"}} > 0': None,
            'node_memory_MemTotal_bytes{job="host"} > 0': None,
        }  # fmt: skip
        deadline = time.monotonic() + 30
        missing = list(wanted)
        while missing:
            assert time.monotonic() < deadline, f"never scraped: {missing}\n{server.log()[-3000:]}"
            time.sleep(0.5)
            missing = []
            for query, value in wanted.items():
                result = server.client.get("/api/v1/query", params={"query": query}).json()["data"]["result"]
                if not result or (value is not None and float(result[0]["value"][1]) != value):
                    missing.append(query)
    finally:
        server.close()
