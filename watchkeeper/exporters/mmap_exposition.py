"""The multiprocess ``/metrics`` body, written straight from the workers' metric files.

prometheus-client merges the files into ``Metric`` objects and encodes those: for the ~600 samples
of a typical service that took 8-11 ms of CPU per scrape, holding the GIL in a thread of a serving
worker, whose event loop waited meanwhile. This merges the same files with the same rules
(counters, histogram buckets and summaries summed over workers; gauges by their multiprocess mode)
but keeps each parsed key, with its label text already escaped, across scrapes, and writes the
Prometheus text or OpenMetrics lines directly. After each file it gives the GIL up
(``time.sleep(0)``), so the serving worker's event loop runs between files.

```python
merger = FileMerger()
body = merger.render(glob.glob("/tmp/wk-metrics/*.db"), openmetrics=False)
```
Names outside the classic character set raise :class:`Unsupported` (the caller then falls back to
prometheus-client's encoders, which know the UTF-8 escaping schemes).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import mmap_dict as _mmap_dict
from prometheus_client import utils as _utils

# prometheus-client's internals are untyped; they are used through these handles.
MmapedDict: Any = _mmap_dict.MmapedDict
floatToGoString: Any = _utils.floatToGoString

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_MAX_CACHED_KEYS = 200_000
# Gauge modes (without the "live" prefix) that combine workers; "all" keeps one series per pid.
_COMBINED_MODES = frozenset({"min", "max", "sum", "mostrecent"})


class Unsupported(ValueError):
    """A metric or label name this fast path does not encode (UTF-8 names)."""


def _escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _label_text(items: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{name}="{_escape_value(value)}"' for name, value in items)


@dataclass(frozen=True, slots=True)
class _Key:
    family: str
    sample: str
    help: str
    labels: tuple[tuple[str, str], ...]  # sorted, without ``le``
    text: str  # the escaped label text of ``labels``
    le: float | None  # the bucket bound of a ``_bucket`` sample


def parse_key(key: str) -> _Key:
    """One file key (JSON: family, sample name, labels, help) with its label text rendered."""
    family, sample, labels, help_text = json.loads(key)
    if not (_METRIC_NAME.match(family) and _METRIC_NAME.match(sample)):
        raise Unsupported(f"metric name {sample!r}")
    for name in labels:
        if not _LABEL_NAME.match(name):
            raise Unsupported(f"label name {name!r}")
    le = labels.pop("le", None) if sample.endswith("_bucket") else None
    items = tuple(sorted(labels.items()))
    return _Key(family, sample, help_text, items, _label_text(items), None if le is None else float(le))


@dataclass(slots=True)
class _Family:
    kind: str
    help: str
    # (sample name, label text) -> value; for histograms only the ``_sum`` samples
    values: dict[tuple[str, str], float] = field(default_factory=dict)
    stamps: dict[tuple[str, str], float] = field(default_factory=dict)  # mostrecent gauges
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)  # label text -> le -> count


class FileMerger:
    """Merges and encodes multiprocess files; keeps parsed keys between calls (one per process)."""

    def __init__(self) -> None:
        self._keys: dict[str, _Key] = {}
        self._pid_text: dict[tuple[str, str], str] = {}

    def _key(self, key: str) -> _Key:
        parsed = self._keys.get(key)
        if parsed is None:
            if len(self._keys) >= _MAX_CACHED_KEYS:
                self._keys.clear()
                self._pid_text.clear()
            parsed = self._keys[key] = parse_key(key)
        return parsed

    def merge(self, files: Iterable[str]) -> dict[str, _Family]:
        families: dict[str, _Family] = {}
        for filename in files:
            parts = os.path.basename(filename)[: -len(".db")].split("_")
            kind = parts[0]
            try:
                entries = MmapedDict.read_all_values_from_file(filename)
            except FileNotFoundError:
                continue  # a dead worker's file, folded into the archive since the listing
            mode = parts[1] if kind == "gauge" else ""
            for raw, value, timestamp, _ in entries:
                key = self._key(raw)
                family = families.get(key.family)
                if family is None:
                    family = families[key.family] = _Family(kind, key.help)
                if key.le is not None:
                    if kind != "histogram":
                        raise Unsupported(f"an le label on {key.sample}, a {kind}")
                    counts = family.buckets.setdefault(key.text, {})
                    counts[key.le] = counts.get(key.le, 0.0) + value
                elif kind == "gauge":
                    self._gauge(family, key, mode, parts[-1], value, timestamp)
                else:
                    series = (key.sample, key.text)
                    family.values[series] = family.values.get(series, 0.0) + value
            time.sleep(0)  # let the serving worker's event loop take the GIL
        return families

    def _gauge(self, family: _Family, key: _Key, mode: str, pid: str, value: float, stamp: float) -> None:
        mode = mode.removeprefix("live")
        if mode not in _COMBINED_MODES:  # all: one series per worker, labelled with its pid
            text = self._pid_text.get((key.text, pid))
            if text is None:
                text = self._pid_text[(key.text, pid)] = _label_text(sorted((*key.labels, ("pid", pid))))
            family.values[(key.sample, text)] = value
            return
        series = (key.sample, key.text)
        current = family.values.get(series)
        if mode == "sum":
            family.values[series] = (current or 0.0) + value
        elif mode == "mostrecent":
            if stamp > family.stamps.get(series, 0.0):  # the latest write wins
                family.values[series] = value
                family.stamps[series] = stamp
        elif current is None:
            family.values[series] = value
        else:
            family.values[series] = min(current, value) if mode == "min" else max(current, value)

    def render(self, files: Iterable[str], *, openmetrics: bool) -> bytes:
        """The merged files as Prometheus text (0.0.4) or OpenMetrics 1.0."""
        out: list[str] = []
        for name, family in sorted(self.merge(files).items()):
            exposed = name + "_total" if family.kind == "counter" and not openmetrics else name
            help_text = family.help.replace("\\", r"\\").replace("\n", r"\n")
            if openmetrics:
                help_text = help_text.replace('"', r"\"")
            out.append(f"# HELP {exposed} {help_text}\n# TYPE {exposed} {family.kind}\n")
            if family.kind == "histogram":
                _histogram_lines(out, name, family)
            else:
                for (sample, text), value in family.values.items():
                    out.append(f"{sample}{{{text}}} {floatToGoString(value)}\n" if text else
                               f"{sample} {floatToGoString(value)}\n")  # fmt: skip
        if openmetrics:
            out.append("# EOF\n")
        return "".join(out).encode()


def _histogram_lines(out: list[str], name: str, family: _Family) -> None:
    """Cumulative buckets, ``_count`` and ``_sum`` per label set."""
    for text, counts in family.buckets.items():
        prefix = text + "," if text else ""
        total = 0.0
        for le in sorted(counts):
            total += counts[le]
            out.append(f'{name}_bucket{{{prefix}le="{floatToGoString(le)}"}} {floatToGoString(total)}\n')
        labels = f"{{{text}}}" if text else ""
        out.append(f"{name}_count{labels} {floatToGoString(total)}\n")
        out.append(f"{name}_sum{labels} {floatToGoString(family.values.get((name + '_sum', text), 0.0))}\n")
