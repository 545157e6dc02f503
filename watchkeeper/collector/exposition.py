"""Parser of the Prometheus text exposition format (0.0.4) and OpenMetrics 1.0 text.

Pure: text in, samples out. Errors are `DecodeError`s naming the line. With a `cache` (the scrape
manager keeps one per target), a line whose series text was seen before is not parsed again: only
its value and timestamp are read, as Prometheus' scrape cache does.

>>> exp = parse_exposition('# TYPE http_requests_total counter\\n'
...                        'http_requests_total{code="200"} 7 1700000000000\\n')
>>> exp.samples[0].labels, exp.samples[0].value, exp.samples[0].timestamp_ms
((('__name__', 'http_requests_total'), ('code', '200')), 7.0, 1700000000000)
>>> exp.types
{'http_requests_total': 'counter'}
"""

from __future__ import annotations

import math
import re
from collections.abc import Container
from dataclasses import dataclass, field

from watchkeeper.errors import DecodeError

Pairs = tuple[tuple[str, str], ...]

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*\"((?:[^\"\\\n]|\\.)*)\"[ \t]*")
_ESCAPE = re.compile(r"\\(.)")
_INT = re.compile(r"-?[0-9]+")
_TYPES = frozenset(
    {"counter", "gauge", "histogram", "gaugehistogram", "summary", "untyped", "unknown", "info", "stateset"}
)
_CREATED_OF = frozenset({"counter", "histogram", "summary", "gaugehistogram"})
_MIN_TS, _MAX_TS = -(2**63), 2**63 - 1
_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n"}


@dataclass(frozen=True, slots=True)
class ExpositionSample:
    """One sample line: its labels (``__name__`` first, then as written), value, timestamp."""

    key: str  # the series text as written (name and label set), the key of the scrape cache
    labels: Pairs
    value: float
    timestamp_ms: int | None

    def labels_text(self) -> str:
        return self.key


@dataclass(slots=True)
class Exposition:
    samples: list[ExpositionSample] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)
    help: dict[str, str] = field(default_factory=dict)


def parse_exposition(
    text: str, *, openmetrics: bool = False, cache: dict[str, Pairs] | None = None,
    known: Container[str] = (),
) -> Exposition:
    """Parse a whole exposition body. OpenMetrics bodies must end with ``# EOF``; their
    timestamps are seconds (text format: milliseconds) and their ``_created`` series of counters,
    histograms and summaries are skipped (Prometheus does the same by default).

    A line whose series text is in `known` is not parsed beyond its value: its sample has empty
    `labels` (the caller knows them by `key`). The scrape manager passes its own per-target map,
    so it keeps no parsed label tuples (which would cost the garbage collector time)."""
    out = Exposition()
    samples = out.samples
    types = out.types
    cache = cache if cache is not None else {}
    seen_eof = False
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for lineno, raw in enumerate(lines, 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if seen_eof:
            raise DecodeError(f"line {lineno}: content after '# EOF'")
        if not line or line.isspace():
            if openmetrics:
                raise DecodeError(f"line {lineno}: empty lines are not allowed in OpenMetrics")
            continue
        if line[0] == "#":
            if openmetrics and line == "# EOF":
                seen_eof = True
                continue
            _comment(line, lineno, out, openmetrics)
            continue
        if line[0] in " \t":
            line = line.lstrip(" \t")
            if line.startswith("#"):
                continue
        sample = _sample(line, lineno, openmetrics, cache, known)
        if openmetrics and sample.key.split("{", 1)[0].rstrip().endswith("_created"):
            base = sample.key.split("{", 1)[0].rstrip()[: -len("_created")]
            if types.get(base) in _CREATED_OF:
                continue
        samples.append(sample)
    if openmetrics and not seen_eof:
        raise DecodeError("OpenMetrics body does not end with '# EOF'")
    return out


def _comment(line: str, lineno: int, out: Exposition, openmetrics: bool) -> None:
    parts = line[1:].lstrip(" \t").split(None, 2)
    if not parts or parts[0] not in ("HELP", "TYPE", "UNIT"):
        if openmetrics:
            raise DecodeError(f"line {lineno}: unexpected comment {line[:80]!r} (OpenMetrics allows "
                              "only HELP, TYPE, UNIT and EOF)")
        return
    if len(parts) < 2 or _NAME.fullmatch(parts[1]) is None:
        raise DecodeError(f"line {lineno}: {parts[0]} needs a valid metric name: {line[:120]!r}")
    name = parts[1]
    if parts[0] == "TYPE":
        kind = parts[2].strip().lower() if len(parts) > 2 else ""
        if kind not in _TYPES:
            raise DecodeError(f"line {lineno}: unknown metric type {kind[:40]!r} for {name}")
        if name in out.types:
            raise DecodeError(f"line {lineno}: second TYPE line for metric {name}")
        out.types[name] = kind
    elif parts[0] == "HELP":
        out.help[name] = parts[2] if len(parts) > 2 else ""


def _sample(
    line: str, lineno: int, openmetrics: bool, cache: dict[str, Pairs], known: Container[str]
) -> ExpositionSample:
    brace = line.find("{")
    labels: Pairs | None = None
    if brace == -1:
        end = _space(line)
        if end == -1:
            raise DecodeError(f"line {lineno}: expected a value after the metric name: {line[:120]!r}")
        key = line[:end]
        labels = () if key in known else cache.get(key)
        if labels is None:
            if _NAME.fullmatch(key) is None:
                raise DecodeError(f"line {lineno}: invalid metric name {key[:120]!r}")
            labels = (("__name__", key),)
            cache[key] = labels
    else:
        close = line.rfind("}")
        if close > brace and "#" not in line[close:]:  # no exemplar: the series ends at the last }
            key = line[: close + 1]
            labels = () if key in known else cache.get(key)
        if labels is None:
            labels, end = _parse_series(line, brace, lineno)
            key = line[:end]
            cache[key] = labels
        else:
            end = close + 1
    rest = line[end:]
    if openmetrics:
        rest, _, _exemplar = rest.partition("#")
    fields = rest.split()
    if not fields:
        raise DecodeError(f"line {lineno}: expected a value: {line[:120]!r}")
    if len(fields) > 2:
        raise DecodeError(f"line {lineno}: unexpected text after the timestamp: {line[:120]!r}")
    value = _float(fields[0], lineno)
    ts: int | None = None
    if len(fields) == 2:
        ts = _timestamp(fields[1], lineno, openmetrics)
    return ExpositionSample(key, labels, value, ts)


def _space(line: str) -> int:
    sp = line.find(" ")
    tab = line.find("\t")
    if sp == -1:
        return tab
    return sp if tab == -1 else min(sp, tab)


def _parse_series(line: str, brace: int, lineno: int) -> tuple[Pairs, int]:
    name = line[:brace].rstrip(" \t")
    if _NAME.fullmatch(name) is None:
        raise DecodeError(f"line {lineno}: invalid metric name {name[:120]!r}")
    pairs: list[tuple[str, str]] = [("__name__", name)]
    pos = brace + 1
    n = len(line)
    while True:
        while pos < n and line[pos] in " \t":
            pos += 1
        if pos < n and line[pos] == "}":
            return tuple(pairs), pos + 1
        m = _LABEL.match(line, pos)
        if m is None:
            raise DecodeError(
                f"line {lineno}: invalid label at column {pos + 1} (expected name=\"value\"): {line[:120]!r}"
            )
        value = m.group(2)
        if "\\" in value:
            value = _ESCAPE.sub(lambda e: _unescape(e, lineno), value)
        pairs.append((m.group(1), value))
        pos = m.end()
        if pos < n and line[pos] == ",":
            pos += 1
        elif pos < n and line[pos] == "}":
            return tuple(pairs), pos + 1
        else:
            raise DecodeError(f"line {lineno}: expected ',' or '}}' at column {pos + 1}: {line[:120]!r}")


def _unescape(m: re.Match[str], lineno: int) -> str:
    c = m.group(1)
    try:
        return _UNESCAPE[c]
    except KeyError:
        raise DecodeError(f"line {lineno}: invalid escape sequence '\\{c}' in a label value") from None


def _float(text: str, lineno: int) -> float:
    if "_" in text:
        raise DecodeError(f"line {lineno}: invalid value {text[:40]!r}")
    try:
        return float(text)
    except ValueError:
        raise DecodeError(f"line {lineno}: invalid value {text[:40]!r}") from None


def _timestamp(text: str, lineno: int, openmetrics: bool) -> int:
    if openmetrics:
        seconds = _float(text, lineno)
        if not math.isfinite(seconds) or abs(seconds) > 9.2e15:
            raise DecodeError(f"line {lineno}: invalid timestamp {text[:40]!r}")
        return round(seconds * 1000)
    if _INT.fullmatch(text) is None or len(text) > 20 or not _MIN_TS <= int(text) <= _MAX_TS:
        raise DecodeError(f"line {lineno}: invalid timestamp {text[:40]!r} (integer milliseconds)")
    return int(text)
