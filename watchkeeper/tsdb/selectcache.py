"""Decoded persisted samples per series, kept between selects: a least-recently-used cache bounded
by bytes.

Dashboards, alert rules and API clients select the same series again and again over windows that
slide forward. Without a cache every select reads the series' chunks from the database and
decodes them again; with it, a repeated select of persisted data is a slice of arrays in memory.

An entry holds, for one series (by slot), *every* chunk persisted or queued for the database that
overlaps ``[lo, hi]``, decoded and merged (one sample per timestamp, the later chunk winning, as
`Storage.select` merges them); ``hi`` is unbounded when no persisted sample of the series was newer
than the read's end. The open head chunk is never in it. An entry answers a select of
``[start, end]`` when ``lo <= start`` and ``end <= hi``.

It stays exact because the set of chunks behind an entry only changes in three ways, and each
tells the cache:

* a chunk is queued for the series (a cut, an out-of-order sample, a WAL recovery):
  `invalidate` drops the entry;
* retention deletes chunks that end before a cutoff: `expire` drops every entry holding one;
* the series is deleted: `invalidate`.

Committing a queued chunk to the database changes nothing a select sees. A select reads the
database without the storage's lock, so it takes a `token` under the lock first and `put` keeps
an entry only if nothing above happened to that series since:

>>> cache = SelectCache(max_bytes=1 << 20)
>>> cache.ensure_capacity(1)
>>> token = cache.token(np.array([0]))
>>> ts, vals = np.array([1_000, 2_000]), np.array([1.0, 2.0])
>>> cache.put(token, [CachedSeries(0, _UNBOUNDED, ts, vals, oldest_end_ms=2_000)])
>>> cache.get([0], 1_500, 9_000)[0].vals.tolist()
[1.0, 2.0]
>>> cache.invalidate([0]); cache.get([0], 1_500, 9_000)
[None]

Not thread-safe: the storage calls it under its lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

#: The default size: the harness' whole 2 h workload of 9,000 series decoded is ~70 MiB.
DEFAULT_MAX_BYTES = 256 << 20
_UNBOUNDED = 2**62
_ENTRY_OVERHEAD = 300  # the entry object, its two array headers and its place in the dict


@dataclass(slots=True)
class CachedSeries:
    """Every persisted chunk of series ``slot`` overlapping ``[lo_ms, hi_ms]``, decoded: samples in
    time order, one per timestamp (arrays read-only)."""

    lo_ms: int
    hi_ms: int
    ts: I64
    vals: F64
    oldest_end_ms: int  # the earliest chunk end among them (retention drops the entry past it)
    first_ms: int = field(init=False)  # of the samples (an empty entry: larger than any window)
    last_ms: int = field(init=False)
    nbytes: int = field(init=False)

    def __post_init__(self) -> None:
        self.ts.flags.writeable = False
        self.vals.flags.writeable = False
        self.first_ms, self.last_ms = (int(self.ts[0]), int(self.ts[-1])) if len(self.ts) else (_UNBOUNDED, 0)
        self.nbytes = self.ts.nbytes + self.vals.nbytes + _ENTRY_OVERHEAD


@dataclass(frozen=True, slots=True)
class Token:
    """What the cache knew of some series when a select started reading them (see `put`)."""

    epoch: int
    slots: I64
    generations: npt.NDArray[np.uint32]


@dataclass(frozen=True, slots=True)
class CacheStats:
    size_bytes: int
    max_bytes: int
    entries: int
    hits_total: int
    misses_total: int


class SelectCache:
    """Decoded persisted samples of recently selected series; see the module docstring."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, CachedSeries] = OrderedDict()
        self._bytes = 0
        self._generation = np.zeros(0, dtype=np.uint32)  # per slot: bumped by `invalidate`
        self._epoch = 0  # bumped by `expire`
        self.hits_total = 0
        self.misses_total = 0

    def ensure_capacity(self, n_slots: int) -> None:
        if n_slots > len(self._generation):
            grown = np.zeros(max(n_slots, len(self._generation) * 3 // 2, 1024), dtype=np.uint32)
            grown[: len(self._generation)] = self._generation
            self._generation = grown

    def get(self, slots: Sequence[int], start_ms: int, end_ms: int) -> list[CachedSeries | None]:
        """The entries answering ``[start_ms, end_ms]`` for the slots (None where there is none)."""
        if not self._entries:
            self.misses_total += len(slots)
            return [None] * len(slots)
        entries = self._entries
        out: list[CachedSeries | None] = []
        for slot in slots:
            e = entries.get(slot)
            if e is not None and e.lo_ms <= start_ms and end_ms <= e.hi_ms:
                entries.move_to_end(slot)
                out.append(e)
            else:
                out.append(None)
        hits = sum(e is not None for e in out)
        self.hits_total += hits
        self.misses_total += len(out) - hits
        return out

    def token(self, slots: I64) -> Token:
        return Token(self._epoch, slots, self._generation[slots].copy())

    def put(self, token: Token, entries: Iterable[CachedSeries]) -> None:
        """Keep the entries (for ``token.slots``, in that order) of series that nothing changed
        since the token was taken; evict the least recently used beyond ``max_bytes``."""
        if token.epoch != self._epoch or not self.max_bytes:
            return
        unchanged = (self._generation[token.slots] == token.generations).tolist()
        cache = self._entries
        for slot, ok, e in zip(token.slots.tolist(), unchanged, entries, strict=True):
            if not ok or e.nbytes > self.max_bytes:
                continue
            old = cache.pop(slot, None)
            if old is not None:
                self._bytes -= old.nbytes
            cache[slot] = e
            self._bytes += e.nbytes
        self._evict()

    def resize(self, max_bytes: int) -> None:
        """Change the bound (0 turns the cache off), evicting what no longer fits."""
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self._evict()

    def _evict(self) -> None:
        while self._bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self._bytes -= old.nbytes

    def invalidate(self, slots: Collection[int]) -> None:
        """The series' persisted chunks changed: forget what is kept of them."""
        self._generation[np.fromiter(slots, np.int64, len(slots))] += 1
        if self._entries:
            cache = self._entries
            for slot in slots:
                old = cache.pop(slot, None)
                if old is not None:
                    self._bytes -= old.nbytes

    def expire(self, cutoff_ms: int) -> None:
        """Chunks ending before ``cutoff_ms`` are being deleted: forget entries holding one."""
        self._epoch += 1
        stale = [slot for slot, e in self._entries.items() if e.oldest_end_ms < cutoff_ms]
        for slot in stale:
            self._bytes -= self._entries.pop(slot).nbytes

    def stats(self) -> CacheStats:
        return CacheStats(self._bytes, self.max_bytes, len(self._entries), self.hits_total, self.misses_total)
