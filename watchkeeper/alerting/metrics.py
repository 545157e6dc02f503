"""The pipeline's own metrics (a registry per dispatcher, like `watchkeeper.selfmetrics`).

>>> m = AlertingMetrics()
>>> m.sent.labels(receiver="ops", integration="ops/slack/0").inc()
>>> labels = {"receiver": "ops", "integration": "ops/slack/0"}
>>> m.registry.get_sample_value("watchkeeper_notifications_total", labels)
1.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class AlertingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        labels = ("receiver", "integration")
        self.sent = Counter("watchkeeper_notifications", "Notifications delivered.", labels, registry=r)
        self.failed = Counter(
            "watchkeeper_notifications_failed",
            "Failed delivery attempts (each retry counts).",
            labels,
            registry=r,
        )
        self.dead = Counter(
            "watchkeeper_notifications_dead_letter",
            "Notifications given up after the last attempt or a permanent error.",
            labels,
            registry=r,
        )
        self.latency = Histogram(
            "watchkeeper_notification_latency_seconds",
            "From the alert change (firing or resolved) to the receiver's acknowledgement.",
            ("receiver",),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.pending = Gauge(
            "watchkeeper_notifications_pending", "Outbox items not yet delivered.", registry=r
        )

    def watch_alerts(self, counts: Callable[[], dict[str, int]]) -> None:
        """``watchkeeper_alerts{state}`` read from the dispatcher at scrape time."""
        self.registry.register(_AlertsCollector(counts))


class _AlertsCollector:
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("watchkeeper_alerts", "Alerts held by the dispatcher.", labels=["state"])
        for state, n in sorted(self._counts().items()):
            family.add_metric([state], n)
        yield family
