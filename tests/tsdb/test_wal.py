from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from watchkeeper.labels import from_dict
from watchkeeper.tsdb.reader import STALE_NAN
from watchkeeper.tsdb.wal import SamplesRecord, SeriesRecord, Wal, decode_labels, encode_labels, read_segment


def records(directory: Path) -> list[SeriesRecord | SamplesRecord]:
    wal = Wal.open(directory)
    try:
        return list(wal.replay())
    finally:
        wal.close()


def test_records_round_trip(tmp_path: Path) -> None:
    wal = Wal.open(tmp_path)
    labels = [from_dict({"__name__": "up", "job": "api"}), from_dict({"__name__": "ünï", "v": "a\0b"}), ()]
    wal.log_series([1, 2, 3], labels)
    vals = np.array([1.5, STALE_NAN, -np.inf])
    wal.sync(wal.log_samples(np.array([1, 2, 3]), np.array([10, 20, 30]), vals))
    wal.close()
    series, samples = records(tmp_path)
    assert isinstance(series, SeriesRecord) and series.ids == [1, 2, 3] and series.labels == labels
    assert isinstance(samples, SamplesRecord)
    assert samples.ids.tolist() == [1, 2, 3] and samples.timestamps_ms.tolist() == [10, 20, 30]
    assert samples.values.view(np.uint64).tolist() == vals.view(np.uint64).tolist()


@pytest.mark.parametrize(
    "labels", [(), (("a", "b"),), (("a", "x\0y"), ("b", "[")), (("[", "]"),), (("\1x", "y"),)]
)
def test_label_encoding(labels: tuple[tuple[str, str], ...]) -> None:
    assert decode_labels(encode_labels(labels)) == labels


def test_torn_tail_is_ignored_and_repaired(tmp_path: Path) -> None:
    wal = Wal.open(tmp_path)
    for k in range(3):
        wal.log_samples(np.array([7]), np.array([k]), np.array([float(k)]))
    wal.close()
    (segment,) = tmp_path.iterdir()
    data = segment.read_bytes()
    record_size = len(data) // 3
    for cut in (len(data) - 1, len(data) - record_size + 5, len(data) - record_size + 3):
        segment.write_bytes(data[:cut])  # kill -9 in the middle of the third record
        got = list(read_segment(segment))
        assert [r.timestamps_ms.tolist() for r in got if isinstance(r, SamplesRecord)] == [[0], [1]]
    # A flipped bit in the payload is caught by the CRC too.
    bad = bytearray(data)
    bad[-3] ^= 0x10
    segment.write_bytes(bytes(bad))
    assert len(list(read_segment(segment, repair=True))) == 2
    assert segment.stat().st_size == 2 * record_size  # truncated to the last good record
    got = records(tmp_path)
    assert len(got) == 2


def test_group_commit_shares_fsyncs_across_threads(tmp_path: Path) -> None:
    durations: list[float] = []
    wal = Wal.open(tmp_path, on_fsync=durations.append)
    n_threads, per_thread = 8, 40
    barrier = threading.Barrier(n_threads)

    def writer(i: int) -> None:
        barrier.wait()
        for k in range(per_thread):
            pos = wal.log_samples(np.array([i]), np.array([k]), np.array([1.0]))
            wal.sync(pos)
            assert wal._durable >= pos  # returned only once its record was fsynced

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wal.close()
    total = n_threads * per_thread
    assert len(durations) == wal.fsyncs_total
    assert 0 < wal.fsyncs_total < total  # several appends shared each fsync
    assert all(d >= 0 for d in durations)
    got = records(tmp_path)
    assert sum(len(r.ids) for r in got if isinstance(r, SamplesRecord)) == total


def test_rotate_and_remove_before(tmp_path: Path) -> None:
    wal = Wal.open(tmp_path, fsync=False)
    wal.log_samples(np.array([1]), np.array([1]), np.array([1.0]))
    seg = wal.rotate()
    wal.log_samples(np.array([1]), np.array([2]), np.array([2.0]))
    assert wal.bytes_since_checkpoint > 0
    wal.remove_before(seg)
    assert wal.segments() == [seg]
    wal.close()
    got = records(tmp_path)
    assert [r.timestamps_ms.tolist() for r in got if isinstance(r, SamplesRecord)] == [[2]]
