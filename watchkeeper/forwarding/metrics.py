"""The queues' self-metrics, named after Prometheus' ``prometheus_remote_storage_*``.

>>> from prometheus_client import CollectorRegistry
>>> m = RemoteStorageMetrics(CollectorRegistry())
>>> m.samples_total.labels("mimir", "http://mimir/push").inc(5)
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LABELS = ["remote_name", "url"]
_BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DROP_REASONS = ("queue_full", "write_relabel", "out_of_order", "shutdown")


class RemoteStorageMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        p = "watchkeeper_remote_storage_"
        self.samples_in = Counter(
            p + "samples_in", "Samples offered to the queue.", _LABELS, registry=registry
        )
        self.samples_total = Counter(
            p + "samples", "Samples sent to the remote storage (2xx).", _LABELS, registry=registry
        )
        self.samples_failed = Counter(
            p + "samples_failed",
            "Samples that failed on a non-recoverable error (4xx other than a retried 429); not sent.",
            _LABELS,
            registry=registry,
        )
        self.samples_retried = Counter(
            p + "samples_retried",
            "Samples sent again after a recoverable error (5xx, 408, retried 429, transport).",
            _LABELS,
            registry=registry,
        )
        self.samples_dropped = Counter(
            p + "samples_dropped",
            "Samples not sent, by reason: queue_full, write_relabel, out_of_order, shutdown.",
            [*_LABELS, "reason"],
            registry=registry,
        )
        self.samples_pending = Gauge(
            p + "samples_pending", "Samples queued, in flight or being retried.", _LABELS, registry=registry
        )
        self.highest_sent = Gauge(
            p + "queue_highest_sent_timestamp_seconds",
            "Newest sample timestamp the remote storage acknowledged.",
            _LABELS,
            registry=registry,
        )
        self.shards = Gauge(p + "shards", "Sender shards (threads) of the queue.", _LABELS, registry=registry)
        self.shard_capacity = Gauge(
            p + "shard_capacity", "Samples each shard buffers before dropping.", _LABELS, registry=registry
        )
        self.bytes_total = Counter(
            p + "bytes", "Compressed bytes sent (2xx answers).", _LABELS, registry=registry
        )
        self.batch_duration = Histogram(
            p + "sent_batch_duration_seconds",
            "Duration of send attempts (each try of a batch).",
            _LABELS,
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )

    def remove(self, name: str, url: str) -> None:
        """Forget a queue's series (its endpoint was removed by a reload)."""
        for metric in (
            self.samples_in, self.samples_total, self.samples_failed, self.samples_retried,
            self.samples_pending, self.highest_sent, self.shards, self.shard_capacity,
            self.bytes_total, self.batch_duration,
        ):
            with contextlib.suppress(KeyError):
                metric.remove(name, url)
        for reason in DROP_REASONS:
            with contextlib.suppress(KeyError):
                self.samples_dropped.remove(name, url, reason)
