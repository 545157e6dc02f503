"""The store's public facade: what the collector appends to and the query engine selects from.

    index (labels -> ids, postings) --+
    head (open chunks, NumPy) --------+--> Storage --> chunk store (SQLite / PostgreSQL / memory)
    wal (group commit, checkpoints) --+

>>> store = Storage.open(data_dir=None)               # in memory: no WAL, no SQL
>>> refs = store.series_refs([(("__name__", "up"), ("job", "api"))])
>>> store.append(refs, np.array([1000]), np.array([1.0])).accepted
1
>>> [s.values.tolist() for s in store.select([Matcher(MatchOp.EQUAL, "job", "api")], 0, 2000)]
[[1.0]]

**Durability.** `append` validates and applies a batch to the head and writes the stored samples to
the WAL under one lock (so head order and WAL order agree), then, outside the lock, waits for the
group-commit fsync. When it returns, the samples survive ``kill -9``.

**Persistence.** Cut chunks go to a FIFO queue; a background *persister* thread commits them to
the database in batches (one transaction for up to 20 000 chunks), so the append path never waits
on SQL. Queued chunks are visible to `select` until committed. The persister also checkpoints
the WAL when it has grown past a threshold: start a new segment, write every open head sample into
it, commit everything cut (and every series created) before, then delete the older segments. At open,
series and per-series time bounds come from the database, then the WAL is replayed: a sample newer
than its series' persisted data goes to the head; an older one (an out-of-order chunk can be
persisted before older samples of the open chunk) is looked up in the persisted chunks and, if
missing, restored in a chunk of its own, so a replay neither loses nor duplicates a sample.

**Memory.** `Storage.open(malloc_tuning=True)` (the server's default, setting ``malloc_tuning``)
fixes glibc's mmap/trim thresholds (`tune_malloc`): with glibc's
default dynamic threshold the freed NumPy blocks of ingest stayed in the heap and RSS per active
series was about three times the live data.

**Reads.** `select_concat` resolves matchers in the index (only after the last retention cutoff:
what retention left in the head is not returned), copies the head samples of the chosen series
under the lock (frozen head segments outside the window are not decoded) and the queued chunks of
the series the select cache does not answer, then reads the persisted chunks overlapping the window
of those series (one query per 5000 series through the driver's cursor; series whose open head
chunk already covers ``start_ms``, with no out-of-order chunk inside it, skip it). The blobs are put
in output order (series by labels, each in time order) before one `decode_concat`, so when nothing
is cached the decoded arrays *are* the result: no sort, no copy, only a compaction when the window
cuts chunks and one masked scatter when series also have head samples. Chunks that overlap
(out-of-order window, replay) are detected with one vectorised comparison and only then merged by
a sort, the newer sample winning. `select` returns views into that block.

**Select cache.** The decoded persisted samples of each series read from the database are kept
(`SelectCache`, least recently used first out beyond ``select_cache_bytes``, 256 MiB by default)
and answer later selects of the series whose window starts no earlier: the dashboards', rules' and
API's repeated queries then cost a slice and one concatenation instead of a database read and a
decode. Queuing a chunk for a series (cut, out-of-order sample, WAL recovery) and retention tell
the cache, so an answer never differs from an uncached one (``tests/tsdb/test_selectcache.py``).
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from watchkeeper.errors import StorageError
from watchkeeper.labels import Labels, Matcher
from watchkeeper.tsdb.chunks import Blob, decode_concat, encode_chunk
from watchkeeper.tsdb.chunkstore import ChunkBatch, ChunkRow, ChunkStore, MemoryChunkStore, SqlChunkStore
from watchkeeper.tsdb.head import REASONS, CutChunk, Head
from watchkeeper.tsdb.index import SeriesIndex
from watchkeeper.tsdb.reader import SeriesData
from watchkeeper.tsdb.schema import sqlite_url
from watchkeeper.tsdb.selectcache import DEFAULT_MAX_BYTES, CachedSeries, CacheStats, SelectCache, Token
from watchkeeper.tsdb.wal import SamplesRecord, Wal, decode_labels, encode_labels

log = logging.getLogger(__name__)

_NO_TS = np.iinfo(np.int64).min
_COMMIT_BATCH = 20_000
_REPLAY_WINDOW_MS = 1 << 61  # replay: any out-of-order sample (each was accepted once)
_RECOVER_BATCH = 1 << 20  # WAL samples older than their series' persisted data, checked at a time
_UNBOUNDED = 2**62
_ORDERS_MAX_SERIES = 200_000  # series in the remembered label orders (about 100 bytes each)
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


_malloc_tuned = False


def tune_malloc() -> bool:
    """Fix glibc's mmap and trim thresholds at 128 KiB (once per process; not on other libcs).
    True if applied. `Storage.open` calls it when asked (``malloc_tuning``: the setting of that
    name, off when glibc's own ``MALLOC_*_`` thresholds are set in the environment).

    By default glibc raises its mmap threshold (up to 32 MiB) each time a large block is freed.
    The head and the persister free NumPy arrays of a few hundred KiB to a few MiB all the time,
    so after a while those come from the heap, interleave with long-lived small objects, and the
    heap is never given back: ``bench/tsdb_memory.py`` measured ~1.5 KiB RSS per additional series
    with the default and ~0.5 KiB with fixed thresholds (the live data is ~0.7 KiB a series). A
    fixed threshold stops the adjustment: large blocks are mmap'ed and returned when freed."""
    global _malloc_tuned
    if _malloc_tuned:
        return True
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = bool(mallopt(m_mmap_threshold, 128 << 10)) and bool(mallopt(m_trim_threshold, 128 << 10))
    _malloc_tuned = ok
    return ok


@dataclass(frozen=True, slots=True)
class AppendResult:
    accepted: int
    rejected: dict[str, int]


@dataclass(frozen=True, slots=True)
class TsdbStats:
    num_series: int
    head_chunks: int
    head_samples: int
    samples_appended_total: int
    chunks_written_total: int
    bytes_on_disk: int  # database (and WAL); in memory mode, the bytes of the chunk blobs
    bytes_per_sample: float  # bytes_on_disk / samples written in chunks by this process
    min_time: int | None
    max_time: int | None
    rejected_out_of_order_total: int
    rejected_duplicate_total: int
    rejected_too_old_total: int
    rejected_unknown_series_total: int
    pending_chunks: int
    wal_fsyncs_total: int
    select_cache: CacheStats


@dataclass(slots=True)
class _Queue:
    """Cut chunks waiting for the database, FIFO, with a per-series view for `select`."""

    rows: list[ChunkRow] = field(default_factory=list)
    by_id: dict[int, list[ChunkRow]] = field(default_factory=dict)
    series: list[tuple[int, bytes]] = field(default_factory=list)
    enqueued: int = 0  # sequence numbers: chunks ever queued / committed
    committed: int = 0


class Storage:
    """Series index + head + WAL + chunk store. Thread-safe. See the module docstring."""

    def __init__(self, store: ChunkStore, wal: Wal | None, *, retention_ms: int, out_of_order_window_ms: int,
                 memory: bool, checkpoint_bytes: int = 256 << 20,
                 select_cache_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._store = store
        self._wal = wal
        self._memory = memory
        self.retention_ms = retention_ms
        self.checkpoint_bytes = checkpoint_bytes
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._commit_lock = threading.Lock()
        self._index = SeriesIndex()
        self._head = Head(out_of_order_window_ms=out_of_order_window_ms)
        self._queue = _Queue()
        self._cache = SelectCache(select_cache_bytes)
        # matchers -> (index version, their slots, labels in output order, each slot's rank)
        self._orders: OrderedDict[tuple[Matcher, ...], tuple[int, I64, list[Labels], I64]] = OrderedDict()
        self._orders_series = 0
        self._retained_from = _NO_TS  # the last retention cutoff: older samples are never returned
        self._max_ts = _NO_TS
        self._rejected = dict.fromkeys((*REASONS, "unknown_series"), 0)
        self.chunks_written_total = 0
        self._samples_in_chunks = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._last_snapshot_bytes = 0

    @classmethod
    def open(cls, *, data_dir: Path | None, database_url: str | None = None,
             retention_ms: int = 15 * 86400_000, out_of_order_window_ms: int = 0, wal_fsync: bool = True,
             malloc_tuning: bool = False, select_cache_bytes: int = DEFAULT_MAX_BYTES,
             on_wal_fsync: Callable[[float], None] | None = None) -> Storage:
        """Open (creating as needed) a store; see the class docstring for the three modes.

        ``malloc_tuning`` applies `tune_malloc` (process-wide, so the server asks for it, not every
        library use). ``select_cache_bytes`` bounds the decoded samples kept between selects
        (`SelectCache`; 0 turns it off). ``on_wal_fsync`` receives each WAL fsync's duration in seconds (for
        ``watchkeeper_wal_fsync_duration_seconds``).
        """
        if malloc_tuning:
            tune_malloc()
        if data_dir is None and database_url is None:
            return cls(MemoryChunkStore(), None, retention_ms=retention_ms,
                       out_of_order_window_ms=out_of_order_window_ms, memory=True,
                       select_cache_bytes=select_cache_bytes)
        if data_dir is None:
            raise StorageError("a database_url needs a data_dir for the WAL")
        data_dir.mkdir(parents=True, exist_ok=True)
        store = SqlChunkStore.open(database_url or sqlite_url(data_dir))
        wal = Wal.open(data_dir / "wal", fsync=wal_fsync, on_fsync=on_wal_fsync)
        self = cls(store, wal, retention_ms=retention_ms, out_of_order_window_ms=out_of_order_window_ms,
                   memory=False, select_cache_bytes=select_cache_bytes)
        try:
            with self._lock:  # no other thread yet, but a replay that cuts chunks notifies `_cond`
                self._load()
        except Exception:
            wal.close()
            store.close()
            raise
        self._thread = threading.Thread(target=self._persist_loop, name="tsdb-persister", daemon=True)
        self._thread.start()
        return self

    # --- start-up ---------------------------------------------------------------------------------

    def _load(self) -> None:
        """Series and per-series bounds from the database, then the WAL replayed (module docstring).

        Every sample in the WAL was accepted once, so it is taken back whatever the out-of-order
        window is now."""
        assert self._wal is not None
        for sid, enc in self._store.load_series():
            self._index.add(sid, decode_labels(enc))
        self._grow()
        ids, lo, hi = self._store.series_bounds()
        slots = self._index.slots_of(ids)
        known = slots >= 0
        persisted_hi = np.full(self._head.capacity, _NO_TS, dtype=np.int64)
        persisted_hi[slots[known]] = hi[known]
        if len(hi):
            self._max_ts = int(hi.max())
        replayed = False
        older: list[tuple[I64, I64, F64]] = []
        n_older = 0
        for rec in self._wal.replay():
            replayed = True
            if isinstance(rec, SamplesRecord):
                slots = self._index.slots_of(rec.ids)
                ok = slots >= 0
                slots, ts, vals = slots[ok], rec.timestamps_ms[ok], rec.values[ok]
                fresh = ts > persisted_hi[slots]
                out = self._head.append(slots[fresh], ts[fresh], vals[fresh], ooo_window_ms=_REPLAY_WINDOW_MS)
                if not fresh.all():
                    stale = ~fresh
                    older.append((slots[stale], ts[stale], vals[stale]))
                    n_older += int(stale.sum())
                if len(ts):
                    self._max_ts = max(self._max_ts, int(ts.max()))
                self._enqueue(out.chunks)
                if n_older > _RECOVER_BATCH:
                    self._recover(older)
                    older, n_older = [], 0
            else:
                for sid, labels in zip(rec.ids, rec.labels, strict=True):
                    if self._index.slot_of(sid) is None:
                        self._queue.series.append((sid, encode_labels(labels)))
                    self._index.add(sid, labels)
                self._grow()
                grow = self._head.capacity - len(persisted_hi)
                if grow > 0:
                    persisted_hi = np.concatenate([persisted_hi, np.full(grow, _NO_TS, np.int64)])
        if older:
            self._recover(older)
        # From now on samples older than the persisted data are out of order, as before the crash.
        slots = self._index.slots_of(ids)
        known = slots >= 0
        self._head.note_persisted(slots[known], lo[known], hi[known])
        if replayed:
            self._checkpoint()

    def _recover(self, parts: list[tuple[I64, I64, F64]]) -> None:
        """Restore the WAL samples (at or before their series' newest persisted sample) that the
        database does not hold: one chunk per series, queued for the database like a cut chunk."""
        slots = np.concatenate([p[0] for p in parts])
        ts = np.concatenate([p[1] for p in parts])
        vals = np.concatenate([p[2] for p in parts])
        ids = self._index.ids[slots]
        batch = self._store.read(np.unique(ids).tolist(), int(ts.min()), int(ts.max()))
        p_ts, _, offsets = decode_concat(batch.blobs)
        p_ids = np.repeat(batch.series_ids, np.diff(offsets))
        # WAL and persisted samples sorted together by (series, time), the persisted first on a tie
        # and WAL samples in WAL order (lexsort is stable).
        all_ids = np.concatenate([p_ids, ids])
        all_ts = np.concatenate([p_ts, ts])
        from_wal = np.concatenate([np.zeros(len(p_ids), bool), np.ones(len(ids), bool)])
        order = np.lexsort((from_wal, all_ts, all_ids))
        s_ids, s_ts = all_ids[order], all_ts[order]
        run_start = np.ones(len(order), dtype=bool)
        run_start[1:] = (s_ids[1:] != s_ids[:-1]) | (s_ts[1:] != s_ts[:-1])
        run_end = np.append(run_start[1:], True)
        first_of_run = np.maximum.accumulate(np.where(run_start, np.arange(len(order)), 0))
        # The last WAL sample of each (series, time) of which nothing is persisted.
        missing = run_end & from_wal[order][first_of_run]
        if not missing.any():
            return
        pick = order[missing] - len(p_ids)  # into the WAL arrays, by (series, time)
        r_slots, r_ts, r_vals = slots[pick], ts[pick], vals[pick]
        cuts = [0, *(np.flatnonzero(np.diff(r_slots)) + 1).tolist(), len(pick)]
        chunks = []
        first_ts = self._head.first_ts
        for a, b in itertools.pairwise(cuts):
            slot = int(r_slots[a])
            chunks.append(CutChunk(slot, int(r_ts[a]), int(r_ts[b - 1]), encode_chunk(r_ts[a:b], r_vals[a:b]),
                                   b - a))
            first_ts[slot] = min(int(first_ts[slot]), int(r_ts[a]))
        log.warning("WAL replay restored %d samples of %d series that the database did not hold",
                    len(pick), len(chunks))
        self._enqueue(chunks)

    def _grow(self) -> None:
        n = self._index.num_slots
        self._head.ensure_capacity(n)
        self._cache.ensure_capacity(n)

    # --- writes ----------------------------------------------------------------------------------

    def series_refs(self, labels: Sequence[Labels]) -> I64:
        """Ids of the series (created, and WAL-logged, as needed), in the order given."""
        with self._lock:
            ids, created = self._index.get_or_create(labels)
            if created:
                self._grow()
                new_ids = [int(self._index.ids[s]) for s in created]
                new_labels = [self._index.labels(s) for s in created]
                if self._wal is not None:
                    self._wal.log_series(new_ids, new_labels)
                if not self._memory:
                    self._queue.series.extend(zip(new_ids, map(encode_labels, new_labels), strict=True))
        return np.array(ids, dtype=np.int64)

    def append(self, refs: npt.ArrayLike, timestamps_ms: npt.ArrayLike,
               values: npt.ArrayLike) -> AppendResult:
        """Append samples of many series; durable when it returns. Thread-safe."""
        refs_a = np.asarray(refs, dtype=np.int64)
        ts = np.asarray(timestamps_ms, dtype=np.int64)
        vals = np.asarray(values, dtype=np.float64)
        if not len(refs_a) == len(ts) == len(vals):
            raise ValueError("refs, timestamps_ms and values must have the same length")
        position = 0
        with self._lock:
            if self._stopping:
                raise StorageError("storage is closed")
            slots = self._index.slots_of(refs_a)
            known = slots >= 0
            n_unknown = int((~known).sum())
            if n_unknown:
                slots, refs_a, ts, vals = slots[known], refs_a[known], ts[known], vals[known]
            min_valid = self._max_ts - self.retention_ms if self._max_ts != _NO_TS else _NO_TS
            out = self._head.append(slots, ts, vals, min_valid_ms=min_valid)
            if out.stored.any():
                if self._wal is not None:
                    s = out.stored
                    position = self._wal.log_samples(refs_a[s], ts[s], vals[s])
                self._max_ts = max(self._max_ts, int(ts[out.stored].max()))
            for reason, n in out.rejected.items():
                self._rejected[reason] += n
            self._rejected["unknown_series"] += n_unknown
            self._enqueue(out.chunks)
        if position:
            assert self._wal is not None
            self._wal.sync(position)
        rejected = dict(out.rejected)
        if n_unknown:
            rejected["unknown_series"] = n_unknown
        return AppendResult(out.accepted, rejected)

    def _enqueue(self, chunks: list[CutChunk]) -> None:
        """Queue cut chunks for the database (caller holds the lock)."""
        if not chunks:
            return
        q = self._queue
        ids = self._index.ids
        for c in chunks:
            row = (int(ids[c.slot]), c.min_time, c.max_time, c.data)
            q.rows.append(row)
            q.by_id.setdefault(row[0], []).append(row)
            self._samples_in_chunks += c.samples
        q.enqueued += len(chunks)
        self._cache.invalidate({c.slot for c in chunks})
        if self._memory:
            self._flush_queue_memory()
        else:
            self._cond.notify_all()

    def _flush_queue_memory(self) -> None:
        self._store.write(self._queue.series, self._queue.rows)
        self.chunks_written_total += len(self._queue.rows)
        self._queue = _Queue(enqueued=self._queue.enqueued, committed=self._queue.enqueued)

    # --- persistence -----------------------------------------------------------------------------

    def _commit_some(self) -> bool:
        """Commit the oldest queued chunks (and new series) in one transaction; False if none."""
        with self._commit_lock:
            with self._lock:
                q = self._queue
                rows = q.rows[:_COMMIT_BATCH]
                series = list(q.series)
                if not rows and not series:
                    return False
            self._store.write(series, rows)
            with self._lock:
                del q.rows[: len(rows)]
                del q.series[: len(series)]
                for row in rows:
                    lst = q.by_id[row[0]]
                    lst.remove(row)
                    if not lst:
                        del q.by_id[row[0]]
                q.committed += len(rows)
                self.chunks_written_total += len(rows)
                self._cond.notify_all()
            return True

    def _persist_loop(self) -> None:
        while True:
            with self._lock:
                q = self._queue
                while not (q.rows or q.series or self._stopping or self._checkpoint_due()):
                    self._cond.wait(timeout=5.0)
                    q = self._queue
                if self._stopping:
                    return
                checkpoint = self._checkpoint_due()
            try:
                if checkpoint:
                    self._checkpoint()
                else:
                    self._commit_some()
            except Exception:  # the thread must survive: the data is safe in the WAL meanwhile
                log.exception("persisting chunks failed; retrying in 1 s")
                with self._lock:
                    self._cond.wait(timeout=1.0)

    def _checkpoint_due(self) -> bool:
        if self._wal is None:
            return False
        return self._wal.bytes_since_checkpoint > max(self.checkpoint_bytes, 2 * self._last_snapshot_bytes)

    def _checkpoint(self) -> None:
        """Start a new WAL segment holding the open head samples; drop the older segments.

        Series are not rewritten: the older segments are only deleted once every series created
        before the rotation is committed to the database, where `_load` finds them."""
        wal = self._wal
        if wal is None:
            return
        with self._lock:
            target = self._queue.enqueued
            segment = wal.rotate()
            ids = self._index.ids
            position = 0
            for slots, ts, vals in self._head.snapshot():
                position = wal.log_samples(ids[slots], ts, vals)
            self._last_snapshot_bytes = wal.bytes_since_checkpoint
        wal.sync(position)
        while True:
            with self._lock:
                if self._queue.committed >= target and not self._queue.series:
                    break
            self._commit_some()
        wal.remove_before(segment)

    def flush_head(self) -> None:
        """Persist every open head chunk and checkpoint the WAL (graceful shutdown)."""
        with self._lock:
            self._enqueue(self._head.cut_all())
        if self._memory:
            return
        self._checkpoint()

    # --- reads -----------------------------------------------------------------------------------

    def _slots(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> I64:
        """Matching live slots with data possibly in range (caller holds the lock)."""
        slots = self._index.select(matchers)
        h = self._head
        return slots[(h.first_ts[slots] <= end_ms) & (h.last_ts[slots] >= start_ms)]

    def _selection(self, matchers: Sequence[Matcher], start_ms: int,
                   end_ms: int) -> tuple[I64, list[Labels], I64]:
        """`_slots` with the series' labels in output order (sorted) and each slot's rank in it
        (caller holds the lock). The sorted labels of the matchers' series are remembered until
        a series is added or removed: dashboards and rules ask for the same ones again and again."""
        key = tuple(matchers)
        version = self._index.version
        memo = self._orders.get(key)
        if memo is None or memo[0] != version:
            every = self._index.select(matchers)
            labels = self._index.labels_many(every)
            order = np.array(sorted(range(len(every)), key=labels.__getitem__), dtype=np.int64)
            memo = (version, every, [labels[i] for i in order.tolist()], np.argsort(order))
            self._orders[key] = memo
            self._orders_series += len(every)
            while self._orders_series > _ORDERS_MAX_SERIES and len(self._orders) > 1:
                self._orders_series -= len(self._orders.popitem(last=False)[1][1])
        else:
            self._orders.move_to_end(key)
        _, every, sorted_labels, every_rank = memo
        h = self._head
        inside = (h.first_ts[every] <= end_ms) & (h.last_ts[every] >= start_ms)
        if inside.all():
            return every, sorted_labels, every_rank
        slots, kept_rank = every[inside], every_rank[inside]
        order = np.argsort(kept_rank)
        rank = np.empty(len(slots), dtype=np.int64)
        rank[order] = np.arange(len(slots))
        return slots, [sorted_labels[i] for i in kept_rank[order].tolist()], rank

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[SeriesData]:
        """Series matching all matchers with samples in ``[start_ms, end_ms]``, sorted by labels.

        The arrays are views into two shared arrays (the `select_concat` form)."""
        labels, ts, vals, offsets = self.select_concat(matchers, start_ms, end_ms)
        bounds = offsets.tolist()
        return [SeriesData(lab, ts[bounds[i] : bounds[i + 1]], vals[bounds[i] : bounds[i + 1]])
                for i, lab in enumerate(labels)]

    def select_concat(self, matchers: Sequence[Matcher], start_ms: int,
                      end_ms: int) -> tuple[list[Labels], I64, F64, I64]:
        """`select` as one block: ``(labels, timestamps, values, offsets)``, series ``i`` (sorted by
        labels, each with at least one sample) at ``[offsets[i], offsets[i + 1])`` of the two
        arrays, timestamps strictly increasing within a series."""
        with self._lock:
            start_ms = max(start_ms, self._retained_from)  # what retention left in the head is gone
            slots, labels, rank = self._selection(matchers, start_ms, end_ms)
            if not len(slots):
                return [], np.empty(0, np.int64), np.empty(0, np.float64), np.zeros(1, np.int64)
            h = self._head
            h_slots, h_ts, h_vals = h.samples_of(slots, start_ms, end_ms)
            db_slots = slots[h.needs_persisted(slots, start_ms)]
            cached = self._cache.get(db_slots.tolist(), start_ms, end_ms)
            miss = np.fromiter((e is None for e in cached), np.bool_, len(cached))
            miss_slots = db_slots[miss]
            token = self._cache.token(miss_slots)
            # No persisted sample is newer than the series' last: then the entry covers any end.
            unbounded = h.last_ts[miss_slots] <= end_ms
            miss_ids = self._index.ids[miss_slots]
            queued: list[ChunkRow] = []
            by_id = self._queue.by_id
            if by_id:
                for sid in miss_ids.tolist():
                    rows_q = by_id.get(sid)
                    if rows_q:
                        queued.extend(r for r in rows_q if r[1] <= end_ms and r[2] >= start_ms)
        batch = self._store.read(miss_ids.tolist(), start_ms, end_ms) if len(miss_ids) else None
        c_ids, c_lo, c_hi, blobs = _merge_chunk_lists(batch, queued)
        n = len(slots)
        # Everything is laid out in the output order (series by labels) from the start, so that
        # the common case (chunks in time order, window covering them) needs no copy after decoding.
        ids = self._index.ids[slots]
        by_id_order = np.argsort(ids, kind="stable")
        chunk_rank = rank[by_id_order[np.searchsorted(ids[by_id_order], c_ids)]]
        if len(chunk_rank) > 1 and bool((chunk_rank[1:] < chunk_rank[:-1]).any()):
            order = np.argsort(chunk_rank, kind="stable")  # keeps each series' chunks in time order
            chunk_rank, c_lo, c_hi = chunk_rank[order], c_lo[order], c_hi[order]
            blobs = [blobs[i] for i in order.tolist()]
        c_ts, c_vals, offsets = decode_concat(blobs)
        c_first, c_last = _runs(chunk_rank, offsets, n)
        merged = not _increasing(c_ts, c_first, c_last)
        if merged:  # overlapping chunks (out-of-order window, replay): one sample a timestamp
            c_ts, c_vals, c_first, c_last = _merge_overlapping(c_ts, c_vals, c_first, c_last, h_ts[:0],
                                                               h_vals[:0], h_slots[:0], n)
        miss_rank = rank[np.searchsorted(slots, miss_slots)]
        if self._cache.max_bytes and len(miss_slots):
            self._keep(token, miss_rank, unbounded, c_ts, c_vals, c_first, c_last, chunk_rank, c_hi,
                       start_ms, end_ms)
        trim = merged or (bool(len(c_lo)) and (int(c_lo.min()) < start_ms or int(c_hi.max()) > end_ms))
        c_ts, c_vals, c_len = _clip(c_ts, c_vals, c_first, c_last, start_ms, end_ms, trim)
        hits = [(int(r), e) for r, e in zip(rank[np.searchsorted(slots, db_slots[~miss])].tolist(),
                                             (e for e in cached if e is not None), strict=True)]
        if hits:
            hits.sort(key=lambda hit: hit[0])
            c_ts, c_vals, c_len = _with_hits(hits, c_ts, c_vals, c_len, start_ms, end_ms)
        h_rank = rank[np.searchsorted(slots, h_slots)]
        if len(h_rank) > 1 and bool((h_rank[1:] < h_rank[:-1]).any()):
            order = np.argsort(h_rank, kind="stable")
            h_rank, h_ts, h_vals = h_rank[order], h_ts[order], h_vals[order]
        h_first, h_last = _runs(h_rank, np.arange(len(h_rank) + 1), n)
        h_ts, h_vals, h_len = _clip(h_ts, h_vals, h_first, h_last, start_ms, end_ms, bool(len(h_ts)))
        c_bounds = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(c_len, out=c_bounds[1:])
        h_bounds = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(h_len, out=h_bounds[1:])
        if not _head_after(c_ts, c_bounds, h_ts, h_bounds):
            # A persisted out-of-order sample at or after the head's first: sort, the head wins.
            h_pos = np.repeat(np.arange(n, dtype=np.int64), h_len)
            c_ts, c_vals, c_first, c_last = _merge_overlapping(c_ts, c_vals, c_bounds[:-1], c_bounds[1:],
                                                               h_ts, h_vals, h_pos, n)
            c_len, h_ts, h_vals, h_len = c_last - c_first, h_ts[:0], h_vals[:0], h_len * 0
        lengths = c_len + h_len
        nonempty = lengths > 0
        labels_out = [lab for lab, ok in zip(labels, nonempty.tolist(), strict=True) if ok]
        lengths = lengths[nonempty]
        out_offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=out_offsets[1:])
        if not len(h_ts):
            return labels_out, c_ts, c_vals, out_offsets
        # Per series: its chunk samples, then its head samples.
        is_chunk = np.repeat(np.tile(np.array([True, False]), n), np.stack([c_len, h_len], axis=1).ravel())
        ts = np.empty(len(is_chunk), dtype=np.int64)
        vals = np.empty(len(is_chunk), dtype=np.float64)
        ts[is_chunk] = c_ts
        vals[is_chunk] = c_vals
        np.logical_not(is_chunk, out=is_chunk)
        ts[is_chunk] = h_ts
        vals[is_chunk] = h_vals
        return labels_out, ts, vals, out_offsets

    def _keep(self, token: Token, miss_rank: I64, unbounded: npt.NDArray[np.bool_], c_ts: I64, c_vals: F64,
              c_first: I64, c_last: I64, chunk_rank: I64, c_hi: I64, start_ms: int, end_ms: int) -> None:
        """Put the decoded persisted samples of the series read from the database in the cache."""
        oldest_end = np.full(len(c_first), _UNBOUNDED, dtype=np.int64)
        np.minimum.at(oldest_end, chunk_rank, c_hi)
        entries = [
            CachedSeries(start_ms, _UNBOUNDED if unb else end_ms, c_ts[a:b].copy(), c_vals[a:b].copy(), old)
            for a, b, old, unb in zip(c_first[miss_rank].tolist(), c_last[miss_rank].tolist(),
                                      oldest_end[miss_rank].tolist(), unbounded.tolist(), strict=True)
        ]
        with self._lock:
            self._cache.put(token, entries)

    def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Labels]:
        with self._lock:
            slots = self._slots(matchers, start_ms, end_ms)
            return sorted(self._index.labels(s) for s in slots.tolist())

    def label_names(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        with self._lock:
            return self._index.label_names(self._slots(matchers, start_ms, end_ms))

    def label_values(self, name: str, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        with self._lock:
            return self._index.label_values(name, self._slots(matchers, start_ms, end_ms))

    def resize_select_cache(self, max_bytes: int) -> None:
        """Bound the decoded samples kept between selects (`SelectCache`; 0 turns it off)."""
        with self._lock:
            self._cache.resize(max_bytes)

    @property
    def num_series(self) -> int:
        return len(self._index)

    def stats(self) -> TsdbStats:
        size = self._store.size_bytes() + (self._wal.size_bytes() if self._wal is not None else 0)
        with self._lock:
            live = np.flatnonzero(self._index.live[: self._index.num_slots])
            first = self._head.first_ts[live]
            first = first[first != np.iinfo(np.int64).max]
            return TsdbStats(
                num_series=len(self._index),
                head_chunks=self._head.num_chunks,
                head_samples=self._head.num_samples,
                samples_appended_total=self._head.samples_appended_total,
                chunks_written_total=self.chunks_written_total,
                bytes_on_disk=size,
                bytes_per_sample=size / self._samples_in_chunks if self._samples_in_chunks else 0.0,
                min_time=int(first.min()) if len(first) else None,
                max_time=None if self._max_ts == _NO_TS else self._max_ts,
                rejected_out_of_order_total=self._rejected["out_of_order"],
                rejected_duplicate_total=self._rejected["duplicate"],
                rejected_too_old_total=self._rejected["too_old"],
                rejected_unknown_series_total=self._rejected["unknown_series"],
                pending_chunks=len(self._queue.rows),
                wal_fsyncs_total=self._wal.fsyncs_total if self._wal is not None else 0,
                select_cache=self._cache.stats(),
            )

    # --- retention and shutdown ------------------------------------------------------------------

    def apply_retention(self, now_ms: int) -> int:
        """Delete chunks older than the retention and series left without data; chunks deleted."""
        cutoff = now_ms - self.retention_ms
        deleted = self._store.delete_before(cutoff)
        with self._lock:
            q = self._queue
            old = [r for r in q.rows if r[2] < cutoff]
            deleted += len(old)  # still queued: they will be written, then deleted next time
            self._head.drop_before(cutoff)
            self._cache.expire(cutoff)
            self._retained_from = max(self._retained_from, cutoff)
            n = self._index.num_slots
            h = self._head
            empty = ~h.has_samples(slice(0, n)) & (h.last_ts[:n] < cutoff)
            dead = np.flatnonzero(self._index.live[:n] & empty)
            ids = self._index.ids
            dead = np.array([s for s in dead.tolist() if int(ids[s]) not in q.by_id], dtype=np.int64)
            dead_ids = self._index.ids[dead].tolist()
            self._index.remove(dead.tolist())
            self._cache.invalidate(dead.tolist())
            self._head.clear(dead)
        if dead_ids:
            self._store.delete_series(dead_ids)
        return deleted

    def close(self) -> None:
        """Commit queued chunks, checkpoint the WAL (open chunks stay in it), close everything."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        try:
            if self._wal is not None:
                self._checkpoint()
        finally:
            if self._wal is not None:
                self._wal.close()
            self._store.close()


def _merge_chunk_lists(batch: ChunkBatch | None, queued: list[ChunkRow]) -> tuple[I64, I64, I64, list[Blob]]:
    """Series ids, min and max times and blobs of the persisted and the queued chunks, grouped by
    series in time order (a chunk both committed and still queued counts once)."""
    if not queued:
        if batch is None:
            empty = np.empty(0, np.int64)
            return empty, empty, empty, []
        return batch.series_ids, batch.min_times, batch.max_times, list(batch.blobs)
    rows: dict[tuple[int, int, int], Blob] = {}
    if batch is not None:
        for key, blob in zip(zip(batch.series_ids.tolist(), batch.min_times.tolist(),
                                 batch.max_times.tolist(), strict=True), batch.blobs, strict=True):
            rows[key] = blob
    for r in queued:
        rows.setdefault((r[0], r[1], r[2]), r[3])
    keys = sorted(rows)
    cols = np.array(keys, dtype=np.int64).reshape(-1, 3)
    return cols[:, 0].copy(), cols[:, 1].copy(), cols[:, 2].copy(), [rows[k] for k in keys]


def _runs(pos: I64, offsets: I64, n: int) -> tuple[I64, I64]:
    """[first, last) sample index of each series' run, given items grouped by series position
    ``pos`` (item i spans samples ``offsets[i]:offsets[i + 1]``); empty runs are (0, 0)."""
    first = np.zeros(n, dtype=np.int64)
    last = np.zeros(n, dtype=np.int64)
    if len(pos):
        change = np.flatnonzero(np.diff(pos)) + 1
        run_start = np.concatenate([[0], change])
        run_end = np.append(change, len(pos))
        p = pos[run_start]
        first[p] = offsets[run_start]
        last[p] = offsets[run_end]
    return first, last


def _increasing(ts: I64, first: I64, last: I64) -> bool:
    """Whether the samples of every run (the runs tile the array in order) strictly increase."""
    if len(ts) < 2:
        return True
    bad = ts[1:] <= ts[:-1]
    ends = last[last > first]
    bad[ends[ends < len(ts)] - 1] = False  # the step from one series' run to the next
    return not bool(bad.any())


def _head_after(c_ts: I64, c_bounds: I64, h_ts: I64, h_bounds: I64) -> bool:
    """Whether each series' head samples all come after its chunk samples (runs by bounds)."""
    both = (c_bounds[1:] > c_bounds[:-1]) & (h_bounds[1:] > h_bounds[:-1])
    return not bool((c_ts[c_bounds[1:][both] - 1] >= h_ts[h_bounds[:-1][both]]).any())


def _merge_overlapping(c_ts: I64, c_vals: F64, c_first: I64, c_last: I64, h_ts: I64, h_vals: F64,
                       h_pos: I64, n: int) -> tuple[I64, F64, I64, I64]:
    """Chunk samples (series ``i`` at ``c_first[i]:c_last[i]``, runs tiling the arrays in series
    order, each run's chunks in time order) and head samples (of series ``h_pos``) sorted per
    series by time, one per timestamp: the later wins (a later chunk, then the head)."""
    pos = np.concatenate([np.repeat(np.arange(n, dtype=np.int64), c_last - c_first), h_pos])
    ts = np.concatenate([c_ts, h_ts])
    vals = np.concatenate([c_vals, h_vals])
    order = np.lexsort((ts, pos))  # stable: chunks in time order, then the head
    pos, ts, vals = pos[order], ts[order], vals[order]
    last = np.append((pos[1:] != pos[:-1]) | (ts[1:] != ts[:-1]), True)  # the later wins
    pos, ts, vals = pos[last], ts[last], vals[last]
    first, end = _runs(pos, np.arange(len(pos) + 1), n)
    return ts, vals, first, end


def _with_hits(hits: list[tuple[int, CachedSeries]], m_ts: I64, m_vals: F64, m_len: I64, start_ms: int,
               end_ms: int) -> tuple[I64, F64, I64]:
    """The samples in ``[start_ms, end_ms]`` of series read from the database (``m_len[i]`` of
    series ``i``, in series order) and of cached series (``(i, entry)``, in series order) together
    in series order, and each series' count."""
    bounds = np.zeros(len(m_len) + 1, dtype=np.int64)
    np.cumsum(m_len, out=bounds[1:])
    at = bounds.tolist()
    ts_parts: list[I64] = []
    val_parts: list[F64] = []
    counts: list[int] = []
    done = 0  # series before this one are in the parts
    for i, e in hits:
        if e.last_ms < start_ms or e.first_ms > end_ms:  # nothing in the window
            counts.append(0)
            continue
        if at[i] > at[done]:
            ts_parts.append(m_ts[at[done] : at[i]])
            val_parts.append(m_vals[at[done] : at[i]])
        ts = e.ts
        lo = int(ts.searchsorted(start_ms)) if e.first_ms < start_ms else 0
        hi = int(ts.searchsorted(end_ms, side="right")) if e.last_ms > end_ms else len(ts)
        if hi > lo:
            ts_parts.append(ts[lo:hi])
            val_parts.append(e.vals[lo:hi])
        counts.append(max(hi - lo, 0))
        done = i + 1
    lengths = m_len.copy()
    lengths[[i for i, _ in hits]] = counts
    if at[-1] > at[done]:
        ts_parts.append(m_ts[at[done] :])
        val_parts.append(m_vals[at[done] :])
    if not ts_parts:
        return m_ts[:0], m_vals[:0], lengths
    return np.concatenate(ts_parts), np.concatenate(val_parts), lengths


def _clip(ts: I64, vals: F64, first: I64, last: I64, start_ms: int, end_ms: int,
          trim: bool) -> tuple[I64, F64, I64]:
    """The samples inside ``[start_ms, end_ms]`` (compacted, only if `trim` and any fall outside)
    and the resulting length of each series' run (runs tile the arrays in series order)."""
    lengths = last - first
    if not trim or not len(ts):
        return ts, vals, lengths
    keep = (ts >= start_ms) & (ts <= end_ms)
    if bool(keep.all()):
        return ts, vals, lengths
    runs = np.flatnonzero(lengths)
    counts = np.zeros(len(lengths), dtype=np.int64)
    counts[runs] = np.add.reduceat(keep, first[runs], dtype=np.int64)
    return ts[keep], vals[keep], counts
