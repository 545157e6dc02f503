"""``watchkeeper_replication_*``: what a replica published to the stream and applied from it.

>>> from prometheus_client import CollectorRegistry
>>> ReplicationMetrics(CollectorRegistry()).published_samples.inc(3)
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_PREFIX = "watchkeeper_replication_"
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class ReplicationMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(_PREFIX + name, doc, labels, registry=registry)

        self.published_samples = counter("published_samples", "Samples written to the replication stream.")
        self.published_entries = counter("published_entries", "Entries written to the replication stream.")
        self.publish_errors = counter(
            "publish_errors", "Failed writes to the replication stream (Redis down or refusing); retried."
        )
        self.dropped_samples = counter(
            "dropped_samples", "Accepted samples never published: queue full (or shutdown)."
        )
        self.queue_samples = Gauge(_PREFIX + "queue_samples", "Samples waiting to be published.",
                                   registry=registry)
        self.applied_entries = counter("applied_entries", "Entries of other replicas applied to this store.")
        self.applied_samples = counter(
            "applied_samples", "Samples of other replicas appended here (already present: not stored)."
        )
        self.rejected_samples = counter(
            "rejected_samples", "Samples of other replicas this store refused, by reason.", ("reason",)
        )
        self.failed_entries = counter(
            "failed_entries", "Entries of other replicas refused as a whole (a limit, a decode error)."
        )
        self.read_errors = counter("read_errors", "Failed reads of the replication stream; retried.")
        self.gaps = counter(
            "gaps", "Times the stream was found trimmed past this replica's position: entries were missed."
        )
        self.lag = Histogram(
            _PREFIX + "lag_seconds",
            "From an entry's publication by another replica to its application here.",
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
