"""Infrastructure exporters: host from /proc, Redis INFO and PostgreSQL stats from the real servers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from watchkeeper.exporters import cli
from watchkeeper.exporters.host import HostCollector, parse_cpu, parse_diskstats, parse_meminfo, parse_net_dev
from watchkeeper.exporters.postgres_stats import PostgresCollector
from watchkeeper.exporters.redis_info import RedisCollector


def registry_with(collector: object) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)  # type: ignore[arg-type]
    return registry


def test_proc_parsers_on_fixed_text() -> None:
    assert parse_cpu("cpu  100 0 50 1000 5 0 2 0 0 0\ncpu0 1 2 3\n", 100.0) == {
        "user": 1.0, "nice": 0.0, "system": 0.5, "idle": 10.0, "iowait": 0.05, "irq": 0.0, "softirq": 0.02,
        "steal": 0.0,
    }  # fmt: skip
    assert parse_meminfo("MemTotal:  1000 kB\nMemFree: 10 kB\nHugePages_Total: 0\n") == {
        "MemTotal": 1024000.0, "MemFree": 10240.0,
    }  # fmt: skip
    net = parse_net_dev("h1\nh2\n  eth0: 10 2 0 0 0 0 0 0 20 3 1 0 0 0 0 0\n")
    assert net["eth0"]["receive_bytes"] == 10 and net["eth0"]["transmit_errs"] == 1
    disks = parse_diskstats(
        " 8 0 sda 4 0 8 12 5 0 16 20 0 30 32 0 0 0 0\n 7 0 loop0 1 0 1 1 1 0 1 1 0 1 1 0 0 0 0\n"
    )
    assert disks == {"sda": {"reads_completed": 4, "read_bytes": 4096, "read_time_seconds": 0.012,
                             "writes_completed": 5, "written_bytes": 8192, "write_time_seconds": 0.02,
                             "io_time_seconds": 0.03}}  # fmt: skip


def test_host_collector_reads_real_proc() -> None:
    registry = cli.build_registry("host")
    get = registry.get_sample_value
    assert (get("node_cpu_seconds_total", {"mode": "user"}) or 0) > 0
    assert (get("node_memory_MemTotal_bytes") or 0) > 0
    assert get("node_load1") is not None
    before = get("node_network_receive_bytes_total", {"device": "lo"}) or 0
    fds_before = get("process_open_fds") or 0

    payload = b"x" * 1_000_000
    server = socket.create_server(("127.0.0.1", 0))
    received = bytearray()

    def drain() -> None:
        conn, _ = server.accept()
        with conn:
            while chunk := conn.recv(65536):
                received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    with socket.create_connection(server.getsockname()) as sender:
        sender.sendall(payload)
    reader.join(5)
    server.close()
    assert len(received) == len(payload)
    files = [open(os.devnull) for _ in range(20)]  # noqa: SIM115
    try:
        assert (get("node_network_receive_bytes_total", {"device": "lo"}) or 0) >= before + len(payload)
        assert (get("process_open_fds") or 0) >= fds_before + 20
    finally:
        for f in files:
            f.close()
    assert (get("node_filefd_allocated") or 0) > 0


@pytest.mark.redis
def test_redis_collector_reads_the_real_server(redis_url: str) -> None:
    import redis

    registry = registry_with(RedisCollector(redis_url))
    get = registry.get_sample_value
    hits_before = get("redis_keyspace_hits_total") or 0
    misses_before = get("redis_keyspace_misses_total") or 0
    client = redis.Redis.from_url(redis_url)
    try:
        for i in range(25):
            client.set(f"wk:test:{i}", i)
        client.set("wk:test:ttl", 1, ex=300)
        for i in range(10):
            client.get(f"wk:test:{i}")
        for i in range(7):
            client.get(f"wk:missing:{i}")
        assert get("redis_up") == 1
        assert (get("redis_keyspace_hits_total") or 0) >= hits_before + 10
        assert (get("redis_keyspace_misses_total") or 0) >= misses_before + 7
        assert (get("redis_db_keys", {"db": "db15"}) or 0) >= 26
        assert (get("redis_db_keys_expiring", {"db": "db15"}) or 0) >= 1
        assert (get("redis_connected_clients") or 0) >= 1
        assert (get("redis_memory_used_bytes") or 0) > 0
        assert get("redis_evicted_keys_total") is not None
        assert get("redis_instantaneous_ops_per_sec") is not None
    finally:
        client.flushdb()
        client.close()


def test_redis_collector_reports_down() -> None:
    registry = registry_with(RedisCollector("redis://127.0.0.1:1/0", timeout_seconds=0.5))
    assert registry.get_sample_value("redis_up") == 0
    assert registry.get_sample_value("redis_memory_used_bytes") is None


@pytest.fixture
def pg_dsn(postgres_url: str) -> Iterator[str]:
    yield postgres_url.replace("postgresql+psycopg://", "postgresql://")


@pytest.mark.postgres
def test_postgres_collector_reads_the_real_server(pg_dsn: str) -> None:
    import psycopg

    datname = pg_dsn.rsplit("/", 1)[1]
    registry = registry_with(PostgresCollector(pg_dsn))
    get = registry.get_sample_value
    with psycopg.connect(pg_dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE t (id int primary key, v int)")
        setup.execute("INSERT INTO t VALUES (1, 0), (2, 0)")
        for _ in range(5):
            setup.execute("SELECT count(*) FROM t")
    holder = psycopg.connect(pg_dsn)
    try:
        holder.execute("SELECT 1")  # opens a transaction and leaves it idle
        time.sleep(0.6)
        assert get("pg_up") == 1
        assert (get("pg_longest_transaction_seconds") or 0) >= 0.5
        assert (get("pg_stat_activity_count", {"state": "idle in transaction"}) or 0) >= 1
        assert (get("pg_database_size_bytes", {"datname": datname}) or 0) > 1_000_000
        assert (get("pg_stat_database_numbackends", {"datname": datname}) or 0) >= 1
        ratio = get("pg_stat_database_cache_hit_ratio", {"datname": datname})
        assert ratio is not None and 0 <= ratio <= 1
    finally:
        holder.rollback()
        holder.close()
    _deadlock(pg_dsn)
    deadline = time.monotonic() + 10
    while (get("pg_stat_database_deadlocks_total", {"datname": datname}) or 0) < 1:
        assert time.monotonic() < deadline, "the deadlock never showed up in pg_stat_database"
        time.sleep(0.3)
    assert (get("pg_stat_database_xact_commit_total", {"datname": datname}) or 0) >= 5
    assert (get("pg_stat_database_xact_rollback_total", {"datname": datname}) or 0) >= 2
    # No replication on this server: no lag series rather than a made-up zero.
    assert get("pg_replication_lag_seconds") is None


def _deadlock(dsn: str) -> None:
    """Make PostgreSQL detect one real deadlock between two sessions."""
    import psycopg

    a, b = psycopg.connect(dsn), psycopg.connect(dsn)
    for conn in (a, b):
        conn.execute("SET deadlock_timeout = '100ms'")
        conn.commit()
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def session(conn: psycopg.Connection[tuple[object, ...]], first: int, second: int) -> None:
        try:
            conn.execute("UPDATE t SET v = v + 1 WHERE id = %s", (first,))
            barrier.wait(5)
            conn.execute("UPDATE t SET v = v + 1 WHERE id = %s", (second,))
            conn.commit()
        except psycopg.errors.DeadlockDetected as exc:
            errors.append(exc)
            conn.rollback()

    threads = [
        threading.Thread(target=session, args=(a, 1, 2)),
        threading.Thread(target=session, args=(b, 2, 1)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    a.close()
    b.close()
    assert len(errors) == 1


def test_postgres_collector_reports_down() -> None:
    registry = registry_with(PostgresCollector("postgresql://postgres@127.0.0.1:1/none", timeout_seconds=1))
    assert registry.get_sample_value("pg_up") == 0


@pytest.mark.redis
def test_cli_once_prints_a_scrape(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["redis", "--url", redis_url, "--once"]) == 0
    assert "redis_up 1.0" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["mysql"])


@pytest.mark.postgres
def test_cli_once_reads_postgres(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["postgres", "--dsn", pg_dsn, "--once"]) == 0
    out = capsys.readouterr().out
    assert "pg_up 1.0" in out
    assert f'pg_database_size_bytes{{datname="{pg_dsn.rsplit("/", 1)[1]}"}}' in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_serves_the_host_exporter_over_http() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "watchkeeper.exporters.cli", "host", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Accept-Encoding": "gzip"})
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.headers["content-encoding"] == "gzip"
        assert 'node_cpu_seconds_total{mode="idle"}' in response.text
        assert "process_open_fds" in response.text
        assert httpx.get(f"http://127.0.0.1:{port}/nothing").status_code == 404
    finally:
        proc.terminate()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_exporter_app_routes_and_lifespan() -> None:
    import asyncio

    registry = CollectorRegistry()
    registry.register(HostCollector())
    app = cli.exporter_app(registry)

    async def run() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://exporter") as client:
            metrics = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
            assert metrics.status_code == 200
            assert metrics.headers["content-type"].startswith("application/openmetrics-text")
            assert "node_load1" in metrics.text
            assert (await client.get("/")).status_code == 200
            assert (await client.get("/other")).status_code == 404
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
        sent: list[str] = []

        async def receive() -> dict[str, str]:
            return next(messages)

        async def send(message: dict[str, str]) -> None:
            sent.append(message["type"])

        await app({"type": "lifespan"}, receive, send)
        assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]

    asyncio.run(run())
    with pytest.raises(ValueError):
        cli.build_registry("mysql")
