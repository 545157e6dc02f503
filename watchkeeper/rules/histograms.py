"""Native histogram values of promtool unit tests, kept beside the store (which holds floats only).

Prometheus' series notation writes histograms as ``{{schema:1 sum:3 count:2 buckets:[2 1]}}`` with
``a+bxN`` / ``axN`` expansions. The TSDB and engine of watchkeeper have no native histograms, so
``test rules`` keeps these samples here: a ``promql_expr_test`` whose expression is a plain
selector of such series gets them back (5m lookback, staleness), and any other expression over
them is reported as unsupported instead of silently evaluating without them.

>>> h = parse_histogram("{{sum:3 count:2 buckets:[2]}}")
>>> format_histogram(add(h, h, hint="not_reset"))
'{{count:4 sum:6 counter_reset_hint:not_reset buckets:[4]}}'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from watchkeeper.promql.formatting import format_go_float

_ITEM = re.compile(r"^(\{\{.*?\}\})(?:([+-])(\{\{.*?\}\}))?(?:x(\d+))?$")
_FIELD = re.compile(r"(\w+):(\[[^\]]*\]|\S+)")


@dataclass(frozen=True, slots=True)
class Histogram:
    schema: int = 0
    count: float = 0.0
    sum: float = 0.0
    z_bucket: float = 0.0
    z_bucket_w: float = 0.0
    offset: int = 0
    buckets: tuple[float, ...] = ()
    n_offset: int = 0
    n_buckets: tuple[float, ...] = ()
    counter_reset_hint: str = "unknown"
    custom_values: tuple[float, ...] = field(default=())


def parse_histogram(text: str) -> Histogram:
    body = text.strip()
    if not (body.startswith("{{") and body.endswith("}}")):
        raise ValueError(f"not a histogram: {text!r}")
    fields: dict[str, Any] = {}
    for name, raw in _FIELD.findall(body[2:-2]):
        if raw.startswith("["):
            if name not in ("buckets", "n_buckets", "custom_values"):
                raise ValueError(f"unknown histogram field {name!r}")
            fields[name] = tuple(float(x) for x in raw[1:-1].split())
        elif name in ("schema", "offset", "n_offset"):
            fields[name] = int(raw)
        elif name in ("count", "sum", "z_bucket", "z_bucket_w"):
            fields[name] = float(raw)
        elif name == "counter_reset_hint":
            fields[name] = raw
        else:
            raise ValueError(f"unknown histogram field {name!r}")
    return Histogram(**fields)


def _add_lists(a: tuple[float, ...], b: tuple[float, ...], sign: float) -> tuple[float, ...]:
    n = max(len(a), len(b))
    return tuple((a[i] if i < len(a) else 0.0) + sign * (b[i] if i < len(b) else 0.0) for i in range(n))


def add(a: Histogram, b: Histogram, *, sign: float = 1.0, hint: str = "unknown") -> Histogram:
    """``a + sign*b`` bucket by bucket (the test notation's increments share schema and offsets)."""
    return replace(
        a, count=a.count + sign * b.count, sum=a.sum + sign * b.sum,
        z_bucket=a.z_bucket + sign * b.z_bucket,
        buckets=_add_lists(a.buckets, b.buckets, sign), n_buckets=_add_lists(a.n_buckets, b.n_buckets, sign),
        counter_reset_hint=hint,
    )


def expand_item(item: str) -> list[Histogram] | None:
    """``{{...}}``, ``{{...}}xN``, ``{{...}}+{{...}}xN``; None if ``item`` is not a histogram."""
    m = _ITEM.match(item)
    if m is None:
        return None
    start = parse_histogram(m.group(1))
    times = int(m.group(4)) if m.group(4) else 0
    out = [start]
    current = start
    delta = parse_histogram(m.group(3)) if m.group(3) else None
    for _ in range(times):
        current = (add(current, delta, sign=-1.0 if m.group(2) == "-" else 1.0, hint="not_reset")
                   if delta is not None else replace(current, counter_reset_hint="not_reset"))
        out.append(current)
    return out


def _num(v: float) -> str:
    return format_go_float(v, "g")


def format_histogram(h: Histogram) -> str:
    """Prometheus' ``HistogramTestExpression`` text (fields at their defaults omitted)."""
    parts: list[str] = []
    if h.schema:
        parts.append(f"schema:{h.schema}")
    parts += [f"count:{_num(h.count)}", f"sum:{_num(h.sum)}"]
    if h.z_bucket:
        parts.append(f"z_bucket:{_num(h.z_bucket)}")
    if h.z_bucket_w:
        parts.append(f"z_bucket_w:{_num(h.z_bucket_w)}")
    if h.counter_reset_hint != "unknown":
        parts.append(f"counter_reset_hint:{h.counter_reset_hint}")
    if h.offset:
        parts.append(f"offset:{h.offset}")
    if h.buckets:
        parts.append("buckets:[" + " ".join(_num(b) for b in h.buckets) + "]")
    if h.n_offset:
        parts.append(f"n_offset:{h.n_offset}")
    if h.n_buckets:
        parts.append("n_buckets:[" + " ".join(_num(b) for b in h.n_buckets) + "]")
    if h.custom_values:
        parts.append("custom_values:[" + " ".join(_num(b) for b in h.custom_values) + "]")
    return "{{" + " ".join(parts) + "}}"
