"""Loading a backup into a data dir and a database (SQLite or PostgreSQL, whichever the backup came from).

>>> restore_backup(Path("wk.tar.gz"), data_dir=Path("data-new"))                     # doctest: +SKIP
>>> restore_backup(Path("wk.tar.gz"), data_dir=Path("d"), database_url="postgresql+psycopg://...")

In this order, so that a damaged or foreign file never touches the target:

1. read the whole archive and check every member's size and SHA-256 against the manifest;
2. check that this watchkeeper knows every migration the backup's database was at;
3. refuse a target that holds data (rows in our tables, WAL segments, restored config files)
   unless ``force`` — then drop our tables (only those: a shared PostgreSQL database keeps the rest)
   and the WAL segments;
4. migrate the empty database to the backup's revisions, load the rows table by table in batches,
   move PostgreSQL's id sequences past the loaded ids, check the row counts, then migrate to this
   watchkeeper's heads (so an older backup is upgraded like an older database would be);
5. write the WAL segments into ``<data_dir>/wal`` (replayed at the next start, as after a crash) and
   the config files into `config_dir`.

The server must not be running on the target while it is restored.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from alembic import command

from watchkeeper.backup.archive import ArchiveReader, BackupError, Manifest, Progress, quiet, verify_archive
from watchkeeper.backup.tables import (
    ALEMBIC_TABLE,
    current_revisions,
    decode_row,
    known_revisions,
    our_tables,
)
from watchkeeper.tsdb.schema import alembic_config, make_engine, migrate, sqlite_url

_INSERT_ROWS = 2000
_PROGRESS_ROWS = 100_000


def restore_backup(archive: Path, *, data_dir: Path, database_url: str | None = None, force: bool = False,
                   config_dir: Path | None = None, progress: Progress = quiet) -> Manifest:
    """Restore `archive` into `data_dir` (+ `database_url`, default the SQLite file in it); returns
    the manifest. Raises `BackupError` (the target untouched unless the failure came while loading)."""
    manifest = check_backup(archive, progress=progress)
    progress(describe(manifest))
    revisions: list[str] = manifest["alembic_revisions"]
    url = database_url or sqlite_url(data_dir)
    wal_dir = data_dir / "wal"
    config_dir = config_dir if config_dir is not None else data_dir / "restored-config"
    held = _data_held(url, wal_dir, config_dir)
    if held and not force:
        raise BackupError(f"the target is not empty ({'; '.join(held)}); use --force to replace it")
    engine = make_engine(url)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with engine.begin() as conn:
            _drop_ours(conn, {t["name"] for t in manifest["tables"]})
        for p in _segments(wal_dir):
            p.unlink()
        _migrate_to(engine, revisions)
        tables = {t["file"]: t for t in manifest["tables"]}
        with ArchiveReader(archive) as reader:
            for name, f in reader.members():
                if name in tables:
                    _load_table(engine, tables[name], f, progress)
                elif name.startswith("wal/"):
                    _write(wal_dir / name.removeprefix("wal/"), f)
                elif name.startswith("config/"):
                    _write(config_dir / name.removeprefix("config/"), f)
        with engine.begin() as conn:
            _check_counts(conn, manifest["tables"])
            if conn.dialect.name == "postgresql":
                _reset_sequences(conn)
        migrate(engine)
    except sa.exc.SQLAlchemyError as exc:
        raise BackupError(f"loading the backup into {engine.url!r} failed: {exc}") from exc
    except OSError as exc:
        raise BackupError(f"restoring into {data_dir} failed: {exc}") from exc
    finally:
        engine.dispose()
    progress(f"restored {sum(t['rows'] for t in manifest['tables'])} rows, "
             f"{len(manifest['wal_segments'])} WAL segments, {len(manifest['config_files'])} config files")
    return manifest


def check_backup(archive: Path, *, progress: Progress = quiet) -> Manifest:
    """Verify `archive` (see `verify_archive`) and that this watchkeeper can load its database."""
    manifest = verify_archive(archive, progress=progress)
    unknown = sorted(set(manifest["alembic_revisions"]) - known_revisions())
    if unknown:
        raise BackupError(f"the backup's database is at migrations this watchkeeper does not know "
                          f"({', '.join(unknown)}): restore it with a newer watchkeeper")
    return manifest


def describe(manifest: Manifest) -> str:
    """One line about a verified backup: when, by which version, from which backend, how much."""
    rows = sum(t["rows"] for t in manifest["tables"])
    return (f"backup OK: made {manifest['created_at']} by watchkeeper {manifest['watchkeeper_version']} "
            f"from {manifest['source']['backend']}; {len(manifest['tables'])} tables, {rows} rows, "
            f"{len(manifest['wal_segments'])} WAL segments, {len(manifest['config_files'])} config files")


def _segments(wal_dir: Path) -> list[Path]:
    if not wal_dir.is_dir():
        return []
    return [p for p in wal_dir.iterdir() if p.name.isdigit()]


def _data_held(url: str, wal_dir: Path, config_dir: Path) -> list[str]:
    """Why the target is not empty (nothing: it is)."""
    held = []
    segments = [p for p in _segments(wal_dir) if p.stat().st_size > 0]
    if segments:
        held.append(f"{wal_dir} holds {len(segments)} WAL segments")
    if config_dir.is_dir() and any(config_dir.iterdir()):
        held.append(f"{config_dir} is not empty")
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return held
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            for name in sorted(set(sa.inspect(conn).get_table_names()) & our_tables()):
                table = sa.table(name)
                if conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first() is not None:
                    held.append(f"table {name} has rows")
    except sa.exc.SQLAlchemyError as exc:
        raise BackupError(f"cannot read the target database: {exc}") from exc
    finally:
        engine.dispose()
    return held


def _drop_ours(conn: sa.Connection, backup_tables: set[str]) -> None:
    """Drop our tables and Alembic's record, so the schema is rebuilt at the backup's revisions."""
    present = set(sa.inspect(conn).get_table_names())
    names = present & (our_tables() | backup_tables | {ALEMBIC_TABLE})
    if names:
        metadata = sa.MetaData()
        metadata.reflect(conn, only=sorted(names))
        metadata.drop_all(conn)


def _migrate_to(engine: sa.Engine, revisions: list[str]) -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        for revision in revisions:
            command.upgrade(cfg, revision)
        reached = current_revisions(conn)
    if reached != sorted(revisions):
        raise BackupError(f"migrating to the backup's revisions {revisions} reached {reached}")


def _load_table(engine: sa.Engine, meta: Mapping[str, Any], f: IO[bytes], progress: Progress) -> None:
    name: str = meta["name"]
    columns = [c for c, _kind in meta["columns"]]
    kinds = [kind for _c, kind in meta["columns"]]
    with engine.begin() as conn:
        table = sa.Table(name, sa.MetaData(), autoload_with=conn)
        missing = [c for c in columns if c not in table.c]
        if missing:
            raise BackupError(f"table {name} at the backup's revisions has no columns {missing}")
        insert = sa.insert(table)
        batch: list[dict[str, Any]] = []
        done = 0
        for line in io.TextIOWrapper(f, encoding="utf-8"):
            try:
                batch.append(dict(zip(columns, decode_row(json.loads(line), kinds), strict=True)))
            except ValueError as exc:
                raise BackupError(f"table {name}: bad row {done + len(batch) + 1}: {exc}") from exc
            if len(batch) >= _INSERT_ROWS:
                conn.execute(insert, batch)
                done += len(batch)
                batch.clear()
                if done % _PROGRESS_ROWS == 0:
                    progress(f"restoring {name}: {done}/{meta['rows']} rows")
        if batch:
            conn.execute(insert, batch)
            done += len(batch)
    progress(f"restored {name}: {done} rows")


def _write(path: Path, f: IO[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        while block := f.read(1 << 20):
            out.write(block)


def _check_counts(conn: sa.Connection, tables: list[Mapping[str, Any]]) -> None:
    for t in tables:
        n = conn.execute(sa.select(sa.func.count()).select_from(sa.table(t["name"]))).scalar_one()
        if n != t["rows"]:
            raise BackupError(f"table {t['name']}: {n} rows restored, the backup lists {t['rows']}")


def _reset_sequences(conn: sa.Connection) -> None:
    """Serial ids continue after the restored ones (inserting explicit ids does not advance them)."""
    metadata = sa.MetaData()
    metadata.reflect(conn, only=sorted(set(sa.inspect(conn).get_table_names()) & our_tables()))
    for table in metadata.sorted_tables:
        for col in table.primary_key.columns:
            if not isinstance(col.type, sa.Integer):
                continue
            seq = conn.execute(sa.text("SELECT pg_get_serial_sequence(:t, :c)"),
                               {"t": table.name, "c": col.name}).scalar()
            if seq is None:
                continue
            top = conn.execute(sa.select(sa.func.max(col))).scalar()
            conn.execute(sa.text("SELECT setval(:s, :v, :called)"),
                         {"s": seq, "v": top if top is not None else 1, "called": top is not None})
