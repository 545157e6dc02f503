"""Appended samples -> the outgoing series of one remote-write queue, and the shard of each.

A series is resolved once (its labels parsed, `write_relabel_configs` applied, the result encoded
as prompb label bytes, sorted by name) and then remembered by its store ref, with the timestamp of
the last sample forwarded. A sample not newer than that is not forwarded: the receiver would refuse
it (Prometheus answers 400 for the whole batch), which happens when the store accepted it inside
an out-of-order window, or when the store refused some samples of a request and the router cannot
tell which (`AppendedSamples.complete` is False: the samples are then checked one by one).

Samples of one series always go to the same shard, whose sends are sequential: per series, samples
reach the receiver in order.

>>> router = SeriesRouter([], shards=2)
>>> router.num_series
0
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from watchkeeper.collector.push import encode_label_pairs
from watchkeeper.collector.relabel import Rule, relabel
from watchkeeper.collector.remote_write import AppendedSamples, parse_labels
from watchkeeper.errors import DecodeError

_NONE = np.iinfo(np.int64).min
#: Forget every series past this many (their last timestamps too): bounds memory under churn.
MAX_SERIES = 4_000_000


@dataclass(slots=True)
class Routed:
    """Samples for one shard: prompb label bytes per sample, timestamps and values."""

    keys: list[bytes]
    timestamps_ms: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.keys)

    def split(self, n: int) -> tuple[Routed, Routed]:
        return (
            Routed(self.keys[:n], self.timestamps_ms[:n], self.values[:n]),
            Routed(self.keys[n:], self.timestamps_ms[n:], self.values[n:]),
        )


@dataclass(slots=True)
class RouteResult:
    per_shard: list[Routed | None]
    dropped_relabel: int = 0
    dropped_out_of_order: int = 0


class SeriesRouter:
    """Not thread-safe: the queue calls `route` under its lock.

    Refs are looked up in a sorted array (``searchsorted``, no Python loop per sample); series
    added since its last rebuild are found in a dict until enough of them justify a rebuild."""

    def __init__(self, rules: Sequence[Rule], *, shards: int, max_series: int = MAX_SERIES) -> None:
        self.rules = tuple(rules)
        self.shards = shards
        self.max_series = max_series
        self._reset()

    def _reset(self) -> None:
        self._slots: dict[int, int] = {}  # store series ref -> slot
        self._keys: list[bytes | None] = []  # slot -> outgoing label bytes (None: dropped by relabel)
        self._sorted_refs = np.zeros(0, dtype=np.int64)
        self._sorted_slots = np.zeros(0, dtype=np.int64)
        self._shard = np.zeros(1024, dtype=np.int64)
        self._last = np.full(1024, _NONE, dtype=np.int64)
        self._forward = np.zeros(1024, dtype=bool)
        self._stamp = np.zeros(1024, dtype=np.int64)

    @property
    def num_series(self) -> int:
        return len(self._keys)

    def route(self, batch: AppendedSamples) -> RouteResult:
        slots = self._lookup(batch)
        ts = batch.timestamps_ms
        n = len(slots)
        keep = self._forward[slots]
        result = RouteResult([None] * self.shards)
        result.dropped_relabel = int(n - np.count_nonzero(keep))
        # several samples of one series in the batch? (the last writer of a slot's stamp wins)
        positions = np.arange(n, dtype=np.int64)
        self._stamp[slots] = positions
        repeated = bool((self._stamp[slots] != positions).any())
        if batch.complete and not repeated:
            fresh = ts > self._last[slots]
        else:  # sample by sample: each newer than the one before
            fresh = self._in_order(slots, ts, ts > self._last[slots] if batch.complete else np.ones(n, bool))
        result.dropped_out_of_order = int(np.count_nonzero(keep & ~fresh))
        keep &= fresh
        if not keep.all():
            slots, ts, values = slots[keep], ts[keep], batch.values[keep]
        else:
            values = batch.values
        if not len(slots):
            return result
        if repeated:
            np.maximum.at(self._last, slots, ts)
        else:
            self._last[slots] = ts
        shard = self._shard[slots]
        order = np.argsort(shard, kind="stable")
        counts = np.bincount(shard, minlength=self.shards)
        slots, ts, values = slots[order], ts[order], values[order]
        slot_order = slots.tolist()
        keys_of = self._keys
        start = 0
        for i, count in enumerate(counts.tolist()):
            if count:
                end = start + count
                result.per_shard[i] = Routed(
                    [keys_of[s] for s in slot_order[start:end]],  # kept: never None
                    ts[start:end],
                    values[start:end],
                )
                start = end
        return result

    def _lookup(self, batch: AppendedSamples, *, may_reset: bool = True) -> npt.NDArray[np.int64]:
        """The slot of each sample's series, resolving series not seen before."""
        refs = batch.refs
        known = self._sorted_refs
        if len(known):
            idx = np.minimum(np.searchsorted(known, refs), len(known) - 1)
            slots = np.where(known[idx] == refs, self._sorted_slots[idx], -1)
        else:
            slots = np.full(len(refs), -1, dtype=np.int64)
        missing = np.flatnonzero(slots < 0)
        if not len(missing):
            return slots
        get = self._slots.get
        series = batch.sample_series
        for i, ref in zip(missing.tolist(), refs[missing].tolist(), strict=True):
            slot = get(ref)
            if slot is None:
                if may_reset and len(self._keys) >= self.max_series:
                    self._reset()
                    return self._lookup(batch, may_reset=False)
                slot = self._add(ref, batch.keys[int(series[i])])
            slots[i] = slot
        if len(self._slots) - len(known) > max(1024, len(known) // 8):
            count = len(self._slots)
            all_refs = np.fromiter(self._slots.keys(), dtype=np.int64, count=count)
            order = np.argsort(all_refs)
            self._sorted_refs = all_refs[order]
            self._sorted_slots = np.fromiter(self._slots.values(), dtype=np.int64, count=count)[order]
        return slots

    def _add(self, ref: int, key: bytes) -> int:
        slot = self._slots[ref] = len(self._keys)
        out = self._outgoing(key)
        self._keys.append(out)
        if slot >= len(self._shard):
            self._grow(slot + 1)
        self._shard[slot] = self._shard_of(out, ref)
        self._forward[slot] = out is not None
        return slot

    def _in_order(
        self, slots: npt.NDArray[np.int64], ts: npt.NDArray[np.int64], ok: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.bool_]:
        """Sample by sample: newer than the last forwarded (or kept) sample of its series."""
        last: dict[int, int] = {}
        out = ok.copy()
        known = self._last
        for i, (s, t) in enumerate(zip(slots.tolist(), ts.tolist(), strict=True)):
            prev = last.get(s)
            if prev is None:
                prev = int(known[s])
            if t > prev and out[i]:
                last[s] = t
            else:
                out[i] = False
        return out

    def _outgoing(self, key: bytes) -> bytes | None:
        """The label bytes to send for a series as it was received, or None when relabelling drops it."""
        try:
            pairs = parse_labels(key)
        except DecodeError:
            return None
        labels: dict[str, str] | None = {n: v for n, v in pairs if v != ""}
        if self.rules:
            labels = relabel(labels or {}, self.rules)
            if not labels:
                return None
        return encode_label_pairs((labels or {}).items())

    def _shard_of(self, key: bytes | None, ref: int) -> int:
        return zlib.crc32(key) % self.shards if key is not None else ref % self.shards

    def _grow(self, need: int) -> None:
        size = max(need, 2 * len(self._shard))

        def grown(a: npt.NDArray[Any], fill: Any) -> npt.NDArray[Any]:
            out = np.full(size, fill, dtype=a.dtype)
            out[: len(a)] = a
            return out

        self._shard = grown(self._shard, 0)
        self._last = grown(self._last, _NONE)
        self._forward = grown(self._forward, False)
        self._stamp = grown(self._stamp, 0)
