"""The two threads of a replica: one publishes what this replica accepted, one applies what the
others published.

    ingest (after the WAL commit) --after_append--> publish queue --publisher--> XADD stream
    XREAD stream --consumer--> entries of other replicas --> own ingester --> own store

>>> replicator = Replicator.start(config, redis_url=url, data_dir=path,        # doctest: +SKIP
...                               ingester=RemoteWriteIngester(storage, limits), registry=registry)
>>> ingester.after_append = replicator.hook(forwarders.sink())                # doctest: +SKIP
>>> replicator.catch_up(config.catch_up_timeout_seconds)                       # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import cramjam
import numpy as np
from prometheus_client import CollectorRegistry

from watchkeeper.collector.push import SampleBatch
from watchkeeper.collector.remote_write import AppendedSamples, IngestReport, wall_clock_ms
from watchkeeper.errors import ConfigError
from watchkeeper.replication.config import ReplicationConfig
from watchkeeper.replication.cursor import START, Cursor, stream_id
from watchkeeper.replication.metrics import ReplicationMetrics

log = logging.getLogger(__name__)

Sink = Callable[[AppendedSamples], None]
_MIN_BACKOFF_SECONDS = 0.1
_MAX_BACKOFF_SECONDS = 5.0
_SAVE_EVERY_SECONDS = 1.0


# XADD with the id of the entry before it ("p"), so a reader sees a gap in the chain. One script:
# no other publisher's entry can come in between.
_APPEND = """
local previous = redis.call('GET', KEYS[2]) or ''
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
                      'o', ARGV[2], 't', ARGV[3], 'p', previous, 'b', ARGV[4])
redis.call('SET', KEYS[2], id)
return id
"""


class Ingest(Protocol):
    """What the consumer needs from a `RemoteWriteIngester` (one of its own: no after_append)."""

    def ingest(self, body: bytes) -> IngestReport: ...

    def forget_series(self) -> None: ...


def encode_entries(batches: Sequence[AppendedSamples], entry_samples: int) -> list[tuple[bytes, int]]:
    """The appended samples as stream entry bodies: snappy-compressed remote-write WriteRequests
    (what every replica's ingester reads), each with its sample count, at most `entry_samples`."""
    keys: list[bytes] = []
    for batch in batches:
        keys.extend(map(batch.keys.__getitem__, batch.sample_series.tolist()))
    ts = np.concatenate([b.timestamps_ms for b in batches])
    values = np.concatenate([b.values for b in batches])
    out = []
    for a in range(0, len(keys), entry_samples):
        b = a + entry_samples
        raw = SampleBatch(keys[a:b], ts[a:b].tolist(), values[a:b].tolist()).write_request()
        out.append((bytes(cramjam.snappy.compress_raw(raw)), len(keys[a:b])))
    return out


class Replicator:
    """Publishes this replica's accepted samples and applies the other replicas' ones. Neither
    direction ever fails or blocks ingest: publishing is queued (bounded; overflow dropped and
    counted) and retried with backoff while Redis is unreachable; the consumer resumes from its
    saved position when Redis is back."""

    def __init__(self, config: ReplicationConfig, client: Any, cursor: Cursor, ingester: Ingest,
                 metrics: ReplicationMetrics, *, clock_ms: Callable[[], int] = wall_clock_ms) -> None:
        self.config = config
        self.client = client
        self.cursor = cursor
        self.ingester = ingester
        self.metrics = metrics
        self.clock_ms = clock_ms
        self._origin = cursor.replica_id.encode()
        self._cond = threading.Condition()
        self._pending: list[AppendedSamples] = []
        self._queued = 0
        self._stopping = False
        self._stop_at = 0.0
        self._stopped = threading.Event()
        self._append = client.register_script(_APPEND)
        self._threads = [
            threading.Thread(target=self._publish_loop, name="replication-publisher", daemon=True),
            threading.Thread(target=self._consume_loop, name="replication-consumer", daemon=True),
        ]

    @classmethod
    def start(cls, config: ReplicationConfig, *, redis_url: str | None, data_dir: Path, ingester: Ingest,
              registry: CollectorRegistry) -> Replicator:
        if not redis_url:
            raise ConfigError("replication needs redis_url")
        import redis  # optional dependency: only with a redis_url

        client = redis.Redis.from_url(redis_url, socket_timeout=config.block_ms / 1000 + 5)
        cursor = Cursor.load(data_dir, config.stream)
        cursor.save()  # keep the replica id from now on
        self = cls(config, client, cursor, ingester, ReplicationMetrics(registry))
        for thread in self._threads:
            thread.start()
        log.info("replication started", extra={"replica_id": cursor.replica_id, "position": cursor.position})
        return self

    def catch_up(self, timeout_seconds: float) -> bool:
        """Wait until the entries in the stream now are applied (at most `timeout_seconds`); True
        when they are. The server calls it (once its ingester publishes) before it turns ready, so
        a load balancer does not send queries to a replica that is still behind."""
        deadline = time.monotonic() + timeout_seconds
        try:
            newest = self.client.xrevrange(self.config.stream, count=1)
        except Exception as exc:
            log.warning("replication: cannot read the stream to catch up, starting anyway: %s", exc)
            return False
        if not newest:
            return True
        target = stream_id(newest[0][0].decode())
        while stream_id(self.cursor.position) < target:
            left = deadline - time.monotonic()
            if left <= 0 or self._stopped.wait(min(left, 0.02)):
                log.warning("replication: not caught up after %.0f s, starting anyway", timeout_seconds,
                            extra={"position": self.cursor.position})
                return False
        return True

    @property
    def replica_id(self) -> str:
        return self.cursor.replica_id

    def hook(self, forward: Sink | None) -> Sink:
        """The ingester's ``after_append``: `forward` (remote-write out), then publish. Samples
        applied from the stream go through another ingester, so they are neither forwarded nor
        published again."""
        if forward is None:
            return self.publish
        publish = self.publish

        def forward_and_publish(batch: AppendedSamples) -> None:
            forward(batch)
            publish(batch)

        return forward_and_publish

    def publish(self, batch: AppendedSamples) -> None:
        """Queue appended samples for the stream. Never raises, never waits on Redis."""
        n = len(batch.timestamps_ms)
        with self._cond:
            if self._stopping or self._queued + n > self.config.queue_samples:
                self.metrics.dropped_samples.inc(n)
                return
            self._pending.append(batch)
            self._queued += n
            self.metrics.queue_samples.set(self._queued)
            self._cond.notify()

    def stop(self, deadline_seconds: float = 5.0) -> None:
        """Publish what is queued (for at most `deadline_seconds` if Redis is unreachable), stop
        reading, save the position."""
        with self._cond:
            self._stopping = True
            self._stop_at = time.monotonic() + deadline_seconds
            self._cond.notify_all()
        self._stopped.set()
        for thread in self._threads:
            thread.join()
        self.cursor.save()
        self.client.close()

    # --- publishing -------------------------------------------------------------------------------

    def _publish_loop(self) -> None:
        backoff = _MIN_BACKOFF_SECONDS
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    return
                batches, self._pending = self._pending, []
            n = sum(len(b.timestamps_ms) for b in batches)
            try:
                self._xadd(encode_entries(batches, self.config.entry_samples))
            except Exception as exc:
                self.metrics.publish_errors.inc()
                if backoff == _MIN_BACKOFF_SECONDS:  # once per outage, not once per retry
                    log.warning("replication: publishing failed, retrying: %s", exc)
                with self._cond:
                    if self._stopping and time.monotonic() >= self._stop_at:
                        self._done(n, dropped=True)
                        continue
                    self._pending[:0] = batches
                    self._cond.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
                continue
            if backoff > _MIN_BACKOFF_SECONDS:
                log.info("replication: publishing again")
            backoff = _MIN_BACKOFF_SECONDS
            self.metrics.published_samples.inc(n)
            with self._cond:
                self._done(n, dropped=False)

    def _done(self, n: int, *, dropped: bool) -> None:
        """`n` queued samples left the queue (caller holds the condition)."""
        self._queued -= n
        self.metrics.queue_samples.set(self._queued)
        if dropped:
            self.metrics.dropped_samples.inc(n)

    def _xadd(self, entries: list[tuple[bytes, int]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        keys = [self.config.stream, self.config.stream + ":last"]
        now = self.clock_ms()
        for body, _ in entries:
            self._append(keys=keys, args=[self.config.max_len, self._origin, now, body], client=pipe)
        pipe.execute()
        self.metrics.published_entries.inc(len(entries))

    # --- consuming --------------------------------------------------------------------------------

    def _consume_loop(self) -> None:
        config, cursor = self.config, self.cursor
        backoff = _MIN_BACKOFF_SECONDS
        saved_at = time.monotonic()
        while not self._stopped.is_set():
            try:
                reply = self.client.xread({config.stream: cursor.position}, count=config.read_count,
                                          block=config.block_ms)
            except Exception as exc:
                self.metrics.read_errors.inc()
                if backoff == _MIN_BACKOFF_SECONDS:
                    log.warning("replication: reading the stream failed, retrying: %s", exc)
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
                continue
            backoff = _MIN_BACKOFF_SECONDS
            entries = reply[0][1] if reply else []
            for entry_id, fields in entries:
                self._check_chain(entry_id, fields.get(b"p"))
                if fields.get(b"o") != self._origin:
                    self._apply(entry_id, fields)
                cursor.position = entry_id.decode()
            if entries and time.monotonic() - saved_at >= _SAVE_EVERY_SECONDS:
                cursor.save()
                saved_at = time.monotonic()

    def _check_chain(self, entry_id: bytes, previous: bytes | None) -> None:
        """Count and log a gap: the entry before this one in the stream is not the last one read
        (trimmed by ``MAXLEN`` before this replica read it, or lost by Redis)."""
        position = self.cursor.position
        if position == START or previous == position.encode():
            return
        self.metrics.gaps.inc()
        log.warning(
            "replication: entries of other replicas were missed (trimmed from the stream or lost by "
            "Redis); those persisted as chunks are still read from the database",
            extra={"position": position, "next_entry": entry_id.decode()},
        )

    def _apply(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            body = fields[b"b"]
            report = self.ingester.ingest(body)
            if report.rejected.get("unknown_series"):
                # retention removed series this ingester had cached: resolve them again
                self.ingester.forget_series()
                report = self.ingester.ingest(body)
        except Exception as exc:
            self.metrics.failed_entries.inc()
            log.warning("replication: entry %s refused: %s", entry_id.decode(), exc)
            return
        m = self.metrics
        m.applied_entries.inc()
        m.applied_samples.inc(report.accepted)
        for reason, count in report.rejected.items():
            m.rejected_samples.labels(reason).inc(count)
        published_ms = int(fields.get(b"t", b"0"))
        if published_ms:
            m.lag.observe(max(self.clock_ms() - published_ms, 0) / 1000)
