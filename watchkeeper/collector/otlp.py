"""OTLP/HTTP metrics -> Prometheus samples, following OpenTelemetry's Prometheus-compatibility rules
as Prometheus' own OTLP receiver applies them (names with unit and ``_total`` suffixes, legacy
label names, ``job``/``instance`` from the resource, the rest of it in ``target_info``).

    ExportMetricsServiceRequest (protobuf or JSON, decoded with opentelemetry-proto)
      gauge                     -> gauge                       (unit "1" -> ``_ratio``)
      sum, monotonic            -> counter ``<name>_total``    (delta -> cumulative, per series)
      sum, not monotonic        -> gauge                       (delta -> cumulative)
      histogram                 -> ``_bucket{le}``, ``_sum``, ``_count`` (delta -> cumulative)
      exponential histogram     -> classic ``_bucket{le}`` at the bucket bounds (downscaled to at
                                   most `max_exponential_buckets` buckets), ``_sum``, ``_count``
      summary                   -> ``{quantile}``, ``_sum``, ``_count``
      resource service.namespace/service.name -> ``job``; service.instance.id -> ``instance``;
      other resource attributes -> ``target_info{job, instance, ...} 1``

Points flagged "no recorded value" become staleness markers. A metric without data, or a point the
converter cannot use, is rejected with its reason (`Conversion.reasons`), reported back in the
response's ``partial_success`` and counted in the self-metric
``watchkeeper_ingest_rejected_samples_total{reason="otlp_<reason>"}``.

>>> from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
>>> OtlpConverter().convert(ExportMetricsServiceRequest()).batch.keys
[]
>>> metric_name("http.server.duration", "ms", "histogram")
'http_server_duration_milliseconds'
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
import threading
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    NumberDataPoint,
)

from watchkeeper.collector.push import SampleBatch, encode_label_pairs
from watchkeeper.errors import DecodeError
from watchkeeper.promql.formatting import format_go_float
from watchkeeper.tsdb.reader import STALE_NAN

Pairs = tuple[tuple[str, str], ...]
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
NO_RECORDED_VALUE = 1

_UNITS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
    "us": "microseconds", "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes",
    "GiBy": "gibibytes", "TiBy": "tebibytes", "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes",
    "TBy": "terabytes", "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts",
    "g": "grams", "Cel": "celsius", "Hz": "hertz", "1": "", "%": "percent",
}
_PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}
_NAME_SPLIT = re.compile(r"[^a-zA-Z0-9:]+")
_LABEL_INVALID = re.compile(r"[^a-zA-Z0-9_]")
_UNIT_BRACES = re.compile(r"\{[^}]*\}")
_RESOURCE_IDENTITY = frozenset({"service.name", "service.namespace", "service.instance.id"})
_MAX_CACHED_NAMES = 100_000


def decode_otlp(body: bytes, as_json: bool) -> ExportMetricsServiceRequest:
    """The request message of an OTLP/HTTP body; `DecodeError` (400) when it is malformed."""
    message = ExportMetricsServiceRequest()
    if not as_json:
        try:
            message.ParseFromString(body)
        except (ProtobufDecodeError, RuntimeError, ValueError) as exc:
            reason = str(exc)[:200] or "malformed message"
            raise DecodeError(f"OTLP protobuf decode error: {reason}") from None
        return message
    try:
        data = json.loads(body.decode("utf-8"))  # strict: json.loads(bytes) would pass surrogates
    except (ValueError, RecursionError) as exc:
        raise DecodeError(f"OTLP JSON body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise DecodeError("OTLP JSON body must be an object with resourceMetrics")
    # OTLP JSON spells trace ids in hex, protobuf JSON in base64; exemplars are unused anyway. Lone
    # surrogates (only possible as \\ud800-style escapes) cannot go into protobuf strings.
    _drop_exemplars(data, 0, b"\\ud" in body.lower())
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=True, max_recursion_depth=64)
    except (json_format.ParseError, ValueError, TypeError, RecursionError, AttributeError) as exc:
        raise DecodeError(f"OTLP JSON decode error: {str(exc)[:200]}") from None
    return message


def _drop_exemplars(node: Any, depth: int, check_strings: bool) -> None:
    if depth > 64:
        raise DecodeError("OTLP JSON body is nested too deeply")
    if isinstance(node, dict):
        node.pop("exemplars", None)
        items: Iterable[Any] = node.values()
        if check_strings:
            for k in node:
                _check_utf8(k)
    else:
        items = node
    for v in items:
        if isinstance(v, (dict, list)):
            _drop_exemplars(v, depth + 1, check_strings)
        elif check_strings and isinstance(v, str):
            _check_utf8(v)


def _check_utf8(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise DecodeError("OTLP JSON body has a string with a lone surrogate (bad \\u escape)") from None


def otlp_response(rejected: int, message: str, as_json: bool) -> tuple[bytes, str]:
    """(body, content type) of an ExportMetricsServiceResponse, with partial_success if any
    point was rejected."""
    response = ExportMetricsServiceResponse()
    if rejected:
        response.partial_success.rejected_data_points = rejected
        response.partial_success.error_message = message
    if as_json:
        return json_format.MessageToJson(response, indent=None).encode(), "application/json"
    return response.SerializeToString(), "application/x-protobuf"


def metric_name(name: str, unit: str, kind: str) -> str:
    """The Prometheus name of an OTel metric: tokens joined by ``_``, unit suffixes added, counters
    end in ``_total``, gauges of unit ``1`` in ``_ratio``.

    >>> metric_name("http.server.request.count", "{request}", "counter")
    'http_server_request_count_total'
    >>> metric_name("system.network.io", "By/s", "gauge")
    'system_network_io_bytes_per_second'
    """
    tokens = [t for t in _NAME_SPLIT.split(name) if t]
    unit = _UNIT_BRACES.sub("", unit).strip()
    main, _, per = unit.partition("/")
    main_suffix = _UNITS.get(main, _clean_unit(main))
    per_suffix = _PER_UNITS.get(per, _clean_unit(per))
    if kind == "counter" and tokens and tokens[-1] == "total":
        tokens.pop()
    if main_suffix and main_suffix not in tokens:
        tokens.append(main_suffix)
    if per_suffix and per_suffix not in tokens:
        tokens += ["per", per_suffix]
    if kind == "counter":
        tokens.append("total")
    if kind == "gauge" and unit == "1" and "ratio" not in tokens:
        tokens.append("ratio")
    out = "_".join(tokens)
    if out and out[0].isdigit():
        out = "_" + out
    return out


def _clean_unit(unit: str) -> str:
    return "_".join(t for t in _NAME_SPLIT.split(unit) if t)


def label_name(key: str) -> str:
    """A legacy Prometheus label name for an attribute key.

    >>> label_name("http.response.status_code"), label_name("2xx"), label_name("_private")
    ('http_response_status_code', 'key_2xx', 'key_private')
    """
    out = _LABEL_INVALID.sub("_", key)
    if out and out[0].isdigit():
        out = "key_" + out
    elif out.startswith("_") and not out.startswith("__"):
        out = "key" + out
    return out


def attribute_value(value: AnyValue) -> str:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return format_float(value.double_value)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind in ("array_value", "kvlist_value"):
        return str(json_format.MessageToJson(value, indent=None))
    return ""


@functools.lru_cache(maxsize=4096)
def format_float(value: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'f', -1, 64)``, as Prometheus prints ``le`` and ``quantile``."""
    return format_go_float(value, "f")


def _attributes(attrs: Sequence[KeyValue], names: dict[str, str]) -> dict[str, str]:
    """Attributes as labels; keys that sanitise to the same name are joined with ';' (sorted by key).
    `names` caches key -> label name (bounded)."""
    out: dict[str, str] = {}
    for kv in attrs:
        name = names.get(kv.key)
        if name is None:
            if len(names) >= _MAX_CACHED_NAMES:
                names.clear()
            name = names[kv.key] = label_name(kv.key)
        if name in out:
            return _joined_attributes(attrs)
        out[name] = attribute_value(kv.value)
    return out


def _joined_attributes(attrs: Sequence[KeyValue]) -> dict[str, str]:
    out: dict[str, str] = {}
    for kv in sorted(attrs, key=lambda kv: kv.key):
        name, value = label_name(kv.key), attribute_value(kv.value)
        out[name] = out[name] + ";" + value if name in out else value
    return out


@dataclass(slots=True)
class _HistState:
    buckets: dict[float, float] = field(default_factory=dict)  # le -> count in that bucket alone
    total: float = 0.0
    count: float = 0.0
    time_unix_nano: int = 0


@dataclass(slots=True)
class Conversion:
    batch: SampleBatch
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def reject(self, reason: str, count: int, example: str) -> None:
        self.rejected += count
        self.reasons[reason] = self.reasons.get(reason, 0) + count
        if len(self.examples) < 3:
            self.examples.append(example)

    def message(self) -> str:
        if not self.rejected:
            return ""
        counts = ", ".join(f"{n} {r}" for r, n in self.reasons.items())
        return f"{self.rejected} data points rejected ({counts}): " + "; ".join(self.examples)


class OtlpConverter:
    """Converts export requests to samples. Keeps the running totals that turn delta temporality
    into cumulative (bounded: at most `max_delta_series` series; the oldest are forgotten, which
    restarts their counters -- a counter reset to PromQL). Thread-safe.

    >>> conv = OtlpConverter()
    >>> result = conv.convert(request)          # doctest: +SKIP
    >>> storage_append(result.batch)            # doctest: +SKIP
    """

    def __init__(self, *, max_delta_series: int = 1_000_000, max_exponential_buckets: int = 160,
                 scope_labels: bool = False) -> None:
        self.max_delta_series = max_delta_series
        self.max_exponential_buckets = max_exponential_buckets
        self.scope_labels = scope_labels
        self._sums: dict[tuple[Any, ...], tuple[float, int]] = {}
        self._hists: dict[tuple[Any, ...], _HistState] = {}
        self._bucket_keys: dict[tuple[Pairs, Pairs], dict[float, bytes]] = {}  # per histogram: le -> labels
        self.max_histogram_series = 100_000
        self._names: dict[str, str] = {}
        self._lock = threading.Lock()

    def convert(self, request: ExportMetricsServiceRequest, *, now_ms: int = 0) -> Conversion:
        out = Conversion(SampleBatch())
        with self._lock:
            for rm in request.resource_metrics:
                self._resource(rm, out, now_ms)
        return out

    def _resource(self, rm: Any, out: Conversion, now_ms: int) -> None:
        res = {kv.key: attribute_value(kv.value) for kv in rm.resource.attributes}
        service = res.get("service.name", "")
        namespace = res.get("service.namespace", "")
        job = f"{namespace}/{service}" if namespace and service else service
        identity = {"job": job, "instance": res.get("service.instance.id", "")}
        batch = out.batch
        before = len(batch)
        latest = 0
        for sm in rm.scope_metrics:
            scope = dict(identity)
            if self.scope_labels:
                scope["otel_scope_name"] = sm.scope.name
                scope["otel_scope_version"] = sm.scope.version
            for metric in sm.metrics:
                latest = max(latest, self._metric(metric, scope, out, now_ms))
        extra = {k: v for k, v in res.items() if k not in _RESOURCE_IDENTITY}
        if extra and len(batch) > before:
            info = _attributes([kv for kv in rm.resource.attributes if kv.key not in _RESOURCE_IDENTITY],
                               self._names)
            info.update(identity)
            info["__name__"] = "target_info"
            batch.add(tuple(sorted(info.items())), latest, 1.0)

    def _metric(self, metric: Any, base: dict[str, str], out: Conversion, now_ms: int) -> int:
        kind = metric.WhichOneof("data")
        if kind is None:
            out.reject("no_data", 1, f"metric {metric.name[:80]!r} has no data")
            return 0
        if not metric.name:
            out.reject("no_name", _count(metric, kind), "metric without a name")
            return 0
        if kind == "gauge":
            return self._numbers(metric.gauge.data_points, metric_name(metric.name, metric.unit, "gauge"),
                                 base, out, None, now_ms)
        if kind == "sum":
            s = metric.sum
            prom_kind = "counter" if s.is_monotonic else "gauge"
            name = metric_name(metric.name, metric.unit, prom_kind)
            delta = (name, tuple(sorted(base.items()))) if s.aggregation_temporality == DELTA else None
            return self._numbers(s.data_points, name, base, out, delta, now_ms)
        name = metric_name(metric.name, metric.unit, kind)
        if kind == "histogram":
            h = metric.histogram
            delta_h = h.aggregation_temporality == DELTA
            latest = 0
            for p in h.data_points:
                buckets = _explicit_buckets(p)
                if buckets is None:
                    out.reject("bad_histogram", 1,
                               f"histogram {name}: {len(p.bucket_counts)} bucket counts for "
                               f"{len(p.explicit_bounds)} bounds")
                    continue
                latest = max(latest, self._histogram(p, name, base, buckets, delta_h, out, now_ms))
            return latest
        if kind == "exponential_histogram":
            e = metric.exponential_histogram
            delta_e = e.aggregation_temporality == DELTA
            latest = 0
            for ep in e.data_points:
                exp_buckets = self._exponential_buckets(ep)
                if isinstance(exp_buckets, str):
                    out.reject("bad_exponential_histogram", 1, f"exponential histogram {name}: {exp_buckets}")
                    continue
                latest = max(latest, self._histogram(ep, name, base, exp_buckets, delta_e, out, now_ms))
            return latest
        # summary
        latest = 0
        for sp in metric.summary.data_points:
            labels = {**_attributes(sp.attributes, self._names), **base}
            ts = _ms(sp.time_unix_nano, now_ms)
            latest = max(latest, ts)
            stale = bool(sp.flags & NO_RECORDED_VALUE)
            for q in sp.quantile_values:
                ql = {**labels, "__name__": name, "quantile": format_float(q.quantile)}
                out.batch.add(tuple(sorted(ql.items())), ts, STALE_NAN if stale else q.value)
            out.batch.add(_with(labels, name + "_sum"), ts, STALE_NAN if stale else sp.sum)
            out.batch.add(_with(labels, name + "_count"), ts, STALE_NAN if stale else float(sp.count))
        return latest

    def _numbers(self, points: Sequence[NumberDataPoint], name: str, base: dict[str, str], out: Conversion,
                 delta: tuple[Any, ...] | None, now_ms: int) -> int:
        latest = 0
        add = out.batch.add
        for p in points:
            labels = {**_attributes(p.attributes, self._names), **base, "__name__": name}
            ts = _ms(p.time_unix_nano, now_ms)
            latest = max(latest, ts)
            key = tuple(sorted(labels.items()))
            if p.flags & NO_RECORDED_VALUE:
                add(key, ts, STALE_NAN)
                continue
            value = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
            if delta is not None:
                skey = (delta, key)
                total, last = self._sums.get(skey, (0.0, 0))
                if p.time_unix_nano and p.time_unix_nano <= last:
                    out.reject("delta_out_of_order", 1,
                               f"{name}: delta point at or before the previous one of its series")
                    continue
                value += total
                self._sums[skey] = (value, p.time_unix_nano)
                _bound(self._sums, self.max_delta_series)
            add(key, ts, value)
        return latest

    def _histogram(self, p: HistogramDataPoint | ExponentialHistogramDataPoint, name: str,
                   base: dict[str, str], buckets: list[tuple[float, float]], delta: bool, out: Conversion,
                   now_ms: int) -> int:
        labels = {**_attributes(p.attributes, self._names), **base}
        ts = _ms(p.time_unix_nano, now_ms)
        stale = bool(p.flags & NO_RECORDED_VALUE)
        total = p.sum if p.HasField("sum") else None
        count = float(p.count)
        if delta and not stale:
            skey = (name, tuple(sorted(labels.items())))
            state = self._hists.get(skey)
            if state is None:
                state = self._hists[skey] = _HistState()
                _bound(self._hists, self.max_delta_series)
            elif p.time_unix_nano and p.time_unix_nano <= state.time_unix_nano:
                out.reject("delta_out_of_order", 1,
                           f"{name}: delta point at or before the previous one of its series")
                return ts
            state.time_unix_nano = p.time_unix_nano
            for le, n in buckets:
                state.buckets[le] = state.buckets.get(le, 0.0) + n
            state.count += count
            state.total += total or 0.0
            buckets = sorted(state.buckets.items())
            count = state.count
            total = state.total if total is not None else None
        add = out.batch.add
        # sorted label pairs built once per point: only the le pair differs between buckets
        pairs = tuple(sorted((k, v) for k, v in labels.items() if k != "__name__"))
        no_le = tuple(kv for kv in pairs if kv[0] != "le")
        at_name, at_le = bisect_left(no_le, "__name__", key=_key), bisect_left(no_le, "le", key=_key)
        head = (*no_le[:at_name], ("__name__", name + "_bucket"), *no_le[at_name:at_le])
        tail = no_le[at_le:]
        series = self._bucket_keys.get((head, tail))
        if series is None:
            series = self._bucket_keys[head, tail] = {}
            _bound(self._bucket_keys, self.max_histogram_series)
        add_key = out.batch.add_key
        cumulative = 0.0
        for le, n in buckets:
            cumulative += n
            key = series.get(le)
            if key is None:
                key = series[le] = encode_label_pairs((*head, ("le", format_float(le)), *tail))
            add_key(key, ts, STALE_NAN if stale else cumulative)
        at_name = bisect_left(pairs, "__name__", key=_key)
        for suffix, value in (("_sum", total), ("_count", count)):
            if value is not None:
                named = (*pairs[:at_name], ("__name__", name + suffix), *pairs[at_name:])
                add(named, ts, STALE_NAN if stale else value)
        return ts

    def _exponential_buckets(self, p: ExponentialHistogramDataPoint) -> list[tuple[float, float]] | str:
        """Classic (upper bound, count) buckets of an exponential histogram, ending with +Inf, or
        the reason it cannot be converted."""
        scale = p.scale
        if not -10 <= scale <= 20:
            return f"scale {scale} is outside the range -10..20"
        pos = {p.positive.offset + i: float(c) for i, c in enumerate(p.positive.bucket_counts) if c}
        neg = {p.negative.offset + i: float(c) for i, c in enumerate(p.negative.bucket_counts) if c}
        while scale > -10 and _span(pos) + _span(neg) > self.max_exponential_buckets:
            scale -= 1
            pos = _downscale(pos)
            neg = _downscale(neg)
        if _span(pos) + _span(neg) > self.max_exponential_buckets:
            return f"buckets span more than {self.max_exponential_buckets} buckets even at scale -10"
        out: list[tuple[float, float]] = []
        if neg:
            for i in range(max(neg), min(neg) - 1, -1):
                out.append((-_bound_of(i, scale), neg.get(i, 0.0)))
        if p.zero_count or not (pos or neg):
            out.append((p.zero_threshold, float(p.zero_count)))
        if pos:
            for i in range(min(pos), max(pos) + 1):
                out.append((_bound_of(i + 1, scale), pos.get(i, 0.0)))
        seen = sum(n for _, n in out)
        out.append((math.inf, max(float(p.count) - seen, 0.0)))
        merged: dict[float, float] = {}
        for le, n in out:  # bounds that overflow to inf fold into the +Inf bucket
            merged[le] = merged.get(le, 0.0) + n
        return sorted(merged.items())


def _span(d: dict[int, float]) -> int:
    return max(d) - min(d) + 1 if d else 0


def _downscale(d: dict[int, float]) -> dict[int, float]:
    out: dict[int, float] = {}
    for i, c in d.items():
        out[i >> 1] = out.get(i >> 1, 0.0) + c
    return out


def _bound_of(index: int, scale: int) -> float:
    try:
        return float(2.0 ** (index * 2.0**-scale))
    except OverflowError:
        return math.inf


def _explicit_buckets(p: HistogramDataPoint) -> list[tuple[float, float]] | None:
    bounds = list(p.explicit_bounds)
    counts = list(p.bucket_counts)
    if not counts and not bounds:
        return [(math.inf, float(p.count))]
    if len(counts) != len(bounds) + 1 or any(b >= a for a, b in zip(bounds[1:], bounds, strict=False)):
        return None
    return [*zip(bounds, map(float, counts), strict=False), (math.inf, float(counts[-1]))]


def _with(labels: dict[str, str], name: str) -> Pairs:
    return tuple(sorted({**labels, "__name__": name}.items()))


def _key(pair: tuple[str, str]) -> str:
    return pair[0]


def _ms(time_unix_nano: int, now_ms: int) -> int:
    return time_unix_nano // 1_000_000 if time_unix_nano else now_ms


def _count(metric: Any, kind: str) -> int:
    return len(getattr(metric, kind).data_points) or 1


def _bound(d: dict[Any, Any], limit: int) -> None:
    while len(d) > limit:
        del d[next(iter(d))]
