"""Prometheus remote-write 1.0: snappy (block format) + protobuf ``prompb.WriteRequest``.

The decoder is hand-written for speed. Each ``TimeSeries`` is found with a short loop over the
top-level fields (in the usual message, TimeSeries only, each under 16 KiB, a loop that only
follows the length bytes, its tags checked afterwards with NumPy); its label bytes, exactly as
sent, are the key of a cache that maps them to a series ref, so label parsing and validation
happen once per series, not once per sample. In the common case (one sample per series, labels
first, the sample last) the labels are found without walking them: the last 18 bytes are tried
as a sample field, and the rest is accepted as labels only when the cache already knows those
bytes as a complete, validated label list -- which makes the guess exact, not a heuristic.
Samples are then decoded for the whole request at once with NumPy.

>>> from watchkeeper.collector.remote_write import decode_write_request
>>> decode_write_request(b"").keys
[]
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

import cramjam
import numpy as np
import numpy.typing as npt

from watchkeeper.collector.limits import InvalidSeries, Limits
from watchkeeper.errors import DecodeError, LimitExceeded
from watchkeeper.labels import Labels

if TYPE_CHECKING:
    from watchkeeper.selfmetrics import SelfMetrics

T = TypeVar("T")
#: Sees a decoded request (series label bytes, sample count) before it is appended; raises to refuse it.
Admit = Callable[[Sequence[bytes], int], None]
_FIXED64 = struct.Struct("<d")
_SAMPLE_FIELD_LEN = 16  # 0x09, 8-byte double, 0x10, 6-byte varint (ms timestamps 1971-2527)


def decompress_snappy(body: bytes, max_bytes: int) -> bytes:
    """The snappy block in `body`, refusing (413) to inflate past `max_bytes`."""
    size, _ = _varint_at(body, 0, len(body), "snappy length header")
    if size > max_bytes:
        raise LimitExceeded(
            f"decompressed body of {size} bytes exceeds the limit of {max_bytes} bytes", status=413
        )
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except Exception as exc:  # cramjam raises its own DecompressionError
        raise DecodeError(f"snappy decode error: {exc}") from None


@dataclass(slots=True)
class DecodedWrite:
    """One WriteRequest: the raw label bytes of each series and, per sample, the series index.

    `refs` holds the cached series ref of each series, or -1 when its labels were not seen before.
    """

    keys: list[bytes] = field(default_factory=list)
    refs: list[int] = field(default_factory=list)
    sample_series: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    timestamps_ms: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    values: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0, np.float64))


def decode_write_request(buf: bytes, cache: Mapping[bytes, int] | None = None) -> DecodedWrite:
    """Decode an uncompressed WriteRequest. Raises `DecodeError` on malformed protobuf."""
    try:
        return _decode(buf, cache if cache is not None else {})
    except IndexError:
        raise DecodeError("protobuf decode error: message is truncated") from None


def _series_spans_fast(buf: bytes) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None:
    """Where each TimeSeries body starts and ends, for the usual message: nothing but TimeSeries
    fields, each under 16 KiB. The walk only follows the length bytes; the tags and varint ends
    are checked afterwards, all at once. None when the message is anything else."""
    n = len(buf)
    tags: list[int] = []
    add = tags.append
    p = 0
    try:
        while p < n:
            add(p)
            b = buf[p + 1]
            p += 2 + b if b < 0x80 else 3 + ((b & 0x7F) | (buf[p + 2] << 7))
    except IndexError:
        return None
    if p != n:
        return None
    a = np.frombuffer(buf, dtype=np.uint8)
    t = np.array(tags, dtype=np.int64)
    b1 = a[t + 1].astype(np.int64)
    one = b1 < 0x80
    b2 = a[np.where(one, t, t + 2)].astype(np.int64)  # (a valid index either way)
    if not (a[t] == 0x0A).all() or (b2[~one] >= 0x80).any():
        return None
    starts = t + np.where(one, 2, 3)
    return starts, starts + np.where(one, b1, (b1 & 0x7F) | (b2 << 7))


def _decode(buf: bytes, cache: Mapping[bytes, int]) -> DecodedWrite:
    spans = _series_spans_fast(buf)
    if spans is None:
        start_arr, end_arr = _series_spans(buf)
    else:
        start_arr, end_arr = spans
    count = len(start_arr)
    if not count:
        return DecodedWrite()
    starts: list[int] = start_arr.tolist()
    # 2. the common case, one canonical sample after the labels, for all series at once
    a = np.frombuffer(buf, dtype=np.uint8)
    sp = end_arr - (_SAMPLE_FIELD_LEN + 2)
    safe = np.maximum(sp, 0)
    guess = (sp >= start_arr) & (a[safe] == 0x12) & (a[safe + 1] == _SAMPLE_FIELD_LEN)
    sp_list = np.where(guess, sp, start_arr).tolist()
    keys = [buf[s:t] for s, t in zip(starts, sp_list, strict=True)]
    found = list(map(cache.get, keys))
    if None not in found and guess.all():
        refs: list[int] = found  # type: ignore[assignment]
        ts, values = _decode_samples(buf, sp + 2, np.full(count, _SAMPLE_FIELD_LEN, dtype=np.int64))
        return DecodedWrite(keys, refs, np.arange(count, dtype=np.int64), ts, values)
    hit = guess & np.array([r is not None for r in found], dtype=bool)
    # 3. the general case, series by series where the guess did not hold
    ends: list[int] = end_arr.tolist()
    get = cache.get
    refs = [-1] * count
    s_series: list[int] = []
    s_pos: list[int] = []
    s_len: list[int] = []
    hit_list = hit.tolist()
    for i in range(count):
        if hit_list[i]:
            refs[i] = found[i] or 0  # a hit, never None
            s_series.append(i)
            s_pos.append(sp_list[i] + 2)
            s_len.append(_SAMPLE_FIELD_LEN)
            continue
        key, samples = _parse_series(buf, starts[i], ends[i])
        keys[i] = key
        ref = get(key)
        refs[i] = -1 if ref is None else ref
        for pos, length in samples:
            s_series.append(i)
            s_pos.append(pos)
            s_len.append(length)
    ts, values = _decode_samples(buf, np.array(s_pos, dtype=np.int64), np.array(s_len, dtype=np.int64))
    return DecodedWrite(keys, refs, np.array(s_series, dtype=np.int64), ts, values)


def _series_spans(buf: bytes) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Where each TimeSeries body starts and ends, any message (metadata and unknown fields are
    skipped)."""
    n = len(buf)
    starts: list[int] = []
    ends: list[int] = []
    add_start, add_end = starts.append, ends.append
    p = 0
    while p < n:
        if buf[p] != 0x0A:  # not field 1 (timeseries), length-delimited: metadata (3) or unknown
            p = _skip_field(buf, p, n)
            continue
        b = buf[p + 1]
        if b < 0x80:
            p += 2
            add_start(p)
            p += b
        else:
            c = buf[p + 2]
            if c < 0x80:
                p += 3
                add_start(p)
                p += (b & 0x7F) | (c << 7)
            else:
                length, q = _varint_at(buf, p + 1, n, "series length")
                add_start(q)
                p = q + length
        add_end(p)
    if p > n:
        raise DecodeError("protobuf decode error: series runs past the end of the message")
    return np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)


def _parse_series(buf: bytes, p: int, e: int) -> tuple[bytes, list[tuple[int, int]]]:
    """A TimeSeries body: (its label fields' bytes, [(sample payload position, length)])."""
    spans: list[tuple[int, int]] = []
    samples: list[tuple[int, int]] = []
    while p < e:
        tag = buf[p]
        if tag == 0x0A or tag == 0x12:
            length, q = _varint_at(buf, p + 1, e, "field length")
            end = q + length
            if end > e:
                raise DecodeError("protobuf decode error: field runs past the end of its series")
            if tag == 0x0A:
                if spans and spans[-1][1] == p:
                    spans[-1] = (spans[-1][0], end)
                else:
                    spans.append((p, end))
            else:
                samples.append((q, length))
            p = end
        else:  # exemplars (3), native histograms (4): not stored by this release
            p = _skip_field(buf, p, e)
    key = buf[spans[0][0] : spans[0][1]] if len(spans) == 1 else b"".join(buf[s:t] for s, t in spans)
    return key, samples


def parse_labels(key: bytes) -> list[tuple[str, str]]:
    """The (name, value) pairs of a series' label fields, in the order sent."""
    out: list[tuple[str, str]] = []
    try:
        p, n = 0, len(key)
        while p < n:
            if key[p] != 0x0A:
                raise DecodeError("protobuf decode error: unexpected field among labels")
            length, q = _varint_at(key, p + 1, n, "label length")
            e = q + length
            name = value = b""
            while q < e:
                tag = key[q]
                flen, r = _varint_at(key, q + 1, e, "label field length")
                if r + flen > e:
                    raise DecodeError("protobuf decode error: label field runs past its label")
                if tag == 0x0A:
                    name = key[r : r + flen]
                elif tag == 0x12:
                    value = key[r : r + flen]
                else:
                    r = _skip_field(key, q, e)
                    flen = 0
                q = r + flen
            out.append((name.decode(), value.decode()))
            p = e
    except UnicodeDecodeError:
        raise DecodeError("protobuf decode error: label name or value is not valid UTF-8") from None
    except IndexError:
        raise DecodeError("protobuf decode error: label is truncated") from None
    return out


def _decode_samples(
    buf: bytes, pos: npt.NDArray[np.int64], length: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Timestamps and values of the Sample messages at the given payload spans, vectorised for the
    canonical encoding (value field, then timestamp field) and field by field otherwise."""
    count = len(pos)
    if not count:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    a = np.frombuffer(buf, dtype=np.uint8)
    k = length - 10  # bytes of the timestamp varint in the canonical form
    width = int(k.max()) if count else 0
    if width == int(k.min()) and 1 <= width <= 10:
        # one shape for all: a (count, 10 + width) byte matrix
        m = a[pos[:, None] + np.arange(10 + width, dtype=np.int64)]
        varint = m[:, 10:].astype(np.uint64)
        ok = (m[:, 0] == 0x09) & (m[:, 9] == 0x10) & (varint[:, -1] < 0x80)
        if width > 1:
            ok &= np.all(varint[:, :-1] >= 0x80, axis=1)
        shifts = np.arange(width, dtype=np.uint64) * np.uint64(7)
        ts = ((varint & np.uint64(0x7F)) << shifts).sum(axis=1, dtype=np.uint64).view(np.int64)
        values = np.ascontiguousarray(m[:, 1:9]).view("<f8").ravel()
    else:
        ok = np.zeros(count, dtype=bool)
        ts = np.zeros(count, dtype=np.int64)
        values = np.zeros(count, dtype=np.float64)
    if not ok.all():
        ts = ts.copy()
        values = values.copy()
        pos_list, len_list = pos.tolist(), length.tolist()
        for i in np.flatnonzero(~ok).tolist():
            ts[i], values[i] = _decode_sample(buf, pos_list[i], pos_list[i] + len_list[i])
    return ts, values


def _decode_sample(buf: bytes, p: int, e: int) -> tuple[int, float]:
    value = 0.0
    timestamp = 0
    while p < e:
        tag = buf[p]
        if tag == 0x09:
            if p + 9 > e:
                raise DecodeError("protobuf decode error: sample value is truncated")
            value = _FIXED64.unpack_from(buf, p + 1)[0]
            p += 9
        elif tag == 0x10:
            raw, p = _varint_at(buf, p + 1, e, "sample timestamp")
            timestamp = raw - (1 << 64) if raw >= 1 << 63 else raw
        else:
            p = _skip_field(buf, p, e)
    return timestamp, value


def _varint_at(buf: bytes, p: int, end: int, what: str) -> tuple[int, int]:
    """(value, position after it) of the varint at p, which must end before `end`."""
    result = 0
    shift = 0
    while True:
        if p >= end or shift > 63:
            raise DecodeError(f"protobuf decode error: bad varint ({what})")
        b = buf[p]
        result |= (b & 0x7F) << shift
        p += 1
        if b < 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, p
        shift += 7


def _skip_field(buf: bytes, p: int, end: int) -> int:
    """Position after the field starting at p, whatever its wire type."""
    tag, q = _varint_at(buf, p, end, "field tag")
    wire = tag & 7
    if tag >> 3 == 0:
        raise DecodeError("protobuf decode error: field number 0")
    if wire == 0:
        _, q = _varint_at(buf, q, end, "varint field")
    elif wire == 1:
        q += 8
    elif wire == 2:
        length, q = _varint_at(buf, q, end, "field length")
        q += length
    elif wire == 5:
        q += 4
    else:
        raise DecodeError(f"protobuf decode error: unsupported wire type {wire}")
    if q > end:
        raise DecodeError("protobuf decode error: field runs past the end of the message")
    return q


# --- the ingest core: decode, validate, resolve series, append ---------------------------------

_REASON_WORDS = {
    "out_of_order": "out of order sample",
    "duplicate": "duplicate sample for timestamp",
    "too_old": "too old sample",
    "too_far_in_future": "sample timestamp too far in the future",
}

#: How far ahead of the server's clock a sample may be. Without a bound, one sample dated in the
#: year 2500 would move the store's newest time so far that every later sample is "too old".
MAX_FUTURE_MS = 10 * 60_000


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class AppendResultLike(Protocol):
    @property
    def accepted(self) -> int: ...
    @property
    def rejected(self) -> dict[str, int]: ...


class SampleStore(Protocol):
    """What ingest needs from `tsdb.storage.Storage`."""

    @property
    def num_series(self) -> int: ...

    def series_refs(self, labels: Sequence[Labels]) -> npt.NDArray[np.int64]: ...

    def append(
        self,
        refs: npt.NDArray[np.int64],
        timestamps_ms: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64],
    ) -> AppendResultLike: ...


@dataclass(frozen=True, slots=True)
class AppendedSamples:
    """What `RemoteWriteIngester.after_append` receives after the WAL commit (for remote-write out):
    per sample its series (index into `keys`, the label bytes as sent), store ref, time and value.
    `complete` is False when the store refused some of them (which ones is not known)."""

    keys: list[bytes]
    sample_series: npt.NDArray[np.int64]
    refs: npt.NDArray[np.int64]
    timestamps_ms: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    complete: bool


@dataclass(slots=True)
class IngestReport:
    """What became of one request: samples accepted, samples rejected by reason, and why."""

    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    def message(self) -> str:
        """Prometheus-style: ``out of order sample: 3 of 2000 samples rejected; ...``."""
        total = self.accepted + sum(self.rejected.values())
        parts = list(self.messages)
        for reason, count in self.rejected.items():
            if reason in _REASON_WORDS:
                parts.append(f"{_REASON_WORDS[reason]}: {count} of {total} samples rejected")
        return "; ".join(parts) + f" ({self.accepted} samples accepted)"


class RemoteWriteIngester:
    """Remote-write requests into a store: `ingest(body)` is thread-safe and blocking, so call it
    from a worker thread (the WAL group commit then shares fsyncs between concurrent requests).

    >>> ingester = RemoteWriteIngester(storage, Limits())   # doctest: +SKIP
    >>> ingester.ingest(snappy_body).accepted               # doctest: +SKIP
    2000
    """

    def __init__(
        self,
        store: SampleStore,
        limits: Limits,
        metrics: SelfMetrics | None = None,
        *,
        clock_ms: Callable[[], int] = wall_clock_ms,
        max_future_ms: int = MAX_FUTURE_MS,
    ) -> None:
        self.store = store
        self.limits = limits
        self.metrics = metrics
        self.clock_ms = clock_ms
        self.max_future_ms = max_future_ms
        self.after_append: Callable[[AppendedSamples], None] | None = None  # remote-write out
        self._refs: dict[bytes, int] = {}  # raw label bytes as sent -> series ref
        self._lock = threading.Lock()
        # Requests run concurrently; `exclusive` (retention) waits for them and holds new ones off,
        # so no request appends to a cached ref of a series the store is removing.
        self._gate = threading.Condition()
        self._active = 0
        self._exclusive = False

    def forget_series(self) -> None:
        """Drop the label-bytes cache (after the store removed series, e.g. by retention)."""
        with self._lock:
            self._refs = {}

    def exclusive(self, fn: Callable[[], T]) -> T:
        """Run `fn` (which may remove series from the store) with no request in flight, then drop
        the cache: ``ingester.exclusive(lambda: storage.apply_retention(now_ms))``."""
        with self._gate:
            while self._exclusive:
                self._gate.wait()
            self._exclusive = True
            while self._active:
                self._gate.wait()
        try:
            result = fn()
            self.forget_series()
            return result
        finally:
            with self._gate:
                self._exclusive = False
                self._gate.notify_all()

    def ingest(self, body: bytes, admit: Admit | None = None) -> IngestReport:
        """Decode, validate and append one snappy-compressed WriteRequest. `admit(keys, samples)`,
        when given, sees the decoded request before anything is appended and may refuse it by
        raising (a tenant's limits, `auth.IngestAuth.admit`).

        Raises `DecodeError` (400), `LimitExceeded` (413/400/429) for the whole request; otherwise
        returns the report, whose `rejected` is non-empty when some samples were refused."""
        with self._gate:
            while self._exclusive:
                self._gate.wait()
            self._active += 1
        try:
            return self._ingest(body, admit)
        finally:
            with self._gate:
                self._active -= 1
                if not self._active:
                    self._gate.notify_all()

    def _ingest(self, body: bytes, admit: Admit | None) -> IngestReport:
        limits = self.limits
        limits.check_body_size(len(body))
        if self.metrics is not None:
            self.metrics.ingest_bytes.inc(len(body))
        raw = decompress_snappy(body, limits.max_body_bytes)
        decoded = decode_write_request(raw, self._refs)
        limits.check_series_per_request(len(decoded.keys))
        if admit is not None:
            admit(decoded.keys, len(decoded.timestamps_ms))
        report = IngestReport()
        refs = np.array(decoded.refs, dtype=np.int64)
        if (refs < 0).any():
            self._resolve(decoded, refs, report)
        sample_refs = refs[decoded.sample_series]
        ts, values = decoded.timestamps_ms, decoded.values
        keep = sample_refs >= 0
        future = ts > self.clock_ms() + self.max_future_ms
        if future.any():
            report.rejected["too_far_in_future"] = int(np.count_nonzero(future & keep))
            keep &= ~future
        if not keep.all():
            sample_refs, ts, values = sample_refs[keep], ts[keep], values[keep]
        if len(sample_refs):
            result = self.store.append(sample_refs, ts, values)
            report.accepted = int(result.accepted)
            for reason, count in result.rejected.items():
                if count:
                    report.rejected[reason] = report.rejected.get(reason, 0) + int(count)
            sink = self.after_append
            if sink is not None and report.accepted:
                series = decoded.sample_series[keep]
                sink(AppendedSamples(decoded.keys, series, sample_refs, ts, values, not result.rejected))
        if self.metrics is not None:
            self.metrics.ingest_samples.inc(report.accepted)
            for reason, count in report.rejected.items():
                self.metrics.reject(reason, count)
        return report

    def _resolve(self, decoded: DecodedWrite, refs: npt.NDArray[np.int64], report: IngestReport) -> None:
        """Series refs for label bytes not in the cache: parse, validate, create in the store."""
        missing = np.flatnonzero(refs < 0).tolist()
        with self._lock:
            cache = self._refs
            new_keys: list[bytes] = []
            new_labels: list[Labels] = []
            invalid: dict[bytes, InvalidSeries] = {}
            seen: set[bytes] = set()
            for i in missing:
                key = decoded.keys[i]
                if key in cache or key in seen or key in invalid:
                    continue
                try:
                    labels = self.limits.validate_labels(parse_labels(key))
                except InvalidSeries as exc:
                    invalid[key] = exc
                    continue
                seen.add(key)
                new_keys.append(key)
                new_labels.append(labels)
            if new_labels:
                try:
                    self.limits.check_active_series(self.store.num_series, len(new_labels))
                except LimitExceeded:
                    if self.metrics is not None:
                        self.metrics.reject("active_series_limit", len(decoded.timestamps_ms))
                    raise
                created = self.store.series_refs(new_labels).tolist()
                if len(cache) + len(created) > 4 * self.limits.max_active_series:
                    cache = self._refs = {}  # bound the cache even if series churn forever
                cache.update(zip(new_keys, created, strict=True))
        per_series = np.bincount(decoded.sample_series, minlength=len(decoded.keys))
        counts: dict[str, int] = {}
        first: dict[str, str] = {}
        for i in missing:
            key = decoded.keys[i]
            ref = cache.get(key)
            if ref is not None:
                refs[i] = ref
                continue
            problem = invalid[key]
            counts[problem.reason] = counts.get(problem.reason, 0) + int(per_series[i])
            first.setdefault(problem.reason, str(problem))
        for reason, count in counts.items():
            report.rejected[reason] = count
            report.messages.append(f"{first[reason]}: {count} samples rejected")
