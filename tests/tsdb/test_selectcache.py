"""The select cache never changes an answer: a store with it and one without, fed the same random
appends (in order, out of order, duplicates), cuts, retention and shutdown flushes, select the
same samples over random windows; and every window agrees with the whole range clipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from watchkeeper.labels import Labels, Matcher, MatchOp, from_dict
from watchkeeper.tsdb.api import tsdb_status
from watchkeeper.tsdb.selectcache import CachedSeries, SelectCache
from watchkeeper.tsdb.storage import Storage

SERIES = [from_dict({"__name__": "m", "i": str(i), "par": str(i % 2)}) for i in range(4)]
MATCHERS = [
    [Matcher(MatchOp.EQUAL, "__name__", "m")],
    [Matcher(MatchOp.EQUAL, "par", "1")],
    [Matcher(MatchOp.REGEX, "i", "0|3")],
]
STEP = 1000
Block = tuple[list[Labels], np.ndarray, np.ndarray, np.ndarray]

appends = st.tuples(
    st.just("append"),
    st.lists(st.integers(0, 3), min_size=1, max_size=4, unique=True),  # series
    st.integers(1, 130),  # samples each (a chunk is cut at 120)
    st.one_of(st.integers(1, 3), st.integers(-40, 0)),  # first timestamp, in steps after the
    # series' newest (< 1: out of order)
    st.integers(0, 3),  # values: 0 in steps, 1 noisy floats, 2 constant, 3 a repeat of the times
)
selects = st.tuples(
    st.just("select"), st.integers(0, len(MATCHERS) - 1),
    st.booleans(),  # the start: absolute, or this many steps before the newest sample
    st.integers(-20, 700), st.integers(0, 700),
)
operations = st.lists(
    st.one_of(appends, selects, selects,
              st.tuples(st.just("retention"), st.integers(0, 700)),
              st.tuples(st.just("flush"))),
    min_size=1, max_size=40,
)


def same(a: Block, b: Block) -> None:
    assert a[0] == b[0]
    assert a[1].tolist() == b[1].tolist()
    assert a[2].view(np.uint64).tolist() == b[2].view(np.uint64).tolist()
    assert a[3].tolist() == b[3].tolist()


def clipped(block: Block, start_ms: int, end_ms: int) -> Block:
    labels, ts, vals, offsets = block
    keep = (ts >= start_ms) & (ts <= end_ms)
    series = np.repeat(np.arange(len(labels)), np.diff(offsets))
    counts = np.bincount(series[keep], minlength=len(labels))
    out_offsets = np.concatenate([[0], np.cumsum(counts[counts > 0])])
    kept = [lab for lab, c in zip(labels, counts.tolist(), strict=True) if c]
    return kept, ts[keep], vals[keep], out_offsets


def run(ops: list[tuple[object, ...]], cached: Storage, plain: Storage, *, memory: bool) -> None:
    refs = cached.series_refs(SERIES)
    assert plain.series_refs(SERIES).tolist() == refs.tolist()
    newest = [0] * len(SERIES)
    rng = np.random.default_rng(5)
    for op in ops:
        if op[0] == "append":
            _, which, count, first, kind = op
            slots, ts, vals = [], [], []
            for s in which:  # type: ignore[attr-defined]
                # Out-of-order samples fall between the earlier ones (or they would be duplicates).
                t0 = newest[s] + first * STEP - (STEP // 2 if first < 1 else 0)  # type: ignore[operator]
                times = t0 + STEP * np.arange(count)  # type: ignore[call-overload]
                values = {0: np.arange(count) * 1.5, 1: rng.normal(size=count), 2: np.full(count, 7.0),
                          3: times / 1000.0}[kind]  # type: ignore[index]
                newest[s] = max(newest[s], int(times[-1]))
                slots += [int(refs[s])] * count  # type: ignore[operator]
                ts.append(times)
                vals.append(values)
            args = (np.array(slots), np.concatenate(ts), np.concatenate(vals))
            assert cached.append(*args) == plain.append(*args)
        elif op[0] == "select":
            _, m, relative, start, length = op
            start_ms = (max(newest) if relative else 0) + (-1 if relative else 1) * start * STEP  # type: ignore[operator]
            end_ms = start_ms + length * STEP  # type: ignore[operator]
            got = cached.select_concat(MATCHERS[m], start_ms, end_ms)  # type: ignore[index]
            want = plain.select_concat(MATCHERS[m], start_ms, end_ms)  # type: ignore[index]
            same(got, want)
            same(got, clipped(plain.select_concat(MATCHERS[m], -(2**40), 2**40), start_ms, end_ms))  # type: ignore[index]
            same(cached.select_concat(MATCHERS[m], start_ms, end_ms), want)  # type: ignore[index]
        elif op[0] == "retention":
            now_ms = op[1] * STEP  # type: ignore[operator]
            assert cached.apply_retention(now_ms) == plain.apply_retention(now_ms)
        elif memory:  # flush: cut every open chunk, as at shutdown
            cached.flush_head()
            plain.flush_head()
    for m in MATCHERS:
        same(cached.select_concat(m, 0, 2**40), plain.select_concat(m, 0, 2**40))


@settings(max_examples=300, deadline=None)
@given(ops=operations, ooo=st.sampled_from([0, 50 * STEP]), cache_bytes=st.sampled_from([1 << 20, 3000]))
# An out-of-order sample persisted inside the open chunk's range (between two frozen segments' samples)
@example(ops=[("append", [0], 100, 1, 0), ("append", [0], 1, -30, 0), ("select", 0, True, 50, 100)],
         ooo=50 * STEP, cache_bytes=1 << 20)
# A chunk persisted after the end of a cached read: the entry must not claim to cover it
@example(ops=[("append", [0], 125, 1, 0), ("flush",), ("select", 0, False, 0, 120),
              ("select", 0, False, 0, 200)],
         ooo=0, cache_bytes=1 << 20)
def test_cached_selects_equal_uncached(ops: list[tuple[object, ...]], ooo: int, cache_bytes: int) -> None:
    # 3000 bytes holds about one series: entries are evicted all the time.
    kw = {"data_dir": None, "retention_ms": 300 * STEP, "out_of_order_window_ms": ooo}
    cached = Storage.open(select_cache_bytes=cache_bytes, **kw)  # type: ignore[arg-type]
    plain = Storage.open(select_cache_bytes=0, **kw)  # type: ignore[arg-type]
    run(ops, cached, plain, memory=True)
    assert cached.stats().select_cache.size_bytes <= cache_bytes
    assert plain.stats().select_cache.entries == 0


@pytest.mark.slow
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_cached_selects_equal_uncached_sqlite(ops: list[tuple[object, ...]],
                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    """With the database and the persister thread committing chunks while selects run."""
    root: Path = tmp_path_factory.mktemp("sel")
    kw = {"retention_ms": 300 * STEP, "out_of_order_window_ms": 50 * STEP, "wal_fsync": False}
    cached = Storage.open(data_dir=root / "a", **kw)  # type: ignore[arg-type]
    plain = Storage.open(data_dir=root / "b", select_cache_bytes=0, **kw)  # type: ignore[arg-type]
    try:
        run(ops, cached, plain, memory=False)
    finally:
        cached.close()
        plain.close()


def test_repeated_select_is_served_from_the_cache() -> None:
    store = Storage.open(data_dir=None)
    refs = store.series_refs(SERIES)
    for k in range(300):  # two chunks cut per series, the third open
        store.append(refs, np.full(len(refs), k * STEP), np.full(len(refs), float(k)))
    m = MATCHERS[0]
    first = store.select_concat(m, 10 * STEP, 299 * STEP)
    before = store.stats().select_cache
    assert before.entries == len(SERIES) and before.hits_total == 0
    again = store.select_concat(m, 20 * STEP, 299 * STEP)  # a window that slid forward
    after = store.stats().select_cache
    assert after.hits_total == len(SERIES) and after.misses_total == before.misses_total
    same(again, clipped(first, 20 * STEP, 299 * STEP))
    store.select_concat(m, 5 * STEP, 299 * STEP)  # starts earlier than what is kept: read again
    assert store.stats().select_cache.misses_total == before.misses_total + len(SERIES)


def test_a_cut_chunk_replaces_the_series_entry() -> None:
    store = Storage.open(data_dir=None)
    refs = store.series_refs(SERIES[:1])
    for k in range(130):
        store.append(refs, [k * STEP], [float(k)])
    m = MATCHERS[0]
    store.select_concat(m, 0, 10**9)
    for k in range(130, 250):  # cuts the second chunk
        store.append(refs, [k * STEP], [float(k)])
    _, ts, vals, _ = store.select_concat(m, 0, 10**9)
    assert ts.tolist() == [k * STEP for k in range(250)] and vals.tolist() == [float(k) for k in range(250)]
    assert store.stats().select_cache.hits_total == 0


def test_lru_evicts_beyond_the_bound_and_stale_tokens_are_refused() -> None:
    cache = SelectCache(max_bytes=2 * (16 * 10 + 300))  # two entries of 10 samples
    cache.ensure_capacity(3)

    def entry() -> CachedSeries:
        return CachedSeries(0, 10**9, np.arange(10, dtype=np.int64), np.zeros(10), oldest_end_ms=9)

    cache.put(cache.token(np.array([0, 1])), [entry(), entry()])
    assert [e is not None for e in cache.get([0], 0, 5)] == [True]  # 0 is now the most recent
    cache.put(cache.token(np.array([2])), [entry()])
    assert [e is not None for e in cache.get([0, 1, 2], 0, 5)] == [True, False, True]
    token = cache.token(np.array([1]))
    cache.invalidate([1])  # a chunk was queued for series 1 while its select read the database
    cache.put(token, [entry()])
    assert cache.get([1], 0, 5) == [None]
    token = cache.token(np.array([1]))
    cache.expire(10)  # retention ran meanwhile: drops entries with chunks ending before 10 ...
    cache.put(token, [entry()])  # ... and refuses what was read before it
    assert cache.get([0, 1, 2], 0, 5) == [None, None, None]
    assert cache.stats().size_bytes == 0
    cache.put(cache.token(np.array([1])), [entry()])
    cache.resize(0)
    assert cache.stats().entries == 0


def test_tsdb_status_reports_the_cache() -> None:
    store = Storage.open(data_dir=None, select_cache_bytes=1 << 20)
    refs = store.series_refs(SERIES)
    for k in range(130):
        store.append(refs, np.full(len(refs), k * STEP), np.full(len(refs), float(k)))
    store.select_concat(MATCHERS[1], 0, 10**9)
    store.select_concat(MATCHERS[1], 0, 10**9)
    cache = tsdb_status(store)["watchkeeper"]["selectCache"]
    assert cache["series"] == 2 and cache["hits"] == 2 and cache["misses"] == 2
    assert 0 < cache["bytes"] <= cache["maxBytes"] == 1 << 20
