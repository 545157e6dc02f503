"""Prometheus' text forms of floats and timestamps, as its HTTP API writes them.

Sample values are JSON strings in Go's shortest round-trip digits, fixed notation except for
magnitudes below 1e-6 or from 1e21 up (``strconv.AppendFloat(f, 'f'|'e', -1, 64)``); timestamps are
JSON numbers in seconds with at most three decimals (Prometheus' ``MarshalTimestamp``):

>>> format_sample_value(1.0), format_sample_value(0.1), format_sample_value(1e21), format_sample_value(1e-7)
('1', '0.1', '1e+21', '1e-07')
>>> format_sample_value(float("inf")), format_sample_value(float("nan"))
('+Inf', 'NaN')
>>> format_timestamp(1435781451781), format_timestamp(4000), format_timestamp(1050)
('1435781451.781', '4', '1.050')

:func:`result_json` writes the ``data`` object of a query answer with these, by hand rather than
through ``json.dumps``, so that bodies match Prometheus' where clients care.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from typing import Any

import numpy as np

from watchkeeper.labels import Labels
from watchkeeper.promql.values import F64, I64, QueryResult

_orjson: Any
try:  # optional: ~25x faster shortest-digit floats than repr (the same digits)
    _orjson = importlib.import_module("orjson")
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None


def _shortest_digits(f: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of ``abs(f)`` and the exponent ``e`` such that the value
    is ``0.DIGITS × 10^e`` (``f`` finite and non-zero)."""
    mantissa, _, exp_text = repr(abs(f)).partition("e")
    whole, _, frac = mantissa.partition(".")
    if frac == "0":
        frac = ""
    digits = (whole + frac).lstrip("0")
    point = len(whole) + (int(exp_text) if exp_text else 0)
    # leading zeros of e.g. "0.0001" shift the decimal point left
    point -= len(whole + frac) - len((whole + frac).lstrip("0"))
    return digits.rstrip("0") or "0", point


def format_go_float(f: float, fmt: str = "f") -> str:
    """Go's ``strconv.FormatFloat(f, fmt, -1, 64)`` for ``fmt`` in ``f``, ``e``, ``g`` (``g`` is
    also what Go's ``%v`` prints: ``1e+06``, ``0.0001``, ``1e-05``)."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, f) < 0 else ""
    if f == 0:
        return sign + ("0e+00" if fmt == "e" else "0")
    digits, point = _shortest_digits(f)
    if fmt == "g":
        exp = point - 1
        fmt = "e" if exp < -4 or exp >= 6 else "f"  # Go: eprec 6 for the shortest form
    if fmt == "e":
        exp = point - 1
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def format_sample_value(f: float) -> str:
    """A sample value as Prometheus' JSON API writes it (``jsonutil.MarshalFloat``)."""
    text = repr(f)
    if "e" not in text and "n" not in text:  # fixed notation already (1e-4 <= |f| < 1e16), finite
        return text[:-2] if text.endswith(".0") else text
    magnitude = abs(f)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        return format_go_float(f, "e")
    return format_go_float(f, "f")


def format_timestamp(timestamp_ms: int) -> str:
    """Milliseconds as Prometheus' JSON seconds (``MarshalTimestamp``): ``1.050``, ``4``, ``-0.5``."""
    if timestamp_ms >= 0:
        seconds, fraction = divmod(timestamp_ms, 1000)
        return f"{seconds}.{fraction:03d}" if fraction else str(seconds)
    sign = "-"
    seconds, fraction = divmod(abs(timestamp_ms), 1000)
    if fraction:
        return f"{sign}{seconds}.{fraction:03d}"
    return f"{sign}{seconds}"


# --- JSON ----------------------------------------------------------------------------------------

_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_HTML_RE = re.compile("[<>&\u2028\u2029]")


def json_string(text: str) -> str:
    """A JSON string as Go's encoder writes it: UTF-8 kept, ``<>&`` escaped."""
    return _HTML_RE.sub(lambda m: _HTML_ESCAPES[m.group()], json.dumps(text, ensure_ascii=False))


def labels_json(labels: Labels) -> str:
    return "{" + ",".join(f"{json_string(k)}:{json_string(v)}" for k, v in labels) + "}"


def _point(timestamp_ms: int, value: float) -> str:
    # formatted values are digits, ".", "e", "+", "-", "Inf", "NaN": no escaping needed
    return f'[{format_timestamp(timestamp_ms)},"{format_sample_value(value)}"]'


def _value_texts(values: F64) -> list[str]:
    """``format_sample_value`` of every value, fast: the shortest round-trip digits of all of
    them at once (orjson's, when installed, else ``repr``), which are already Prometheus' text
    for every finite value in fixed notation once a trailing ``.0`` is cut; the few others
    (exponents, NaN, infinities) go through ``format_sample_value``."""
    if values.shape[0] == 0:
        return []
    texts: list[str]
    if _orjson is not None:
        flat = np.ascontiguousarray(values, dtype=np.float64)
        texts = _orjson.dumps(flat, option=_orjson.OPT_SERIALIZE_NUMPY).decode()[1:-1].split(",")
    else:
        texts = list(map(float.__repr__, values.tolist()))
    joined = "\x00".join(texts)
    if "e" in joined or "n" in joined or "l" in joined:  # exponent, nan/inf, orjson's null
        for i, text in enumerate(texts):
            if "e" in text or "n" in text or "l" in text:
                texts[i] = format_sample_value(float(values[i]))
        joined = "\x00".join(texts)
    if ".0\x00" in joined or joined.endswith(".0"):
        joined = joined.replace(".0\x00", "\x00")
        texts = (joined[:-2] if joined.endswith(".0") else joined).split("\x00")
    return texts


def _points(timestamps_ms: I64, values: F64, seen: dict[int, str]) -> str:
    """``[t,"v"],...``; ``seen`` caches timestamp texts (the series of a range query share them)."""
    stamps = timestamps_ms.tolist()
    try:
        stamp_texts = list(map(seen.__getitem__, stamps))
    except KeyError:
        for t in stamps:
            if t not in seen:
                seen[t] = format_timestamp(t)
        stamp_texts = list(map(seen.__getitem__, stamps))
    pairs: list[str] = [""] * (2 * len(stamps))
    pairs[0::2] = stamp_texts
    pairs[1::2] = _value_texts(values)
    return ('[%s,"%s"],' * len(stamps) % tuple(pairs))[:-1]


def result_json(result: QueryResult) -> str:
    """The ``data`` object of a query answer."""
    kind = result.result_type
    if kind in ("scalar", "string"):
        series = result.series[0] if result.series else None
        t = int(series.timestamps_ms[0]) if series is not None and len(series.timestamps_ms) else 0
        if kind == "string":
            body = f"[{format_timestamp(t)},{json_string(result.string_value or '')}]"
        else:
            value = float(series.values[0]) if series is not None and len(series.values) else math.nan
            body = _point(t, value)
        return f'{{"resultType":"{kind}","result":{body}}}'
    items = []
    seen: dict[int, str] = {}
    for s in result.series:
        if kind == "vector":
            items.append(f'{{"metric":{labels_json(s.labels)},"value":'
                         f"{_point(int(s.timestamps_ms[0]), float(s.values[0]))}}}")
        else:
            points = _points(s.timestamps_ms, s.values, seen)
            items.append(f'{{"metric":{labels_json(s.labels)},"values":[{points}]}}')
    return f'{{"resultType":"{kind}","result":[{",".join(items)}]}}'
