"""The series index: label sets -> stable series ids, and an inverted index answering matchers.

Every series gets a **stable id** (63 bits of a BLAKE2b hash of its sorted labels; on the
astronomically rare collision the next free id is taken, and ids are persisted with their labels so
a probe result never changes) and a **dense slot** (0, 1, 2, ...) that indexes the parallel NumPy
columns of the head. Slots are process-local; ids go to the WAL and the database.

Memory is what matters at a million series, so per series the index keeps one tuple of interned
``(name, value)`` pairs (shared between series), one dict entry ``id -> slot`` and, per label,
two ``int32`` entries in flat arrays (pair id, slot). Postings (``pair -> sorted slots``) are
built from those arrays lazily, as one CSR (``argsort`` + offsets) over everything seen at the last
rebuild plus a linear scan of the entries appended since:

>>> idx = SeriesIndex()
>>> ids, created = idx.get_or_create([(("__name__", "up"), ("job", "api"))])
>>> idx.select([Matcher(MatchOp.REGEX, "job", "api|web")]).tolist()
[0]

Matchers follow Prometheus exactly: regexes are fully anchored, and a matcher that matches the
empty string also selects series that do not have the label at all.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

from watchkeeper.labels import METRIC_NAME, Labels, Matcher, MatchOp

_ID_MASK = (1 << 63) - 1
_REGEX_META = re.compile(r"[.^$*+?{}\[\]\\|()]")

SlotArray = npt.NDArray[np.int64]
_A = TypeVar("_A", bound=np.ndarray[Any, Any])


def series_hash(labels: Labels) -> int:
    """The 63-bit hash a series id starts from (stable across processes, unlike ``hash()``)."""
    h = hashlib.blake2b(digest_size=8)
    for name, value in labels:
        h.update(name.encode())
        h.update(b"\xff")
        h.update(value.encode())
        h.update(b"\xfe")
    return int.from_bytes(h.digest(), "little") & _ID_MASK


def _grow(arr: _A, need: int) -> _A:
    if need <= len(arr):
        return arr
    out = cast(_A, np.zeros(max(need, 2 * len(arr), 1024), dtype=arr.dtype))
    out[: len(arr)] = arr
    return out


def literal_alternatives(pattern: str) -> list[str] | None:
    """``"a|b|c"`` -> ``["a", "b", "c"]`` when the regex is a plain alternation of literals."""
    parts = pattern.split("|")
    if any(_REGEX_META.search(p) for p in parts):
        return None
    return parts


def literal_prefix(pattern: str) -> str | None:
    """``"foo.*"`` -> ``"foo"`` (the regex matches exactly the values starting with it)."""
    if pattern.endswith(".*") and not _REGEX_META.search(pattern[:-2]):
        return pattern[:-2]
    return None


class SeriesIndex:
    """Label sets, their ids and slots, and the postings. Not thread-safe: the storage locks."""

    def __init__(self) -> None:
        self._n = 0  # slots handed out
        self._n_live = 0
        self.version = 0  # changes whenever a series is added or removed
        self.ids = np.zeros(0, dtype=np.int64)  # slot -> id
        self.live = np.zeros(0, dtype=np.bool_)  # slot -> not deleted
        self._lab_start = np.zeros(0, dtype=np.int64)  # slot -> its first entry
        self._lab_len = np.zeros(0, dtype=np.uint16)  # slot -> number of labels
        # id -> slot: sorted arrays, plus a dict of the ids added since they were last merged.
        self._sorted_ids = np.zeros(0, dtype=np.int64)
        self._sorted_slots = np.zeros(0, dtype=np.int64)
        self._recent: dict[int, int] = {}
        self._recent_lookups = 0  # ids looked up in `_recent` since it was last merged
        self._pairs: list[tuple[str, str]] = []  # pair id -> (name, value), interned
        self._pair_ids: dict[tuple[str, str], int] = {}
        self._values: dict[str, dict[str, int]] = {}  # name -> value -> pair id
        # One entry per (series, label), in slot order: the labels themselves and the postings' source.
        self._entry_pair = np.zeros(0, dtype=np.int32)
        self._entry_slot = np.zeros(0, dtype=np.int32)
        self._n_entries = 0
        # CSR postings over the first _csr_entries entries, rebuilt when the tail grows too long.
        self._csr_entries = 0
        self._csr_slots = np.zeros(0, dtype=np.int32)
        self._csr_offsets = np.zeros(1, dtype=np.int64)

    # --- creation and lookup -------------------------------------------------------------------

    def __len__(self) -> int:
        return self._n_live

    @property
    def num_slots(self) -> int:
        return self._n

    def labels(self, slot: int) -> Labels:
        a = int(self._lab_start[slot])
        pairs = self._pairs
        return tuple(pairs[p] for p in self._entry_pair[a : a + int(self._lab_len[slot])].tolist())

    def labels_many(self, slots: npt.NDArray[np.int64]) -> list[Labels]:
        """`labels` of many slots at once (one gather instead of one per slot)."""
        starts = self._lab_start[slots].astype(np.int64)
        lens = self._lab_len[slots].astype(np.int64)
        ends = np.cumsum(lens)
        index = np.repeat(starts - (ends - lens), lens) + np.arange(int(ends[-1]) if len(ends) else 0)
        pairs = self._pairs
        flat = [pairs[p] for p in self._entry_pair[index].tolist()]
        bounds = [0, *ends.tolist()]
        return [tuple(flat[a:b]) for a, b in itertools.pairwise(bounds)]

    def slot_of(self, series_id: int) -> int | None:
        slot = self._recent.get(series_id)
        if slot is not None:
            return slot
        i = int(np.searchsorted(self._sorted_ids, series_id))
        if i < len(self._sorted_ids) and int(self._sorted_ids[i]) == series_id:
            slot = int(self._sorted_slots[i])
            if self.live[slot]:
                return slot
        return None

    def slots_of(self, ids: npt.NDArray[np.int64]) -> SlotArray:
        """Vectorised id -> slot; -1 for unknown ids."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.full(len(ids), -1, dtype=np.int64)
        if len(self._sorted_ids):
            pos = np.minimum(np.searchsorted(self._sorted_ids, ids), len(self._sorted_ids) - 1)
            found = self._sorted_ids[pos] == ids
            slots = self._sorted_slots[pos[found]]
            out[found] = np.where(self.live[slots], slots, -1)
        if self._recent:
            missing = np.flatnonzero(out < 0)
            recent = self._recent
            out[missing] = [recent.get(i, -1) for i in ids[missing].tolist()]
            # Once the dict look-ups since the last merge have cost about what a merge costs,
            # merge: a stable set of series then stops paying a dict look-up per sample.
            self._recent_lookups += len(missing)
            if self._recent_lookups > len(self._sorted_ids) + len(recent):
                self._merge_recent()
        return out

    def get_or_create(self, label_sets: Sequence[Labels]) -> tuple[list[int], list[int]]:
        """Ids for the label sets, creating series as needed; also returns the new slots."""
        hashes = [series_hash(labels) for labels in label_sets]
        found = self.slots_of(np.array(hashes, dtype=np.int64)).tolist()
        out: list[int] = []
        created: list[int] = []
        for labels, sid, slot in zip(label_sets, hashes, found, strict=True):
            if slot >= 0 and self.labels(slot) == labels:
                out.append(sid)
                continue
            while True:  # new series, or a hash collision: probe
                maybe = self.slot_of(sid)
                if maybe is None:
                    created.append(self._add(sid, labels))
                    break
                if self.labels(maybe) == labels:
                    break
                sid = (sid + 1) & _ID_MASK
            out.append(sid)
        return out, created

    def add(self, series_id: int, labels: Labels) -> int:
        """Register a series with a known id (replay, database load); returns its slot."""
        slot = self.slot_of(series_id)
        if slot is not None:
            if self.labels(slot) != labels:
                raise ValueError(f"series id {series_id} already used by other labels")
            return slot
        return self._add(series_id, labels)

    def _add(self, series_id: int, labels: Labels) -> int:
        slot = self._n
        pids = [self._intern(p) for p in labels]
        if slot >= len(self.ids):
            cap = max(1024, 2 * len(self.ids))
            self.ids = _grow(self.ids, cap)
            self.live = _grow(self.live, cap)
            self._lab_start = _grow(self._lab_start, cap)
            self._lab_len = _grow(self._lab_len, cap)
        n, k = self._n_entries, len(pids)
        self.ids[slot] = series_id
        self.live[slot] = True
        self._lab_start[slot] = n
        self._lab_len[slot] = k
        self._entry_pair = _grow(self._entry_pair, n + k)
        self._entry_slot = _grow(self._entry_slot, n + k)
        self._entry_pair[n : n + k] = pids
        self._entry_slot[n : n + k] = slot
        self._n_entries = n + k
        self._n = slot + 1
        self._n_live += 1
        self.version += 1
        self._recent[series_id] = slot
        if len(self._recent) > max(1024, len(self._sorted_ids) // 16):
            self._merge_recent()
        return slot

    def _merge_recent(self) -> None:
        keep = self.live[self._sorted_slots]
        ids = np.concatenate([self._sorted_ids[keep], np.fromiter(self._recent, np.int64, len(self._recent))])
        slots = np.concatenate([self._sorted_slots[keep],
                                np.fromiter(self._recent.values(), np.int64, len(self._recent))])
        order = np.argsort(ids, kind="stable")
        self._sorted_ids, self._sorted_slots = ids[order], slots[order]
        self._recent.clear()
        self._recent_lookups = 0

    def _intern(self, pair: tuple[str, str]) -> int:
        pid = self._pair_ids.get(pair)
        if pid is not None:
            return pid
        name, value = sys.intern(pair[0]), sys.intern(pair[1])
        pid = len(self._pairs)
        self._pairs.append((name, value))
        self._pair_ids[(name, value)] = pid
        self._values.setdefault(name, {})[value] = pid
        return pid

    def remove(self, slots: Iterable[int]) -> None:
        """Forget series (retention). Their slots stay allocated but are never returned again."""
        for slot in slots:
            if self.live[slot]:
                self.live[slot] = False
                self._n_live -= 1
                self.version += 1
                sid = int(self.ids[slot])
                if self._recent.get(sid) == slot:
                    del self._recent[sid]

    # --- postings --------------------------------------------------------------------------------

    def _postings(self, pids: Sequence[int]) -> SlotArray:
        """Sorted unique slots (live or not) having any of the pairs."""
        if not pids:
            return np.zeros(0, dtype=np.int64)
        tail = self._n_entries - self._csr_entries
        if tail > max(4096, self._csr_entries // 8):
            self._rebuild_csr()
            tail = 0
        parts: list[npt.NDArray[np.int32]] = []
        n_csr = len(self._csr_offsets) - 1
        for pid in pids:
            if pid < n_csr:
                parts.append(self._csr_slots[self._csr_offsets[pid] : self._csr_offsets[pid + 1]])
        if tail:
            tp = self._entry_pair[self._csr_entries : self._n_entries]
            ts = self._entry_slot[self._csr_entries : self._n_entries]
            mask = tp == pids[0] if len(pids) == 1 else np.isin(tp, np.asarray(pids, dtype=np.int32))
            parts.append(ts[mask])
        if not parts:
            return np.zeros(0, dtype=np.int64)
        out = np.concatenate(parts).astype(np.int64)
        # One pair per series, so a single posting list is already sorted and unique.
        return out if len(pids) == 1 and not tail else np.unique(out)

    def _rebuild_csr(self) -> None:
        n = self._n_entries
        pairs, slots = self._entry_pair[:n], self._entry_slot[:n]
        keep = self.live[slots]
        if not keep.all():  # leave deleted series out of the postings
            pairs, slots = pairs[keep], slots[keep]
        order = np.argsort(pairs, kind="stable")
        self._csr_slots = slots[order]
        counts = np.bincount(pairs, minlength=len(self._pairs))
        self._csr_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._csr_entries = n

    def _matching_pids(self, m: Matcher, positive: bool) -> list[int]:
        """Pair ids of label ``m.name`` whose value satisfies ``m`` (``positive``) or does not."""
        values = self._values.get(m.name, {})
        if m.op in (MatchOp.EQUAL, MatchOp.NOT_EQUAL) and positive == (m.op is MatchOp.EQUAL):
            pid = values.get(m.value)
            return [] if pid is None else [pid]
        if m.op in (MatchOp.REGEX, MatchOp.NOT_REGEX):
            want = positive == (m.op is MatchOp.REGEX)  # do we collect the values the regex matches?
            alts = literal_alternatives(m.value)
            if alts is not None:
                if want:
                    return [values[a] for a in set(alts) if a in values]
                lits = set(alts)
                return [pid for v, pid in values.items() if v not in lits]
            prefix = literal_prefix(m.value)
            if prefix is not None:
                return [pid for v, pid in values.items() if v.startswith(prefix) == want]
        return [pid for v, pid in values.items() if m.matches(v) == positive]

    def select(self, matchers: Sequence[Matcher], candidates: SlotArray | None = None) -> SlotArray:
        """Sorted live slots matching every matcher (all live series for no matchers)."""
        include: list[SlotArray] = []
        exclude: list[SlotArray] = []
        for m in matchers:
            if m.matches(""):
                # Series without the label match; drop the ones whose value does not.
                exclude.append(self._postings(self._matching_pids(m, positive=False)))
            else:
                include.append(self._postings(self._matching_pids(m, positive=True)))
        if candidates is not None:
            include.append(np.asarray(candidates, dtype=np.int64))
        if include:
            include.sort(key=len)
            out = include[0]
            for other in include[1:]:
                out = np.intersect1d(out, other, assume_unique=True)
        else:
            out = np.arange(self.num_slots, dtype=np.int64)
        for other in exclude:
            if len(out) == 0:
                break
            out = np.setdiff1d(out, other, assume_unique=True)
        return out[self.live[out]]

    # --- listings --------------------------------------------------------------------------------

    def label_names(self, slots: SlotArray | None = None) -> list[str]:
        if slots is None:
            if self.live[: self.num_slots].all():
                return sorted(self._values)
            return sorted(name for name, vals in self._values.items() if self._any_live(vals))
        return sorted({self._pairs[p][0] for p in self._pair_ids_of(slots).tolist()})

    def label_values(self, name: str, slots: SlotArray | None = None) -> list[str]:
        if slots is None:
            vals = self._values.get(name, {})
            if self.live[: self.num_slots].all():
                return sorted(vals)
            return sorted(v for v, pid in vals.items() if len(self.select_pairs([pid])))
        pairs = self._pairs
        return sorted(v for n, v in (pairs[p] for p in self._pair_ids_of(slots).tolist()) if n == name)

    def _pair_ids_of(self, slots: SlotArray) -> npt.NDArray[np.int32]:
        """Distinct pair ids of the series, vectorised over their entries."""
        lens = self._lab_len[slots].astype(np.int64)
        starts = self._lab_start[slots]
        pos = np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()))
        return np.unique(self._entry_pair[pos])

    def metric_names(self) -> list[str]:
        return self.label_values(METRIC_NAME)

    def select_pairs(self, pids: Sequence[int]) -> SlotArray:
        slots = self._postings(pids)
        return slots[self.live[slots]]

    def _any_live(self, vals: dict[str, int]) -> bool:
        return bool(len(self.select_pairs(list(vals.values()))))
