"""The delivery worker: sends what the dispatcher stored, retries with backoff, dead-letters.

Every notification is a row of ``alerting_outbox`` before anything is sent. `Outbox.deliver_due`
leases the due rows, sends each, and records the answer: ``sent`` on 2xx, back to ``pending``
with the next attempt at ``backoff`` (exponential, equal jitter, at least ``Retry-After``), or
``dead`` after ``max_attempts`` or on a permanent error. A row once ``sent`` is never sent again,
so a restart (a new worker on the same database) repeats nothing acknowledged. The outbox row's
``idempotency_key`` goes out as the ``Idempotency-Key`` header.

>>> import random
>>> [backoff_ms(n, initial_ms=1000, max_ms=60_000, rng=random.Random(0)) for n in (1, 2, 3, 10)]
[922, 1844, 3688, 55332]
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import sqlalchemy as sa

from watchkeeper.alerting import store
from watchkeeper.alerting.config import OutboxConfig, duration_ms
from watchkeeper.alerting.delivery import DeliveryResult, http_client, send
from watchkeeper.alerting.metrics import AlertingMetrics
from watchkeeper.alerting.notification import Notification
from watchkeeper.alerting.receivers import Integration
from watchkeeper.errors import NotificationError

log = logging.getLogger(__name__)


def backoff_ms(attempt: int, *, initial_ms: int, max_ms: int, rng: random.Random) -> int:
    """Delay after the ``attempt``-th failure: ``min(max, initial·2^(attempt-1))``, half of it jittered."""
    ceiling: int = min(max_ms, initial_ms * (1 << min(attempt - 1, 40)))
    return ceiling // 2 + int(rng.random() * (ceiling - ceiling // 2))


@dataclass(frozen=True, slots=True)
class Outcome:
    item: store.OutboxItem
    result: DeliveryResult
    dead: bool
    next_attempt_ms: int | None


class Outbox:
    """Delivers the outbox of one database (several workers may share it: rows are leased)."""

    def __init__(
        self,
        engine: sa.Engine,
        config: OutboxConfig,
        integration: Callable[[str], Integration | None],
        *,
        metrics: AlertingMetrics,
        client: httpx.Client | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._engine = engine
        self.config = config
        self._integration = integration
        self._metrics = metrics
        self._client = client or http_client()
        self._rng = rng or random.Random()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="alerting-send")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()

    def deliver_due(self, now_ms: int, *, clock: Callable[[], int] | None = None) -> list[Outcome]:
        """Send every item due at ``now_ms``; ``clock`` (if given) stamps the acknowledgements.

        Integrations are served in parallel (a receiver timing out does not hold the others back),
        each in order; after a retryable failure the integration's other items wait for the same
        next attempt instead of each knocking on a service that is down.
        """
        timeout_ms = duration_ms(self.config.request_timeout)
        with self._engine.begin() as conn:
            items = store.claim_due(conn, now_ms=now_ms, lease_ms=timeout_ms * 3 + 5000)
        by_integration: dict[str, list[store.OutboxItem]] = {}
        for item in items:
            by_integration.setdefault(item.integration, []).append(item)
        queues = list(by_integration.values())
        if len(queues) <= 1:
            return [o for q in queues for o in self._deliver_queue(q, now_ms, clock)]
        futures = [self._pool.submit(self._deliver_queue, q, now_ms, clock) for q in queues]
        return [o for f in futures for o in f.result()]

    def _deliver_queue(
        self, items: list[store.OutboxItem], now_ms: int, clock: Callable[[], int] | None
    ) -> list[Outcome]:
        out = []
        for i, item in enumerate(items):
            outcome = self._deliver(item, now_ms if clock is None else clock())
            out.append(outcome)
            if not outcome.result.ok and not outcome.result.permanent and outcome.next_attempt_ms is not None:
                rest = [x.id for x in items[i + 1 :]]
                if rest:
                    with self._engine.begin() as conn:
                        store.release(conn, rest, next_attempt_ms=outcome.next_attempt_ms)
                break
        return out

    def _deliver(self, item: store.OutboxItem, now_ms: int) -> Outcome:
        integ = self._integration(item.integration)
        timeout_seconds = duration_ms(self.config.request_timeout) / 1000
        if integ is None:
            result = DeliveryResult(
                ok=False, status=None, body="receiver no longer configured", permanent=True
            )
        else:
            try:
                req = integ.render(Notification.from_json(item.notification))
            except NotificationError as exc:
                result = DeliveryResult(ok=False, status=None, body=str(exc), permanent=True)
            else:
                result = send(
                    self._client,
                    req,
                    timeout_seconds=timeout_seconds,
                    now_ms=now_ms,
                    idempotency_key=item.idempotency_key,
                )
        labels = {"receiver": item.receiver, "integration": item.integration}
        if result.ok:
            with self._engine.begin() as conn:
                store.mark_sent(conn, item.id, now_ms=now_ms, status=result.status)
            self._metrics.sent.labels(**labels).inc()
            if item.first_active_at_ms is not None:
                latency = max(now_ms - item.first_active_at_ms, 0) / 1000
                self._metrics.latency.labels(receiver=item.receiver).observe(latency)
            return Outcome(item, result, dead=False, next_attempt_ms=None)
        attempt = item.attempts + 1
        dead = result.permanent or attempt >= self.config.max_attempts
        delay = backoff_ms(
            attempt,
            initial_ms=duration_ms(self.config.initial_backoff),
            max_ms=duration_ms(self.config.max_backoff),
            rng=self._rng,
        )
        if result.retry_after_ms is not None:
            delay = max(delay, result.retry_after_ms)
        error = f"HTTP {result.status}: {result.body}" if result.status is not None else result.body
        with self._engine.begin() as conn:
            store.mark_failed(
                conn, item.id, next_attempt_ms=now_ms + delay, dead=dead, status=result.status, error=error
            )
        self._metrics.failed.labels(**labels).inc()
        if dead:
            self._metrics.dead.labels(**labels).inc()
            log.warning(
                "notification %s to %s dead-lettered after %d attempts: %s",
                item.id,
                item.integration,
                attempt,
                error,
            )
        return Outcome(item, result, dead=dead, next_attempt_ms=None if dead else now_ms + delay)

    def next_due_ms(self) -> int | None:
        t = store.outbox_table
        with self._engine.connect() as conn:
            value = conn.execute(
                sa.select(sa.func.min(t.c.next_attempt_ms)).where(t.c.state == "pending")
            ).scalar()
        return int(value) if value is not None else None

    def pending_count(self) -> int:
        t = store.outbox_table
        with self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).where(t.c.state == "pending")).scalar() or 0)
