"""Push ingest: samples from JSON, text exposition and Pushgateway-style pushes into the store.

Every path here (and OTLP, and the scrape manager) ends in `append_samples`, which hands the
samples to the remote-write ingest core (`RemoteWriteIngester.ingest`) as one WriteRequest, so
label validation, the active-series limit, the series cache, the retention gate and the
self-metrics are the remote-write path's own -- there is no second copy of them.

    JSON push / import / Pushgateway / OTLP / scrape --> SampleBatch --> WriteRequest bytes
        --> RemoteWriteIngester.ingest (validate, limit, resolve refs, Storage.append)

>>> batch = SampleBatch()
>>> batch.add((("__name__", "up"), ("job", "api")), 1_700_000_000_000, 1.0)
>>> len(batch)
1
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import cramjam
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from watchkeeper.collector.exposition import Exposition, parse_exposition
from watchkeeper.collector.limits import Limits
from watchkeeper.collector.remote_write import Admit, IngestReport
from watchkeeper.errors import DecodeError, IngestError
from watchkeeper.tsdb.reader import STALE_NAN

if TYPE_CHECKING:
    from watchkeeper.selfmetrics import SelfMetrics

Pairs = tuple[tuple[str, str], ...]
_DOUBLE = struct.Struct("<d")
_MAX_LABEL_CACHE = 1 << 20


class Ingester(Protocol):
    """What push needs from `remote_write.RemoteWriteIngester`."""

    limits: Limits
    metrics: SelfMetrics | None

    def ingest(self, body: bytes, admit: Admit | None = None) -> IngestReport: ...


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(num: int, payload: bytes) -> bytes:
    return _varint((num << 3) | 2) + _varint(len(payload)) + payload


def encode_label_pairs(pairs: Iterable[tuple[str, str]]) -> bytes:
    """The prompb label fields of a series (sorted by name; errors surface in validation)."""
    try:
        return b"".join(
            _field(1, _field(1, n.encode()) + _field(2, v.encode())) for n, v in sorted(pairs)
        )
    except UnicodeEncodeError:
        raise DecodeError("label name or value is not valid UTF-8 (lone surrogate)") from None


@dataclass(slots=True)
class SampleBatch:
    """Samples to append, as prompb label bytes per sample (cached per label set)."""

    keys: list[bytes] = field(default_factory=list)
    timestamps_ms: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, labels: Pairs, timestamp_ms: int, value: float) -> None:
        self.add_key(_label_key(labels), timestamp_ms, value)

    def add_key(self, key: bytes, timestamp_ms: int, value: float) -> None:
        self.keys.append(key)
        self.timestamps_ms.append(timestamp_ms)
        self.values.append(value)

    def __len__(self) -> int:
        return len(self.keys)

    def write_request(self) -> bytes:
        """The uncompressed WriteRequest, one TimeSeries per sample (value, then timestamp).

        Vectorised for the common case -- every timestamp a 6-byte varint (1971 to 2109) and label
        bytes under 16 KiB -- which is also the remote-write decoder's fast path."""
        n = len(self.keys)
        ts = np.array(self.timestamps_ms, dtype=np.int64)
        if n and int(ts.min()) >= 1 << 35 and int(ts.max()) < 1 << 42:
            m = np.empty((n, 18), dtype=np.uint8)
            m[:, 0] = 0x12
            m[:, 1] = 16
            m[:, 2] = 0x09
            m[:, 3:11] = np.array(self.values, dtype="<f8").view(np.uint8).reshape(n, 8)
            m[:, 11] = 0x10
            u = ts.view(np.uint64)
            for i in range(6):
                m[:, 12 + i] = ((u >> np.uint64(7 * i)) & np.uint64(0x7F)) | np.uint64(0x80 if i < 5 else 0)
            rows = m.tobytes()
            frames = _FRAMES
            try:
                parts = [
                    piece
                    for i, key in enumerate(self.keys)
                    for piece in (frames[len(key)], key, rows[18 * i : 18 * i + 18])
                ]
            except IndexError:  # a label set over 16 KiB: the general path below
                pass
            else:
                return b"".join(parts)
        return self._write_request_slow()

    def _write_request_slow(self) -> bytes:
        parts: list[bytes] = []
        add = parts.append
        pack = _DOUBLE.pack
        for key, ts, value in zip(self.keys, self.timestamps_ms, self.values, strict=True):
            sample = b"\x09" + pack(value) + b"\x10" + _varint(ts)
            body = key + b"\x12" + bytes((len(sample),)) + sample
            add(b"\x0a" + _varint(len(body)) + body)
        return b"".join(parts)


#: field 1 tag and length of a TimeSeries with label bytes of length i and one canonical sample
_FRAMES = [b"\x0a" + _varint(i + 18) for i in range(1 << 14)]

_label_cache: dict[Pairs, bytes] = {}
_label_cache_lock = threading.Lock()


def _label_key(labels: Pairs) -> bytes:
    key = _label_cache.get(labels)
    if key is None:
        key = encode_label_pairs(labels)
        with _label_cache_lock:
            if len(_label_cache) >= _MAX_LABEL_CACHE:
                _label_cache.clear()
            _label_cache[labels] = key
    return key


def append_samples(ingester: Ingester, batch: SampleBatch, admit: Admit | None = None) -> IngestReport:
    """Append a batch through the remote-write ingest core (which also refuses samples too far in
    the future, and calls `admit`: a tenant's limits). Blocking: call from a worker thread.

    Raises `IngestError`s for the whole batch (limits); per-series problems are in the report."""
    if not len(batch):
        return IngestReport()
    raw = batch.write_request()
    ingester.limits.check_body_size(len(raw), "decoded batch")
    return ingester.ingest(bytes(cramjam.snappy.compress_raw(raw)), admit)


def raise_for_report(report: IngestReport) -> None:
    """400 with the report's message when any sample was refused (as remote-write answers)."""
    if report.rejected:
        raise IngestError(report.message())


# --- JSON push: POST /api/v1/push ---------------------------------------------------------------


class PushSample(BaseModel):
    """One sample of the push body."""

    # docs/ingest.md shows PushBody.model_json_schema(); a test keeps the two equal

    model_config = ConfigDict(extra="forbid", strict=True, title="sample")

    metric: StrictStr = Field(min_length=1, description="metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
    labels: dict[StrictStr, StrictStr] = Field(
        default_factory=dict, description="label name -> value; not __name__ (that is `metric`)"
    )
    value: float | StrictStr = Field(description='a number, or "NaN", "+Inf", "-Inf"')
    timestamp_ms: int | None = Field(
        default=None, ge=-(2**63), lt=2**63, description="milliseconds since the epoch (default: now)"
    )

    @field_validator("value")
    @classmethod
    def _number(cls, value: float | str) -> float | str:
        if isinstance(value, str) and _special_float(value) is None:
            raise ValueError(f"value {value[:40]!r} is not a number (use NaN, +Inf or -Inf for those)")
        return value


class PushBody(BaseModel):
    """The body of ``POST /api/v1/push`` (the bare list of samples is accepted too)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="push")

    samples: list[PushSample] = Field(max_length=1_000_000)


def _special_float(text: str) -> float | None:
    return {"nan": math.nan, "+inf": math.inf, "inf": math.inf, "-inf": -math.inf}.get(text.lower())


def parse_json_push(body: bytes, *, now_ms: int) -> SampleBatch:
    """A batch from the JSON push body: ``{"samples": [{"metric", "labels", "value",
    "timestamp_ms"?}]}`` (or the bare list). Samples without a timestamp get `now_ms`.

    >>> b = parse_json_push(b'[{"metric": "jobs_done", "labels": {"job": "etl"}, "value": 3}]', now_ms=5)
    >>> b.timestamps_ms, b.values
    ([5], [3.0])
    """
    try:
        data: Any = json.loads(body.decode("utf-8"))  # strict: json.loads(bytes) passes surrogates
    except (ValueError, RecursionError) as exc:
        raise DecodeError(f"body is not valid JSON: {str(exc)[:200]}") from None
    if isinstance(data, list):
        data = {"samples": data}
    try:
        parsed = PushBody.model_validate(data)
    except ValidationError as exc:
        raise DecodeError(_pydantic_message(exc)) from None
    batch = SampleBatch()
    for s in parsed.samples:
        if "__name__" in s.labels:
            raise DecodeError("labels must not contain __name__; give the name as 'metric'")
        value = _special_float(s.value) if isinstance(s.value, str) else float(s.value)
        assert value is not None  # checked by the validator
        pairs = tuple(sorted({**s.labels, "__name__": s.metric}.items()))
        batch.add(pairs, now_ms if s.timestamp_ms is None else s.timestamp_ms, value)
    return batch


def _pydantic_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "invalid push body: " + "; ".join(parts) + (f" (and {more} more errors)" if more > 0 else "")


# --- text exposition: POST /api/v1/import/prometheus --------------------------------------------


def exposition_batch(
    exposition: Exposition, *, now_ms: int, extra: Mapping[str, str] | None = None, override: bool = True
) -> SampleBatch:
    """Samples of a parsed exposition; `extra` labels are added (replacing the body's when
    `override`, else only where the body has none)."""
    batch = SampleBatch()
    extra_items = tuple((extra or {}).items())
    for s in exposition.samples:
        labels = s.labels
        if extra_items:
            merged = dict(labels)
            for n, v in extra_items:
                if override or n not in merged:
                    merged[n] = v
            labels = tuple(merged.items())
        batch.add(tuple(sorted(labels)), now_ms if s.timestamp_ms is None else s.timestamp_ms, s.value)
    return batch


def parse_import(body: bytes, content_type: str, *, now_ms: int, extra: Mapping[str, str]) -> SampleBatch:
    """The body of ``POST /api/v1/import/prometheus`` (text format, or OpenMetrics by content
    type); `extra` are labels from ``extra_label=name=value`` query parameters."""
    exposition = parse_exposition(_text(body), openmetrics="openmetrics" in content_type.lower())
    return exposition_batch(exposition, now_ms=now_ms, extra=extra)


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"body is not valid UTF-8 (byte {exc.start})") from None


# --- Pushgateway-compatible: /metrics/job/<job>{/<label>/<value>} --------------------------------


def grouping_key(path: str) -> dict[str, str]:
    """The grouping labels of a Pushgateway path (after ``/metrics/``), with ``@base64`` values.

    >>> grouping_key("job/backup/instance/db1")
    {'job': 'backup', 'instance': 'db1'}
    >>> grouping_key("job@base64/YmFja3Vw")
    {'job': 'backup'}
    """
    parts = path.strip("/").split("/")
    if len(parts) < 2 or parts[0] not in ("job", "job@base64"):
        raise DecodeError("Pushgateway path must be /metrics/job/<job>{/<label>/<value>}")
    if len(parts) % 2:
        raise DecodeError(f"Pushgateway path has a label without a value: {path[:200]!r}")
    out: dict[str, str] = {}
    for name, value in zip(parts[::2], parts[1::2], strict=True):
        if name.endswith("@base64"):
            name = name[: -len("@base64")]
            try:
                value = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            except (binascii.Error, ValueError):
                raise DecodeError(f"invalid base64 value for label {name!r}") from None
        if name in out:
            raise DecodeError(f"label {name!r} appears twice in the grouping key")
        out[name] = value
    if not out["job"]:
        raise DecodeError("job name must not be empty")
    return out


class PushGroups:
    """Pushgateway semantics over a store: each group (grouping key) remembers the series it last
    pushed; ``PUT`` replaces the group (series no longer pushed get staleness markers), ``POST``
    replaces only the metric names pushed, ``DELETE`` marks every series of the group stale.
    Every push also writes ``push_time_seconds`` for the group, as the Pushgateway exposes it.
    Bounded: at most `max_groups` groups are remembered (the oldest is forgotten)."""

    def __init__(self, max_groups: int = 10_000) -> None:
        self._groups: dict[tuple[tuple[str, str], ...], dict[str, set[Pairs]]] = {}
        self._lock = threading.Lock()
        self.max_groups = max_groups

    def push(
        self, group: Mapping[str, str], exposition: Exposition | None, *, replace_all: bool, now_ms: int
    ) -> SampleBatch:
        """The batch for a push (`exposition`) or a delete (`exposition` None)."""
        gkey = tuple(sorted(group.items()))
        batch = SampleBatch()
        by_name: dict[str, set[Pairs]] = {}
        if exposition is not None:
            for s in exposition.samples:
                if s.timestamp_ms is not None:
                    raise DecodeError(
                        f"pushed metrics must not carry timestamps (series {s.labels_text()[:200]})"
                    )
                merged = dict(s.labels)
                for n, v in group.items():
                    if n in merged and merged[n] != v:
                        raise DecodeError(
                            f"pushed series {s.labels_text()[:200]} has label {n}={merged[n]!r}, "
                            f"which conflicts with the grouping key {n}={v!r}"
                        )
                    merged[n] = v
                labels = tuple(sorted(merged.items()))
                batch.add(labels, now_ms, s.value)
                by_name.setdefault(dict(labels)["__name__"], set()).add(labels)
            gl = tuple(sorted({**group, "__name__": "push_time_seconds"}.items()))
            batch.add(gl, now_ms, now_ms / 1000)
            by_name.setdefault("push_time_seconds", set()).add(gl)
        with self._lock:
            old = self._groups.pop(gkey, {})
            if exposition is None:
                gone = [labels for series in old.values() for labels in series]
                new: dict[str, set[Pairs]] = {}
            elif replace_all:
                gone = [s for name, series in old.items() for s in series - by_name.get(name, set())]
                new = by_name
            else:
                gone = [s for name, series in old.items() if name in by_name for s in series - by_name[name]]
                new = {**old, **by_name}
            if new:
                self._groups[gkey] = new
                while len(self._groups) > self.max_groups:
                    del self._groups[next(iter(self._groups))]
        for labels in gone:
            batch.add(labels, now_ms, STALE_NAN)
        return batch

