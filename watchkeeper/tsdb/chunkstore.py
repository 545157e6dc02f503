"""Where cut chunks and series labels are kept: SQL tables (SQLite/PostgreSQL) or memory.

Both implement `ChunkStore`; the storage never issues SQL itself. Reads are batched: one query
returns the chunks of thousands of series, ordered by ``(series_id, min_time)``, and the caller
decodes them all with one `decode_concat`. Writes are one transaction per batch, and inserting a
chunk that is already there (WAL replay after a crash between commit and checkpoint) is a no-op.

>>> store = MemoryChunkStore()
>>> store.write([(7, b"up")], [(7, 0, 10, b"blob")])
>>> store.read([7], 0, 100).blobs
[b'blob']
"""

from __future__ import annotations

import bisect
import contextlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from watchkeeper.errors import StorageError
from watchkeeper.tsdb.schema import chunks_table, make_engine, migrate, series_table

_BATCH = 5000  # ids per SELECT / DELETE: well under SQLite's and PostgreSQL's parameter limits

_READ_SQL = ("SELECT series_id, min_time, max_time, data FROM tsdb_chunks WHERE series_id {ids}"
             " AND min_time <= {ph} AND max_time >= {ph} ORDER BY series_id, min_time")

SeriesRow = tuple[int, bytes]  # (id, encoded labels)
ChunkRow = tuple[int, int, int, bytes]  # (series id, min time, max time, data)


@dataclass(frozen=True, slots=True)
class ChunkBatch:
    """Chunks ordered by (series id, min time): parallel arrays and the blobs."""

    series_ids: npt.NDArray[np.int64]
    min_times: npt.NDArray[np.int64]
    max_times: npt.NDArray[np.int64]
    blobs: list[bytes]


def _batch(rows: list[tuple[int, int, int, bytes]]) -> ChunkBatch:
    return ChunkBatch(
        np.fromiter((r[0] for r in rows), np.int64, len(rows)),
        np.fromiter((r[1] for r in rows), np.int64, len(rows)),
        np.fromiter((r[2] for r in rows), np.int64, len(rows)),
        [r[3] for r in rows],
    )


class ChunkStore(Protocol):
    def load_series(self) -> list[SeriesRow]: ...

    def series_bounds(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(series ids, min time, max time) over each series' persisted chunks."""
        ...

    def write(self, series: Sequence[SeriesRow], chunks: Sequence[ChunkRow]) -> None: ...

    def read(self, series_ids: Sequence[int], start_ms: int, end_ms: int) -> ChunkBatch: ...

    def delete_before(self, cutoff_ms: int) -> int: ...

    def delete_series(self, series_ids: Sequence[int]) -> None: ...

    def size_bytes(self) -> int: ...

    def close(self) -> None: ...


class MemoryChunkStore:
    """Chunks in dicts: the purely in-memory mode (PromQL conformance, rule unit tests).

    Series labels are not kept: the index in memory is their only copy, nothing reloads them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chunks: dict[int, list[tuple[int, int, bytes]]] = {}

    def load_series(self) -> list[SeriesRow]:
        return []

    def series_bounds(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        with self._lock:
            items = [(k, v[0][0], max(c[1] for c in v)) for k, v in self._chunks.items() if v]
        arr = np.array(items, dtype=np.int64).reshape(-1, 3)
        return arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy()

    def write(self, series: Sequence[SeriesRow], chunks: Sequence[ChunkRow]) -> None:
        with self._lock:
            for sid, lo, hi, data in chunks:
                lst = self._chunks.setdefault(sid, [])
                i = bisect.bisect_left(lst, (lo, hi))
                if i < len(lst) and lst[i][:2] == (lo, hi):
                    continue
                lst.insert(i, (lo, hi, data))

    def read(self, series_ids: Sequence[int], start_ms: int, end_ms: int) -> ChunkBatch:
        rows = []
        with self._lock:
            for sid in sorted(set(series_ids)):
                for lo, hi, data in self._chunks.get(sid, ()):
                    if lo > end_ms:
                        break
                    if hi >= start_ms:
                        rows.append((sid, lo, hi, data))
        return _batch(rows)

    def delete_before(self, cutoff_ms: int) -> int:
        deleted = 0
        with self._lock:
            for sid, lst in list(self._chunks.items()):
                keep = [c for c in lst if c[1] >= cutoff_ms]
                deleted += len(lst) - len(keep)
                if keep:
                    self._chunks[sid] = keep
                else:
                    del self._chunks[sid]
        return deleted

    def delete_series(self, series_ids: Sequence[int]) -> None:
        with self._lock:
            for sid in series_ids:
                self._chunks.pop(sid, None)

    def size_bytes(self) -> int:
        with self._lock:
            return sum(len(c[2]) for lst in self._chunks.values() for c in lst)

    def close(self) -> None:
        pass


class SqlChunkStore:
    """The two tables of `schema`, through SQLAlchemy Core, on SQLite or PostgreSQL."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    @classmethod
    def open(cls, url: str) -> SqlChunkStore:
        try:
            engine = make_engine(url)
            migrate(engine)
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"cannot open the chunk database: {exc}") from exc
        return cls(engine)

    def _insert(self, table: sa.Table) -> sa.sql.dml.Insert:
        if self.dialect == "sqlite":
            return sqlite.insert(table).on_conflict_do_nothing()
        if self.dialect == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing()
        return sa.insert(table)

    def load_series(self) -> list[SeriesRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(series_table.c.id, series_table.c.labels))
            return [(int(r[0]), bytes(r[1])) for r in rows]

    def series_bounds(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        c = chunks_table.c
        q = sa.select(c.series_id, sa.func.min(c.min_time), sa.func.max(c.max_time)).group_by(c.series_id)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        arr = np.array(rows, dtype=np.int64).reshape(-1, 3)
        return arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy()

    def write(self, series: Sequence[SeriesRow], chunks: Sequence[ChunkRow]) -> None:
        try:
            with self.engine.begin() as conn:
                if series:
                    conn.execute(self._insert(series_table), [{"id": s, "labels": lab} for s, lab in series])
                if chunks:
                    conn.execute(self._insert(chunks_table), [
                        {"series_id": s, "min_time": lo, "max_time": hi, "data": d} for s, lo, hi, d in chunks
                    ])
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"writing chunks failed: {exc}") from exc

    def read(self, series_ids: Sequence[int], start_ms: int, end_ms: int) -> ChunkBatch:
        """Chunks overlapping ``[start_ms, end_ms]`` of the series, ordered by (series, min time).

        Straight through the driver's cursor (no per-row SQLAlchemy objects): one query per
        `_BATCH` ids, rows fetched in one ``fetchall`` and split into columns."""
        ids = sorted(set(series_ids))
        rows: list[tuple[int, int, int, bytes]] = []
        try:
            with self.engine.connect() as conn:
                cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                try:
                    for i in range(0, len(ids), _BATCH):
                        part = ids[i : i + _BATCH]
                        if self.dialect == "postgresql":
                            cur.execute(_READ_SQL.format(ids="= ANY(%s)", ph="%s"), (part, end_ms, start_ms))
                        else:
                            marks = ",".join("?" * len(part))
                            sql = _READ_SQL.format(ids=f"IN ({marks})", ph="?")
                            cur.execute(sql, (*part, end_ms, start_ms))
                        rows.extend(cur.fetchall())
                finally:
                    cur.close()
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"reading chunks failed: {exc}") from exc
        except Exception as exc:  # DBAPI errors are not wrapped on the raw cursor
            if type(exc).__module__.split(".")[0] in {"sqlite3", "psycopg"}:
                raise StorageError(f"reading chunks failed: {exc}") from exc
            raise
        if not rows:
            return _batch([])
        sids, lo, hi, blobs = zip(*rows, strict=True)
        return ChunkBatch(np.array(sids, dtype=np.int64), np.array(lo, dtype=np.int64),
                          np.array(hi, dtype=np.int64), list(blobs))

    def delete_before(self, cutoff_ms: int) -> int:
        try:
            with self.engine.begin() as conn:
                res = conn.execute(sa.delete(chunks_table).where(chunks_table.c.max_time < cutoff_ms))
                return int(res.rowcount or 0)
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"deleting chunks failed: {exc}") from exc

    def delete_series(self, series_ids: Sequence[int]) -> None:
        ids = list(series_ids)
        try:
            with self.engine.begin() as conn:
                for i in range(0, len(ids), _BATCH):
                    part = ids[i : i + _BATCH]
                    conn.execute(sa.delete(chunks_table).where(chunks_table.c.series_id.in_(part)))
                    conn.execute(sa.delete(series_table).where(series_table.c.id.in_(part)))
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"deleting series failed: {exc}") from exc

    def size_bytes(self) -> int:
        """Bytes the data takes on disk: the SQLite file (+ its -wal), or both PostgreSQL tables."""
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
                size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
                db = self.engine.url.database or ""
                wal = 0
                with contextlib.suppress(OSError):
                    wal = os.path.getsize(db + "-wal")
                return int(pages) * int(size) + wal
            q = "SELECT pg_total_relation_size('tsdb_chunks') + pg_total_relation_size('tsdb_series')"
            return int(conn.exec_driver_sql(q).scalar_one())

    def close(self) -> None:
        if self.dialect == "sqlite":
            try:
                with self.engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            except sa.exc.SQLAlchemyError:
                pass
        self.engine.dispose()
