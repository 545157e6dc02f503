"""The queues' self-metrics, named after Prometheus' ``prometheus_remote_storage_*``.

>>> from prometheus_client import CollectorRegistry
>>> m = RemoteStorageMetrics(CollectorRegistry())
>>> m.samples_total.labels("mimir", "http://mimir/push").inc(5)
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_PREFIX = "watchkeeper_remote_storage_"
_LABELS = ["remote_name", "url"]
_BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DROP_REASONS = ("queue_full", "write_relabel", "out_of_order", "shutdown")


class RemoteStorageMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, *extra: str) -> Counter:
            return Counter(_PREFIX + name, doc, [*_LABELS, *extra], registry=registry)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(_PREFIX + name, doc, _LABELS, registry=registry)

        self.samples_in = counter("samples_in", "Samples offered to the queue.")
        self.samples_total = counter("samples", "Samples sent to the remote storage (2xx).")
        self.samples_failed = counter(
            "samples_failed",
            "Samples that failed on a non-recoverable error (4xx other than a retried 429); not sent.",
        )
        self.samples_retried = counter(
            "samples_retried",
            "Samples sent again after a recoverable error (5xx, 408, retried 429, transport).",
        )
        self.samples_dropped = counter(
            "samples_dropped",
            "Samples not sent, by reason: queue_full, write_relabel, out_of_order, shutdown.",
            "reason",
        )
        self.samples_pending = gauge("samples_pending", "Samples queued, in flight or being retried.")
        self.highest_sent = gauge(
            "queue_highest_sent_timestamp_seconds", "Newest sample timestamp the remote storage acknowledged."
        )
        self.shards = gauge("shards", "Sender shards (threads) of the queue.")
        self.shard_capacity = gauge("shard_capacity", "Samples each shard buffers before dropping.")
        self.bytes_total = counter("bytes", "Compressed bytes sent (2xx answers).")
        self.batch_duration = Histogram(
            _PREFIX + "sent_batch_duration_seconds",
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
