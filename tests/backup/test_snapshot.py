"""The store in process: a backup taken while appends and WAL checkpoints run restores every
acknowledged sample; alert rows, silences and the outbox come back unchanged."""

from __future__ import annotations

import os
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from watchkeeper.alerting.silences import Silence
from watchkeeper.alerting.store import load_silences, outbox_table, save_silence
from watchkeeper.backup.restore import restore_backup
from watchkeeper.backup.snapshot import Source, create_backup
from watchkeeper.labels import Matcher, MatchOp
from watchkeeper.rules.persistence import history_table, state_table
from watchkeeper.tsdb.schema import make_engine, sqlite_url
from watchkeeper.tsdb.storage import Storage

ALL = [Matcher(MatchOp.REGEX, "__name__", ".+")]
OUTBOX_ROW = {"receiver": "team", "integration": "webhook[0]", "group_key": "g", "notification": "{}",
              "next_attempt_ms": 7, "created_at_ms": 3}
HISTORY_ROW = {"at_ms": 1, "group_key": "g", "alertname": "A", "fingerprint": "f", "labels": "{}",
               "from_state": "inactive", "to_state": "pending"}


class Appender:
    """Appends 30 series, one timestamp per batch, from a thread; `acked_ms` is the newest
    timestamp whose append has returned (so everything up to it is durable)."""

    def __init__(self, store: Storage) -> None:
        self.store = store
        self.refs = store.series_refs([(("__name__", "m"), ("i", str(i))) for i in range(30)])
        self.acked_ms = -1
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        t = 0
        while not self.stop.is_set():
            self.store.append(self.refs, np.full(30, t * 1000), np.arange(30) * 0.5 + t)
            self.acked_ms = t * 1000
            t += 1


def test_backup_during_appends_and_checkpoints_keeps_every_acknowledged_sample(tmp_path: Path) -> None:
    src = Storage.open(data_dir=tmp_path / "src", wal_fsync=False)
    src.checkpoint_bytes = 16 << 10  # a checkpoint (segment rotated, old ones deleted) every few batches
    appender = Appender(src)
    appender.thread.start()
    try:
        for n in range(4):
            while appender.acked_ms < (n + 1) * 200_000:  # enough for cut chunks and checkpoints
                threading.Event().wait(0.01)
            frontier = appender.acked_ms
            archive = tmp_path / f"b{n}.tar.gz"
            create_backup(archive, Source(tmp_path / "src"))
            restore_backup(archive, data_dir=tmp_path / f"dst{n}")
            dst = Storage.open(data_dir=tmp_path / f"dst{n}")
            try:
                want = src.select(ALL, 0, frontier)
                got = dst.select(ALL, 0, 2**62)
            finally:
                dst.close()
            assert [s.labels for s in got] == [s.labels for s in want]
            for w, g in zip(want, got, strict=True):
                # everything acknowledged before the backup, then a gap-free prefix of what followed
                assert g.timestamps_ms[: len(w.timestamps_ms)].tolist() == w.timestamps_ms.tolist()
                assert g.values[: len(w.values)].tolist() == w.values.tolist()
                assert (np.diff(g.timestamps_ms) == 1000).all()
    finally:
        appender.stop.set()
        appender.thread.join()
        src.close()
    assert src.stats().chunks_written_total > 0


def test_alert_state_silences_and_outbox_rows_come_back(tmp_path: Path) -> None:
    store = Storage.open(data_dir=tmp_path / "src")
    store.close()
    engine = make_engine(sqlite_url(tmp_path / "src"))
    silence = Silence.create([{"name": "team", "value": "db.*", "isRegex": True}], starts_at_ms=1000,
                             ends_at_ms=9_000_000, created_by="sre", comment="naïve ✓", now_ms=1000)
    with engine.begin() as conn:
        save_silence(conn, silence)
        conn.execute(sa.insert(state_table).values(
            id="a1", group_key="g", rule_key="r", labels="{}", annotations="{}", state="firing",
            active_at_ms=5, fired_at_ms=6, value=-1.25))
        conn.execute(sa.insert(outbox_table).values(
            {**OUTBOX_ROW, "idempotency_key": "k", "state": "pending", "attempts": 2}))
    engine.dispose()
    create_backup(tmp_path / "b.tar.gz", Source(tmp_path / "src"))
    restore_backup(tmp_path / "b.tar.gz", data_dir=tmp_path / "dst")
    restored = make_engine(sqlite_url(tmp_path / "dst"))
    with restored.begin() as conn:
        assert load_silences(conn) == [silence]
        state = conn.execute(sa.text("SELECT state, active_at_ms, value FROM rules_alert_state")).one()
        assert tuple(state) == ("firing", 5, -1.25)
        outbox = conn.execute(sa.text("SELECT id, state, attempts FROM alerting_outbox")).all()
        assert outbox == [(1, "pending", 2)]
        # ids continue after the restored ones
        conn.execute(sa.insert(outbox_table).values({**OUTBOX_ROW, "idempotency_key": "k2", "state": "sent"}))
        assert conn.execute(sa.text("SELECT max(id) FROM alerting_outbox")).scalar() == 2
    restored.dispose()


@pytest.mark.postgres
def test_sqlite_backup_restores_into_postgres_with_sequences_moved_on(tmp_path: Path,
                                                                       postgres_url: str) -> None:
    store = Storage.open(data_dir=tmp_path / "src")
    refs = store.series_refs([(("__name__", "m"), ("i", "1"))])
    store.append(refs, [1000], [float("inf")])
    store.close()
    engine = make_engine(sqlite_url(tmp_path / "src"))
    with engine.begin() as conn:
        conn.execute(sa.insert(history_table).values({**HISTORY_ROW, "id": 41, "value": 1.5}))
    engine.dispose()
    create_backup(tmp_path / "b.tar.gz", Source(tmp_path / "src"))
    restore_backup(tmp_path / "b.tar.gz", data_dir=tmp_path / "dst", database_url=postgres_url)
    pg = make_engine(postgres_url)
    with pg.begin() as conn:
        conn.execute(sa.insert(history_table).values(HISTORY_ROW))
        assert conn.execute(sa.text("SELECT max(id) FROM rules_alert_history")).scalar() == 42
    pg.dispose()
    dst = Storage.open(data_dir=tmp_path / "dst", database_url=postgres_url)
    try:
        [series] = dst.select(ALL, 0, 5000)
        assert series.values.tolist() == [float("inf")]
    finally:
        dst.close()


def test_wal_copy_follows_a_checkpoint_that_runs_during_it(tmp_path: Path) -> None:
    """The copy lists 00000001 and 00000002; while it reads 00000001 (a FIFO, so the test knows
    when), a "checkpoint" writes 00000003 and deletes 00000002. The copy skips the vanished
    segment and picks up the new one (whose head snapshot holds what 00000002 had)."""
    Storage.open(data_dir=tmp_path / "data").close()
    wal = tmp_path / "data" / "wal"
    for p in wal.iterdir():
        p.unlink()
    os.mkfifo(wal / "00000001")
    (wal / "00000002").write_bytes(b"old segment")

    def checkpoint() -> None:
        with (wal / "00000001").open("wb") as fifo:  # returns once the backup has opened it
            (wal / "00000003").write_bytes(b"new segment")
            (wal / "00000002").unlink()
            fifo.write(b"first segment")

    thread = threading.Thread(target=checkpoint)
    thread.start()
    try:
        manifest = create_backup(tmp_path / "b.tar.gz", Source(tmp_path / "data"))
    finally:
        if thread.is_alive():  # the backup failed before opening the FIFO: release the writer
            os.close(os.open(wal / "00000001", os.O_RDONLY | os.O_NONBLOCK))
        thread.join()
    assert manifest["wal_segments"] == ["00000001", "00000003"]
    contents = {}
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        for name in manifest["wal_segments"]:
            f = tar.extractfile(f"wal/{name}")
            assert f is not None
            contents[name] = f.read()
    assert contents == {"00000001": b"first segment", "00000003": b"new segment"}
