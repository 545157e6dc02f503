"""Back up a running server while writes continue, restore into a fresh target, start a server
there: the same PromQL answers, the same alert, silence and notification state."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.backup.conftest import LiveWriter, answers, prepare, run_cli, wait_for
from tests.integration.conftest import Server


@pytest.mark.slow
@pytest.mark.parametrize("target", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_backup_while_writing_then_restore_answers_identically(
    target: str, deployment: Callable[..., Server], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    a = deployment()
    silence_id = prepare(a)
    archive = tmp_path / "wk.tar.gz"
    with LiveWriter(a) as writer:
        frontier = writer.acked_ms  # every sample up to here is acknowledged before the backup starts
        done = run_cli("backup", "--to", str(archive), "--data-dir", str(a.data_dir),
                       "--config", str(tmp_path / "config" / "watchkeeper.yml"))
        assert done.returncode == 0, done.stderr
    expected = answers(a, frontier)

    b = deployment(start=False)
    env = {}
    args = ["restore", "--from", str(archive), "--data-dir", str(b.data_dir)]
    if target == "postgres":
        url = request.getfixturevalue("postgres_url")
        env["WATCHKEEPER_DATABASE_URL"] = url
        args += ["--database-url", url]
    restore = run_cli(*args)
    assert restore.returncode == 0, restore.stderr
    assert "restored" in restore.stderr
    b.env = env
    b.start()
    got = answers(b, frontier)
    assert got["silences"][0]["id"] == silence_id
    assert [a_["state"] for a_ in got["notifications"]] == ["sent"]
    assert got["alerts"] and got["alerts"][0][1] == "firing"
    assert all(got[q] for q in got), {q: len(v) for q, v in got.items()}
    assert got == expected
    assert (b.data_dir / "restored-config" / "watchkeeper.yml").read_text() == (
        tmp_path / "config" / "watchkeeper.yml").read_text()
    assert (b.data_dir / "restored-config" / "rules.yml").exists()


@pytest.mark.slow
@pytest.mark.postgres
def test_server_backup_on_postgres_survives_losing_the_database(
    deployment: Callable[..., Server], postgres_url: str, tmp_path: Path
) -> None:
    """Through the server's admin API: the database is wiped after the backup; restore --force
    into it with a new data dir brings everything back."""
    a = deployment(extra="backup: {admin_api: true}", env={"WATCHKEEPER_DATABASE_URL": postgres_url})
    prepare(a)
    archive = tmp_path / "pg.tar.gz"
    with LiveWriter(a) as writer:
        frontier = writer.acked_ms
        done = run_cli("backup", "--to", str(archive), "--server", a.url)
        assert done.returncode == 0, done.stderr
    expected = answers(a, frontier)
    a.stop()
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:  # the disaster
        for table in ("tsdb_chunks", "tsdb_series", "alerting_silences", "alerting_outbox",
                      "rules_alert_state"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
    engine.dispose()

    b = deployment(start=False, env={"WATCHKEEPER_DATABASE_URL": postgres_url})
    refused = run_cli("restore", "--from", str(archive), "--data-dir", str(b.data_dir),
                      "--database-url", postgres_url)
    assert refused.returncode == 1
    assert "--force" in refused.stderr
    restore = run_cli("restore", "--from", str(archive), "--data-dir", str(b.data_dir),
                      "--database-url", postgres_url, "--force")
    assert restore.returncode == 0, restore.stderr
    b.start()
    assert answers(b, frontier) == expected
    with tarfile.open(archive) as tar:
        f = tar.extractfile("manifest.json")
        assert f is not None
        assert json.load(f)["source"]["backend"] == "postgresql"


def test_admin_api_is_off_by_default(deployment: Callable[..., Server], tmp_path: Path) -> None:
    server = deployment()
    r = server.client.post("/api/v1/admin/backup")
    assert r.status_code == 403
    assert "admin APIs disabled" in r.json()["error"]
    done = run_cli("backup", "--to", str(tmp_path / "x.tar.gz"), "--server", server.url)
    assert done.returncode == 1
    assert "403" in done.stderr
    assert not (tmp_path / "x.tar.gz").exists()
    assert not list(tmp_path.glob(".x.tar.gz*"))


def test_server_backup_streams_a_verified_file_and_cleans_up(deployment: Callable[..., Server],
                                                             tmp_path: Path) -> None:
    server = deployment(extra="backup: {admin_api: true}")
    assert server.write([([("__name__", "wk_one")], [(1000, 1.0)])]).status_code == 204
    out = tmp_path / "from-server.tar.gz"
    done = run_cli("backup", "--to", str(out), "--server", server.url)
    assert done.returncode == 0, done.stderr
    check = run_cli("restore", "--from", str(out), "--check")
    assert check.returncode == 0 and "from sqlite" in check.stderr
    wait_for("the server to delete its copy", lambda: not list(server.data_dir.glob(".admin-backup-*")))
