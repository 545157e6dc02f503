"""Business metrics — sessions, joins, feature use by region — that can never blow up the store.

Every label of every business metric is capped: past ``max_label_values`` distinct values, new
values fold into ``__other__`` and ``business_label_overflow_total{metric,label}`` counts every
recording so folded.

```python
from watchkeeper.exporters import business

sessions = business.counter("sessions_created", "Sessions created", labels=("region",))
sessions.inc(region="eu-west")
active = business.gauge("active_sessions", "Sessions open now", labels=("region",))
active.set(42, region="eu-west")
business.event("feature_used", feature="dark_mode", region="eu-west")   # feature_used_total
```
Recording never raises: a wrong label set is logged once and dropped.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge

from watchkeeper.exporters.cardinality import LabelCap
from watchkeeper.exporters.safety import dropped

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

GaugeMode = Literal["livesum", "liveall", "livemax", "livemin", "sum", "max", "min", "mostrecent"]


class _Capped:
    def __init__(self, owner: BusinessMetrics, name: str, labels: Sequence[str]) -> None:
        self._owner = owner
        self.name = name
        self.labels = tuple(labels)
        self._caps = {label: LabelCap(owner.max_label_values) for label in self.labels}
        # raw label values -> (bound child, the overflow counters of the labels that were folded)
        self._children: dict[tuple[str, ...], tuple[Any, tuple[Any, ...]]] = {}

    def _child(self, metric: Any, values: dict[str, object]) -> Any:
        """The child for ``values``; every recording with a folded label counts once per such label
        in ``business_label_overflow_total``."""
        if set(values) != set(self.labels):
            raise ValueError(f"{self.name} takes labels {sorted(self.labels)}, got {sorted(values)}")
        raw = tuple(str(values[label]) for label in self.labels)
        cached = self._children.get(raw)
        if cached is None:
            folded = [self._caps[label].fold(value) for label, value in zip(self.labels, raw, strict=True)]
            overflows = tuple(
                self._owner.overflow.labels(self.name, label)
                for label, value, kept in zip(self.labels, raw, folded, strict=True)
                if kept != value
            )
            cached = (metric.labels(*folded) if self.labels else metric, overflows)
            if len(self._children) < 10 * self._owner.max_label_values:
                self._children[raw] = cached
        child, overflows = cached
        for overflow in overflows:
            overflow.inc()
        return child


class BusinessCounter(_Capped):
    def __init__(self, owner: BusinessMetrics, metric: Counter, name: str, labels: Sequence[str]) -> None:
        super().__init__(owner, name, labels)
        self._metric = metric

    def inc(self, amount: float = 1, **labels: object) -> None:
        try:
            self._child(self._metric, labels).inc(amount)
        except Exception as exc:
            dropped(f"business.{self.name}", exc)


class BusinessGauge(_Capped):
    def __init__(self, owner: BusinessMetrics, metric: Gauge, name: str, labels: Sequence[str]) -> None:
        super().__init__(owner, name, labels)
        self._metric = metric

    def set(self, value: float, **labels: object) -> None:
        try:
            self._child(self._metric, labels).set(value)
        except Exception as exc:
            dropped(f"business.{self.name}", exc)

    def inc(self, amount: float = 1, **labels: object) -> None:
        try:
            self._child(self._metric, labels).inc(amount)
        except Exception as exc:
            dropped(f"business.{self.name}", exc)

    def dec(self, amount: float = 1, **labels: object) -> None:
        self.inc(-amount, **labels)


class BusinessMetrics:
    """Business counters, gauges and events on one registry (prometheus-client's default if None)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, max_label_values: int = 100) -> None:
        from prometheus_client import REGISTRY

        self.registry = REGISTRY if registry is None else registry
        self.max_label_values = max_label_values
        self.overflow = Counter(
            "business_label_overflow_total",
            "Business-metric label values folded into __other__ by the cardinality cap.",
            ("metric", "label"),
            registry=self.registry,
        )
        self._lock = threading.Lock()
        self._metrics: dict[str, _Capped] = {}

    def counter(self, name: str, description: str = "", labels: Sequence[str] = ()) -> BusinessCounter:
        """Define (or get) a counter; exported as ``<name>_total``."""
        name = name.removesuffix("_total")
        with self._lock:
            existing = self._metrics.get(name)
            if existing is not None:
                if not isinstance(existing, BusinessCounter) or existing.labels != tuple(labels):
                    raise ValueError(f"business metric {name} already defined differently")
                return existing
            _validate(name, labels)
            metric = Counter(name, description or name, tuple(labels), registry=self.registry)
            created = BusinessCounter(self, metric, name, labels)
            self._metrics[name] = created
            return created

    def gauge(
        self,
        name: str,
        description: str = "",
        labels: Sequence[str] = (),
        *,
        multiprocess_mode: GaugeMode = "livesum",
    ) -> BusinessGauge:
        """Define (or get) a gauge; in multiprocess mode worker values combine by ``multiprocess_mode``."""
        with self._lock:
            existing = self._metrics.get(name)
            if existing is not None:
                if not isinstance(existing, BusinessGauge) or existing.labels != tuple(labels):
                    raise ValueError(f"business metric {name} already defined differently")
                return existing
            _validate(name, labels)
            metric = Gauge(
                name, description or name, tuple(labels), registry=self.registry,
                multiprocess_mode=multiprocess_mode,
            )  # fmt: skip
            created = BusinessGauge(self, metric, name, labels)
            self._metrics[name] = created
            return created

    def event(self, name: str, **labels: object) -> None:
        """Count one event ``name`` (``<name>_total``); the first call fixes its label names."""
        try:
            metric = self._metrics.get(name.removesuffix("_total"))
            if metric is None:
                metric = self.counter(name, f"Business events: {name}", tuple(sorted(labels)))
            if not isinstance(metric, BusinessCounter):
                raise ValueError(f"business metric {name} is not a counter")
            metric.inc(1, **labels)
        except Exception as exc:
            dropped(f"business.{name}", exc)


def _validate(name: str, labels: Sequence[str]) -> None:
    if not _NAME.match(name):
        raise ValueError(f"invalid metric name {name!r}")
    for label in labels:
        if not _LABEL.match(label) or label.startswith("__"):
            raise ValueError(f"invalid label name {label!r}")


_default: BusinessMetrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> BusinessMetrics:
    """The process-wide business metrics on the default registry, created on first use."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = BusinessMetrics()
    return _default


def counter(name: str, description: str = "", labels: Sequence[str] = ()) -> BusinessCounter:
    return default_metrics().counter(name, description, labels)


def gauge(
    name: str, description: str = "", labels: Sequence[str] = (), *, multiprocess_mode: GaugeMode = "livesum"
) -> BusinessGauge:
    return default_metrics().gauge(name, description, labels, multiprocess_mode=multiprocess_mode)


def event(name: str, **labels: object) -> None:
    default_metrics().event(name, **labels)
