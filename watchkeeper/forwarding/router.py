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
    """Not thread-safe: the queue calls `route` under its lock."""

    def __init__(self, rules: Sequence[Rule], *, shards: int, max_series: int = MAX_SERIES) -> None:
        self.rules = tuple(rules)
        self.shards = shards
        self.max_series = max_series
        self._slots: dict[int, int] = {}  # store series ref -> slot
        self._keys: list[bytes | None] = []  # slot -> outgoing label bytes (None: dropped by relabel)
        self._shard = np.zeros(1024, dtype=np.int64)
        self._last = np.full(1024, _NONE, dtype=np.int64)

    @property
    def num_series(self) -> int:
        return len(self._keys)

    def route(self, batch: AppendedSamples) -> RouteResult:
        refs = batch.refs.tolist()
        get = self._slots.get
        slot_list = [get(r, -1) for r in refs]
        if -1 in slot_list:
            if len(self._keys) + len(refs) > self.max_series:
                self._reset()
            slot_list = self._resolve(batch, refs)
        slots = np.array(slot_list, dtype=np.int64)
        ts = batch.timestamps_ms
        keys_of = self._keys
        keep = np.fromiter((keys_of[s] is not None for s in slot_list), dtype=bool, count=len(slot_list))
        result = RouteResult([None] * self.shards)
        result.dropped_relabel = int(len(slots) - np.count_nonzero(keep))
        if batch.complete:
            fresh = ts > self._last[slots]
            # several samples of one series in a batch: each must be newer than the one before
            if len(np.unique(slots)) != len(slots):
                fresh = self._in_order(slots, ts, fresh)
        else:
            fresh = self._in_order(slots, ts, np.ones(len(slots), dtype=bool))
        result.dropped_out_of_order = int(np.count_nonzero(keep & ~fresh))
        keep &= fresh
        if not keep.all():
            slots, ts, values = slots[keep], ts[keep], batch.values[keep]
        else:
            values = batch.values
        if not len(slots):
            return result
        np.maximum.at(self._last, slots, ts)
        shard = self._shard[slots]
        order = np.argsort(shard, kind="stable")
        counts = np.bincount(shard, minlength=self.shards)
        slots, ts, values = slots[order], ts[order], values[order]
        slot_order = slots.tolist()
        start = 0
        for i, n in enumerate(counts.tolist()):
            if n:
                end = start + n
                result.per_shard[i] = Routed(
                    [keys_of[s] for s in slot_order[start:end]],  # kept: never None
                    ts[start:end],
                    values[start:end],
                )
                start = end
        return result

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

    def _resolve(self, batch: AppendedSamples, refs: list[int]) -> list[int]:
        slots = self._slots
        series = batch.sample_series.tolist()
        out: list[int] = []
        for i, ref in enumerate(refs):
            slot = slots.get(ref)
            if slot is None:
                slot = slots[ref] = len(self._keys)
                self._keys.append(self._outgoing(batch.keys[series[i]]))
                if slot >= len(self._shard):
                    self._grow(slot + 1)
                self._shard[slot] = self._shard_of(self._keys[slot], ref)
            out.append(slot)
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
        shard = np.zeros(size, dtype=np.int64)
        shard[: len(self._shard)] = self._shard
        last = np.full(size, _NONE, dtype=np.int64)
        last[: len(self._last)] = self._last
        self._shard, self._last = shard, last

    def _reset(self) -> None:
        self._slots = {}
        self._keys = []
        self._shard = np.zeros(1024, dtype=np.int64)
        self._last = np.full(1024, _NONE, dtype=np.int64)
