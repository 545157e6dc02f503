"""Taking a backup of a data dir and its database, while the server keeps running.

>>> create_backup(Path("wk.tar.gz"), Source.from_settings(settings))     # doctest: +SKIP

What is where: the database (SQLite file in the data dir, or PostgreSQL) holds the persisted
chunks, the series, alert state and history, silences, the notification log and the outbox; the
data dir's ``wal/`` holds every sample not yet in a persisted chunk (the head lives in memory, but
each of its samples is in the WAL before it is acknowledged).

**Why this is consistent without stopping or asking the server.** Two steps, in this order:

1. *Copy the WAL segments*, then list the directory again and copy any segment that appeared,
   until a listing shows nothing new. A segment is deleted only by a checkpoint, and only after
   (a) a newer segment holding every open head sample was written and fsynced and (b) every chunk
   cut before it was committed to the database. So a segment that vanished before we copied it had
   its head samples rewritten into a newer segment (which the next listing finds) and its cut
   chunks committed (which step 2 sees).
2. *Dump the database in one read snapshot* (SQLite: one ``BEGIN`` read transaction, which in WAL
   journal mode does not block the writer; PostgreSQL: ``REPEATABLE READ``), started after step 1:
   every chunk committed before the WAL copy finished is in it, and the alert state, silences,
   notification log and outbox rows are all from the same instant (the dispatcher writes an nflog
   row and its outbox row in one transaction, so the backup has both or neither).

Restoring replays the copied WAL over the restored chunks exactly as a start after ``kill -9``
does (samples at or before a series' newest persisted sample are dropped), so every sample
acknowledged before the backup started is in the restored store, each series is a gap-free prefix
of its history, and a WAL record torn by the copy is cut off like a torn tail after a crash.
The same code serves the CLI (``--data-dir``, another process) and the server's own scheduled job
and ``POST /api/v1/admin/backup`` (in process): it needs no lock of the running store.
"""

from __future__ import annotations

import glob
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from watchkeeper import __version__
from watchkeeper.backup.archive import ArchiveWriter, BackupError, Manifest, Progress, quiet
from watchkeeper.backup.tables import column_kind, current_revisions, encode_row, our_tables
from watchkeeper.config import Settings
from watchkeeper.tsdb.schema import make_engine, sqlite_url

_FETCH_ROWS = 2000
_MAX_WAL_ROUNDS = 100



@dataclass(frozen=True, slots=True)
class Source:
    """What to back up: a data dir, its database, and config files (each with its member name)."""

    data_dir: Path
    database_url: str | None = None
    config_files: tuple[tuple[Path, str], ...] = ()

    @property
    def url(self) -> str:
        return self.database_url or sqlite_url(self.data_dir)

    @classmethod
    def from_settings(cls, settings: Settings) -> Source:
        """The settings' data dir and database, plus the config file, rule files and SLO specs
        (those under the config file's directory, named relative to it)."""
        files: list[tuple[Path, str]] = []
        if settings.config_file is not None:
            base = settings.config_dir.resolve()
            patterns = [*settings.rules_config().rule_files, *settings.slo.spec_files]
            found = [settings.config_file.resolve()]
            for pattern in patterns:
                full = pattern if Path(pattern).is_absolute() else str(base / pattern)
                found.extend(Path(p).resolve() for p in sorted(glob.glob(full)))
            seen: set[Path] = set()
            for p in found:
                if p in seen or not p.is_file() or not p.is_relative_to(base):
                    continue
                seen.add(p)
                files.append((p, p.relative_to(base).as_posix()))
        return cls(settings.data_dir, settings.database_url, tuple(files))


def create_backup(target: Path, source: Source, *, progress: Progress = quiet,
                  clock: Callable[[], float] = time.time) -> Manifest:
    """Write a backup of `source` to `target` (replaced atomically); returns its manifest."""
    started = clock()
    try:
        with ArchiveWriter(target) as writer:
            segments = _copy_wal(source.data_dir / "wal", writer, progress)
            backend, revisions, tables = _dump_database(source.url, writer, progress)
            for path, name in source.config_files:
                writer.path(f"config/{name}").write_bytes(path.read_bytes())
            manifest = writer.finish({
                "watchkeeper_version": __version__,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                "created_at_ms": int(started * 1000),
                "source": {"backend": backend, "data_dir": str(source.data_dir)},
                "alembic_revisions": revisions,
                "tables": tables,
                "wal_segments": segments,
                "config_files": [name for _path, name in source.config_files],
            })
    except OSError as exc:
        raise BackupError(f"writing the backup {target} failed: {exc}") from exc
    size = target.stat().st_size
    progress(f"wrote {target} ({size} bytes, {sum(t['rows'] for t in tables)} rows, "
             f"{len(segments)} WAL segments) in {clock() - started:.1f} s")
    return manifest


def _copy_wal(wal_dir: Path, writer: ArchiveWriter, progress: Progress) -> list[str]:
    """Copy every segment, again until no new one appears (see the module docstring)."""
    copied: list[str] = []
    done: set[str] = set()
    for _round in range(_MAX_WAL_ROUNDS):
        try:
            names = sorted(p.name for p in wal_dir.iterdir() if p.name.isdigit())
        except FileNotFoundError:
            names = []
        new = [n for n in names if n not in done]
        if not new:
            progress(f"copied {len(copied)} WAL segments")
            return sorted(copied)
        for name in new:
            done.add(name)
            try:
                # Opened before a checkpoint unlinks it, a segment reads to its end regardless.
                with (wal_dir / name).open("rb") as src:
                    writer.path(f"wal/{name}").write_bytes(src.read())
            except FileNotFoundError:
                continue  # checkpointed: its data is in a newer segment and the database
            copied.append(name)
    raise BackupError(f"the WAL in {wal_dir} kept changing: new segments in {_MAX_WAL_ROUNDS} listings")


def _begin_snapshot(conn: sa.Connection) -> None:
    """Start one read snapshot that every following query of `conn` sees."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN")  # pysqlite would not begin before a SELECT on its own
    conn.exec_driver_sql("SELECT 1").scalar()


def _dump_database(url: str, writer: ArchiveWriter,
                   progress: Progress) -> tuple[str, list[str], list[dict[str, Any]]]:
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise BackupError(f"no database at {url.removeprefix('sqlite:///')}: nothing to back up")
    engine = make_engine(url)
    tables: list[dict[str, Any]] = []
    try:
        options = {"isolation_level": "REPEATABLE READ"} if engine.dialect.name == "postgresql" else {}
        with engine.connect().execution_options(**options) as conn:
            _begin_snapshot(conn)
            revisions = current_revisions(conn)
            names = [t for t in sa.inspect(conn).get_table_names() if t in our_tables()]
            metadata = sa.MetaData()
            metadata.reflect(conn, only=names)
            for table in metadata.sorted_tables:  # parents before children, should a FK appear
                kinds = [column_kind(c.type) for c in table.columns]
                order = list(table.primary_key.columns) or list(table.columns)
                member = f"db/{table.name}.jsonl"
                rows = 0
                result = conn.execution_options(yield_per=_FETCH_ROWS).execute(
                    sa.select(table).order_by(*order))
                with writer.path(member).open("w", encoding="utf-8") as f:
                    for row in result:
                        f.write(encode_row(row, kinds))
                        rows += 1
                progress(f"dumped {table.name}: {rows} rows")
                tables.append({"name": table.name, "file": member, "rows": rows,
                               "columns": [[c.name, k] for c, k in zip(table.columns, kinds, strict=True)]})
            conn.rollback()
        return engine.dialect.name, revisions, tables
    except sa.exc.SQLAlchemyError as exc:
        raise BackupError(f"reading the database failed: {exc}") from exc
    finally:
        engine.dispose()
