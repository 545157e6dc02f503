from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watchkeeper.errors import StorageError
from watchkeeper.tsdb.chunks import (
    MAX_SAMPLES,
    decode_chunk,
    decode_concat,
    decode_many,
    encode_chunk,
    encode_many,
)
from watchkeeper.tsdb.reader import STALE_NAN_BITS

I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def bits_of(*patterns: int) -> npt.NDArray[np.float64]:
    return np.array(patterns, dtype=np.uint64).view(np.float64)


def assert_round_trip(ts: npt.ArrayLike, vals: npt.ArrayLike) -> bytes:
    ts_in = np.asarray(ts, dtype=np.int64)
    vals_in = np.asarray(vals, dtype=np.float64)
    blob = encode_chunk(ts_in, vals_in)
    ts_out, vals_out = decode_chunk(blob)
    assert ts_out.dtype == np.int64 and vals_out.dtype == np.float64
    np.testing.assert_array_equal(ts_out, ts_in)
    np.testing.assert_array_equal(vals_out.view(np.uint64), vals_in.view(np.uint64))
    return blob


# --- strategies ---

@st.composite
def timestamps(draw: st.DrawFn, size: int | None = None) -> npt.NDArray[np.int64]:
    values = draw(st.sets(st.integers(I64_MIN, I64_MAX), min_size=size or 0,
                          max_size=300 if size is None else size))
    return np.array(sorted(values), dtype=np.int64)


@st.composite
def regular_timestamps(draw: st.DrawFn, size: int | None = None) -> npt.NDArray[np.int64]:
    """Scrape-like: a fixed step with occasional jitter and gaps."""
    n = draw(st.integers(0, 300)) if size is None else size
    start = draw(st.integers(-(2**50), 2**50))
    step = draw(st.integers(1, 120_000))
    jitter = draw(st.lists(st.integers(0, step - 1), min_size=n, max_size=n))
    return start + np.arange(n, dtype=np.int64) * step + np.array(jitter, dtype=np.int64)


SPECIAL_BITS = [
    STALE_NAN_BITS, 0x7FF8000000000000, 0xFFF8000000000001, 0x7FF0000000000001,  # NaNs incl. payloads
    0x7FF0000000000000, 0xFFF0000000000000,  # +-Inf
    0x8000000000000000, 0, 1, 0x800FFFFFFFFFFFFF,  # -0.0, 0.0, subnormals
]


def floats_from_bits(bits: list[int]) -> npt.NDArray[np.float64]:
    return np.array(bits, dtype=np.uint64).view(np.float64)


def float_arrays(n: int) -> st.SearchStrategy[npt.NDArray[np.float64]]:
    any_bits = st.integers(0, 2**64 - 1)
    special = st.sampled_from(SPECIAL_BITS)
    decimal = st.builds(lambda k, d: float(np.float64(k) / 10.0**d), st.integers(-(10**12), 10**12),
                        st.integers(0, 6)).map(lambda f: int(np.array([f]).view(np.uint64)[0]))
    element = st.one_of(any_bits, special, decimal)
    return st.lists(element, min_size=n, max_size=n).map(floats_from_bits)


@st.composite
def chunks(draw: st.DrawFn, size: int | None = None) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    ts = draw(st.one_of(timestamps(size), regular_timestamps(size)))
    kinds = ["any", "few_distinct", "random_walk", "counter", "decimal", "decimal_with_specials"]
    kind = draw(st.sampled_from(kinds))
    n = ts.size
    if kind == "any":
        return ts, draw(float_arrays(n))
    if kind == "few_distinct":  # arbitrary bit patterns, but few of them: the zstd-compressed form
        palette = draw(float_arrays(draw(st.integers(1, 4))))
        return ts, palette[draw(st.lists(st.integers(0, palette.size - 1), min_size=n, max_size=n))]
    if kind == "random_walk":  # full-precision floats: XOR, possibly as zstd-compressed byte planes
        floats = st.floats(-1e3, 1e3, allow_nan=False)
        return ts, np.cumsum(np.array(draw(st.lists(floats, min_size=n, max_size=n)), dtype=np.float64))
    d = draw(st.integers(0, 6))
    steps = draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n))
    vals = np.cumsum(np.array(steps, dtype=np.int64)) / 10.0**(0 if kind == "counter" else d)
    if kind == "decimal_with_specials" and n:
        where = draw(st.lists(st.integers(0, n - 1), max_size=max(1, n // 5)))
        vals[where] = bits_of(*(draw(st.sampled_from(SPECIAL_BITS)) for _ in where))
    return ts, vals


# --- properties ---

@settings(max_examples=300, deadline=None)
@given(chunks())
def test_round_trip_is_bit_exact(chunk: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]) -> None:
    assert_round_trip(*chunk)


@settings(max_examples=100, deadline=None)
@given(st.lists(chunks(), max_size=8))
def test_decode_many_matches_decode_chunk(
    chunk_list: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]],
) -> None:
    blobs = [encode_chunk(ts, vals) for ts, vals in chunk_list]
    decoded = decode_many(blobs)
    assert len(decoded) == len(blobs)
    for (ts, vals), (ts_out, vals_out) in zip(chunk_list, decoded, strict=True):
        np.testing.assert_array_equal(ts_out, ts)
        np.testing.assert_array_equal(vals_out.view(np.uint64), vals.view(np.uint64))
    ts_all, vals_all, offsets = decode_concat(blobs)
    assert ts_all.size == vals_all.size == offsets[-1]
    assert offsets.tolist() == [0, *np.cumsum([ts.size for ts, _ in chunk_list]).tolist()]


@st.composite
def same_length_chunks(draw: st.DrawFn) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]:
    n = draw(st.integers(0, 130))
    return draw(st.lists(chunks(n), min_size=1, max_size=12))


@settings(max_examples=200, deadline=None)
@given(same_length_chunks())
def test_encode_many_is_encode_chunk_row_by_row(
    chunk_list: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]],
) -> None:
    ts = np.stack([c[0] for c in chunk_list])
    vals = np.stack([c[1] for c in chunk_list])
    assert encode_many(ts, vals) == [encode_chunk(t, v) for t, v in chunk_list]


def test_encode_many_on_the_workload_shape() -> None:
    """Thousands of rows (several blocks) of counters, rounded gauges and noisy floats."""
    rng = np.random.default_rng(7)
    rows, n = 1500, 40
    ts = 1_700_000_000_000 + np.arange(n) * 15_000 + rng.integers(0, 2_000, (rows, 1))
    vals = np.cumsum(rng.integers(0, 50, (rows, n)), axis=1).astype(np.float64)
    vals[300:600] = np.round(rng.normal(size=(300, n)), 2)
    vals[600:900] = np.cumsum(rng.normal(size=(300, n)), axis=1)
    vals[900:905, 7] = bits_of(STALE_NAN_BITS)[0]
    vals[905:1000] = rng.choice([0.1 * np.pi, 1 / 3], (95, n))
    blobs = encode_many(ts, vals)
    assert blobs == [encode_chunk(t, v) for t, v in zip(ts, vals, strict=True)]
    assert {b[0] & 15 for b in blobs} >= {1, 2 | 8, 3 | 8}  # decimal, zstd XOR, zstd planes


def test_encode_many_refuses_what_encode_chunk_refuses() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        encode_many(np.array([[1, 2, 3]] * 5 + [[1, 3, 2]]), np.zeros((6, 3)))
    with pytest.raises(ValueError, match="2-D"):
        encode_many(np.arange(3), np.zeros(3))


def with_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "little")


def decode_one_via_batch(blob: bytes) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    ts, vals, _ = decode_concat([blob])
    return ts, vals


# decode_chunk parses headers in plain Python, decode_concat with NumPy: both must refuse damage.
DECODERS = [pytest.param(decode_chunk, id="decode_chunk"), pytest.param(decode_one_via_batch, id="batch")]
Decoder = Callable[[bytes], tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]


@pytest.mark.parametrize("decode", DECODERS)
@settings(max_examples=150, deadline=None)
@given(chunk=chunks(), data=st.data())
def test_any_bit_flip_raises_storage_error(
    decode: Decoder, chunk: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]], data: st.DataObject,
) -> None:
    blob = bytearray(encode_chunk(*chunk))
    pos = data.draw(st.integers(0, len(blob) - 1))
    blob[pos] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(StorageError):
        decode(bytes(blob))


@settings(max_examples=300, deadline=None)
@given(chunk=chunks(), data=st.data())
def test_resealed_damage_is_refused_or_decoded_alike_by_both_paths(
    chunk: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]], data: st.DataObject,
) -> None:
    """With a fixed-up checksum, damage reaches the header checks: the two decoders must agree,
    and nothing but StorageError may escape (no IndexError, no giant allocation)."""
    body = bytearray(encode_chunk(*chunk)[:-4])
    for _ in range(data.draw(st.integers(1, 3))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    blob = with_crc(bytes(body))
    try:
        single = decode_chunk(blob)
    except StorageError:
        with pytest.raises(StorageError):
            decode_one_via_batch(blob)
        return
    batch = decode_one_via_batch(blob)
    assert single[0].size == single[1].size <= MAX_SAMPLES
    np.testing.assert_array_equal(single[0], batch[0])
    np.testing.assert_array_equal(single[1].view(np.uint64), batch[1].view(np.uint64))


# --- named edge cases ---

TS3 = [1_000, 16_000, 31_000]


@pytest.mark.parametrize(
    ("ts", "vals"),
    [
        pytest.param([], [], id="empty"),
        pytest.param([42], [3.5], id="one-sample"),
        pytest.param([-5], bits_of(STALE_NAN_BITS), id="one-stale-sample"),
        pytest.param([1, 2], [1.0, 2.0], id="two-samples"),
        pytest.param(TS3, bits_of(STALE_NAN_BITS, STALE_NAN_BITS, STALE_NAN_BITS), id="all-stale"),
        pytest.param(TS3, [1.0, 2.0, bits_of(STALE_NAN_BITS)[0]], id="counter-then-stale"),
        pytest.param(
            TS3, bits_of(0x7FF8000000000000, 0xFFF8DEADBEEF0001, 0x7FF0000000000001), id="nan-payloads"
        ),
        pytest.param(TS3, [np.inf, -np.inf, np.inf], id="infinities"),
        pytest.param(TS3, [-0.0, 0.0, -0.0], id="signed-zeros"),
        pytest.param(TS3, [5e-324, -5e-324, 2.2250738585072009e-308], id="subnormals"),
        pytest.param(TS3, [1.7976931348623157e308, -1.7976931348623157e308, 0.1], id="extremes"),
        pytest.param(TS3, [2.0**53, 2.0**53 + 2, -(2.0**53)], id="beyond-exact-integers"),
        pytest.param(TS3, [0.1, 0.2, 0.30000000000000004], id="not-quite-decimal"),
        pytest.param(TS3, [1e-6, 2e-6, 3.000001], id="six-decimals"),
        pytest.param([I64_MIN, 0, I64_MAX], [1.0, 2.0, 3.0], id="timestamps-span-int64"),
        pytest.param([I64_MIN, I64_MIN + 1, I64_MAX], [1.0, 2.0, 3.0], id="delta-of-delta-overflows"),
        pytest.param([-30_000, -15_000, 0], [7.0, 7.0, 7.0], id="negative-timestamps-constant"),
        pytest.param(np.arange(120) * 15_000 + 1_234, np.zeros(120), id="all-zero"),
        pytest.param(np.arange(120) * 15_000 + 1_234, np.arange(120) * 2.5, id="linear-values"),
        pytest.param(np.cumsum(np.arange(1, 121)), np.arange(120.0) ** 2, id="constant-second-differences"),
        pytest.param(I64_MAX - np.cumsum(np.arange(120, 0, -1))[::-1], 1 - np.arange(120.0) ** 2,
                     id="parabola-just-below-int64-max"),
    ],
)
def test_edge_cases_round_trip(ts: npt.ArrayLike, vals: npt.ArrayLike) -> None:
    assert_round_trip(ts, vals)


def test_regular_counter_is_small() -> None:
    rng = np.random.default_rng(3)
    ts = 1_700_000_000_000 + np.arange(120, dtype=np.int64) * 15_000 + 1_234
    vals = np.cumsum(rng.integers(15, 25, 120)).astype(np.float64)
    blob = assert_round_trip(ts, vals)
    # 120 deltas in 0..9 need 4 bits each: 60 bytes plus the header and checksum.
    assert len(blob) <= 90


def test_few_distinct_floats_are_zstd_compressed() -> None:
    rng = np.random.default_rng(5)
    vals = rng.choice([0.1 * np.pi, 0.2 * np.e, 1 / 3], 120)
    blob = assert_round_trip(np.arange(120) * 15_000, vals)
    assert blob[0] & 8  # the zstd flag
    assert len(blob) < 400  # the plain XOR form is ~830 bytes


def test_noisy_floats_use_compressed_byte_planes() -> None:
    vals = np.cumsum(np.random.default_rng(5).normal(size=120))
    blob = assert_round_trip(np.arange(120) * 15_000, vals)
    assert blob[0] & 15 == 8 | 3  # zstd + XOR byte planes
    assert len(blob) < 0.95 * 8 * 120


def test_stale_marker_is_kept_as_exception_not_xor() -> None:
    ts = np.arange(120, dtype=np.int64) * 15_000
    vals = np.arange(120, dtype=np.float64)
    vals[-1] = bits_of(STALE_NAN_BITS)[0]
    # The exception costs its position, its bits and a count: 13 bytes, not a switch to XOR.
    assert len(assert_round_trip(ts, vals)) <= len(encode_chunk(ts, np.arange(120.0))) + 13


@pytest.mark.parametrize(
    ("ts", "vals", "message"),
    [
        ([1, 1], [1.0, 2.0], "strictly increasing"),
        ([2, 1], [1.0, 2.0], "strictly increasing"),
        ([1, 2], [1.0], "equal length"),
        ([[1, 2]], [[1.0, 2.0]], "1-D"),
    ],
)
def test_bad_input_is_refused(ts: object, vals: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_chunk(ts, vals)  # type: ignore[arg-type]


def test_too_many_samples_is_refused() -> None:
    n = MAX_SAMPLES + 1
    with pytest.raises(ValueError, match="at most"):
        encode_chunk(np.arange(n), np.zeros(n))


@pytest.mark.parametrize(
    "blob",
    [
        pytest.param(b"", id="empty-bytes"),
        pytest.param(b"\x11", id="header-only"),
        pytest.param(with_crc(b"\x21"), id="future-version"),
        pytest.param(with_crc(b"\x10\x00"), id="empty-with-body"),
        pytest.param(with_crc(b"\x11\x01\x00\x00\x00\x08\x00\x00\x01"), id="valid-crc-missing-body"),
        pytest.param(with_crc(b"\x13" + bytes(7)), id="unknown-variant"),
        pytest.param(with_crc(b"\x1a" + (100).to_bytes(4, "little") + b"not zstd"), id="zstd-garbage"),
        pytest.param(with_crc(b"\x1a" + (2**32 - 1).to_bytes(4, "little") + b"x"), id="zstd-too-large"),
        pytest.param(with_crc(b"\x1a\x01"), id="zstd-truncated"),
    ],
)
@pytest.mark.parametrize("decode", DECODERS)
def test_malformed_blob_raises_storage_error(decode: Decoder, blob: bytes) -> None:
    with pytest.raises(StorageError):
        decode(blob)


@pytest.mark.parametrize("decode", DECODERS)
def test_truncated_blob_raises_storage_error(decode: Decoder) -> None:
    blob = encode_chunk(np.arange(120) * 15_000, np.arange(120) * 1.5)
    for cut in range(len(blob)):
        with pytest.raises(StorageError):
            decode(blob[:cut])


def test_one_bad_blob_fails_the_whole_batch() -> None:
    good = encode_chunk(np.arange(10), np.arange(10.0))
    with pytest.raises(StorageError):
        decode_many([good, good[:-1], good])


def test_decoders_accept_memoryview_and_bytearray() -> None:
    """psycopg returns bytea as memoryview; sqlite3 as bytes."""
    ts, vals = np.arange(120) * 15_000, np.arange(120) / 8
    few = np.resize([0.1 * np.pi, 1 / 3], 120)  # the zstd form, which is inflated first
    blobs = [encode_chunk(ts, vals), encode_chunk(ts, few)]
    for wrap in (memoryview, bytearray):
        wrapped = [wrap(b) for b in blobs]
        np.testing.assert_array_equal(decode_chunk(wrapped[1])[1], few)
        decoded = decode_many(wrapped)
        np.testing.assert_array_equal(decoded[0][1], vals)
        np.testing.assert_array_equal(decoded[1][1], few)


def test_decode_many_of_nothing() -> None:
    assert decode_many([]) == []
    ts, vals, offsets = decode_concat([])
    assert ts.size == 0 and vals.size == 0 and offsets.tolist() == [0]
