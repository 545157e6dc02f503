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
import re
import sys
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from watchkeeper.labels import METRIC_NAME, Labels, Matcher, MatchOp

_ID_MASK = (1 << 63) - 1
_REGEX_META = re.compile(r"[.^$*+?{}\[\]\\|()]")

SlotArray = npt.NDArray[np.int64]


def series_hash(labels: Labels) -> int:
    """The 63-bit hash a series id starts from (stable across processes, unlike ``hash()``)."""
    h = hashlib.blake2b(digest_size=8)
    for name, value in labels:
        h.update(name.encode())
        h.update(b"\xff")
        h.update(value.encode())
        h.update(b"\xfe")
    return int.from_bytes(h.digest(), "little") & _ID_MASK


def _grow(arr: npt.NDArray[np.int32], need: int) -> npt.NDArray[np.int32]:
    if need <= len(arr):
        return arr
    out = np.empty(max(need, 2 * len(arr), 1024), dtype=arr.dtype)
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
        self._slot_by_id: dict[int, int] = {}
        self.ids = np.zeros(0, dtype=np.int64)  # slot -> id
        self.live = np.zeros(0, dtype=np.bool_)  # slot -> not deleted
        self._labels: list[Labels] = []  # slot -> labels (tuples of interned pairs)
        self._pairs: list[tuple[str, str]] = []  # pair id -> (name, value), interned
        self._pair_ids: dict[tuple[str, str], int] = {}
        self._values: dict[str, dict[str, int]] = {}  # name -> value -> pair id
        self._entry_pair = np.zeros(0, dtype=np.int32)  # one entry per (series, label)
        self._entry_slot = np.zeros(0, dtype=np.int32)
        self._n_entries = 0
        # CSR postings over the first _csr_entries entries, rebuilt when the tail grows too long.
        self._csr_entries = 0
        self._csr_slots = np.zeros(0, dtype=np.int32)
        self._csr_offsets = np.zeros(1, dtype=np.int64)
        self._sorted_ids: npt.NDArray[np.int64] | None = None
        self._sorted_slots = np.zeros(0, dtype=np.int64)

    # --- creation and lookup -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._slot_by_id)

    @property
    def num_slots(self) -> int:
        return len(self._labels)

    def labels(self, slot: int) -> Labels:
        return self._labels[slot]

    def slot_of(self, series_id: int) -> int | None:
        return self._slot_by_id.get(series_id)

    def get_or_create(self, label_sets: Iterable[Labels]) -> tuple[list[int], list[int]]:
        """Ids for the label sets, creating series as needed; also returns the new slots."""
        out: list[int] = []
        created: list[int] = []
        for labels in label_sets:
            sid = series_hash(labels)
            while True:
                slot = self._slot_by_id.get(sid)
                if slot is None:
                    created.append(self._add(sid, labels))
                    break
                if self._labels[slot] == labels:
                    break
                sid = (sid + 1) & _ID_MASK  # collision: probe
            out.append(sid)
        return out, created

    def add(self, series_id: int, labels: Labels) -> int:
        """Register a series with a known id (replay, database load); returns its slot."""
        slot = self._slot_by_id.get(series_id)
        if slot is not None:
            if self._labels[slot] != labels:
                raise ValueError(f"series id {series_id} already used by other labels")
            return slot
        return self._add(series_id, labels)

    def _add(self, series_id: int, labels: Labels) -> int:
        slot = len(self._labels)
        interned = tuple(self._intern(p) for p in labels)
        pids = [self._pair_ids[p] for p in interned]
        self._labels.append(interned)
        self._slot_by_id[series_id] = slot
        if slot >= len(self.ids):
            cap = max(1024, 2 * len(self.ids))
            self.ids = np.concatenate([self.ids, np.zeros(cap - len(self.ids), dtype=np.int64)])
            self.live = np.concatenate([self.live, np.zeros(cap - len(self.live), dtype=np.bool_)])
        self.ids[slot] = series_id
        self.live[slot] = True
        n, k = self._n_entries, len(pids)
        self._entry_pair = _grow(self._entry_pair, n + k)
        self._entry_slot = _grow(self._entry_slot, n + k)
        self._entry_pair[n : n + k] = pids
        self._entry_slot[n : n + k] = slot
        self._n_entries = n + k
        self._sorted_ids = None
        return slot

    def _intern(self, pair: tuple[str, str]) -> tuple[str, str]:
        pid = self._pair_ids.get(pair)
        if pid is not None:
            return self._pairs[pid]
        name, value = sys.intern(pair[0]), sys.intern(pair[1])
        interned = (name, value)
        pid = len(self._pairs)
        self._pairs.append(interned)
        self._pair_ids[interned] = pid
        self._values.setdefault(name, {})[value] = pid
        return interned

    def remove(self, slots: Iterable[int]) -> None:
        """Forget series (retention). Their slots stay allocated but are never returned again."""
        for slot in slots:
            if self.live[slot]:
                self.live[slot] = False
                del self._slot_by_id[int(self.ids[slot])]
        self._sorted_ids = None

    def slots_of(self, ids: npt.NDArray[np.int64]) -> SlotArray:
        """Vectorised id -> slot; -1 for unknown ids."""
        if self._sorted_ids is None:
            live = np.flatnonzero(self.live[: self.num_slots])
            order = np.argsort(self.ids[live], kind="stable")
            self._sorted_ids = self.ids[live][order]
            self._sorted_slots = live[order].astype(np.int64)
        ids = np.asarray(ids, dtype=np.int64)
        if len(self._sorted_ids) == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        pos = np.searchsorted(self._sorted_ids, ids)
        pos = np.minimum(pos, len(self._sorted_ids) - 1)
        found = self._sorted_ids[pos] == ids
        return np.where(found, self._sorted_slots[pos], -1)

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
        pairs = self._entry_pair[:n]
        keep = self.live[self._entry_slot[:n]]
        if not keep.all():  # compact away deleted series while we are at it
            self._entry_pair = np.ascontiguousarray(pairs[keep])
            self._entry_slot = np.ascontiguousarray(self._entry_slot[:n][keep])
            n = self._n_entries = len(self._entry_pair)
            pairs = self._entry_pair
        order = np.argsort(pairs, kind="stable")
        self._csr_slots = self._entry_slot[:n][order]
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
        names = {name for s in slots.tolist() for name, _ in self._labels[s]}
        return sorted(names)

    def label_values(self, name: str, slots: SlotArray | None = None) -> list[str]:
        if slots is None:
            vals = self._values.get(name, {})
            if self.live[: self.num_slots].all():
                return sorted(vals)
            return sorted(v for v, pid in vals.items() if len(self.select_pairs([pid])))
        out = {v for s in slots.tolist() for n, v in self._labels[s] if n == name}
        return sorted(out)

    def metric_names(self) -> list[str]:
        return self.label_values(METRIC_NAME)

    def select_pairs(self, pids: Sequence[int]) -> SlotArray:
        slots = self._postings(pids)
        return slots[self.live[slots]]

    def _any_live(self, vals: dict[str, int]) -> bool:
        return bool(len(self.select_pairs(list(vals.values()))))
