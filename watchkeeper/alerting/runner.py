"""Running the pipeline: the threads that flush groups and deliver, and leader election for HA.

One replica dispatches at a time. With Redis configured, replicas compete for a lease
(``SET key id NX PX lease``, renewed every third of the lease by a compare-and-extend script;
``leader_lease`` in the settings); the holder flushes groups and runs the outbox, and rule
evaluation asks the same lease whether to evaluate the alerting rules
(:class:`~watchkeeper.rules.manager.RuleManager`); the others keep receiving alerts so that a new
leader has them. A replica that stops renewing loses the lease within ``lease_ms`` and another
takes over; the notification log and the outbox keys in the shared database make sure nothing
already written or acknowledged is sent again.

>>> runner = DispatcherRunner(dispatcher, leader=RedisLease("redis://127.0.0.1:6379/0"))  # doctest: +SKIP
>>> runner.start()                                                                     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from watchkeeper.alerting.config import duration_ms
from watchkeeper.alerting.dispatcher import Dispatcher

log = logging.getLogger(__name__)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Leadership(Protocol):
    """Who dispatches (and evaluates rules): ``is_leader`` is called often and must be cheap."""

    def is_leader(self) -> bool: ...

    def renew(self) -> bool:
        """Acquire or extend the lease; whether this replica is the leader now."""
        ...

    def release(self) -> None: ...


class AlwaysLeader:
    """A single replica (no Redis): always the leader."""

    def is_leader(self) -> bool:
        return True

    def renew(self) -> bool:
        return True

    def release(self) -> None:
        pass


_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLease:
    """A leader lease in Redis. ``renew`` every ``lease_ms / 3``; leadership ends ``lease_ms`` after
    the last successful renewal (this replica stops acting as leader a third of a lease earlier).
    """

    def __init__(
        self,
        url: str,
        *,
        key: str = "watchkeeper:alerting:leader",
        lease_ms: int = 15_000,
        instance_id: str | None = None,
        client: Any = None,
        fail_open: bool = True,
    ) -> None:
        import redis  # optional dependency: only with a redis_url

        self._client = client if client is not None else redis.Redis.from_url(url, socket_timeout=2)
        self.key = key
        self.lease_ms = lease_ms
        self.instance_id = instance_id or uuid.uuid4().hex
        self.fail_open = fail_open
        self._valid_until = 0.0
        self._renew = self._client.register_script(_RENEW)
        self._release = self._client.register_script(_RELEASE)

    def is_leader(self) -> bool:
        return time.monotonic() < self._valid_until

    def renew(self) -> bool:
        started = time.monotonic()
        try:
            ok = bool(self._renew(keys=[self.key], args=[self.instance_id, self.lease_ms]))
        except Exception as exc:
            # Redis unreachable: with fail_open every replica dispatches (as Alertmanager's cluster
            # does on a partition); the shared notification log, the unique outbox keys and the row
            # leases still keep a notification from being written or sent twice
            log.warning(
                "leader lease renewal failed (%s): %s",
                "acting as leader" if self.fail_open else "stepping down",
                exc,
            )
            ok = self.fail_open
        if ok:
            # act as leader for 2/3 of the lease, measured from before the call
            self._valid_until = started + self.lease_ms * 2 / 3 / 1000
        else:
            self._valid_until = 0.0
        return ok

    def release(self) -> None:
        self._valid_until = 0.0
        try:
            self._release(keys=[self.key], args=[self.instance_id])
        except Exception as exc:
            log.warning("leader lease release failed: %s", exc)


class DispatcherRunner:
    """Three daemon threads: lease renewal, group flushing, outbox delivery.

    Flushing and delivery wake early on `Dispatcher.wakeup`, so a group with ``group_wait: 0s`` or
    a resolution is sent within milliseconds, not at the next poll.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        leader: Leadership | None = None,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self.dispatcher = dispatcher
        self.leader: Leadership = leader or AlwaysLeader()
        self._clock = clock
        self._stop = threading.Event()
        self._deliver_wakeup = threading.Event()
        self._threads: list[threading.Thread] = []
        self.silence_refresh_ms = 5000

    def start(self) -> None:
        self.leader.renew()
        for target, name in (
            (self._lease_loop, "alerting-lease"),
            (self._dispatch_loop, "alerting-dispatch"),
            (self._deliver_loop, "alerting-deliver"),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, *, release: bool = True) -> None:
        """Stop the threads; ``release=False`` simulates a crash (the lease runs out by itself)."""
        self._stop.set()
        self.dispatcher.wakeup.set()
        self._deliver_wakeup.set()
        for t in self._threads:
            t.join(timeout=10)
        self._threads.clear()
        if release:
            self.leader.release()

    def _poll_seconds(self) -> float:
        return duration_ms(self.dispatcher.config.outbox.poll_interval) / 1000

    def _lease_loop(self) -> None:
        interval = getattr(self.leader, "lease_ms", 3000) / 3 / 1000
        was_leader = self.leader.is_leader()
        while not self._stop.wait(interval):
            now_leader = self.leader.renew()
            if now_leader and not was_leader:
                log.info("became the alerting leader")
                self.dispatcher.wakeup.set()
                self._deliver_wakeup.set()
            elif was_leader and not now_leader:
                log.warning("lost the alerting leadership")
            was_leader = now_leader

    def _wait_seconds(self, next_ms: int | None) -> float:
        if next_ms is None:
            return self._poll_seconds()
        return min(max((next_ms - self._clock()) / 1000, 0.0), self._poll_seconds())

    def _dispatch_loop(self) -> None:
        last_silences = self._clock()
        while not self._stop.is_set():
            self.dispatcher.wakeup.clear()
            now = self._clock()
            nxt: int | None = None
            try:
                if now - last_silences >= self.silence_refresh_ms:
                    self.dispatcher.reload_silences()  # another replica may have changed them
                    last_silences = now
                if self.leader.is_leader():
                    if self.dispatcher.tick(now):
                        self._deliver_wakeup.set()
                    nxt = self.dispatcher.next_flush_ms()
            except Exception:
                log.exception("alert dispatch failed")
            self.dispatcher.wakeup.wait(self._wait_seconds(nxt))

    def _deliver_loop(self) -> None:
        while not self._stop.is_set():
            self._deliver_wakeup.clear()
            nxt: int | None = None
            try:
                if self.leader.is_leader():
                    self.dispatcher.deliver(self._clock(), clock=self._clock)
                    nxt = self.dispatcher.outbox.next_due_ms()
            except Exception:
                log.exception("notification delivery failed")
            self._deliver_wakeup.wait(self._wait_seconds(nxt))
