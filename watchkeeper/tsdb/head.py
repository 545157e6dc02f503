"""The head: the open (not yet cut) chunk of every series, in parallel NumPy columns.

Columns are indexed by the dense slot of `SeriesIndex`; there is no Python object per series
except one ``bytes``. An open chunk is up to ``chunk_samples`` (120) samples, kept as

* a **raw tail** of up to ``tail`` (40) samples in row ``s`` of two 2-D arrays: timestamps as
  ``int32`` offsets from ``base_ms[s]`` (a chunk spans less than 2 h, so offsets fit) and values as
  ``float64``, 12 bytes a sample; and
* **frozen segments**: each time the tail fills it is encoded (`encode_many`, for every series
  whose tail filled in the same batch together) and appended to
  ``frozen[s]`` (about 1 byte a sample instead of 12).

So a series costs 480 bytes of raw tail plus its frozen segments (~1-2 bytes a sample, at most
80 samples) whatever the fill level of its chunk, instead of the 1440 bytes a raw 120-sample row
would take. The price is two extra (small) encodes per chunk; when the
chunk is cut, its frozen segments are decoded together with those of every other series cut in the
same batch (one `decode_concat`) and the whole chunk is encoded once more.

`Head.append` takes a batch of many series (the remote-write shape: ~2000 series x 1 sample) and
does the bookkeeping with fancy indexing. A series that appears more than once in a batch is
handled by splitting the batch into rounds in which every slot appears once, in request order.

Rejections follow Prometheus: a sample older than ``min_valid_ms`` is ``too_old``; one older than
the series' last sample is ``out_of_order`` (or, with an out-of-order window, accepted when within
the window and ``too_old`` otherwise); the same timestamp with a different value (bitwise) is a
``duplicate``; the same timestamp and value is accepted silently and stores nothing. An accepted
out-of-order sample goes into the raw tail when it is not older than the tail's first sample, and
otherwise becomes a one-sample chunk of its own (reads merge overlapping chunks); duplicates are
only detected against the tail.

A chunk is cut when it reaches ``chunk_samples`` samples, or before a sample that would make it
span ``chunk_span_ms`` or more; the cut chunks are returned to the caller (the storage persists
them):

>>> head = Head()
>>> head.ensure_capacity(1)
>>> out = head.append(np.array([0]), np.array([1000]), np.array([1.5]))
>>> out.accepted, head.read(0, 0, 2000)[1].tolist()
(1, [1.5])
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

from watchkeeper.tsdb.chunks import decode_concat, encode_chunk, encode_many

CHUNK_SAMPLES = 120
CHUNK_SPAN_MS = 2 * 3600_000
REASONS = ("out_of_order", "duplicate", "too_old")
_NO_TS = np.iinfo(np.int64).min
_FAR_TS = np.iinfo(np.int64).max
_UNKNOWN_BITS = np.uint64(0x7FF8_DEAD_BEEF_0001)  # a NaN payload no client sends

_A = TypeVar("_A", bound=np.ndarray[Any, Any])
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class CutChunk:
    """An encoded chunk of one series (by slot), ready to persist."""

    slot: int
    min_time: int
    max_time: int
    data: bytes
    samples: int


@dataclass(slots=True)
class AppendOutcome:
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    stored: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))
    chunks: list[CutChunk] = field(default_factory=list)


class Head:
    """Open chunks of all series. Not thread-safe: the storage holds its lock around every call."""

    def __init__(self, *, out_of_order_window_ms: int = 0, chunk_samples: int = CHUNK_SAMPLES,
                 chunk_span_ms: int = CHUNK_SPAN_MS) -> None:
        if out_of_order_window_ms < 0:
            raise ValueError("out_of_order_window_ms must be >= 0")
        if not 1 <= chunk_samples <= 65_535 or not 1 <= chunk_span_ms < 2**31:
            raise ValueError("chunk_samples must be in 1..65535 and chunk_span_ms in 1..2**31-1")
        self.ooo_window_ms = out_of_order_window_ms
        self.chunk_samples = chunk_samples
        self.chunk_span_ms = chunk_span_ms
        self.tail = -(-chunk_samples // 3)  # raw tail length: three segments make a chunk
        self.max_segments = -(-chunk_samples // self.tail) - 1
        self.capacity = 0
        self.count = np.zeros(0, dtype=np.uint16)  # samples in the raw tail
        self.nseg = np.zeros(0, dtype=np.uint8)  # frozen segments (tail-sized) before it
        self.seg_len = np.zeros((0, self.max_segments), dtype=np.uint32)  # their byte lengths
        self.seg_end = np.zeros((0, self.max_segments), dtype=np.int32)  # their last offsets
        self.frozen: list[bytes] = []  # the frozen segments, concatenated
        self.base_ms = np.zeros(0, dtype=np.int64)  # first timestamp of the open chunk
        self.last_ts = np.zeros(0, dtype=np.int64)  # newest timestamp ever accepted (or persisted)
        self.last_bits = np.zeros(0, dtype=np.uint64)  # its value's bits (for duplicate detection)
        self.first_ts = np.zeros(0, dtype=np.int64)  # oldest timestamp known (head or persisted)
        self.offsets = np.zeros((0, self.tail), dtype=np.int32)
        self.values = np.zeros((0, self.tail), dtype=np.float64)
        self.samples_appended_total = 0
        # Slots with a persisted out-of-order chunk inside their open chunk's time range: a read
        # starting in that range must look at the persisted chunks too.
        self.persisted_in_open: set[int] = set()

    # --- capacity --------------------------------------------------------------------------------

    def ensure_capacity(self, n_slots: int) -> None:
        if n_slots <= self.capacity:
            return
        cap = max(n_slots, self.capacity * 3 // 2, 1024)

        def grown(a: _A, fill: object) -> _A:
            out = cast(_A, np.empty_like(a, shape=(cap, *a.shape[1:])))
            out[: self.capacity] = a
            out[self.capacity :] = fill
            return out

        self.count = grown(self.count, 0)
        self.nseg = grown(self.nseg, 0)
        self.seg_len = grown(self.seg_len, 0)
        self.seg_end = grown(self.seg_end, 0)
        self.base_ms = grown(self.base_ms, 0)
        self.last_ts = grown(self.last_ts, _NO_TS)
        self.last_bits = grown(self.last_bits, 0)
        self.first_ts = grown(self.first_ts, _FAR_TS)
        self.frozen.extend([b""] * (cap - self.capacity))
        # The tail rows are left uninitialised: a row is only read up to count[slot].
        for name in ("offsets", "values"):
            old = getattr(self, name)
            new = np.empty((cap, self.tail), dtype=old.dtype)
            new[: self.capacity] = old
            setattr(self, name, new)
        self.capacity = cap

    def note_persisted(self, slots: I64, min_ts: I64, max_ts: I64) -> None:
        """Series bounds from persisted chunks (one entry per slot): older samples are then rejected."""
        newer = max_ts >= self.last_ts[slots]
        self.last_ts[slots[newer]] = max_ts[newer]
        self.last_bits[slots[newer]] = _UNKNOWN_BITS  # the value is not at hand: any is a duplicate
        np.minimum.at(self.first_ts, slots, min_ts)

    def _total(self, slots: I64 | slice) -> I64:
        return self.nseg[slots].astype(np.int64) * self.tail + self.count[slots]

    # --- append ----------------------------------------------------------------------------------

    def append(self, slots: I64, timestamps_ms: I64, values: F64, *,
               min_valid_ms: int = _NO_TS, ooo_window_ms: int | None = None) -> AppendOutcome:
        """Append one batch; slots must be < capacity. See the module docstring for the rules.
        ``ooo_window_ms`` overrides the out-of-order window (WAL replay takes back every sample
        that was accepted once, whatever the window is now)."""
        window = self.ooo_window_ms if ooo_window_ms is None else ooo_window_ms
        slots = np.asarray(slots, dtype=np.int64)
        ts = np.asarray(timestamps_ms, dtype=np.int64)
        vals = np.asarray(values, dtype=np.float64)
        if not len(slots) == len(ts) == len(vals):
            raise ValueError("slots, timestamps and values must have the same length")
        out = AppendOutcome(stored=np.zeros(len(slots), dtype=np.bool_))
        if len(slots) == 0:
            return out
        uniq, counts = np.unique(slots, return_counts=True)
        if len(uniq) == len(slots):
            self._append_round(np.arange(len(slots)), slots, ts, vals, min_valid_ms, window, out)
        else:  # a series repeats: rounds of unique slots, each series' samples in request order
            order = np.argsort(slots, kind="stable")
            group_start = np.repeat(np.cumsum(counts) - counts, counts)
            rank = np.empty(len(slots), dtype=np.int64)
            rank[order] = np.arange(len(slots)) - group_start
            for r in range(int(counts.max())):
                idx = np.flatnonzero(rank == r)
                self._append_round(idx, slots[idx], ts[idx], vals[idx], min_valid_ms, window, out)
        return out

    def _append_round(self, idx: I64, s: I64, t: I64, v: F64, min_valid_ms: int, window: int,
                      out: AppendOutcome) -> None:
        bits = v.view(np.uint64)
        last = self.last_ts[s]
        too_old = t < min_valid_ms
        newer = (t > last) & ~too_old
        equal = (t == last) & ~too_old
        same = equal & (bits == self.last_bits[s])
        older = (t < last) & ~too_old
        if window:
            in_window = older & (t >= last - window)
            too_old |= older & ~in_window
            older_rejected = np.zeros_like(older)
        else:
            in_window = np.zeros_like(older)
            older_rejected = older
        rej = out.rejected
        rej["too_old"] += int(too_old.sum())
        rej["out_of_order"] += int(older_rejected.sum())
        rej["duplicate"] += int((equal & ~same).sum())
        out.accepted += int(same.sum())
        if newer.any():
            self._append_newer(s[newer], t[newer], v[newer], out)
            out.stored[idx[newer]] = True
            out.accepted += int(newer.sum())
        for i in np.flatnonzero(in_window).tolist():
            status = self._insert_ooo(int(s[i]), int(t[i]), float(v[i]), out)
            if status == "stored":
                out.stored[idx[i]] = True
            if status == "duplicate":
                rej["duplicate"] += 1
            else:
                out.accepted += 1

    def _append_newer(self, s: I64, t: I64, v: F64, out: AppendOutcome) -> None:
        total = self._total(s)
        span_full = (total > 0) & (t - self.base_ms[s] >= self.chunk_span_ms)
        if span_full.any():
            out.chunks.extend(self._cut(s[span_full]))
            total[span_full] = 0
        cnt = self.count[s].astype(np.int64)
        base = np.where(total == 0, t, self.base_ms[s])
        self.base_ms[s] = base
        self.offsets[s, cnt] = (t - base).astype(np.int32)
        self.values[s, cnt] = v
        self.count[s] = cnt + 1
        self.last_ts[s] = t
        self.last_bits[s] = v.view(np.uint64)
        self.first_ts[s] = np.minimum(self.first_ts[s], t)
        self.samples_appended_total += len(s)
        self._after_growth(s, total + 1, cnt + 1, out)

    def _after_growth(self, s: I64, total: I64, cnt: I64, out: AppendOutcome) -> None:
        """Cut chunks that are full; freeze tails that are full."""
        full = total >= self.chunk_samples
        if full.any():
            out.chunks.extend(self._cut(s[full]))
        freeze = ~full & (cnt >= self.tail)
        if freeze.any():
            self._freeze(s[freeze])

    def _insert_ooo(self, slot: int, t: int, v: float, out: AppendOutcome) -> str:
        """An out-of-order sample within the window: into the raw tail, or a chunk of its own."""
        n = int(self.count[slot])
        base = int(self.base_ms[slot])
        vbits = np.array([v], dtype=np.float64)
        if n == 0 or t < base + int(self.offsets[slot, 0]):
            out.chunks.append(CutChunk(slot, t, t, encode_chunk(np.array([t], dtype=np.int64), vbits), 1))
            if t >= base and self.nseg[slot]:
                self.persisted_in_open.add(slot)
            self.first_ts[slot] = min(int(self.first_ts[slot]), t)
            self.samples_appended_total += 1
            return "stored"
        row_t = self.offsets[slot, :n]
        off = t - base
        pos = int(np.searchsorted(row_t, off))
        if pos < n and int(row_t[pos]) == off:
            same = self.values[slot, pos : pos + 1].view(np.uint64)[0] == vbits.view(np.uint64)[0]
            return "same" if same else "duplicate"
        self.offsets[slot, pos + 1 : n + 1] = self.offsets[slot, pos:n].copy()
        self.values[slot, pos + 1 : n + 1] = self.values[slot, pos:n].copy()
        self.offsets[slot, pos] = off
        self.values[slot, pos] = v
        self.count[slot] = n + 1
        self.samples_appended_total += 1
        one = np.array([slot], dtype=np.int64)
        self._after_growth(one, self._total(one), self.count[one].astype(np.int64), out)
        return "stored"

    def _freeze(self, slots: I64) -> None:
        """Encode full raw tails (all together, `encode_many`) and append them to the slots'
        frozen segments."""
        counts = self.count[slots].astype(np.int64)
        for n in np.unique(counts).tolist():
            group = slots[counts == n]
            ts = self.offsets[group, :n].astype(np.int64) + self.base_ms[group, None]
            blobs = encode_many(ts, self.values[group, :n])
            k = self.nseg[group].astype(np.int64)
            self.seg_len[group, k] = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs))
            self.seg_end[group, k] = self.offsets[group, n - 1]
            self.nseg[group] = k + 1
            frozen = self.frozen
            for slot, blob in zip(group.tolist(), blobs, strict=True):
                frozen[slot] += blob
        self.count[slots] = 0

    def _reset(self, slots: I64) -> None:
        self.count[slots] = 0
        self.nseg[slots] = 0
        for slot in slots.tolist():
            self.frozen[slot] = b""
            self.persisted_in_open.discard(slot)

    def _cut(self, slots: I64) -> list[CutChunk]:
        """Close the open chunks of the slots: decode their frozen segments together, encode every
        whole chunk of the same length together (`encode_many`)."""
        slots = slots[self._total(slots) > 0]
        if not len(slots):
            return []
        block_slots, ts, vals = self._block(slots)
        firsts = np.flatnonzero(np.diff(block_slots)) + 1  # slots are distinct: one run each
        starts = np.concatenate([[0], firsts])
        lengths = np.diff(np.append(starts, len(ts)))
        chunks: list[CutChunk] = []
        for n in np.unique(lengths).tolist():
            rows = np.flatnonzero(lengths == n)
            at = starts[rows]
            index = at[:, None] + np.arange(n)
            blobs = encode_many(ts[index], vals[index])
            firsts_ts, lasts_ts = ts[at].tolist(), ts[at + n - 1].tolist()
            chunks.extend(CutChunk(int(slot), lo, hi, blob, n) for slot, lo, hi, blob in zip(
                block_slots[at].tolist(), firsts_ts, lasts_ts, blobs, strict=True))
        self._reset(slots)
        return chunks

    def cut_all(self) -> list[CutChunk]:
        """Cut every non-empty open chunk (graceful shutdown)."""
        return self._cut(np.flatnonzero(self._total(slice(0, self.capacity))).astype(np.int64))

    # --- reads -----------------------------------------------------------------------------------

    def _rows(self, slots: I64) -> list[tuple[I64, F64]]:
        """Whole open chunks: frozen segments (decoded together) followed by the raw tail."""
        slots_l = slots.tolist()
        blobs: list[bytes] = []
        first_blob = []
        for slot in slots_l:
            first_blob.append(len(blobs))
            k = int(self.nseg[slot])
            if k:
                data, pos = self.frozen[slot], 0
                for length in self.seg_len[slot, :k].tolist():
                    blobs.append(data[pos : pos + length])
                    pos += length
        ts_all, vals_all, offsets = decode_concat(blobs)
        rows = []
        for i, slot in enumerate(slots_l):
            n = int(self.count[slot])
            tail_ts = self.offsets[slot, :n].astype(np.int64) + self.base_ms[slot]
            tail_vals = self.values[slot, :n].copy()
            k = int(self.nseg[slot])
            if k:
                a, b = int(offsets[first_blob[i]]), int(offsets[first_blob[i] + k])
                rows.append((np.concatenate([ts_all[a:b], tail_ts]),
                             np.concatenate([vals_all[a:b], tail_vals])))
            else:
                rows.append((tail_ts, tail_vals))
        return rows

    def read_many(self, slots: I64, start_ms: int, end_ms: int) -> list[tuple[I64, F64]]:
        """Copies of the open chunks' samples within ``[start_ms, end_ms]``, per slot."""
        out = []
        for ts, vals in self._rows(np.asarray(slots, dtype=np.int64)):
            lo, hi = np.searchsorted(ts, [start_ms, end_ms + 1])
            out.append((ts[lo:hi], vals[lo:hi]))
        return out

    def read(self, slot: int, start_ms: int, end_ms: int) -> tuple[I64, F64]:
        return self.read_many(np.array([slot], dtype=np.int64), start_ms, end_ms)[0]

    def snapshot(self, block_slots: int = 8192) -> Iterator[tuple[I64, I64, F64]]:
        """(slots, timestamps, values) of every open-chunk sample, a block of slots at a time, each
        series' samples contiguous and in time order: what a WAL checkpoint keeps. Vectorised, so
        a million series do not mean a million small arrays."""
        active = np.flatnonzero(self._total(slice(0, self.capacity))).astype(np.int64)
        for i in range(0, len(active), block_slots):
            yield self._block(active[i : i + block_slots])

    def samples_of(self, slots: I64, start_ms: int = _NO_TS, end_ms: int = _FAR_TS) -> tuple[I64, I64, F64]:
        """(slot, timestamp, value) of the open-chunk samples of the slots, grouped by slot: all of
        them, except that frozen segments entirely outside ``[start_ms, end_ms]`` are left out
        (not decoded); the raw tail always comes whole."""
        return self._block(np.asarray(slots, dtype=np.int64), start_ms, end_ms)

    def _block(self, slots: I64, start_ms: int = _NO_TS, end_ms: int = _FAR_TS) -> tuple[I64, I64, F64]:
        nseg = self.nseg[slots].astype(np.int64)
        first, last = nseg * 0, nseg
        if (start_ms != _NO_TS or end_ms != _FAR_TS) and nseg.any():
            # Segments are in time order; segment j ends at seg_end[j] and starts after seg_end[j - 1].
            seg_end = self.seg_end[slots].astype(np.int64) + self.base_ms[slots, None]
            valid = np.arange(self.max_segments) < nseg[:, None]
            first = np.count_nonzero(valid & (seg_end < start_ms), axis=1)
            starts_after = np.empty_like(seg_end)
            starts_after[:, 0] = self.base_ms[slots]
            starts_after[:, 1:] = seg_end[:, :-1] + 1
            last = np.maximum(first, nseg - np.count_nonzero(valid & (starts_after > end_ms), axis=1))
        frozen = self.frozen
        todo = np.flatnonzero(last > first)
        bounds = np.cumsum(self.seg_len[slots[todo]], axis=1).tolist()
        blobs: list[bytes] = []
        for slot, a, b, k, row in zip(slots[todo].tolist(), first[todo].tolist(), last[todo].tolist(),
                                      nseg[todo].tolist(), bounds, strict=True):
            if b - a == k == 1:
                blobs.append(frozen[slot])
            elif b > a:
                data, pos = frozen[slot], row[a - 1] if a else 0
                for end in row[a:b]:
                    blobs.append(data[pos:end])
                    pos = end
        f_ts, f_vals, offsets = decode_concat(blobs)
        seg_ends = offsets[np.cumsum(last - first)]
        f_cnt = seg_ends - np.concatenate([[0], seg_ends[:-1]])  # frozen samples per slot
        cnt = self.count[slots].astype(np.int64)
        t_slots = np.repeat(slots, cnt)
        col = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        t_ts = self.offsets[t_slots, col].astype(np.int64) + self.base_ms[t_slots]
        t_vals = self.values[t_slots, col]
        if not len(f_ts):
            return t_slots, t_ts, t_vals
        # Per slot: its frozen segments, then its tail (one masked scatter, no sort).
        runs = np.stack([f_cnt, cnt], axis=1).ravel()
        is_frozen = np.repeat(np.tile(np.array([True, False]), len(slots)), runs)
        ts = np.empty(len(is_frozen), dtype=np.int64)
        vals = np.empty(len(is_frozen), dtype=np.float64)
        ts[is_frozen] = f_ts
        vals[is_frozen] = f_vals
        np.logical_not(is_frozen, out=is_frozen)
        ts[is_frozen] = t_ts
        vals[is_frozen] = t_vals
        return np.repeat(slots, f_cnt + cnt), ts, vals

    def has_samples(self, slots: I64 | slice) -> npt.NDArray[np.bool_]:
        return self._total(slots) > 0

    def needs_persisted(self, slots: I64, start_ms: int) -> npt.NDArray[np.bool_]:
        """Whether a read from ``start_ms`` must also look at a slot's persisted chunks: its open
        chunk starts after ``start_ms`` (or is empty), or an out-of-order chunk lies in its range."""
        need: npt.NDArray[np.bool_] = ~(self.has_samples(slots) & (self.base_ms[slots] <= start_ms))
        if self.persisted_in_open:
            need |= np.isin(slots, np.fromiter(self.persisted_in_open, np.int64, len(self.persisted_in_open)))
        return need

    def drop_before(self, cutoff_ms: int) -> None:
        """Forget open chunks whose newest sample is older than ``cutoff_ms`` (retention)."""
        n = self.capacity
        stale = self.has_samples(slice(0, n)) & (self.last_ts[:n] < cutoff_ms)
        self._reset(np.flatnonzero(stale).astype(np.int64))
        np.maximum(self.first_ts[:n], cutoff_ms, out=self.first_ts[:n], where=self.first_ts[:n] < _FAR_TS)

    def clear(self, slots: I64) -> None:
        """Reset dropped series' columns (their slots are never used again)."""
        self._reset(slots)
        self.last_ts[slots] = _NO_TS
        self.first_ts[slots] = _FAR_TS

    @property
    def num_chunks(self) -> int:
        return int(np.count_nonzero(self.has_samples(slice(0, self.capacity))))

    @property
    def num_samples(self) -> int:
        return int(self._total(slice(0, self.capacity)).sum())

    def time_bounds(self) -> tuple[int | None, int | None]:
        """Oldest and newest sample in the open chunks."""
        active = np.flatnonzero(self.has_samples(slice(0, self.capacity)))
        if not len(active):
            return None, None
        return int(self.base_ms[active].min()), int(self.last_ts[active].max())
