"""Remote-write out: one bounded, sharded queue per endpoint, and `Forwarders`, the set of them.

    RemoteWriteIngester.after_append --> Forwarders.offer --> RemoteWriteQueue.offer
        --> SeriesRouter (relabel, order, shard) --> shard buffers (<= capacity samples each)
        --> one sender thread per shard: batches of max_samples_per_send, or what is buffered after
            batch_send_deadline --> sender.send, retried with backoff until it succeeds or fails

Samples are kept in memory only: the ones buffered or being retried when the process dies are
lost (watchkeeper's own store has them; they are not sent again after a restart). While a receiver
is down, each shard retries its batch forever and buffers new samples up to `capacity`; past that,
new samples are dropped and counted (``watchkeeper_remote_storage_samples_dropped_total``
``{reason="queue_full"}``). The ingest path never waits for a receiver.

>>> fw = Forwarders(CollectorRegistry())
>>> fw.apply([RemoteWriteConfig(url="http://mimir/api/v1/push")])   # doctest: +SKIP
>>> ingester.after_append = fw.sink()                               # doctest: +SKIP
>>> fw.stop(deadline_seconds=60)  # sends what is buffered, retrying until the deadline
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import httpx
import numpy as np
from prometheus_client import CollectorRegistry

from watchkeeper.collector.relabel import compile_rules
from watchkeeper.collector.remote_write import AppendedSamples
from watchkeeper.forwarding.config import RemoteWriteConfig, check_unique_names
from watchkeeper.forwarding.metrics import RemoteStorageMetrics
from watchkeeper.forwarding.router import Routed, SeriesRouter
from watchkeeper.forwarding.sender import Backoff, Outcome, encode, make_client, send

log = logging.getLogger("watchkeeper.forwarding")


class _Shard:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.buffer: deque[Routed] = deque()
        self.buffered = 0
        self.oldest_at = 0.0  # monotonic time the oldest buffered sample came in

    def take(self, n: int) -> Routed:
        """Up to n samples from the front of the buffer (caller holds `cond`)."""
        parts: list[Routed] = []
        need = n
        while need and self.buffer:
            head = self.buffer[0]
            if len(head) <= need:
                parts.append(self.buffer.popleft())
                need -= len(head)
            else:
                first, rest = head.split(need)
                self.buffer[0] = rest
                parts.append(first)
                need = 0
        taken = n - need
        self.buffered -= taken
        if self.buffered:
            self.oldest_at = time.monotonic()
        if len(parts) == 1:
            return parts[0]
        return Routed(
            [k for p in parts for k in p.keys],
            np.concatenate([p.timestamps_ms for p in parts]),
            np.concatenate([p.values for p in parts]),
        )


class RemoteWriteQueue:
    """The queue of one endpoint. `offer` is thread-safe and never blocks on the network."""

    def __init__(
        self,
        config: RemoteWriteConfig,
        metrics: RemoteStorageMetrics,
        *,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.config = config
        self.name = config.remote_name
        q = config.queue_config
        self._router = SeriesRouter(compile_rules(config.write_relabel_configs), shards=q.max_shards)
        self._route_lock = threading.Lock()
        self._shards = [_Shard() for _ in range(q.max_shards)]
        self._backoff = Backoff(q.min_backoff_seconds, q.max_backoff_seconds)
        self._clock_ms = clock_ms
        self._client: httpx.Client | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._abort = threading.Event()
        self._burst_lock = threading.Lock()
        self._burst_failures = 0  # failed sends since the last success (logged once per burst)
        self._highest_sent_ms = 0
        labels = (self.name, config.url)
        self._m = metrics
        self._in = metrics.samples_in.labels(*labels)
        self._sent = metrics.samples_total.labels(*labels)
        self._failed = metrics.samples_failed.labels(*labels)
        self._retried = metrics.samples_retried.labels(*labels)
        self._pending = metrics.samples_pending.labels(*labels)
        self._highest = metrics.highest_sent.labels(*labels)
        self._bytes = metrics.bytes_total.labels(*labels)
        self._duration = metrics.batch_duration.labels(*labels)
        self._dropped = {r: metrics.samples_dropped.labels(*labels, r) for r in
                         ("queue_full", "write_relabel", "out_of_order", "shutdown")}
        metrics.shards.labels(*labels).set(q.max_shards)
        metrics.shard_capacity.labels(*labels).set(q.capacity)

    def start(self) -> None:
        self._client = make_client(self.config)
        for i, shard in enumerate(self._shards):
            t = threading.Thread(
                target=self._run, args=(shard,), name=f"remote-write-{self.name}-{i}", daemon=True
            )
            t.start()
            self._threads.append(t)

    # --- the ingest side ---------------------------------------------------------------------

    def offer(self, batch: AppendedSamples) -> None:
        if self._stopping:
            return
        n = len(batch.refs)
        self._in.inc(n)
        with self._route_lock:
            routed = self._router.route(batch)
        self._dropped["write_relabel"].inc(routed.dropped_relabel)
        self._dropped["out_of_order"].inc(routed.dropped_out_of_order)
        capacity = self.config.queue_config.capacity
        full = 0
        for shard, part in zip(self._shards, routed.per_shard, strict=True):
            if part is None:
                continue
            with shard.cond:
                room = capacity - shard.buffered
                if len(part) > room:
                    full += len(part) - max(room, 0)
                    if room <= 0:
                        continue
                    part, _ = part.split(room)
                was_empty = not shard.buffered
                if was_empty:
                    shard.oldest_at = time.monotonic()
                shard.buffer.append(part)
                shard.buffered += len(part)
                self._pending.inc(len(part))
                # wake the sender: to start its batch deadline, or because a batch is full
                if was_empty or shard.buffered >= self.config.queue_config.max_samples_per_send:
                    shard.cond.notify()
        if full:
            self._dropped["queue_full"].inc(full)

    # --- the sending side --------------------------------------------------------------------

    def _run(self, shard: _Shard) -> None:
        q = self.config.queue_config
        per_send, wait_s = q.max_samples_per_send, q.batch_send_deadline_seconds
        while True:
            with shard.cond:
                while True:
                    if self._abort.is_set():
                        return
                    if shard.buffered >= per_send:
                        break
                    if shard.buffered:
                        left = wait_s - (time.monotonic() - shard.oldest_at)
                        if self._stopping or left <= 0:
                            break
                        shard.cond.wait(left)
                    elif self._stopping:
                        return
                    else:
                        shard.cond.wait()
                batch = shard.take(per_send)
            try:
                self._send_with_retries(batch)
            except Exception:  # a bug must not silently stop the shard: its buffer would fill
                log.exception("remote write: a batch could not be sent", extra={"remote_name": self.name})
                self._failed.inc(len(batch))

    def _send_with_retries(self, batch: Routed) -> None:
        body = encode(batch)
        n = len(batch)
        attempt = 0
        assert self._client is not None
        try:
            while True:
                started = time.perf_counter()
                outcome = send(self._client, self.config, body, now_ms=self._clock_ms())
                self._duration.observe(time.perf_counter() - started)
                if outcome.ok:
                    self._sent.inc(n)
                    self._bytes.inc(len(body))
                    self._note_sent(int(batch.timestamps_ms.max()))
                    return
                self._note_failure(outcome, n)
                if not outcome.retry:
                    self._failed.inc(n)
                    return
                delay = outcome.retry_after_seconds
                if delay is None:
                    delay = self._backoff.delay(attempt)
                attempt += 1
                if self._abort.wait(delay):
                    self._dropped["shutdown"].inc(n)
                    return
                self._retried.inc(n)
        finally:
            self._pending.dec(n)

    def _note_sent(self, newest_ms: int) -> None:
        with self._burst_lock:
            if newest_ms > self._highest_sent_ms:
                self._highest_sent_ms = newest_ms
                self._highest.set(newest_ms / 1000)
            failures, self._burst_failures = self._burst_failures, 0
        if failures:
            log.info("remote write recovered", extra={"remote_name": self.name, "failed_sends": failures})

    def _note_failure(self, outcome: Outcome, samples: int) -> None:
        """Log the first failure of a burst (until the next success); count the rest."""
        with self._burst_lock:
            self._burst_failures += 1
            first = self._burst_failures == 1
        if first:
            level = logging.WARNING if outcome.retry else logging.ERROR
            log.log(
                level,
                "remote write failed; retrying" if outcome.retry else "remote write failed; batch dropped",
                extra={
                    "remote_name": self.name,
                    "url": self.config.url,
                    "status": outcome.status,
                    "error": outcome.message,
                    "samples": samples,
                },
            )

    # --- shutdown ----------------------------------------------------------------------------

    def begin_stop(self) -> None:
        """Refuse new samples; shards send what they buffer at once (no batch deadline)."""
        self._stopping = True
        for shard in self._shards:
            with shard.cond:
                shard.cond.notify_all()

    def finish_stop(self, deadline: float) -> None:
        """Wait for the shards until `deadline` (monotonic); then abort retries and count what was
        not sent as dropped (reason shutdown)."""
        for t in self._threads:
            t.join(max(deadline - time.monotonic(), 0))
        self._abort.set()
        for shard in self._shards:
            with shard.cond:
                shard.cond.notify_all()
        for t in self._threads:
            t.join(self.config.timeout_seconds + 1)
        left = 0
        for shard in self._shards:
            with shard.cond:
                left += shard.buffered
                shard.buffer.clear()
                shard.buffered = 0
        if left:
            self._dropped["shutdown"].inc(left)
            self._pending.dec(left)
            log.warning(
                "remote write stopped with samples unsent",
                extra={"remote_name": self.name, "samples": left},
            )
        if self._client is not None:
            self._client.close()


class Forwarders:
    """The queues of all ``remote_write`` endpoints of one app."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.metrics = RemoteStorageMetrics(registry)
        self._queues: dict[str, RemoteWriteQueue] = {}
        self._lock = threading.Lock()

    @property
    def queues(self) -> dict[str, RemoteWriteQueue]:
        return dict(self._queues)

    def sink(self) -> Callable[[AppendedSamples], None] | None:
        """What the ingester should call after each append: None when nothing is configured, so
        ingest pays nothing."""
        return self.offer if self._queues else None

    def offer(self, batch: AppendedSamples) -> None:
        """Hand appended samples to every queue. Never raises: ingest must not fail because of
        forwarding."""
        for queue in list(self._queues.values()):
            try:
                queue.offer(batch)
            except Exception:
                log.exception("remote write: samples could not be queued", extra={"remote_name": queue.name})

    def apply(self, configs: Sequence[RemoteWriteConfig], *, flush_deadline_seconds: float = 60.0) -> None:
        """Start, keep or stop queues so they match `configs` (start-up and reload): a queue whose
        config is unchanged keeps running with its buffer; a changed or removed one is flushed."""
        check_unique_names(list(configs))
        with self._lock:
            wanted = {c.remote_name: c for c in configs}
            old = [q for name, q in self._queues.items() if wanted.get(name) != q.config]
            queues = {name: q for name, q in self._queues.items() if q not in old}
            for name, config in wanted.items():
                if name not in queues:
                    queue = RemoteWriteQueue(config, self.metrics)
                    queue.start()
                    queues[name] = queue
            self._queues = queues
        self._stop_queues(old, flush_deadline_seconds)
        for q in old:
            if q.name not in queues or queues[q.name].config.url != q.config.url:
                self.metrics.remove(q.name, q.config.url)

    def stop(self, *, deadline_seconds: float = 60.0) -> None:
        with self._lock:
            queues, self._queues = list(self._queues.values()), {}
        self._stop_queues(queues, deadline_seconds)

    @staticmethod
    def _stop_queues(queues: list[RemoteWriteQueue], deadline_seconds: float) -> None:
        deadline = time.monotonic() + deadline_seconds
        for q in queues:
            q.begin_stop()
        for q in queues:
            q.finish_stop(deadline)
