"""A tiny Prometheus remote-write encoder for tests (prompb.WriteRequest, snappy block format)."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

import cramjam

Pairs = Sequence[tuple[str, str]]


def varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if not n:
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def field(num: int, payload: bytes) -> bytes:
    return varint((num << 3) | 2) + varint(len(payload)) + payload


def label(name: str, value: str) -> bytes:
    return field(1, name.encode()) + field(2, value.encode())


def sample(timestamp_ms: int, value: float) -> bytes:
    return b"\x09" + struct.pack("<d", value) + b"\x10" + varint(timestamp_ms)


def series(labels: Pairs, samples: Iterable[tuple[int, float]], *, sort: bool = True) -> bytes:
    items = sorted(labels) if sort else list(labels)
    body = b"".join(field(1, label(n, v)) for n, v in items)
    body += b"".join(field(2, sample(t, v)) for t, v in samples)
    return field(1, body)


def write_request(items: Iterable[tuple[Pairs, Iterable[tuple[int, float]]]], *, sort: bool = True) -> bytes:
    """Uncompressed WriteRequest of (labels, [(timestamp_ms, value)]) items."""
    return b"".join(series(labels, samples, sort=sort) for labels, samples in items)


def snappy(raw: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(raw))


def body(items: Iterable[tuple[Pairs, Iterable[tuple[int, float]]]], *, sort: bool = True) -> bytes:
    """A snappy-compressed remote-write body, ready to POST."""
    return snappy(write_request(items, sort=sort))
