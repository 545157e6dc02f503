"""The scheduled backup: retention of the newest `keep`, failures counted and survived, and the
job running inside a real server."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.backup.conftest import wait_for
from tests.integration.conftest import Server
from watchkeeper.backup.archive import verify_archive
from watchkeeper.backup.job import BackupMetrics, backup_name, prune, run_scheduled_backup
from watchkeeper.backup.snapshot import Source
from watchkeeper.config import Settings
from watchkeeper.errors import ConfigError
from watchkeeper.tsdb.storage import Storage


@pytest.fixture
def source(tmp_path: Path) -> Source:
    store = Storage.open(data_dir=tmp_path / "data")
    refs = store.series_refs([(("__name__", "m"),)])
    store.append(refs, [1000], [1.0])
    store.close()
    return Source(tmp_path / "data")


def test_keeps_the_newest_backups(source: Source, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = BackupMetrics(registry)
    made = [run_scheduled_backup(source, tmp_path / "backups", 2, metrics,
                                 clock=lambda day=day: 1_800_000_000.0 + 86400 * day)  # type: ignore[misc]
            for day in range(3)]
    assert all(made)
    assert sorted((tmp_path / "backups").iterdir()) == sorted(p for p in made[1:] if p is not None)
    for p in (tmp_path / "backups").iterdir():
        verify_archive(p)
    assert registry.get_sample_value("watchkeeper_backups_total", {"result": "success"}) == 3
    assert registry.get_sample_value("watchkeeper_backups_total", {"result": "failure"}) == 0
    assert registry.get_sample_value("watchkeeper_backup_last_success_timestamp_seconds") == 1_800_172_800
    newest = made[2]
    assert newest is not None
    assert registry.get_sample_value("watchkeeper_backup_size_bytes") == newest.stat().st_size


def test_a_failed_run_is_counted_and_does_not_raise(source: Source, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the backup directory should be")
    assert run_scheduled_backup(source, blocked, 2, BackupMetrics(registry)) is None
    assert registry.get_sample_value("watchkeeper_backups_total", {"result": "failure"}) == 1
    assert registry.get_sample_value("watchkeeper_backup_last_success_timestamp_seconds") == 0


def test_prune_touches_only_backups(tmp_path: Path) -> None:
    names = [backup_name(1_800_000_000 + i) for i in range(4)]
    for n in [*names, "notes.txt", "watchkeeper-backup-manual.zip"]:
        (tmp_path / n).write_text("x")
    assert [p.name for p in prune(tmp_path, 1)] == names[:3]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names[3], "notes.txt",
                                                                 "watchkeeper-backup-manual.zip"])
    assert re.fullmatch(r"watchkeeper-backup-\d{8}T\d{9}Z\.tar\.gz", names[0])


def test_config_section() -> None:
    settings = Settings.load(None, overrides={"backup": {"dir": "/b", "interval": "6h", "keep": 3}})
    cfg = settings.backup
    assert (cfg.enabled, cfg.interval_seconds, cfg.keep) == (True, 21600, 3)
    assert not Settings.load(None).backup.enabled
    with pytest.raises(ConfigError, match=r"backup\.interval"):
        Settings.load(None, overrides={"backup": {"dir": "/b", "interval": "0s"}})
    with pytest.raises(ConfigError, match=r"backup\.keep"):
        Settings.load(None, overrides={"backup": {"dir": "/b", "keep": 0}})


@pytest.mark.slow
def test_the_server_runs_the_job_and_prunes(deployment: Callable[..., Server], tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    server = deployment(extra=f"backup: {{dir: '{backups}', interval: 1s, keep: 2}}")
    server.write([([("__name__", "wk_job")], [(1000, 1.0)])])

    def successes() -> float:
        text = server.client.get("/metrics").text
        m = re.search(r'^watchkeeper_backups_total\{result="success"\} (\S+)$', text, re.MULTILINE)
        return float(m.group(1)) if m else 0.0

    wait_for("three scheduled backups", lambda: successes() >= 3)
    files = sorted(backups.glob("watchkeeper-backup-*.tar.gz"))
    assert len(files) == 2
    for f in files:
        verify_archive(f)
    assert 'watchkeeper_backups_total{result="failure"} 0.0' in server.client.get("/metrics").text
