"""Scheduled backups with several replicas on one PostgreSQL and one Redis: only the holder of the
leader lease writes them; when it dies, the replica that takes over continues the series."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.backup.conftest import wait_for
from tests.integration.conftest import Server
from watchkeeper.backup.archive import verify_archive
from watchkeeper.backup.job import BackupMetrics, run_scheduled_backup
from watchkeeper.backup.snapshot import Source
from watchkeeper.tsdb.schema import make_engine, migrate
from watchkeeper.tsdb.storage import Storage


def test_a_replica_that_is_not_the_leader_writes_no_backup(tmp_path: Path) -> None:
    Storage.open(data_dir=tmp_path / "data").close()
    registry = CollectorRegistry()
    metrics = BackupMetrics(registry)
    leading = False
    for _ in range(2):
        assert run_scheduled_backup(Source(tmp_path / "data"), tmp_path / "backups", 3, metrics,
                                    is_leader=lambda: leading) is None
    assert not (tmp_path / "backups").exists()
    leading = True
    made = run_scheduled_backup(Source(tmp_path / "data"), tmp_path / "backups", 3, metrics,
                                is_leader=lambda: leading)
    assert made is not None and made.parent == tmp_path / "backups"
    value = registry.get_sample_value
    assert value("watchkeeper_backups_total", {"result": "skipped"}) == 2
    assert value("watchkeeper_backups_total", {"result": "success"}) == 1
    assert value("watchkeeper_backups_total", {"result": "failure"}) == 0


def _runs(server: Server, result: str) -> float:
    text = server.client.get("/metrics").text
    m = re.search(rf'^watchkeeper_backups_total\{{result="{result}"\}} (\S+)$', text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def _is_leader(server: Server) -> bool:
    return "\nwatchkeeper_leader 1.0" in server.client.get("/metrics").text


def _backups(directory: Path) -> list[Path]:
    return sorted(directory.glob("watchkeeper-backup-*.tar.gz"))


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str, redis_url: str) -> Iterator[list[Server]]:
    made = []
    for name in "ab":
        env = {
            "WATCHKEEPER_DATABASE_URL": postgres_url,
            "WATCHKEEPER_REDIS_URL": redis_url,
            "WATCHKEEPER_LEADER_LEASE": "4s",
            "WATCHKEEPER_SCRAPE_CONFIGS": "[]",
            "WATCHKEEPER_BACKUP__DIR": str(tmp_path / f"backups-{name}"),
            "WATCHKEEPER_BACKUP__INTERVAL": "1s",
            "WATCHKEEPER_BACKUP__KEEP": "3",
        }
        made.append(Server(tmp_path / f"replica-{name}", env))
    try:
        yield made
    finally:
        for s in made:
            s.close()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_only_the_leader_backs_up_and_the_next_leader_takes_over(
    replicas: list[Server], postgres_url: str, tmp_path: Path
) -> None:
    database = make_engine(postgres_url)
    migrate(database)  # once, so that the replicas do not migrate at the same time
    database.dispose()
    for s in replicas:
        s.start()
    wait_for("one leader", lambda: sum(_is_leader(s) for s in replicas) == 1)
    leader = next(s for s in replicas if _is_leader(s))
    follower = next(s for s in replicas if s is not leader)
    leader_dir = Path(leader.env["WATCHKEEPER_BACKUP__DIR"])
    follower_dir = Path(follower.env["WATCHKEEPER_BACKUP__DIR"])

    wait_for("two backups by the leader and two skipped runs on the follower",
             lambda: _runs(leader, "success") >= 2 and _runs(follower, "skipped") >= 2)
    assert _runs(follower, "success") == 0 and not _backups(follower_dir)
    assert _backups(leader_dir)
    verify_archive(_backups(leader_dir)[-1])

    leader.kill()
    wait_for("the follower to take over the lease", lambda: _is_leader(follower))
    wait_for("a backup by the new leader", lambda: _runs(follower, "success") >= 1)
    newest = _backups(follower_dir)[-1]
    verify_archive(newest)
    assert _runs(follower, "failure") == 0
