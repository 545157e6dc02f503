"""Vector and matrix selectors: from the store's series to ``StepVector`` / ``RangeVector``.

All series of a selector are concatenated into one array; per-(series, step) lookups are a single
``np.searchsorted`` on a combined key ``series_index * span + (timestamp - base)``, which is
sorted because every series' timestamps are strictly increasing and lie in ``(base, base + span)``.

>>> budget = SampleBudget(50_000_000)
>>> times = np.array([60_000])
>>> sv = select_instant(reader, matchers, times, lookback_ms=300_000, budget=budget)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from watchkeeper.errors import TooManySamples
from watchkeeper.labels import Labels, Matcher
from watchkeeper.promql.values import F64, I64, Bool, RangeVector, StepVector
from watchkeeper.tsdb.reader import SeriesData, SeriesReader, is_stale, select_concat

TOO_MANY_SAMPLES = "query processing would load too many samples into memory in query execution"


class SampleBudget:
    """Counts the samples a query loads and raises ``TooManySamples`` past ``max_samples``."""

    __slots__ = ("loaded", "max_samples")

    def __init__(self, max_samples: int) -> None:
        self.max_samples = max_samples
        self.loaded = 0

    def add(self, n: int) -> None:
        self.loaded += n
        if self.loaded > self.max_samples:
            raise TooManySamples(TOO_MANY_SAMPLES)

    def check_cells(self, n: int) -> None:
        """Refuse to materialise a (series x steps) matrix bigger than the limit: Prometheus counts
        every point of an instant vector at every step against it too."""
        if n > self.max_samples:
            raise TooManySamples(TOO_MANY_SAMPLES)


class _Concat:
    """The samples of several series in one array, series ``i`` at ``[offsets[i], offsets[i+1])``."""

    __slots__ = ("labels", "offsets", "series_index", "timestamps", "values")

    def __init__(self, labels: list[Labels], timestamps: I64, values: F64, lengths: I64) -> None:
        self.labels = labels
        self.timestamps = timestamps
        self.values = values
        self.offsets: I64 = np.zeros(len(labels) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        self.series_index: I64 = np.repeat(np.arange(len(labels), dtype=np.int64), lengths)


def _fetch(
    reader: SeriesReader, matchers: Sequence[Matcher], start_ms: int, end_ms: int, budget: SampleBudget
) -> _Concat:
    labels, ts, vals, offsets = select_concat(reader, matchers, start_ms, end_ms)
    bounds: I64 = np.asarray(offsets, dtype=np.int64)
    lengths = bounds[1:] - bounds[:-1]
    total = int(lengths.sum()) if len(labels) else 0
    budget.add(total)
    if total == 0:
        empty_i: I64 = np.empty(0, dtype=np.int64)
        return _Concat([], empty_i, np.empty(0, dtype=np.float64), empty_i)
    ts, vals = np.asarray(ts, dtype=np.int64), np.asarray(vals, dtype=np.float64)
    concat = _Concat(list(labels), ts, vals, lengths)
    # Timestamps increase within a series: its first and last sample bound all of them.
    firsts, lasts = ts[concat.offsets[:-1][lengths > 0]], ts[concat.offsets[1:][lengths > 0] - 1]
    if (firsts < start_ms).any() or (lasts > end_ms).any():  # the store returned more than asked
        concat = _subset(concat, (ts >= start_ms) & (ts <= end_ms))
    return concat


class SharedSelects:
    """A reader that answers a repeated selection (same matchers, same time range) from memory.

    Rules of one group are evaluated at one timestamp and often select the same series (a warning
    and a critical threshold on one expression): this fetches and decodes them once. The arrays it
    hands out are read-only, so no caller can change another's result. It keeps at most
    ``max_bytes`` of samples (the most recent selections; a bigger one is not kept), so a group of
    many large, distinct selections holds no more memory than before. Only for a short scope in
    which the store is treated as unchanged: call :meth:`forget` after writing to it.

    >>> shared = SharedSelects(storage)                                        # doctest: +SKIP
    >>> engine.instant("rate(x[5m]) > 1", t, reader=shared)                    # doctest: +SKIP
    """

    __slots__ = ("_bytes", "_memo", "max_bytes", "reader")

    def __init__(self, reader: SeriesReader, *, max_bytes: int = 64 << 20) -> None:
        self.reader = reader
        self.max_bytes = max_bytes
        self._memo: dict[tuple[tuple[Matcher, ...], int, int], tuple[list[Labels], I64, F64, I64]] = {}
        self._bytes = 0

    def select_concat(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int
    ) -> tuple[list[Labels], I64, F64, I64]:
        key = (tuple(matchers), start_ms, end_ms)
        hit = self._memo.get(key)
        if hit is not None:
            return list(hit[0]), hit[1], hit[2], hit[3]
        labels, ts, vals, offsets = select_concat(self.reader, matchers, start_ms, end_ms)
        ts, vals = np.asarray(ts, dtype=np.int64), np.asarray(vals, dtype=np.float64)
        offsets = np.asarray(offsets, dtype=np.int64)
        for array in (ts, vals, offsets):
            array.flags.writeable = False
        size = ts.nbytes + vals.nbytes + offsets.nbytes
        if size <= self.max_bytes:
            while self._memo and self._bytes + size > self.max_bytes:  # the oldest go first
                _, old_ts, old_vals, old_offsets = self._memo.pop(next(iter(self._memo)))
                self._bytes -= old_ts.nbytes + old_vals.nbytes + old_offsets.nbytes
            self._memo[key] = (labels, ts, vals, offsets)
            self._bytes += size
        return list(labels), ts, vals, offsets

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[SeriesData]:
        labels, ts, vals, offsets = self.select_concat(matchers, start_ms, end_ms)
        bounds = offsets.tolist()
        return [SeriesData(lab, ts[bounds[i] : bounds[i + 1]], vals[bounds[i] : bounds[i + 1]])
                for i, lab in enumerate(labels)]

    def label_names(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        return self.reader.label_names(matchers, start_ms, end_ms)

    def label_values(self, name: str, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        return self.reader.label_values(name, matchers, start_ms, end_ms)

    def forget(self) -> None:
        """Drop everything remembered (the store was written to)."""
        self._memo.clear()
        self._bytes = 0


def _subset(c: _Concat, keep: Bool) -> _Concat:
    lengths = np.bincount(c.series_index[keep], minlength=len(c.labels)).astype(np.int64)
    return _Concat(c.labels, c.timestamps[keep], c.values[keep], lengths)


def _keys(series_index: I64, timestamps: I64, base: int, span: int) -> I64:
    return series_index * span + (timestamps - base)


def _uniform_step(times: I64) -> int | None:
    """The spacing of evenly spaced, increasing times (a range query's steps), else None."""
    if times.shape[0] < 2:
        return None
    step = int(times[1] - times[0])
    if step <= 0 or not bool((np.diff(times) == step).all()):
        return None
    return step


def count_le(series_index: I64, timestamps: I64, offsets: I64, times: I64) -> I64:
    """``out[i, j]``: the absolute index one past the last sample of series ``i`` with
    ``t <= times[j]`` (so ``out - offsets[i]`` counts them).

    For evenly spaced times this is a histogram of samples over steps plus a cumulative sum,
    O(samples + cells); otherwise one ``searchsorted`` on the combined key."""
    n, steps = len(offsets) - 1, int(times.shape[0])
    step = _uniform_step(times)
    if step is None:
        low = min(int(times.min()), int(timestamps.min()) if timestamps.size else 0)
        high = max(int(times.max()), int(timestamps.max()) if timestamps.size else 0)
        base, span = low - 1, high - low + 3
        keys = _keys(series_index, timestamps, base, span)
        query = np.arange(n, dtype=np.int64)[:, None] * span + (times - base)[None, :]
        found: I64 = np.searchsorted(keys, query, side="right").astype(np.int64)
        return found
    t0 = int(times[0])
    # The first step at or after each sample (ceil((t - t0) / step), clamped to [0, steps]): the
    # sample counts for that step and all later ones. In place: these arrays are the biggest.
    first_step = timestamps - (t0 - step + 1)
    first_step //= step
    np.clip(first_step, 0, steps, out=first_step)
    first_step += series_index * (steps + 1)
    hist = np.bincount(first_step, minlength=n * (steps + 1)).reshape(n, steps + 1)
    np.cumsum(hist, axis=1, out=hist)
    out: I64 = hist[:, :steps]
    out += offsets[:-1, None]
    return out


def select_instant(
    reader: SeriesReader,
    matchers: Sequence[Matcher],
    eval_times_ms: I64,
    *,
    lookback_ms: int,
    budget: SampleBudget,
    with_timestamps: bool = False,
) -> StepVector:
    """The latest sample with ``t - lookback < ts <= t`` for every series and eval time ``t``
    (offset and ``@`` already applied to ``eval_times_ms``); staleness markers end a series.
    ``sample_ts`` is filled only ``with_timestamps`` (for ``timestamp()``: it is as big as the
    values)."""
    steps = int(eval_times_ms.shape[0])
    if steps == 0:
        return StepVector.empty(0)
    if steps > 1 and bool((eval_times_ms == eval_times_ms[0]).all()):  # step invariant (`@`)
        one = select_instant(
            reader, matchers, eval_times_ms[:1], lookback_ms=lookback_ms, budget=budget,
            with_timestamps=with_timestamps,
        )
        return StepVector(
            one.labels,
            np.repeat(one.values, steps, axis=1),
            np.repeat(one.present, steps, axis=1),
            sample_ts=None if one.sample_ts is None else np.repeat(one.sample_ts, steps, axis=1),
        )
    t_min, t_max = int(eval_times_ms.min()), int(eval_times_ms.max())
    start = t_min - lookback_ms + 1
    c = _fetch(reader, matchers, start, t_max, budget)
    n = len(c.labels)
    if n == 0:
        return StepVector.empty(steps)
    budget.check_cells(n * steps)
    pos = count_le(c.series_index, c.timestamps, c.offsets, eval_times_ms) - 1
    present = pos >= c.offsets[:-1, None]
    np.maximum(pos, 0, out=pos)
    sample_ts = c.timestamps[pos]
    present &= sample_ts > (eval_times_ms - lookback_ms)[None, :]
    values = c.values[pos]
    present &= ~is_stale(values)
    values[~present] = np.nan
    keep = present.any(axis=1)
    stamps = sample_ts if with_timestamps else None
    if not keep.all():
        idx = np.flatnonzero(keep)
        return StepVector(
            [c.labels[i] for i in idx], values[idx], present[idx],
            sample_ts=None if stamps is None else stamps[idx],
        )
    return StepVector(c.labels, values, present, sample_ts=stamps)


def _windows(
    series_index: I64, timestamps: I64, offsets: I64, window_end_ms: I64, range_ms: int
) -> tuple[I64, I64]:
    """``lo``/``hi`` (n, steps): the samples with ``end - range < t <= end`` for every window."""
    n, steps = len(offsets) - 1, int(window_end_ms.shape[0])
    if n == 0 or steps == 0:
        empty: I64 = np.zeros((n, steps), dtype=np.int64)
        return empty, empty.copy()
    step = _uniform_step(window_end_ms)
    if step is not None and range_ms % step == 0 and range_ms // step <= steps:
        # The window starts are the same grid shifted back by k steps: one pass over the
        # samples for the extended grid gives both bounds.
        k = range_ms // step
        first = int(window_end_ms[0]) - range_ms
        grid = np.arange(first, first + (steps + k) * step, step, dtype=np.int64)
        both = count_le(series_index, timestamps, offsets, grid)
        return both[:, :steps], both[:, k:]
    lo = count_le(series_index, timestamps, offsets, window_end_ms - range_ms)
    hi = count_le(series_index, timestamps, offsets, window_end_ms)
    return lo, hi


def select_range(
    reader: SeriesReader,
    matchers: Sequence[Matcher],
    window_end_ms: I64,
    range_ms: int,
    *,
    budget: SampleBudget,
) -> RangeVector:
    """Samples in the left-open windows ``(end - range, end]``, staleness markers removed."""
    steps = int(window_end_ms.shape[0])
    if steps == 0:
        return _empty_range(window_end_ms, range_ms)
    start = int(window_end_ms.min()) - range_ms + 1
    c = _fetch(reader, matchers, start, int(window_end_ms.max()), budget)
    stale = is_stale(c.values)
    if stale.any():
        c = _subset(c, ~stale)
    lengths = np.diff(c.offsets)
    if (lengths == 0).any():
        keep = np.flatnonzero(lengths > 0)
        c = _Concat([c.labels[i] for i in keep], c.timestamps, c.values, lengths[keep])
    budget.check_cells(len(c.labels) * steps)
    lo, hi = _windows(c.series_index, c.timestamps, c.offsets, window_end_ms, range_ms)
    return RangeVector(c.labels, c.timestamps, c.values, c.offsets, lo, hi, window_end_ms, range_ms)


def _empty_range(window_end_ms: I64, range_ms: int) -> RangeVector:
    steps = int(window_end_ms.shape[0])
    zeros: I64 = np.zeros((0, steps), dtype=np.int64)
    return RangeVector(
        [], np.empty(0, dtype=np.int64), np.empty(0), np.zeros(1, dtype=np.int64), zeros, zeros.copy(),
        window_end_ms, range_ms,
    )


def range_from_steps(sv: StepVector, times_ms: I64, window_end_ms: I64, range_ms: int) -> RangeVector:
    """A subquery's ``RangeVector``: the points of ``sv`` (evaluated at ``times_ms``) in the windows
    ``(end - range, end]``."""
    counts = sv.present.sum(axis=1).astype(np.int64)
    keep = np.flatnonzero(counts > 0)
    drop = None if sv.drop_name is None else sv.drop_name[keep]
    present = sv.present[keep]
    rows, cols = np.nonzero(present)  # row-major: by series, then by time
    timestamps = times_ms[cols].astype(np.int64)
    values = sv.values[keep][rows, cols]
    n = len(keep)
    offsets: I64 = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts[keep], out=offsets[1:])
    lo, hi = _windows(rows.astype(np.int64), timestamps, offsets, window_end_ms, range_ms)
    labels = [sv.labels[i] for i in keep]
    return RangeVector(labels, timestamps, values, offsets, lo, hi, window_end_ms, range_ms, drop_name=drop)
