"""The remote-write decoder and the ingest core, against a tiny independent encoder."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.collector.encode import field, label, sample, snappy, varint, write_request
from watchkeeper.collector.limits import Limits
from watchkeeper.collector.remote_write import (
    RemoteWriteIngester,
    decode_write_request,
    decompress_snappy,
    parse_labels,
)
from watchkeeper.errors import DecodeError, LimitExceeded
from watchkeeper.labels import Labels
from watchkeeper.selfmetrics import SelfMetrics
from watchkeeper.tsdb.reader import STALE_NAN_BITS
from watchkeeper.tsdb.storage import Storage

NOW = 1_700_000_000_000


def decoded_items(
    buf: bytes, cache: dict[bytes, int] | None = None
) -> list[tuple[list[tuple[str, str]], list[tuple[int, int]]]]:
    d = decode_write_request(buf, cache)
    out: list[tuple[list[tuple[str, str]], list[tuple[int, int]]]] = []
    for i, key in enumerate(d.keys):
        mask = d.sample_series == i
        pts = list(zip(d.timestamps_ms[mask].tolist(), d.values[mask].view(np.uint64).tolist(), strict=True))
        out.append((parse_labels(key), pts))
    return out


def bits(v: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", v))[0])


label_text = st.text(min_size=1, max_size=20)
labels_st = st.lists(st.tuples(label_text, label_text), min_size=1, max_size=6, unique_by=lambda p: p[0])
timestamp_st = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(NOW - 10**9, NOW + 10**9))
value_st = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [0.0, -0.0, math.inf, -math.inf, struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]]
    ),
)
samples_st = st.lists(st.tuples(timestamp_st, value_st), min_size=0, max_size=4)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(labels_st, samples_st), max_size=8), st.booleans())
def test_decode_round_trips_bit_exactly(
    items: list[tuple[list[tuple[str, str]], list[tuple[int, float]]]], warm: bool
) -> None:
    buf = write_request(items, sort=False)
    cache: dict[bytes, int] = {}
    if warm:  # the cached fast path must give the same answer as the field-by-field one
        cache = {k: i for i, k in enumerate(decode_write_request(buf).keys)}
    got = decoded_items(buf, cache)
    assert [g[0] for g in got] == [list(labels) for labels, _ in items]
    assert [g[1] for g in got] == [[(t, bits(v)) for t, v in pts] for _, pts in items]


def test_staleness_marker_survives_bit_exactly() -> None:
    stale = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]
    buf = write_request([([("__name__", "up")], [(NOW, stale)])])
    d = decode_write_request(buf)
    assert int(d.values.view(np.uint64)[0]) == STALE_NAN_BITS


def test_fast_path_hits_the_cache_and_slow_path_fills_it() -> None:
    items = [([("__name__", "m"), ("i", str(i))], [(NOW, float(i))]) for i in range(50)]
    buf = write_request(items)
    first = decode_write_request(buf, {})
    assert first.refs == [-1] * 50
    cache = {k: 100 + i for i, k in enumerate(first.keys)}
    again = decode_write_request(write_request([(lab, [(NOW + 15_000, 2.0)]) for lab, _ in items]), cache)
    assert again.refs == [100 + i for i in range(50)]
    assert again.timestamps_ms.tolist() == [NOW + 15_000] * 50


def test_non_canonical_encodings() -> None:
    lab = field(1, label("__name__", "m"))
    zero_value = field(2, b"\x10" + varint(NOW))  # proto3 omits a 0.0 value
    reversed_fields = field(2, b"\x10" + varint(NOW + 1) + b"\x09" + struct.pack("<d", 2.5))
    zero_ts = field(2, b"\x09" + struct.pack("<d", 3.0))  # and a 0 timestamp
    exemplar = field(3, b"\x0a\x00")
    body = field(1, lab + zero_value + exemplar + reversed_fields + zero_ts)
    metadata = field(3, b"\x08\x01" + field(2, b"m"))
    negative = field(1, lab + field(2, sample(-5, 1.0)))
    d = decode_write_request(metadata + body + negative)
    assert d.timestamps_ms.tolist() == [NOW, NOW + 1, 0, -5]
    assert d.values.tolist() == [0.0, 2.5, 3.0, 1.0]
    assert d.sample_series.tolist() == [0, 0, 0, 1]


def test_series_of_16_kib_and_more_take_the_general_walk() -> None:
    """A series length of three varint bytes is outside the fast walk's shape: same answer."""
    items = [([("__name__", "m"), ("big", "x" * size)], [(NOW, 1.0)]) for size in (10, 20_000, 10)]
    got = decoded_items(write_request(items, sort=False))
    assert [g[0] for g in got] == [labels for labels, _ in items]
    assert [g[1] for g in got] == [[(NOW, bits(1.0))]] * 3


def test_labels_split_by_samples_are_joined() -> None:
    body = field(1, field(1, label("__name__", "m")) + field(2, sample(NOW, 1.0)) + field(1, label("a", "b")))
    d = decode_write_request(body)
    assert parse_labels(d.keys[0]) == [("__name__", "m"), ("a", "b")]


def test_empty_label_value_is_kept_as_empty_by_the_decoder() -> None:
    body = field(1, field(1, field(1, b"job")) + field(1, label("__name__", "m")))
    assert parse_labels(decode_write_request(body).keys[0]) == [("job", ""), ("__name__", "m")]


@pytest.mark.parametrize(
    "buf",
    [
        b"\x0a\x05\x01",  # series longer than the message
        b"\x0a",  # no length
        b"\x0a\x80",  # unterminated length
        b"\x0b",  # group wire type
        b"\x00\x01",  # field number 0
        field(1, b"\x12\x01"),  # sample field runs past its series
        field(1, field(2, b"\x09\x00\x00")),  # truncated double
        field(1, field(2, b"\x10\x80")),  # truncated varint
        b"\x0a\x02\x0a\x00" + b"\xff" * 11,  # a varint of 11 bytes
    ],
)
def test_malformed_protobuf_raises_decode_error(buf: bytes) -> None:
    with pytest.raises(DecodeError, match="protobuf decode error"):
        decode_write_request(buf)


@pytest.mark.parametrize("key", [b"\x12\x00", b"\x0a\x04\x0a\x05ab", b"\x0a\x03\x0a\x01\xff"])
def test_malformed_labels_raise_decode_error(key: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_labels(key)


def test_snappy_limits_and_errors() -> None:
    raw = b"x" * 1000
    assert decompress_snappy(snappy(raw), 1000) == raw
    with pytest.raises(LimitExceeded) as info:
        decompress_snappy(snappy(raw), 999)
    assert info.value.status == 413
    with pytest.raises(DecodeError, match="snappy"):
        decompress_snappy(b"\x05abc", 100)
    with pytest.raises(DecodeError, match="snappy"):
        decompress_snappy(b"", 100)


# --- the ingest core over a real (in-memory) store --------------------------------------------


class CountingStore:
    """A real in-memory Storage that counts label sets it was asked to resolve."""

    def __init__(self) -> None:
        self.storage = Storage.open(data_dir=None)
        self.resolved = 0

    @property
    def num_series(self) -> int:
        return self.storage.num_series

    def series_refs(self, labels: Sequence[Labels]) -> npt.NDArray[np.int64]:
        self.resolved += len(labels)
        return self.storage.series_refs(labels)

    def append(self, refs: npt.NDArray[np.int64], ts: npt.NDArray[np.int64], values: npt.NDArray[np.float64]):  # type: ignore[no-untyped-def]
        return self.storage.append(refs, ts, values)


def request(n: int, t: int, **kw: bool) -> bytes:
    return snappy(
        write_request([([("__name__", "m"), ("i", str(i))], [(t, float(i))]) for i in range(n)], **kw)
    )


def test_ingester_resolves_each_series_once() -> None:
    store = CountingStore()
    metrics = SelfMetrics()
    ing = RemoteWriteIngester(store, Limits(), metrics)
    assert ing.ingest(request(10, NOW)).accepted == 10
    assert ing.ingest(request(10, NOW + 1000)).accepted == 10
    assert ing.ingest(request(10, NOW + 2000, sort=False)).accepted == 10
    assert store.resolved == 10
    assert store.num_series == 10
    assert metrics.ingest_samples._value.get() == 30
    ing.forget_series()
    assert ing.ingest(request(10, NOW + 3000)).accepted == 10
    assert store.resolved == 20
    assert store.num_series == 10


def test_ingester_reports_rejections_in_prometheus_words() -> None:
    ing = RemoteWriteIngester(CountingStore(), Limits())
    ing.ingest(request(4, NOW))
    report = ing.ingest(request(4, NOW - 1000))
    assert report.accepted == 0
    assert report.rejected == {"out_of_order": 4}
    assert report.message() == "out of order sample: 4 of 4 samples rejected (0 samples accepted)"


def test_ingester_active_series_limit() -> None:
    store = CountingStore()
    ing = RemoteWriteIngester(store, Limits(max_active_series=5))
    ing.ingest(request(5, NOW))
    assert ing.ingest(request(5, NOW + 1000)).accepted == 5  # existing series are fine
    with pytest.raises(LimitExceeded) as info:
        ing.ingest(request(6, NOW + 2000))
    assert (info.value.status, info.value.retry_after_seconds) == (429, 60)
    assert store.num_series == 5


def test_exclusive_waits_for_requests_and_drops_the_cache() -> None:
    import threading

    store = CountingStore()
    ing = RemoteWriteIngester(store, Limits())
    ing.ingest(request(3, NOW))
    started, release = threading.Event(), threading.Event()
    order: list[str] = []

    def slow_append(refs, ts, values):  # type: ignore[no-untyped-def]
        started.set()
        release.wait(5)
        order.append("append")
        return store.storage.append(refs, ts, values)

    store.append = slow_append  # type: ignore[method-assign]
    t = threading.Thread(target=ing.ingest, args=(request(3, NOW + 1000),))
    t.start()
    started.wait(5)
    r = threading.Thread(target=lambda: order.append(f"retention {ing.exclusive(lambda: 7)}"))
    r.start()
    release.set()
    t.join(5)
    r.join(5)
    assert order == ["append", "retention 7"]
    assert ing.ingest(request(3, NOW + 2000)).accepted == 3
    assert store.resolved == 6  # the cache was dropped: the series were resolved again
