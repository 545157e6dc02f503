"""Aggregation groups and their timers, and the "does this receiver need a notification" decision.

A group collects the alerts of one route with equal ``group_by`` labels. It is first flushed
``group_wait`` after it is created, then every ``group_interval``; at each flush every receiver
integration is notified if its last notification (`NotifyLog` entry) differs — a new firing
alert, a newly resolved one (when it sends resolved), or ``repeat_interval`` elapsed.

The one departure from Alertmanager: when an alert that was already notified resolves, the group
is flushed ``resolved_wait`` (default 0s) later instead of at the next ``group_interval`` tick
(prometheus/alertmanager#1660).

>>> entry = LogEntry(firing=frozenset({"a"}), resolved=frozenset(), notified_at_ms=0, seq=1)
>>> needs_update(entry, firing={"a"}, resolved=set(), send_resolved=True, repeat_ms=60_000, now_ms=1000)
False
>>> needs_update(entry, firing=set(), resolved={"a"}, send_resolved=True, repeat_ms=60_000, now_ms=1000)
True
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass, field

from watchkeeper.alerting.model import Alert
from watchkeeper.alerting.routing import Route
from watchkeeper.labels import Labels


@dataclass(frozen=True, slots=True)
class LogEntry:
    """The last notification of one (group, receiver integration): Alertmanager's nflog entry."""

    firing: frozenset[str]
    resolved: frozenset[str]
    notified_at_ms: int
    seq: int


def needs_update(
    entry: LogEntry | None,
    *,
    firing: Set[str],
    resolved: Set[str],
    send_resolved: bool,
    repeat_ms: int,
    now_ms: int,
) -> bool:
    """Alertmanager's ``DedupStage.needsUpdate``."""
    if entry is None:
        return bool(firing)
    if not set(firing) <= entry.firing:
        return True
    if not firing:
        # all resolved: tell the receiver only if it was told about some of them
        return bool(entry.firing)
    if send_resolved and not set(resolved) <= entry.resolved:
        return True
    return entry.notified_at_ms <= now_ms - repeat_ms


@dataclass(slots=True)
class AggregationGroup:
    """The alerts of one group key and when the group is next flushed."""

    key: str
    route: Route
    labels: Labels
    next_flush_ms: int
    alerts: dict[str, Alert] = field(default_factory=dict)
    has_flushed: bool = False
    seen_resolved: set[str] = field(default_factory=set)
    next_end_ms: int | None = None
    """The earliest ``endsAt`` of an alert not yet seen resolved (when to look again)."""

    @classmethod
    def new(cls, key: str, route: Route, labels: Labels, *, now_ms: int) -> AggregationGroup:
        return cls(key=key, route=route, labels=labels, next_flush_ms=now_ms + route.group_wait_ms)

    def insert(self, alert: Alert, *, now_ms: int) -> None:
        self.alerts[alert.fingerprint] = alert
        if not self.has_flushed and alert.starts_at_ms + self.route.group_wait_ms <= now_ms:
            # an alert older than group_wait (e.g. restored after a restart) is not held back again
            self.next_flush_ms = min(self.next_flush_ms, now_ms)
        if alert.is_resolved(now_ms=now_ms):
            self._resolved(alert, now_ms)
        else:
            self.seen_resolved.discard(alert.fingerprint)
            if alert.ends_at_ms is not None:
                self.next_end_ms = min(self.next_end_ms or alert.ends_at_ms, alert.ends_at_ms)

    def _resolved(self, alert: Alert, now_ms: int) -> None:
        if alert.fingerprint in self.seen_resolved:
            return
        self.seen_resolved.add(alert.fingerprint)
        if self.has_flushed:
            due = (alert.ends_at_ms or now_ms) + self.route.resolved_wait_ms
            self.next_flush_ms = min(self.next_flush_ms, due)

    def check_resolved(self, *, now_ms: int) -> None:
        """Bring the next flush forward when an alert's ``endsAt`` passed (it was not re-sent)."""
        if self.next_end_ms is None or self.next_end_ms > now_ms:
            return
        next_end: int | None = None
        for alert in self.alerts.values():
            if alert.is_resolved(now_ms=now_ms):
                self._resolved(alert, now_ms)
            elif alert.ends_at_ms is not None:
                next_end = alert.ends_at_ms if next_end is None else min(next_end, alert.ends_at_ms)
        self.next_end_ms = next_end

    def due(self, *, now_ms: int) -> bool:
        return self.next_flush_ms <= now_ms

    def snapshot(self) -> list[Alert]:
        return sorted(self.alerts.values(), key=lambda a: a.labels)

    def flushed(self, snapshot: list[Alert], *, now_ms: int) -> None:
        """After a flush: drop the resolved alerts it covered, schedule the next tick."""
        for alert in snapshot:
            current = self.alerts.get(alert.fingerprint)
            if current == alert and alert.is_resolved(now_ms=now_ms):
                del self.alerts[alert.fingerprint]
                self.seen_resolved.discard(alert.fingerprint)
        self.has_flushed = True
        self.next_flush_ms = now_ms + self.route.group_interval_ms

    @property
    def empty(self) -> bool:
        return not self.alerts
