"""The chunk codec: a run of samples of one series <-> a compact blob. Pure, no I/O.

```python
blob = encode_chunk(timestamps_ms, values)          # int64 strictly increasing, float64 anything
ts, vals = decode_chunk(blob)                       # bit-exact round trip
ts_all, vals_all, offsets = decode_concat(blobs)    # many chunks at once: the fast path for queries
pairs = decode_many(blobs)                          # the same, as one (ts, vals) view per chunk
```

Decode many chunks with one call: `decode_concat` costs a fixed number of NumPy operations per
group of chunks sharing (sample count, order, bit width), so per-call overhead (~1 ms) is spread
over the batch; it reaches tens of millions of samples/s from about a thousand 120-sample
chunks on (``bench/chunk_compression.py``). `decode_chunk` parses in plain Python instead and
suits a one-off chunk (~50 us).

Timestamps and values are each a stream of 64-bit integers stored as the differences of
order 0, 1 or 2 (whichever packs smallest: delta-of-delta wins for regular scrapes), minus their
minimum ("frame of reference"), bit-packed at the smallest width that holds them all.
Values take one of two forms, chosen per chunk by size:

* **decimal** — every value is ``k / 10**d`` bit-exactly for one ``d`` in 0..6 (counters,
  gauges of counts, values rounded to a few decimals); the integers ``k`` form the stream. Values
  that do not fit (a staleness marker, a NaN) are stored raw as *exceptions* with their position.
* **xor** — Gorilla-style: each value's bits XOR the previous value's, with the trailing zero bits
  common to the whole chunk shifted out. Takes any float64 bit pattern.

A general compressor pays only where the bit-packing leaves structure behind: an XOR chunk
whose body zstd shrinks is stored compressed (flag 8 on the variant; floats with few distinct
values shrink ~3x). For noisy full-precision floats the XORs are also tried as 8 byte planes
(variant 3, always compressed), which zstd shrinks ~10% below the bit-packed form. On the
benchmark workload zstd paid for 232 of 36,344 decimal chunks and saved 0.07%, so decimal
chunks do not try it.

Layout (version 1, little-endian)::

    u8      version << 4 | variant (0 empty, 1 decimal, 2 xor, 3 xor planes; + 8: zstd)
    u8 x4   byte lengths (0..8) of the 8 header integers, two per byte, low nibble first
    u8      timestamp stream: order * 65 + bit width
    u8      value stream: order * 65 + bit width
    u8      value parameter: d (decimal) or shift (xor)
    ...     header integers: n, ts first, ts first delta, ts base,
            value first, value first delta, value base, exception count
    ...     timestamp bits, then value bits (each padded to a whole byte)
    ...     exceptions: u32 positions, then u64 raw values
    u32     CRC-32 of everything before it

A zstd chunk is the header byte, the u32 length of the plain body, the zstd frame of the plain
body (everything between header byte and CRC), and its own CRC. An empty chunk is the header
byte and the CRC. Decoding checks the CRC, the version, every header field's range and that
every length adds up, and raises `StorageError` otherwise. CRC-32 catches every burst of up to
32 flipped bits and other damage with probability 1 - 2**-32; a blob with a forged CRC is still
only ever decoded within bounds (no out-of-range read, at most `MAX_SAMPLES` per chunk).
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Sequence
from typing import Any

import cramjam
import numpy as np
import numpy.typing as npt

from watchkeeper.errors import StorageError

__all__ = [
    "MAX_SAMPLES", "Blob", "decode_chunk", "decode_concat", "decode_many", "encode_chunk", "encode_many",
]

#: The most samples one chunk may hold (head chunks hold ~120); bounds what a blob can allocate.
MAX_SAMPLES = 1 << 20

_VERSION = 1
_EMPTY, _DECIMAL, _XOR, _XOR_PLANES = 0, 1, 2, 3
_ZSTD = 8  # flag on the variant: the bytes between header byte and CRC are zstd-compressed
_ZSTD_MIN_BYTES = 64  # smaller blobs never shrink: a zstd frame costs ~10 bytes
_ZSTD_LEVEL = 3
_FIXED = 8  # header byte, 4 length bytes, 3 descriptor bytes
_MAX_RAW = _FIXED + 64 + MAX_SAMPLES * 28  # largest plain blob: 8 + 8 bytes a sample, 12 an exception
_CRC_RESIDUE = 0x2144DF1C  # crc32(data + crc32(data) as u32 little-endian) for any data
_MAX_DECIMALS = 6
_POW10 = 10.0 ** np.arange(_MAX_DECIMALS + 1)
_U64 = np.uint64
_ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_TWO63 = 1 << 63
_TWO64 = 1 << 64
_PAD = 128  # zero bytes after the joined blobs so that fixed-size reads never leave the buffer

U64Array = npt.NDArray[np.uint64]
I64Array = npt.NDArray[np.int64]
F64Array = npt.NDArray[np.float64]
_Int = Any  # an int, or an integer array of one value per chunk
#: What decoders accept: DB drivers hand back bytes (sqlite3) or memoryview (psycopg bytea);
#: a memoryview must be of plain bytes (format "B"), as drivers give.
Blob = bytes | bytearray | memoryview


# --- encoding -----------------------------------------------------------------------------------


def _wrap(v: int) -> int:
    """A Python int reduced to the int64 range, modulo 2**64 (as NumPy arithmetic wraps)."""
    return ((v + _TWO63) % _TWO64) - _TWO63


def _zigzag(v: int) -> int:
    return ((v << 1) ^ (v >> 63)) & (_TWO64 - 1)


def _nbytes(u: int) -> int:
    return (u.bit_length() + 7) // 8


class _Stream:
    """One integer stream: differences of `order`, minus `base`, `width` bits each (packed lazily)."""

    __slots__ = ("base", "cost", "initials", "offsets", "order", "planes", "width")

    def __init__(
        self, order: int, width: int, initials: tuple[int, int], base: int, offsets: U64Array
    ) -> None:
        self.order = order
        self.width = width
        self.initials = initials  # zigzag-encoded first value and first delta (0 when unused)
        self.base = base  # zigzag-encoded frame of reference
        self.offsets = offsets
        self.planes = False  # True: 64-bit values as 8 byte planes (for zstd), not bit-packed
        packed = (offsets.size * width + 7) // 8
        self.cost = packed + _nbytes(initials[0]) + _nbytes(initials[1]) + _nbytes(base)

    def packed(self) -> bytes:
        """The offsets bit-packed at `width` bits each, least significant bit first."""
        if self.planes:
            return self.offsets.astype("<u8").view(np.uint8).reshape(-1, 8).T.tobytes()
        if self.width == 0 or self.offsets.size == 0:
            return b""
        bits = (self.offsets[:, None] >> np.arange(self.width, dtype=_U64)) & _U64(1)
        return np.packbits(bits.astype(np.uint8).ravel(), bitorder="little").tobytes()


def _int_stream(x: I64Array) -> _Stream:
    """The smallest of the order-0, 1 and 2 difference encodings of `x` (arithmetic modulo 2**64)."""
    n = x.size
    best: _Stream | None = None
    first = _zigzag(int(x[0])) if n else 0
    first_delta = _zigzag(_wrap(int(x[1]) - int(x[0]))) if n > 1 else 0
    residuals = x
    for order in range(min(2, n) + 1):
        if order:
            residuals = np.subtract(residuals[1:], residuals[:-1])  # wraps modulo 2**64
        if residuals.size:
            low = residuals.min()
            offsets = (residuals - low).view(_U64)
            base, width = int(low), int(offsets.max()).bit_length()
        else:
            base, offsets, width = 0, residuals.view(_U64), 0
        initials = (first if order >= 1 else 0, first_delta if order == 2 else 0)
        cand = _Stream(order, width, initials, _zigzag(base), offsets)
        if best is None or cand.cost < best.cost:
            best = cand
    assert best is not None  # range() above is never empty
    return best


def _decimal_form(values: F64Array) -> tuple[int, I64Array, npt.NDArray[np.intp]] | None:
    """(d, integers, exception positions) for the cheapest decimal scaling of `values`, or None.

    A value is representable at `d` when ``float(k) / 10**d`` reproduces its bits exactly, which
    is precisely what the decoder computes. Others become exceptions (at most a quarter)."""
    n = values.size
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = np.rint(values[None, :] * _POW10[:, None])
        fits = np.abs(scaled) <= 2.0**53  # False for NaN and Inf too
        ints = np.where(fits, scaled, 0.0).astype(np.int64)
        exact = fits & ((ints / _POW10[:, None]).view(_U64) == values.view(_U64)[None, :])
    misses = n - exact.sum(axis=1)
    limit = n // 4
    best: tuple[int, int] | None = None  # (cost estimate, d)
    for d in range(_MAX_DECIMALS + 1):
        if misses[d] > limit:
            continue
        if misses[d] == 0:
            if best is None:
                best = (0, d)
            break  # a larger d only scales the integers up
        if best is None:
            best = (int(misses[d]), d)
    if best is None:
        return None
    d = best[1]
    row, ok = ints[d], exact[d]
    exceptions = np.flatnonzero(~ok)
    if exceptions.size:
        # The integer at an exception is never read back: continue the line through the good
        # neighbours so that it costs no extra bits in the difference streams.
        good = np.flatnonzero(ok)
        where = np.arange(n)
        fill = np.interp(where, good, row[good].astype(np.float64))
        if good.size > 1:
            ends = ((where > good[-1], good[-1], good[-2]), (where < good[0], good[0], good[1]))
            for edge, ref, other in ends:
                slope = (float(row[ref]) - float(row[other])) / float(ref - other)
                fill[edge] += slope * (where[edge] - ref)
        fill = np.rint(np.clip(fill, -(2.0**53), 2.0**53)).astype(np.int64)
        row = np.where(ok, row, fill)
    return d, row, exceptions


def _assemble(
    variant: int, n: int, ts: _Stream, vs: _Stream, param: int, exceptions: bytes, n_exc: int
) -> bytes:
    fields = (n, ts.initials[0], ts.initials[1], ts.base, vs.initials[0], vs.initials[1], vs.base, n_exc)
    lengths = [_nbytes(f) for f in fields]
    out = bytearray()
    out.append(_VERSION << 4 | variant)
    out.extend(lengths[i] | lengths[i + 1] << 4 for i in range(0, 8, 2))
    out.append(ts.order * 65 + ts.width)
    out.append(vs.order * 65 + vs.width)
    out.append(param)
    for f, length in zip(fields, lengths, strict=True):
        out += f.to_bytes(length, "little")
    out += ts.packed()
    out += vs.packed()
    out += exceptions
    out += zlib.crc32(out).to_bytes(4, "little")
    return bytes(out)


def _xor_stream(bits: U64Array) -> tuple[_Stream, int]:
    """Gorilla-style: XOR with the previous value, the chunk's common trailing zeros shifted out."""
    xors = bits[1:] ^ bits[:-1]
    union = int(np.bitwise_or.reduce(xors)) if xors.size else 0
    shift = (union & -union).bit_length() - 1 if union else 0
    width = union.bit_length() - shift
    return _Stream(1, width, (int(bits[0]), 0), 0, xors >> _U64(shift)), shift


def encode_chunk(timestamps_ms: npt.ArrayLike, values: npt.ArrayLike) -> bytes:
    """Encode one chunk of samples; `decode_chunk` gives back exactly the same bits.

    >>> blob = encode_chunk(np.array([1_000, 16_000, 31_000]), np.array([1.0, 2.0, 4.0]))
    >>> ts, vals = decode_chunk(blob)
    >>> ts.tolist(), vals.tolist()
    ([1000, 16000, 31000], [1.0, 2.0, 4.0])

    Raises ValueError if the arrays differ in length, are not 1-D, hold more than
    `MAX_SAMPLES`, or the timestamps are not strictly increasing.
    """
    ts = np.ascontiguousarray(timestamps_ms, dtype=np.int64)
    vals = np.ascontiguousarray(values, dtype=np.float64)
    if ts.ndim != 1 or vals.ndim != 1 or ts.shape != vals.shape:
        raise ValueError(
            f"timestamps and values must be 1-D of equal length, got {ts.shape} and {vals.shape}"
        )
    n = ts.size
    if n > MAX_SAMPLES:
        raise ValueError(f"a chunk holds at most {MAX_SAMPLES} samples, got {n}")
    if n == 0:
        out = bytes([_VERSION << 4 | _EMPTY])
        return out + zlib.crc32(out).to_bytes(4, "little")
    if not bool(np.all(ts[1:] > ts[:-1])):
        raise ValueError("timestamps must be strictly increasing")
    ts_stream = _int_stream(ts)
    bits = vals.view(_U64)
    xor, shift = _xor_stream(bits)
    decimal = _decimal_form(vals)
    if decimal is not None:
        d, ints, exc = decimal
        stream = _int_stream(ints)
        # Everything else in the two layouts is the same size.
        if stream.cost + 12 * exc.size + _nbytes(exc.size) < xor.cost:
            exceptions = exc.astype("<u4").tobytes() + bits[exc].astype("<u8").tobytes()
            return _assemble(_DECIMAL, n, ts_stream, stream, d, exceptions, exc.size)
    best = _maybe_zstd(_assemble(_XOR, n, ts_stream, xor, shift, b"", 0))
    if len(best) >= _ZSTD_MIN_BYTES and xor.width > 8:
        # Noisy full-precision floats: the XORs' byte planes compress better than their bits.
        planes = _Stream(1, 64, xor.initials, 0, bits[1:] ^ bits[:-1])
        planes.planes = True
        blob = _maybe_zstd(_assemble(_XOR_PLANES, n, ts_stream, planes, 0, b"", 0))
        if len(blob) < len(best) and blob[0] & _ZSTD:
            best = blob
    return best


# --- encoding many chunks at once -----------------------------------------------------------------

_POW2 = np.uint64(1) << np.arange(64, dtype=_U64)
_BLOCK_ROWS = 512  # rows encoded together: bounds the (rows, samples, bits) scratch arrays


def _bit_length(u: U64Array) -> I64Array:
    """``int.bit_length`` of every element (exact for all 64-bit values)."""
    return np.searchsorted(_POW2, u, side="right").astype(np.int64)


def _nbytes_many(u: U64Array) -> I64Array:
    return (_bit_length(u) + 7) // 8


def _zigzag_many(v: I64Array) -> U64Array:
    return (v.view(_U64) << _U64(1)) ^ (v >> 63).view(_U64)


def _int_streams(x: I64Array) -> tuple[I64Array, I64Array, U64Array, U64Array, U64Array, list[U64Array]]:
    """`_int_stream` for every row of `x` (rows, n >= 3): per row its order, width, initials and
    zigzagged base, and the offsets of each order (rows, n - order)."""
    rows, n = x.shape
    first = _zigzag_many(x[:, 0])
    first_delta = _zigzag_many(x[:, 1] - x[:, 0])
    zero = np.zeros(rows, dtype=_U64)
    costs, widths, bases, offsets = [], [], [], []
    residuals = x
    for order in range(3):
        if order:
            residuals = residuals[:, 1:] - residuals[:, :-1]  # wraps modulo 2**64
        low = residuals.min(axis=1)
        off = (residuals - low[:, None]).view(_U64)
        width = _bit_length(off.max(axis=1))
        base = _zigzag_many(low)
        initials = (first if order >= 1 else zero, first_delta if order == 2 else zero)
        cost = ((n - order) * width + 7) // 8 + _nbytes_many(initials[0]) + _nbytes_many(initials[1])
        costs.append(cost + _nbytes_many(base))
        widths.append(width)
        bases.append(base)
        offsets.append(off)
    order_of = np.argmin(np.stack(costs), axis=0)  # the first of equal costs, as `_int_stream`
    pick = np.arange(rows)
    width_of = np.stack(widths)[order_of, pick]
    base_of = np.stack(bases)[order_of, pick]
    init0 = np.where(order_of >= 1, first, zero)
    init1 = np.where(order_of == 2, first_delta, zero)
    return order_of, width_of, init0, init1, base_of, offsets


_Bools = npt.NDArray[np.bool_]


def _decimal_rows(values: F64Array) -> tuple[I64Array, I64Array, _Bools, _Bools]:
    """Per row the `_decimal_form` scaling d (the first with at most a quarter misses), its
    integers, whether the row takes that form without exceptions, and whether it can at all.
    Scalings are tried in turn on the rows still without one (most rows settle at d = 0)."""
    rows, n = values.shape
    d = np.zeros(rows, dtype=np.int64)
    ints = np.zeros((rows, n), dtype=np.int64)
    clean = np.zeros(rows, dtype=bool)
    usable = np.zeros(rows, dtype=bool)
    left = np.arange(rows)
    bits = values.view(_U64)
    for k in range(_MAX_DECIMALS + 1):
        v = values[left]
        with np.errstate(invalid="ignore", over="ignore"):
            scaled = np.rint(v * _POW10[k]) if k else np.rint(v)
            fits = np.abs(scaled) <= 2.0**53  # False for NaN and Inf too
            row_ints = np.where(fits, scaled, 0.0).astype(np.int64)
            exact = fits & ((row_ints / _POW10[k]).view(_U64) == bits[left])
        misses = n - exact.sum(axis=1)
        ok = misses <= n // 4
        done = left[ok]
        d[done] = k
        ints[done] = row_ints[ok]
        clean[done] = misses[ok] == 0
        usable[done] = True
        left = left[~ok]
        if not left.size:
            break
    return d, ints, clean, usable


def _pack_rows(offsets: U64Array, width: int) -> npt.NDArray[np.uint8]:
    """`_Stream.packed` of every row of `offsets` (rows, m), all at `width` bits."""
    rows, m = offsets.shape
    if width == 0 or m == 0:
        return np.zeros((rows, 0), dtype=np.uint8)
    bits = ((offsets[:, :, None] >> np.arange(width, dtype=_U64)) & _U64(1)).astype(np.uint8)
    return np.packbits(bits.reshape(rows, m * width), axis=1, bitorder="little")


def encode_many(timestamps_ms: npt.ArrayLike, values: npt.ArrayLike) -> list[bytes]:
    """`encode_chunk` of every row of two (chunks, samples) arrays, byte for byte the same blobs.

    >>> blobs = encode_many(np.array([[1_000, 16_000, 31_000]]), np.array([[1.0, 2.0, 4.0]]))
    >>> blobs == [encode_chunk([1_000, 16_000, 31_000], [1.0, 2.0, 4.0])]
    True

    The streams of a block of rows are found and bit-packed with a fixed number of NumPy
    operations (per group of equal bit width); what stays per row is slicing out the blob, its
    CRC, and for XOR blobs of 64 bytes or more the zstd attempts. Rows whose decimal form has
    exceptions (a staleness marker, a NaN) go through `encode_chunk`. Raises ValueError like
    `encode_chunk`.
    """
    ts = np.ascontiguousarray(timestamps_ms, dtype=np.int64)
    vals = np.ascontiguousarray(values, dtype=np.float64)
    if ts.ndim != 2 or ts.shape != vals.shape:
        raise ValueError(f"timestamps and values must be 2-D of equal shape, got {ts.shape} and {vals.shape}")
    rows, n = ts.shape
    if n > MAX_SAMPLES:
        raise ValueError(f"a chunk holds at most {MAX_SAMPLES} samples, got {n}")
    if n < 3 or rows < 4:
        return [encode_chunk(ts[i], vals[i]) for i in range(rows)]
    if not bool(np.all(ts[:, 1:] > ts[:, :-1])):
        raise ValueError("timestamps must be strictly increasing")
    out: list[bytes] = []
    for lo in range(0, rows, _BLOCK_ROWS):
        out.extend(_encode_block(ts[lo : lo + _BLOCK_ROWS], vals[lo : lo + _BLOCK_ROWS]))
    return out


def _encode_block(ts: I64Array, vals: F64Array) -> list[bytes]:
    rows, n = ts.shape
    bits = vals.view(_U64)
    xors = bits[:, 1:] ^ bits[:, :-1]
    union = np.bitwise_or.reduce(xors, axis=1)
    shift = np.where(union != 0, _bit_length(union & (~union + _U64(1))) - 1, 0)
    xor_width = _bit_length(union) - shift
    xor_cost = ((n - 1) * xor_width + 7) // 8 + _nbytes_many(bits[:, 0])
    d, ints, clean, usable = _decimal_rows(vals)
    t_order, t_width, t_init0, t_init1, t_base, t_offsets = _int_streams(ts)
    v_order, v_width, v_init0, v_init1, v_base, v_offsets = _int_streams(ints)
    v_cost = ((n - v_order) * v_width + 7) // 8 + _nbytes_many(v_init0) + _nbytes_many(v_init1)
    v_cost += _nbytes_many(v_base)
    decimal = clean & (v_cost < xor_cost)
    # Rows whose decimal form has exceptions: one by one (rare: staleness markers, NaNs).
    single = usable & ~clean
    blobs: list[bytes] = [b""] * rows
    for i in np.flatnonzero(single).tolist():
        blobs[i] = encode_chunk(ts[i], vals[i])
    idx = np.flatnonzero(~single)
    if not idx.size:
        return blobs
    dec = decimal[idx]
    zero = np.zeros(idx.size, dtype=_U64)
    fields = np.stack([np.full(idx.size, n, dtype=_U64), t_init0[idx], t_init1[idx], t_base[idx],
                       np.where(dec, v_init0[idx], bits[idx, 0]), np.where(dec, v_init1[idx], zero),
                       np.where(dec, v_base[idx], zero), zero], axis=1)
    lengths = _nbytes_many(fields)
    v_ord = np.where(dec, v_order[idx], 1)
    v_wid = np.where(dec, v_width[idx], xor_width[idx])
    header = np.empty((idx.size, _FIXED), dtype=np.uint8)
    header[:, 0] = np.where(dec, _VERSION << 4 | _DECIMAL, _VERSION << 4 | _XOR)
    header[:, 1:5] = lengths[:, 0::2] | lengths[:, 1::2] << 4
    header[:, 5] = t_order[idx] * 65 + t_width[idx]
    header[:, 6] = v_ord * 65 + v_wid
    header[:, 7] = np.where(dec, d[idx], shift[idx])
    field_bytes = fields.astype("<u8").view(np.uint8).reshape(-1, 8, 8)
    field_bytes = field_bytes[np.arange(8)[None, None, :] < lengths[:, :, None]]  # row by row
    header_len = _FIXED + lengths.sum(axis=1)
    ts_bytes = ((n - t_order[idx]) * t_width[idx] + 7) // 8
    size = header_len + ts_bytes + ((n - v_ord) * v_wid + 7) // 8 + 4
    starts = np.cumsum(size) - size
    buf = np.zeros(int(size.sum()), dtype=np.uint8)
    buf[starts[:, None] + np.arange(_FIXED)] = header
    flen = header_len - _FIXED
    at = np.repeat(starts + _FIXED - (np.cumsum(flen) - flen), flen) + np.arange(int(flen.sum()))
    buf[at] = field_bytes
    # bit-packed streams, a group of rows of equal (source, order, width) at a time
    xor_offsets = xors >> shift.astype(_U64)[:, None]
    ts_pos = starts + header_len
    val_pos = ts_pos + ts_bytes
    keys = (t_order[idx] * 65 + t_width[idx], (v_ord * 65 + v_wid) * 2 + dec)
    for stream, (key, pos) in enumerate(zip(keys, (ts_pos, val_pos), strict=True)):
        for k in np.unique(key).tolist():
            if stream:
                k, is_dec = divmod(k, 2)
            order, width = divmod(k, 65)
            if not width:
                continue
            sel = np.flatnonzero(key == (k * 2 + is_dec if stream else k))
            source = (v_offsets[order] if is_dec else xor_offsets) if stream else t_offsets[order]
            packed = _pack_rows(source[idx[sel]], width)
            buf[pos[sel, None] + np.arange(packed.shape[1])] = packed
    ends = starts + size - 4
    view = memoryview(buf.data)
    crcs = np.array([zlib.crc32(view[s:e]) for s, e in zip(starts.tolist(), ends.tolist(), strict=True)],
                    dtype="<u4")
    buf[ends[:, None] + np.arange(4)] = crcs.view(np.uint8).reshape(-1, 4)
    data = buf.tobytes()
    big = size >= _ZSTD_MIN_BYTES
    for j, (i, s, e) in enumerate(zip(idx.tolist(), starts.tolist(), (ends + 4).tolist(), strict=True)):
        blob = data[s:e]
        if not dec[j] and big[j]:  # what `encode_chunk` tries after the plain XOR blob
            best = _maybe_zstd(blob)
            if len(best) >= _ZSTD_MIN_BYTES and xor_width[i] > 8:
                val_at = int(val_pos[j] - s)
                body = bytes([_VERSION << 4 | _XOR_PLANES]) + blob[1:6] + bytes([65 + 64, 0])
                body += blob[_FIXED:val_at] + xors[i].astype("<u8").view(np.uint8).reshape(-1, 8).T.tobytes()
                planes = _maybe_zstd(body + zlib.crc32(body).to_bytes(4, "little"))
                if len(planes) < len(best) and planes[0] & _ZSTD:
                    best = planes
            blob = best
        blobs[i] = blob
    return blobs


def _maybe_zstd(blob: bytes) -> bytes:
    """The blob with its body zstd-compressed, if that is smaller. Measured on the benchmark
    workload it pays for almost no decimal chunk, so only XOR chunks try it: it does pay for
    floats with few distinct values (3x smaller) and noisy full-precision floats (a few %)."""
    if len(blob) < _ZSTD_MIN_BYTES:
        return blob
    body = blob[1:-4]
    packed = bytes([blob[0] | _ZSTD]) + len(body).to_bytes(4, "little")
    packed += bytes(cramjam.zstd.compress(body, level=_ZSTD_LEVEL))
    if len(packed) + 4 >= len(blob):
        return blob
    return packed + zlib.crc32(packed).to_bytes(4, "little")


def _inflate(blob: Blob) -> bytes:
    """A zstd-flagged blob (checksum already verified) as the plain blob it was made from."""
    if len(blob) < 1 + 4 + 4:
        raise StorageError("corrupt chunk: truncated compressed chunk")
    size = int.from_bytes(blob[1:5], "little")
    if size > _MAX_RAW:
        raise StorageError("corrupt chunk: compressed chunk claims too large a body")
    body = bytearray(size)
    try:
        written = cramjam.zstd.decompress_into(blob[5:-4], body)
    except cramjam.DecompressionError as exc:
        raise StorageError(f"corrupt chunk: {exc}") from exc
    if written != size:
        raise StorageError("corrupt chunk: compressed body has the wrong length")
    plain = bytes([blob[0] & ~_ZSTD]) + body
    return plain + zlib.crc32(plain).to_bytes(4, "little")


# --- decoding -----------------------------------------------------------------------------------


def _bad_header(variant: _Int, n: _Int, n_exc: _Int, ts_order: _Int, ts_width: _Int,
                val_order: _Int, val_width: _Int, param: _Int) -> Any:
    """Whether header fields are out of range; element-wise for arrays (the batch path), or for
    plain ints (the one-chunk path), so both paths check exactly the same rules."""
    is_xor = (variant == _XOR) | (variant == _XOR_PLANES)
    is_decimal = variant == _DECIMAL
    return (
        (n < 1) | (n > MAX_SAMPLES) | (n_exc > MAX_SAMPLES)
        | (ts_order > 2) | (ts_width > 64) | (ts_order > n)
        | (val_order > 2) | (val_width > 64) | (val_order > n)
        | (variant < _DECIMAL) | (variant > _XOR_PLANES)
        | ((variant == _XOR_PLANES) & ((val_width != 64) | (param != 0)))
        | (is_xor & ((val_order != 1) | (param + val_width > 64) | (n_exc != 0)))
        | (is_decimal & (param > _MAX_DECIMALS))
    )


class _Header:
    """Parsed headers of a batch of non-empty chunks, one array element per chunk."""

    def __init__(self, a: npt.NDArray[np.uint8], words: U64Array, starts: I64Array, sizes: I64Array) -> None:
        self.variant = (a[starts] & 15).astype(np.int64)
        nibbles = a[starts[:, None] + np.arange(1, 5)]
        lengths = np.stack([nibbles & 15, nibbles >> 4], axis=2).reshape(-1, 8).astype(np.int64)
        if (lengths > 8).any():
            raise StorageError("corrupt chunk: header integer longer than 8 bytes")
        ts_desc = a[starts + 5].astype(np.int64)
        val_desc = a[starts + 6].astype(np.int64)
        self.param = a[starts + 7].astype(np.int64)
        self.ts_order, self.ts_width = np.divmod(ts_desc, 65)
        self.val_order, self.val_width = np.divmod(val_desc, 65)
        pos = starts + _FIXED
        fields: list[U64Array] = []
        for i in range(8):
            ln = lengths[:, i]
            # A mask of `ln` bytes; ln == 8 needs all ones, which a 64-bit shift cannot give.
            mask = np.where(ln == 8, _ALL_ONES, (_U64(1) << (ln * 8).astype(_U64)) - _U64(1))
            fields.append(words[pos] & mask)
            pos = pos + ln
        n = fields[0].astype(np.int64)
        self.n = n
        self.ts_first, self.ts_delta = _unzigzag(fields[1]), _unzigzag(fields[2])
        self.ts_base = _unzigzag(fields[3])
        self.val_first_raw = fields[4]
        self.val_first, self.val_delta = _unzigzag(fields[4]), _unzigzag(fields[5])
        self.val_base = _unzigzag(fields[6])
        self.n_exc = fields[7].astype(np.int64)
        bad = _bad_header(self.variant, n, fields[7], self.ts_order, self.ts_width,
                          self.val_order, self.val_width, self.param)
        if bad.any():
            raise StorageError("corrupt chunk: header out of range")
        self.ts_bits = pos * 8
        ts_bytes = ((n - self.ts_order) * self.ts_width + 7) // 8
        self.val_bits = self.ts_bits + ts_bytes * 8
        val_bytes = ((n - self.val_order) * self.val_width + 7) // 8
        self.exc_pos = pos + ts_bytes + val_bytes
        if (self.exc_pos + self.n_exc * 12 + 4 != starts + sizes).any():
            raise StorageError("corrupt chunk: length does not match its header")


def _unzigzag(u: U64Array) -> I64Array:
    signed: I64Array = ((u >> _U64(1)) ^ (_U64(0) - (u & _U64(1)))).view(np.int64)
    return signed


def _unpack(
    a: npt.NDArray[np.uint8], words: U64Array, byte_start: I64Array, count: int, width: int
) -> U64Array:
    """Rows of `count` values of `width` bits each, row r starting at byte `byte_start[r]`.

    The column offsets are the same for every row, so one broadcast add and one gather of
    (unaligned) 64-bit words does it; a value never needs more than the 8 bytes from its first
    one unless it is wider than 57 bits."""
    if width == 0:
        return np.zeros((byte_start.size, count), dtype=_U64)
    bit = np.arange(count, dtype=np.int64) * width
    index = byte_start[:, None] + (bit >> 3)
    out = np.take(words, index)
    shift = (bit & 7).astype(_U64)
    if width % 8:  # whole-byte widths always start on a byte
        out >>= shift
    if width > 57:
        out |= (np.take(a, index + 8).astype(_U64) << _U64(1)) << (_U64(63) - shift)
    if width < 64:
        out &= _U64((1 << width) - 1)
    return out


def _unpack_planes(a: npt.NDArray[np.uint8], byte_start: I64Array, count: int) -> U64Array:
    """Rows of `count` 64-bit values stored as 8 byte planes (plane k: byte k of every value)."""
    index = byte_start[:, None] + np.arange(8 * count, dtype=np.int64)
    planes = np.take(a, index).reshape(-1, 8, count)
    values = np.ascontiguousarray(planes.transpose(0, 2, 1)).view("<u8").reshape(-1, count)
    return values.astype(_U64, copy=False)


def _groups(keys: I64Array) -> list[tuple[int, npt.NDArray[np.intp]]]:
    """Row indices grouped by equal key, in increasing key order."""
    if keys.size and keys.min() == keys.max():
        return [(int(keys[0]), np.arange(keys.size))]
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    bounds = np.flatnonzero(np.diff(sorted_keys)) + 1
    pieces = np.split(order, bounds)
    return [(int(sorted_keys[0 if i == 0 else bounds[i - 1]]), rows) for i, rows in enumerate(pieces)]


def _undiff(
    residuals: U64Array | None, n: int, base: I64Array, order: int, first: I64Array, delta: I64Array,
    out: U64Array | None = None,
) -> U64Array:
    """Rows of `n` integers from their order-`order` differences (all modulo 2**64), into `out`.

    `residuals` None means all zero (bit width 0): then the rows are closed-form lines or
    parabolas, which saves the cumulative sums on regular scrape timestamps."""
    rows = base.size
    y = np.empty((rows, n), dtype=_U64) if out is None else out
    base_u, first_u, delta_u = base.view(_U64)[:, None], first.view(_U64)[:, None], delta.view(_U64)[:, None]
    if residuals is None:
        i = np.arange(n, dtype=_U64)
        if order == 0:
            y[:] = base_u
        elif order == 1:
            np.multiply(i, base_u, out=y)
            y += first_u
        else:  # x_i = x_0 + i * d_1 + i * (i - 1) / 2 * dd
            np.multiply(i, delta_u, out=y)
            y += first_u
            if base.any():
                y += (i * (i - _U64(1)) // _U64(2)) * base_u
        return y
    np.add(residuals, base_u, out=y[:, order:])
    if order == 0:
        return y
    y[:, 0] = first_u[:, 0]
    if order == 2:
        y[:, 1] = delta_u[:, 0]
        np.cumsum(y[:, 1:], axis=1, out=y[:, 1:])
    np.cumsum(y, axis=1, out=y)
    return y


def decode_concat(blobs: Sequence[Blob]) -> tuple[I64Array, F64Array, I64Array]:
    """Decode many chunks into concatenated arrays: chunk i is ``[offsets[i]:offsets[i + 1]]``.

    >>> blobs = [encode_chunk([1, 2], [0.5, 1.5]), encode_chunk([3], [7.0])]
    >>> ts, vals, offsets = decode_concat(blobs)
    >>> ts.tolist(), vals.tolist(), offsets.tolist()
    ([1, 2, 3], [0.5, 1.5, 7.0], [0, 2, 3])

    This is the fast path: the work is a fixed number of NumPy operations per group of chunks
    with the same sample count and encoding, not per chunk. Raises `StorageError` on any
    damaged blob.
    """
    count = len(blobs)
    sizes = np.fromiter(map(len, blobs), dtype=np.int64, count=count)
    crcs = np.fromiter(map(zlib.crc32, blobs), dtype=np.int64, count=count)
    if (crcs != _CRC_RESIDUE).any() or (sizes < 5).any():
        raise StorageError("corrupt chunk: checksum mismatch or truncated")
    buf = b"".join(blobs) + bytes(_PAD)
    a = np.frombuffer(buf, dtype=np.uint8)
    starts = np.cumsum(sizes) - sizes
    first = a[starts]
    if (first & _ZSTD).any():
        plain = list(blobs)
        for i in np.flatnonzero(first & _ZSTD).tolist():
            plain[i] = _inflate(blobs[i])
        sizes = np.fromiter(map(len, plain), dtype=np.int64, count=count)
        buf = b"".join(plain) + bytes(_PAD)
        a = np.frombuffer(buf, dtype=np.uint8)
        starts = np.cumsum(sizes) - sizes
        first = a[starts]
    words: U64Array = np.ndarray(shape=(len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
    if (first >> 4 != _VERSION).any():
        raise StorageError(f"unsupported chunk version (this build reads version {_VERSION})")
    nonempty = (first & 15) != _EMPTY
    if (sizes[~nonempty] != 5).any():
        raise StorageError("corrupt chunk: empty chunk with a body")
    idx = np.flatnonzero(nonempty)
    n_all = np.zeros(count, dtype=np.int64)
    offsets = np.zeros(count + 1, dtype=np.int64)
    if idx.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.float64), offsets
    if (sizes[idx] < _FIXED + 4).any():
        raise StorageError("corrupt chunk: truncated header")
    h = _Header(a, words, starts[idx], sizes[idx])
    n_all[idx] = h.n
    np.cumsum(n_all, out=offsets[1:])
    out_start = offsets[idx]
    ts_out = np.empty(int(offsets[-1]), dtype=_U64)
    val_out = np.empty(int(offsets[-1]), dtype=_U64)

    # Chunks of equal length (the usual case) are written as whole rows of a 2-D view.
    uniform = bool(n_all.min() == n_all.max())
    ts_rows = ts_out.reshape(count, -1) if uniform else ts_out
    val_rows = val_out.reshape(count, -1) if uniform else val_out

    def destination(target: U64Array, rows: npt.NDArray[np.intp], n: int) -> U64Array:
        """Where a group decodes to: straight into the output if it is all of it, else scratch."""
        if uniform and rows.size == count:
            return target
        return np.empty((rows.size, n), dtype=_U64)

    def put(target: U64Array, rows: npt.NDArray[np.intp], x: U64Array) -> None:
        if x is target:
            return
        if uniform:
            target[idx[rows]] = x
        else:
            target[out_start[rows][:, None] + np.arange(x.shape[1])] = x

    ts_key = (h.n * 3 + h.ts_order) * 65 + h.ts_width
    for key, rows in _groups(ts_key):
        rest, width = divmod(key, 65)
        n, order = divmod(rest, 3)
        res = _unpack(a, words, h.ts_bits[rows] >> 3, n - order, width) if width else None
        x = _undiff(res, n, h.ts_base[rows], order, h.ts_first[rows], h.ts_delta[rows],
                    out=destination(ts_rows, rows, n))
        put(ts_rows, rows, x)

    val_key = ((h.n * 3 + h.val_order) * 65 + h.val_width) * 4 + h.variant
    for key, rows in _groups(val_key):
        rest, variant = divmod(key, 4)
        rest, width = divmod(rest, 65)
        n, order = divmod(rest, 3)
        if variant == _XOR_PLANES:
            res = _unpack_planes(a, h.val_bits[rows] >> 3, n - 1)
        else:
            res = _unpack(a, words, h.val_bits[rows] >> 3, n - order, width)
        x = destination(val_rows, rows, n)
        args = (h.val_base[rows], order, h.val_first[rows], h.val_delta[rows])
        if variant != _DECIMAL:
            x[:, 0] = h.val_first_raw[rows]
            np.left_shift(res, h.param[rows].astype(_U64)[:, None], out=x[:, 1:])
            np.bitwise_xor.accumulate(x, axis=1, out=x)
        else:
            ints = _undiff(res if width else None, n, *args).view(np.int64)
            decimals = h.param[rows]
            if decimals.any():
                np.divide(ints, _POW10[decimals][:, None], out=x.view(np.float64))
            else:  # whole numbers: the conversion alone (dividing by 1.0 changes no bits)
                np.copyto(x.view(np.float64), ints)
        put(val_rows, rows, x)

    has_exc = np.flatnonzero(h.n_exc)
    if has_exc.size:
        n_exc = h.n_exc[has_exc]
        total = int(n_exc.sum())
        chunk = np.repeat(has_exc, n_exc)
        k = np.arange(total) - np.repeat(np.cumsum(n_exc) - n_exc, n_exc)
        pos_at = h.exc_pos[chunk] + 4 * k
        where = (words[pos_at] & _U64(0xFFFFFFFF)).astype(np.int64)
        if (where >= h.n[chunk]).any():
            raise StorageError("corrupt chunk: exception position out of range")
        raw = words[h.exc_pos[chunk] + 4 * h.n_exc[chunk] + 8 * k]
        val_out[out_start[chunk] + where] = raw

    return ts_out.view(np.int64), val_out.view(np.float64), offsets


def decode_many(blobs: Sequence[Blob]) -> list[tuple[I64Array, F64Array]]:
    """Decode many chunks at once; element i is ``(timestamps_ms, values)`` of ``blobs[i]``.

    The arrays are views into two shared arrays (see `decode_concat`, which avoids even the
    per-chunk slicing).
    """
    ts, vals, offsets = decode_concat(blobs)
    bounds = offsets.tolist()
    return [(ts[lo:hi], vals[lo:hi]) for lo, hi in itertools.pairwise(bounds)]


def decode_chunk(data: Blob) -> tuple[I64Array, F64Array]:
    """Decode one blob made by `encode_chunk`; raises `StorageError` if it is damaged.

    Parses the header with plain Python (a NumPy call costs a microsecond or more); for many
    chunks, `decode_concat` is far faster per sample.
    """
    data = bytes(data)
    if len(data) < 5 or zlib.crc32(data) != _CRC_RESIDUE:
        raise StorageError("corrupt chunk: checksum mismatch or truncated")
    if data[0] >> 4 != _VERSION:
        raise StorageError(f"unsupported chunk version (this build reads version {_VERSION})")
    if data[0] & _ZSTD:
        data = _inflate(data)
    variant = data[0] & 15
    if variant == _EMPTY:
        if len(data) != 5:
            raise StorageError("corrupt chunk: empty chunk with a body")
        return np.empty(0, np.int64), np.empty(0, np.float64)
    if len(data) < _FIXED + 4:
        raise StorageError("corrupt chunk: truncated header")
    lengths = [(data[1 + i // 2] >> (4 * (i % 2))) & 15 for i in range(8)]
    if max(lengths) > 8:
        raise StorageError("corrupt chunk: header integer longer than 8 bytes")
    ts_order, ts_width = divmod(data[5], 65)
    val_order, val_width = divmod(data[6], 65)
    param = data[7]
    pos, fields = _FIXED, []
    for length in lengths:
        fields.append(int.from_bytes(data[pos:pos + length], "little"))
        pos += length
    n, n_exc = fields[0], fields[7]
    if _bad_header(variant, n, n_exc, ts_order, ts_width, val_order, val_width, param):
        raise StorageError("corrupt chunk: header out of range")
    ts_bytes = ((n - ts_order) * ts_width + 7) // 8
    val_pos = pos + ts_bytes
    exc_pos = val_pos + ((n - val_order) * val_width + 7) // 8
    if exc_pos + 12 * n_exc + 4 != len(data):
        raise StorageError("corrupt chunk: length does not match its header")

    buf = data + bytes(16)
    a = np.frombuffer(buf, dtype=np.uint8)
    words: U64Array = np.ndarray(shape=(len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
    signed = _unzigzag(np.array(fields, dtype=_U64))
    res = _unpack(a, words, np.array([pos]), n - ts_order, ts_width)
    ts = _undiff(res if ts_width else None, n, signed[3:4], ts_order, signed[1:2], signed[2:3])[0]
    if variant == _XOR_PLANES:
        res = _unpack_planes(a, np.array([val_pos]), n - 1)
    else:
        res = _unpack(a, words, np.array([val_pos]), n - val_order, val_width)
    if variant != _DECIMAL:
        y = np.empty(n, dtype=_U64)
        y[0] = fields[4]
        np.left_shift(res[0], _U64(param), out=y[1:])
        vals = np.bitwise_xor.accumulate(y)
    else:
        ints = _undiff(res if val_width else None, n, signed[6:7], val_order, signed[4:5], signed[5:6])[0]
        vals = (ints.view(np.int64).astype(np.float64) / _POW10[param]).view(_U64)
        if n_exc:
            where = np.frombuffer(data, dtype="<u4", count=n_exc, offset=exc_pos)
            if (where >= n).any():
                raise StorageError("corrupt chunk: exception position out of range")
            vals[where] = np.frombuffer(data, dtype="<u8", count=n_exc, offset=exc_pos + 4 * n_exc)
    return ts.view(np.int64), vals.view(np.float64)
