"""Scale-out: replicas that share one PostgreSQL and one Redis replicate their accepted writes.

Each replica's head (its recent samples) is in its own memory, and its series index is read from
the database only at start, so without replication a replica answers only what it ingested plus
the persisted chunks of the series it knows. With ``replication: {enabled: true}`` (and
``redis_url``), every replica publishes what it accepted to one Redis stream and applies what the
others published, so each holds every sample -- the Prometheus HA-pair topology, reached by
writing to any one replica:

* **Publish** (`Replicator.publish`, the ingester's ``after_append``, so remote-write, push,
  Pushgateway, OTLP and scrapes alike): after the WAL commit the samples are queued; a publisher
  thread encodes them as remote-write WriteRequests (snappy) and appends them with
  ``XADD MAXLEN ~ max_len``. Ingest never waits on Redis and never fails because of it: while
  Redis is unreachable the queue holds up to ``queue_samples`` and retries with backoff; more is
  dropped and counted.
* **Apply**: a consumer thread reads the stream from its saved position (``replication.json`` in
  the data dir, with the replica's id) and feeds the other replicas' entries to an ingester of
  its own -- validation, limits, series creation and the WAL as for any write, but no
  ``after_append``: an applied sample is not published or forwarded again. Applying is
  idempotent: a sample already present (same time, same value) is accepted and stores nothing,
  an older one is refused as out of order and counted.
* **Gaps**: every entry names the entry before it (one Lua script appends and links), so a
  replica that finds the chain broken -- the stream trimmed past its position while it was down
  or behind, or Redis restarted empty -- logs and counts the gap; the samples missed are still
  read from the database once persisted as chunks.
* **Start**: once its ingester publishes, a starting server waits (at most ``catch_up_timeout``)
  until it has applied the stream up to its newest entry, then turns ready.
* Recording rules and SLO probes write to each replica's store directly, not through the
  ingester: every replica evaluates them on the same (replicated) data, so they are not published.
"""

from watchkeeper.replication.config import ReplicationConfig
from watchkeeper.replication.replicator import Replicator

__all__ = ["ReplicationConfig", "Replicator"]
