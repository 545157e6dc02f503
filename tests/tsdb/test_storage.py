from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from watchkeeper.errors import StorageError
from watchkeeper.labels import Matcher, from_dict
from watchkeeper.tsdb.reader import STALE_NAN, is_stale
from watchkeeper.tsdb.storage import Storage

M = Matcher.parse_op
HOUR = 3600_000
Opener = Callable[..., Storage]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens (and reopens) a store on one backend; closes whatever is left open."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    opened: list[Storage] = []

    def open_store(**kw: object) -> Storage:
        store = Storage.open(data_dir=tmp_path / "data", database_url=url, **kw)  # type: ignore[arg-type]
        opened.append(store)
        return store

    open_store.url = url  # type: ignore[attr-defined]
    yield open_store
    for s in opened:
        s.close()


def series(n: int, name: str = "m") -> list[tuple[tuple[str, str], ...]]:
    return [from_dict({"__name__": name, "i": str(i), "par": str(i % 2)}) for i in range(n)]


def fill(
    store: Storage, n_series: int, steps: int, *, step_ms: int = 15_000, start_ms: int = 0
) -> np.ndarray:
    refs = store.series_refs(series(n_series))
    for k in range(steps):
        res = store.append(refs, np.full(n_series, start_ms + k * step_ms), np.arange(n_series) + k * 0.5)
        assert res.accepted == n_series
    return refs


def expected_values(i: int, steps: int) -> list[float]:
    return [i + k * 0.5 for k in range(steps)]


def check_all(store: Storage, n_series: int, steps: int, step_ms: int = 15_000) -> None:
    got = store.select([M("=", "__name__", "m")], 0, 10**12)
    assert len(got) == n_series
    assert [s.labels for s in got] == sorted(series(n_series))
    for s in got:
        i = int(dict(s.labels)["i"])
        assert s.timestamps_ms.tolist() == [k * step_ms for k in range(steps)]
        assert s.values.tolist() == expected_values(i, steps)


def test_round_trip_head_persisted_and_reopened(opener: Opener) -> None:
    store = opener()
    fill(store, 50, 300)  # 2 cut chunks + 60 head samples per series
    check_all(store, 50, 300)
    st = store.stats()
    assert st.num_series == 50 and st.head_samples == 50 * 60 and st.samples_appended_total == 50 * 300
    store.close()
    store = opener()  # open chunks come back from the WAL checkpoint
    check_all(store, 50, 300)
    assert store.stats().head_samples == 50 * 60
    store.flush_head()
    st = store.stats()
    assert st.head_samples == 0 and st.pending_chunks == 0 and st.bytes_on_disk > 0
    check_all(store, 50, 300)
    store.close()
    store = opener()
    check_all(store, 50, 300)
    # Samples at or before the persisted end are out of order after a restart, newer ones are fine.
    refs = store.series_refs(series(1))
    assert store.append(refs, [299 * 15_000], [1.0]).rejected["duplicate"] == 1
    assert store.append(refs, [10], [1.0]).rejected["out_of_order"] == 1
    assert store.append(refs, [300 * 15_000], [1.0]).accepted == 1


def test_select_ranges_are_inclusive_and_filtered(opener: Opener) -> None:
    store = opener()
    fill(store, 4, 250, step_ms=1000)
    got = store.select([M("=", "i", "1")], 100_000, 130_000)  # spans a chunk boundary (120 s)
    assert got[0].timestamps_ms.tolist() == list(range(100_000, 130_001, 1000))
    assert store.select([M("=", "i", "1")], 249_001, 10**9) == []
    assert len(store.select([M("=", "par", "1")], 0, 0)) == 2
    assert store.series([M("=", "par", "1")], 0, 10**9) == sorted(series(4)[1::2])
    assert store.series([M("=", "par", "1")], 300_000, 10**9) == []
    assert store.label_names([], 0, 10**9) == ["__name__", "i", "par"]
    assert store.label_values("i", [M("!=", "par", "0")], 0, 10**9) == ["1", "3"]


def test_staleness_markers_and_special_values_survive(opener: Opener) -> None:
    store = opener()
    refs = store.series_refs(series(1))
    vals = [1.0, STALE_NAN, np.inf, -np.inf, np.nan, -0.0]
    for k, v in enumerate(vals):
        store.append(refs, [k], [v])
    store.flush_head()
    store.close()
    store = opener()
    (got,) = store.select([], 0, 100)
    assert got.values.view(np.uint64).tolist() == np.array(vals).view(np.uint64).tolist()
    assert is_stale(got.values).tolist() == [False, True, False, False, False, False]


def test_out_of_order_window_merges_on_read(opener: Opener) -> None:
    store = opener(out_of_order_window_ms=HOUR)
    refs = store.series_refs(series(1))
    for k in range(190):  # a cut chunk (0..119 s), a frozen segment (120..159 s), a raw tail (160..189 s)
        store.append(refs, [k * 1000], [float(k)])
    res = store.append(np.repeat(refs, 4), [50_500, 150_500, 170_000, 189_500], [0.5, 1.5, 9.0, 2.5])
    assert res.accepted == 3 and res.rejected["duplicate"] == 1  # 170 s is in the raw tail
    want_ts = sorted([k * 1000 for k in range(190)] + [50_500, 150_500, 189_500])
    for _ in range(2):
        (got,) = store.select([], 0, 10**9)
        assert got.timestamps_ms.tolist() == want_ts
        assert got.values[want_ts.index(50_500)] == 0.5 and got.values[want_ts.index(189_500)] == 2.5
        assert got.values[want_ts.index(170_000)] == 170.0
        store.flush_head()


def test_rejections_are_counted(opener: Opener) -> None:
    store = opener(retention_ms=HOUR)
    refs = store.series_refs(series(2))
    store.append(refs, [2 * HOUR, 2 * HOUR], [1.0, 1.0])
    res = store.append(
        np.concatenate([refs, refs, refs, [12345]]),
        [HOUR - 1, 2 * HOUR, 2 * HOUR + 1, 2 * HOUR, 2 * HOUR - 1, 2 * HOUR - 2, 3 * HOUR],
        [1.0, 2.0, 1.0, 1.0, 0.0, 0.0, 0.0],
    )
    assert res.accepted == 2
    assert res.rejected == {"out_of_order": 2, "duplicate": 1, "too_old": 1, "unknown_series": 1}
    st = store.stats()
    assert (
        st.rejected_out_of_order_total,
        st.rejected_duplicate_total,
        st.rejected_too_old_total,
        st.rejected_unknown_series_total,
    ) == (2, 1, 1, 1)


def test_retention_deletes_chunks_and_empty_series(opener: Opener) -> None:
    store = opener(retention_ms=10 * HOUR)
    fill(store, 3, 240, step_ms=60_000)  # 4 h of data, 2 chunks per series
    refs = store.series_refs([from_dict({"__name__": "recent"})])
    store.append(refs, [20 * HOUR], [1.0])
    store.flush_head()
    assert store.num_series == 4
    deleted = store.apply_retention(now_ms=12 * HOUR)  # cutoff 2 h: the first chunk of each series
    assert deleted == 3
    got = store.select([M("=", "__name__", "m")], 0, 10**12)
    assert [s.timestamps_ms[0] for s in got] == [120 * 60_000] * 3
    assert store.apply_retention(now_ms=20 * HOUR) == 3
    assert store.num_series == 1
    assert store.select([M("=", "__name__", "m")], 0, 10**12) == []
    assert store.label_values("__name__", [], 0, 10**12) == ["recent"]
    store.close()
    store = opener(retention_ms=10 * HOUR)
    assert store.num_series == 1


def test_concurrent_appenders_group_commit(opener: Opener) -> None:
    fsyncs: list[float] = []
    store = opener(on_wal_fsync=fsyncs.append)
    n_threads, steps = 6, 30
    refs = [store.series_refs(series(10, name=f"t{i}")) for i in range(n_threads)]

    def run(i: int) -> None:
        for k in range(steps):
            assert store.append(refs[i], np.full(10, k), np.full(10, 1.0)).accepted == 10

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.stats().samples_appended_total == n_threads * steps * 10
    assert 0 < len(fsyncs) <= n_threads * steps
    store.close()
    store = opener()
    assert sum(len(s.values) for s in store.select([], 0, 10**9)) == n_threads * steps * 10


def test_wal_checkpoint_bounds_the_log(opener: Opener, tmp_path: Path) -> None:
    store = opener()
    store.checkpoint_bytes = 20_000
    first_segment = store._wal.segment if store._wal is not None else 0
    fill(store, 20, 400)  # ~200 kB of WAL
    deadline = time.monotonic() + 10
    while store._wal is not None and len(store._wal.segments()) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store._wal is not None and len(store._wal.segments()) <= 2
    assert store._wal.segment >= first_segment + 3  # checkpointed several times
    check_all(store, 20, 400)
    store.close()
    check_all(opener(), 20, 400)


def test_select_while_appending_sees_consistent_series(opener: Opener) -> None:
    store = opener()
    refs = store.series_refs(series(50))
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for k in range(400):  # several cuts and commits while the reader runs
                store.append(refs, np.full(50, k), np.full(50, float(k)))
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    t = threading.Thread(target=writer)
    t.start()
    reads = 0
    while not stop.is_set() or reads == 0:
        for s in store.select([M("=", "par", "0")], 0, 10**9):
            n = len(s.timestamps_ms)
            # No gaps, no duplicates, whatever moved from head to queue to database meanwhile.
            assert s.timestamps_ms.tolist() == list(range(n))
            assert s.values.tolist() == [float(k) for k in range(n)]
        reads += 1
    t.join()
    assert not errors
    assert all(len(s.values) == 400 for s in store.select([], 0, 10**9))


CRASH_SCRIPT = """
import os, signal, sys, time
import numpy as np
from pathlib import Path
from watchkeeper.labels import from_dict
from watchkeeper.tsdb.storage import Storage
store = Storage.open(data_dir=Path(sys.argv[1]), database_url=sys.argv[2] or None)
store.checkpoint_bytes = 20_000  # checkpoints (and deleted segments) before the crash
refs = store.series_refs([from_dict({"__name__": "m", "i": str(i)}) for i in range(30)])
for k in range(250):
    store.append(refs, np.full(30, k * 1000), np.full(30, float(k)))
deadline = time.monotonic() + 30
while store._wal.segments()[0] == 1 and time.monotonic() < deadline:  # the persister checkpoints
    time.sleep(0.01)
print("acked", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow
def test_kill_9_loses_nothing_acknowledged_and_survives_a_torn_tail(opener: Opener, tmp_path: Path) -> None:
    url = opener.url  # type: ignore[attr-defined]
    cmd = [sys.executable, "-c", textwrap.dedent(CRASH_SCRIPT), str(tmp_path / "data"), url or ""]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL and "acked" in proc.stdout, proc.stderr
    assert "00000001" not in {p.name for p in (tmp_path / "data" / "wal").iterdir()}  # checkpointed
    segs = sorted((tmp_path / "data" / "wal").iterdir())
    with segs[-1].open("ab") as f:  # a record torn by the crash: header says 1000 bytes, 3 follow
        f.write((1000).to_bytes(4, "little") + b"\0\0\0\0\x02abc")
    store = opener()
    got = store.select([], 0, 10**9)
    assert len(got) == 30
    assert all(s.values.tolist() == [float(k) for k in range(250)] for s in got)
    refs = store.series_refs([from_dict({"__name__": "m", "i": "0"})])
    assert store.append(refs, [250_000], [1.0]).accepted == 1
    store.close()
    assert len(opener().select([M("=", "i", "0")], 250_000, 250_000)) == 1


OOO_CRASH_SCRIPT = """
import os, signal, sys, time
import numpy as np
from pathlib import Path
from watchkeeper.labels import from_dict
from watchkeeper.tsdb.storage import Storage
store = Storage.open(data_dir=Path(sys.argv[1]), database_url=sys.argv[2] or None,
                     out_of_order_window_ms=10 * 60_000)
a, b, c = store.series_refs([from_dict({"__name__": "m", "s": s}) for s in "abc"])
for ref, steps in ((a, 90), (b, 90), (c, 125)):  # c: a chunk of 120 cut and persisted
    for k in range(steps):
        assert store.append([ref], [k * 15_000], [float(k)]).accepted == 1
late = {  # out of order, within the window; value -1
    a: 89 * 15_000 - 300_000 + 7,  # older than the open chunk's raw tail: a chunk of its own
    b: 89 * 15_000 - 20_000 + 3,  # inside the raw tail
    c: 124 * 15_000 - 100_000 + 5,  # older than the open chunk: a chunk of its own
}
for ref, t in late.items():
    assert store.append([ref], [t], [-1.0]).accepted == 1
deadline = time.monotonic() + 30
while store.stats().pending_chunks and time.monotonic() < deadline:  # the persister commits
    time.sleep(0.01)
print("acked", store.stats().pending_chunks, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow
@pytest.mark.parametrize("window_ms", [10 * 60_000, 0])
def test_kill_9_keeps_out_of_order_samples(opener: Opener, tmp_path: Path, window_ms: int) -> None:
    """Accepted out-of-order samples come back from the WAL after kill -9, with every other sample:
    also when an out-of-order chunk was persisted before older samples of the open chunk, and
    whatever the window is after the restart."""
    url = opener.url  # type: ignore[attr-defined]
    cmd = [sys.executable, "-c", textwrap.dedent(OOO_CRASH_SCRIPT), str(tmp_path / "data"), url or ""]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL and "acked 0" in proc.stdout, proc.stderr
    late = {"a": 89 * 15_000 - 300_000 + 7, "b": 89 * 15_000 - 20_000 + 3, "c": 124 * 15_000 - 100_000 + 5}
    steps = {"a": 90, "b": 90, "c": 125}
    for _ in range(2):  # after the crash, then after a clean restart
        store = opener(out_of_order_window_ms=window_ms)
        got = {dict(s.labels)["s"]: s for s in store.select([], 0, 10**9)}
        assert sorted(got) == ["a", "b", "c"]
        for name, s in got.items():
            expected = sorted([(k * 15_000, float(k)) for k in range(steps[name])] + [(late[name], -1.0)])
            assert list(zip(s.timestamps_ms.tolist(), s.values.tolist(), strict=True)) == expected, name
        # still out of order after the restart: older than the window, or without one
        (ref,) = store.series_refs([from_dict({"__name__": "m", "s": "a"})])
        res = store.append([ref], [10_001], [5.0])
        assert res.accepted == 0 and res.rejected["too_old" if window_ms else "out_of_order"] == 1
        store.close()


def test_in_memory_mode(tmp_path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        store = Storage.open(data_dir=None)
        fill(store, 10, 300)
        check_all(store, 10, 300)
        store.flush_head()
        check_all(store, 10, 300)
        st = store.stats()
        assert st.chunks_written_total == 10 * 3 and st.wal_fsyncs_total == 0 and st.head_samples == 0
        assert 0 < st.bytes_per_sample < 2
        assert store.apply_retention(now_ms=store.retention_ms + 10**9) == 30
        assert store.num_series == 0
        store.close()
        assert list(tmp_path.iterdir()) == []
        with pytest.raises(StorageError):
            store.append([1], [1], [1.0])
    finally:
        os.chdir(cwd)


def test_database_without_data_dir_is_refused() -> None:
    with pytest.raises(StorageError):
        Storage.open(data_dir=None, database_url="sqlite://")


@pytest.mark.parametrize("mode", ["memory", "sqlite"])
def test_select_matches_a_model_on_random_windows(mode: str, tmp_path: Path) -> None:
    """select and select_concat against a dict model: chunks in the database, queued, frozen
    segments and raw tails, out-of-order chunks overlapping others, staleness markers, and windows
    cutting through all of them; bit-exact values, labels order, empty series left out."""
    rng = np.random.default_rng(5)
    store = Storage.open(data_dir=None if mode == "memory" else tmp_path / "data", wal_fsync=False,
                         out_of_order_window_ms=HOUR)
    try:
        labels = [from_dict({"__name__": "m", "i": str(i), "z": str(-i)}) for i in range(40)]
        refs = store.series_refs(labels[::-1])[::-1]  # ids not in labels order
        model: list[dict[int, float]] = [{} for _ in labels]
        stale = float(STALE_NAN)
        for k in range(500):
            live = np.flatnonzero(rng.random(len(labels)) < 0.7)
            t = k * 10_000 + rng.integers(0, 5_000, len(live))
            v = rng.normal(size=len(live)).round(int(rng.integers(0, 4)))
            v[rng.random(len(live)) < 0.05] = stale
            res = store.append(refs[live], t, v)
            assert res.accepted == len(live)
            for i, ts, val in zip(live.tolist(), t.tolist(), v.tolist(), strict=True):
                model[i][ts] = val
            if k % 97 == 50:  # out of order: a fresh timestamp a few minutes back
                i = int(rng.integers(0, len(labels)))
                ts = k * 10_000 - 200_003
                if ts not in model[i] and max(model[i], default=0) - ts < HOUR:
                    res = store.append(refs[i : i + 1], [ts], [7.25])
                    if res.accepted:
                        model[i][ts] = 7.25
        for a, b in [(0, 10**9), (123_456, 2_345_678), (4_000_000, 4_000_000), (4_900_000, 5_100_000),
                     *[tuple(sorted(rng.integers(0, 5_100_000, 2).tolist())) for _ in range(6)]]:
            got = store.select([M("=", "__name__", "m")], a, b)
            want = []
            for lab, m in sorted(zip(labels, model, strict=True)):
                ts_w = sorted(t for t in m if a <= t <= b)
                if ts_w:
                    want.append((lab, ts_w, np.array([m[t] for t in ts_w]).view(np.uint64).tolist()))
            assert [(s.labels, s.timestamps_ms.tolist(), s.values.view(np.uint64).tolist())
                    for s in got] == want
            labs, ts_c, vals_c, offs = store.select_concat([M("=", "__name__", "m")], a, b)
            assert labs == [w[0] for w in want]
            assert offs.tolist() == [0, *np.cumsum([len(w[1]) for w in want]).tolist()]
            assert ts_c.tolist() == [t for w in want for t in w[1]]
            assert vals_c.view(np.uint64).tolist() == [x for w in want for x in w[2]]
    finally:
        store.close()


def test_select_concat_helper_falls_back_to_select() -> None:
    from watchkeeper.tsdb.reader import SeriesData, select_concat

    store = Storage.open(data_dir=None)
    fill(store, 5, 30)

    class Plain:  # a reader with only `select`, as test stores are
        def select(self, matchers: object, a: int, b: int) -> list[SeriesData]:
            return store.select(matchers, a, b)  # type: ignore[arg-type]

    for a, b in [(0, 10**9), (100_000, 200_000), (10**8, 10**9)]:
        fast, slow = select_concat(store, [], a, b), select_concat(Plain(), [], a, b)  # type: ignore[arg-type]
        assert fast[0] == slow[0] and fast[3].tolist() == slow[3].tolist()
        assert fast[1].tolist() == slow[1].tolist() and fast[2].tolist() == slow[2].tolist()


def test_malloc_tuning_is_once_and_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    import watchkeeper.tsdb.storage as storage_mod

    monkeypatch.setattr(storage_mod, "_malloc_tuned", False)
    Storage.open(data_dir=None).close()
    assert storage_mod._malloc_tuned is False  # a library use leaves the process' malloc alone
    Storage.open(data_dir=None, malloc_tuning=True).close()
    applied = storage_mod._malloc_tuned
    if sys.platform == "linux" and os.confstr("CS_GNU_LIBC_VERSION"):
        assert applied and storage_mod.tune_malloc()


def test_malloc_tuning_setting_yields_to_glibc_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from watchkeeper.config import Settings

    assert Settings.load(config_file=None).malloc_tuning_applies
    monkeypatch.setenv("WATCHKEEPER_MALLOC_TUNING", "false")
    assert not Settings.load(config_file=None).malloc_tuning_applies
    monkeypatch.delenv("WATCHKEEPER_MALLOC_TUNING")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")  # the operator's own setting wins
    assert not Settings.load(config_file=None).malloc_tuning_applies
