"""The dispatcher: alerts in, notifications into the outbox; the only stateful part of the pipeline.

``receive`` stores alerts and puts them into the aggregation groups of the routes they match;
``tick`` flushes the groups that are due — mute by time interval, drop silenced and inhibited
alerts, ask the notification log whether each receiver integration needs to hear about it — and
writes each notification with its log entry in one transaction. ``deliver`` runs the outbox.
Every method takes ``now_ms``; `watchkeeper.alerting.runner` is the only code that reads the clock.

>>> import sqlalchemy as sa
>>> from watchkeeper.alerting.config import AlertingConfig
>>> from watchkeeper.alerting.model import Alert
>>> from watchkeeper.labels import from_dict
>>> from watchkeeper.tsdb.schema import make_engine, migrate
>>> engine = make_engine("sqlite://"); migrate(engine)
>>> d = Dispatcher(AlertingConfig.model_validate({"route": {"receiver": "ops", "group_wait": "10s"},
...     "receivers": [{"name": "ops", "webhook_configs": [{"url": "http://127.0.0.1:9/"}]}]}), engine)
>>> d.receive([Alert(from_dict({"alertname": "Down"}), (), starts_at_ms=0)], now_ms=0)
>>> d.tick(now_ms=9_999), d.tick(now_ms=10_000)
(0, 1)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
import sqlalchemy as sa

from watchkeeper.alerting import store
from watchkeeper.alerting.config import AlertingConfig, TimeIntervalConfig, duration_ms
from watchkeeper.alerting.delivery import DeliveryResult, http_client, send
from watchkeeper.alerting.grouping import AggregationGroup, LogEntry, needs_update
from watchkeeper.alerting.inhibition import Inhibitor, InhibitRule
from watchkeeper.alerting.metrics import AlertingMetrics
from watchkeeper.alerting.model import Alert
from watchkeeper.alerting.notification import Notification
from watchkeeper.alerting.outbox import Outbox, Outcome
from watchkeeper.alerting.receivers import Integration, integrations
from watchkeeper.alerting.routing import Route, build_routes, group_key, match_routes
from watchkeeper.alerting.silences import Silence, silenced_by
from watchkeeper.alerting.timeintervals import is_muted
from watchkeeper.labels import from_dict

log = logging.getLogger(__name__)

DEAD_LETTER_ALERT = "WatchkeeperNotificationDeadLetter"
_RESOLVED_RETENTION_MS = 15 * 60_000


@dataclass(frozen=True, slots=True)
class _Candidate:
    group: AggregationGroup
    integration: Integration
    alerts: list[Alert]


@dataclass(frozen=True, slots=True)
class AlertStatus:
    """An alert as the API shows it: ``active``, or ``suppressed`` by silences or inhibition."""

    alert: Alert
    state: str
    silenced_by: list[str]
    inhibited_by: list[str]
    receivers: list[str]


class Dispatcher:
    """Routing, grouping, muting and the notification log over one database (see the module doc)."""

    def __init__(
        self,
        config: AlertingConfig,
        engine: sa.Engine,
        *,
        metrics: AlertingMetrics | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self._engine = engine
        self._lock = threading.RLock()
        self.metrics = metrics or AlertingMetrics()
        self._alerts: dict[str, Alert] = {}
        self._groups: dict[str, AggregationGroup] = {}
        self._dead_letter_alerts: dict[str, Alert] = {}
        self._inhibitor: Inhibitor | None = None
        self._last_gc_ms = 0
        self._changed_ms: dict[str, int] = {}
        self.wakeup = threading.Event()
        """Set when something may be due earlier than the runner expects (new alerts, resolutions)."""
        self._client = client or http_client()
        self._apply(config)
        self.outbox = Outbox(
            engine, config.outbox, self.integration, metrics=self.metrics, client=self._client
        )
        with engine.connect() as conn:
            self._silences = {s.id: s for s in store.load_silences(conn)}
        self.metrics.watch_alerts(self._alert_counts)

    # --- configuration ---------------------------------------------------------------------------

    def _apply(self, config: AlertingConfig) -> None:
        self.config = config
        self.route = build_routes(config.route)
        self._inhibit_rules = [InhibitRule.from_config(r) for r in config.inhibit_rules]
        self._intervals: dict[str, TimeIntervalConfig] = {t.name: t for t in config.all_time_intervals()}
        self._integrations: dict[str, list[Integration]] = {r.name: integrations(r) for r in config.receivers}
        self._by_name = {i.name: i for ints in self._integrations.values() for i in ints}
        self._resolve_timeout_ms = config.resolve_timeout_ms

    def reload(self, config: AlertingConfig, *, now_ms: int) -> None:
        """Apply a new configuration; alerts are re-routed into new groups, the notification log stays."""
        with self._lock:
            self._apply(config)
            self.outbox.config = config.outbox
            self._groups.clear()
            self._route_all(list(self._alerts.values()), now_ms)

    def _alert_counts(self) -> dict[str, int]:
        now_ms = time.time_ns() // 1_000_000  # scrape time (the only clock read here)
        with self._lock:
            firing = sum(1 for a in self._alerts.values() if not a.is_resolved(now_ms=now_ms))
            return {"firing": firing, "resolved": len(self._alerts) - firing}

    def integration(self, name: str) -> Integration | None:
        return self._by_name.get(name)

    # --- alerts in -------------------------------------------------------------------------------

    def receive(self, alerts: Sequence[Alert], now_ms: int) -> None:
        """Accept firing and resolved alerts (from rule evaluation or ``POST /api/v2/alerts``).

        A firing alert without ``ends_at_ms`` is considered resolved after ``resolve_timeout``
        unless it is sent again, as in Alertmanager.
        """
        with self._lock:
            merged = [self._merge(a, now_ms) for a in alerts]
            self._route_all(merged, now_ms)
        self.wakeup.set()

    def _merge(self, alert: Alert, now_ms: int) -> Alert:
        if alert.ends_at_ms is None:
            alert = alert.resolved(at_ms=now_ms + self._resolve_timeout_ms)
        old = self._alerts.get(alert.fingerprint)
        if old is None or old.is_resolved(now_ms=now_ms) != alert.is_resolved(now_ms=now_ms):
            # when watchkeeper learnt that it fires or resolved: where the latency histogram starts
            self._changed_ms[alert.fingerprint] = now_ms
        if old is not None and not old.is_resolved(now_ms=now_ms) and old.starts_at_ms < alert.starts_at_ms:
            alert = Alert(
                alert.labels, alert.annotations, old.starts_at_ms, alert.ends_at_ms, alert.generator_url
            )
        self._alerts[alert.fingerprint] = alert
        return alert

    def _route_all(self, alerts: Sequence[Alert], now_ms: int) -> None:
        for alert in alerts:
            for route in match_routes(self.route, alert.labels):
                key = group_key(route, alert.labels)
                group = self._groups.get(key)
                if group is None:
                    # also for a resolved alert: after a restart, its group may have announced it firing
                    # (the notification log knows; a resolved alert never announced sends nothing)
                    group = AggregationGroup.new(key, route, route.group_labels(alert.labels), now_ms=now_ms)
                    self._groups[key] = group
                group.insert(alert, now_ms=now_ms)

    # --- flushing --------------------------------------------------------------------------------

    def tick(self, now_ms: int) -> int:
        """Flush every group due at ``now_ms``; the number of notifications written to the outbox.

        All decisions of one tick are written in one transaction (notification log + outbox);
        if another replica wrote one of them first (same idempotency key), each is retried alone.
        """
        with self._lock:
            self._inhibitor = None
            due = []
            for group in self._groups.values():
                group.check_resolved(now_ms=now_ms)
                if group.due(now_ms=now_ms):
                    due.append((group, group.snapshot()))
            if now_ms - self._last_gc_ms >= 60_000:
                self._gc(now_ms)
            if not due:
                return 0
            candidates = [c for group, snapshot in due for c in self._candidates(group, snapshot, now_ms)]
            written = self._write(candidates, now_ms) if candidates else 0
            for group, snapshot in due:
                group.flushed(snapshot, now_ms=now_ms)
                if group.empty:
                    del self._groups[group.key]
        return written

    def next_flush_ms(self) -> int | None:
        """When `tick` next has something to do (a group due, or an alert's ``endsAt`` passing)."""
        with self._lock:
            times = [g.next_flush_ms for g in self._groups.values()]
            times += [g.next_end_ms for g in self._groups.values() if g.next_end_ms is not None]
        return min(times, default=None)

    def _candidates(self, group: AggregationGroup, snapshot: list[Alert], now_ms: int) -> list[_Candidate]:
        """The (group, integration) pairs a flush may notify: after time muting, silences, inhibition."""
        route = group.route
        if is_muted(self._intervals, route.mute_time_intervals, route.active_time_intervals, now_ms):
            return []
        visible = [a for a in snapshot if not self._suppressed(a, now_ms)]
        if not visible:
            return []
        return [_Candidate(group, integ, visible) for integ in self._integrations.get(route.receiver, [])]

    def _suppressed(self, alert: Alert, now_ms: int) -> bool:
        if silenced_by(alert.labels, self._silences.values(), now_ms=now_ms):
            return True
        if not self._inhibit_rules:
            return False
        if self._inhibitor is None:  # built at most once per tick, only when a group is flushed
            self._inhibitor = Inhibitor(self._inhibit_rules, self._alerts.values(), now_ms=now_ms)
        return self._inhibitor.is_inhibited(alert.labels)

    def _write(self, candidates: list[_Candidate], now_ms: int) -> int:
        try:
            with self._engine.begin() as conn:
                return self._decide_and_write(conn, candidates, now_ms)
        except sa.exc.IntegrityError:
            log.info("some notifications were already in the outbox; writing one at a time")
        written = 0
        for c in candidates:
            try:
                with self._engine.begin() as conn:
                    written += self._decide_and_write(conn, [c], now_ms)
            except sa.exc.IntegrityError:
                # another replica wrote the same notification (same idempotency key) first
                log.info("notification for %s / %s already in the outbox", c.group.key, c.integration.name)
        return written

    def _decide_and_write(self, conn: sa.Connection, candidates: list[_Candidate], now_ms: int) -> int:
        entries = store.load_log_entries(conn, [(c.group.key, c.integration.name) for c in candidates])
        log_rows: list[tuple[str, str, LogEntry, bool]] = []
        outbox_rows: list[dict[str, object]] = []
        for c in candidates:
            group, integ, alerts = c.group, c.integration, c.alerts
            firing = {a.fingerprint for a in alerts if not a.is_resolved(now_ms=now_ms)}
            resolved = {a.fingerprint for a in alerts if a.is_resolved(now_ms=now_ms)}
            entry = entries.get((group.key, integ.name))
            if not needs_update(
                entry,
                firing=firing,
                resolved=resolved,
                send_resolved=integ.send_resolved,
                repeat_ms=group.route.repeat_interval_ms,
                now_ms=now_ms,
            ):
                continue
            seq = (entry.seq if entry else 0) + 1
            new_entry = LogEntry(frozenset(firing), frozenset(resolved), now_ms, seq)
            log_rows.append((group.key, integ.name, new_entry, entry is None))
            to_send = alerts if integ.send_resolved else [a for a in alerts if a.fingerprint in firing]
            if not to_send:
                continue  # logged (as Alertmanager does) so the next flush knows, but nothing to send
            notification = Notification.build(
                group.route.receiver,
                group.key,
                group.labels,
                to_send,
                now_ms=now_ms,
                external_url=self.config.global_.external_url,
            )
            outbox_rows.append(
                store.outbox_row(
                    key=store.idempotency_key(group.key, integ.name, seq),
                    receiver=integ.receiver,
                    integration=integ.name,
                    group_key=group.key,
                    notification=notification.to_json(),
                    now_ms=now_ms,
                    first_active_at_ms=_changed_at(entry, alerts, self._changed_ms, now_ms),
                )
            )
        store.save_log_entries(conn, log_rows)
        store.enqueue_many(conn, outbox_rows)
        return len(outbox_rows)

    def _gc(self, now_ms: int) -> None:
        self._last_gc_ms = now_ms
        cutoff = now_ms - _RESOLVED_RETENTION_MS
        for fp in [
            fp for fp, a in self._alerts.items() if a.ends_at_ms is not None and a.ends_at_ms < cutoff
        ]:
            del self._alerts[fp]
            self._changed_ms.pop(fp, None)
        retention_ms = duration_ms(self.config.outbox.retention)
        with self._engine.begin() as conn:
            store.delete_finished_before(conn, now_ms - retention_ms)
            store.delete_log_entries_before(conn, now_ms - retention_ms)

    # --- delivery --------------------------------------------------------------------------------

    def deliver(self, now_ms: int, *, clock: Callable[[], int] | None = None) -> list[Outcome]:
        """Run the outbox once; raise or resolve the dead-letter alerts accordingly."""
        outcomes = self.outbox.deliver_due(now_ms, clock=clock)
        if self.config.outbox.dead_letter_alert:
            changes = []
            for o in outcomes:
                if o.dead:
                    changes.append(self._dead_letter_alert(o, now_ms))
                elif o.result.ok and o.item.integration in self._dead_letter_alerts:
                    changes.append(self._dead_letter_alerts.pop(o.item.integration).resolved(at_ms=now_ms))
            if changes:
                self.receive(changes, now_ms)
        self.metrics.pending.set(self.outbox.pending_count())
        return outcomes

    def _dead_letter_alert(self, o: Outcome, now_ms: int) -> Alert:
        alert = Alert(
            labels=from_dict(
                {
                    "alertname": DEAD_LETTER_ALERT,
                    "receiver": o.item.receiver,
                    "integration": o.item.integration,
                    "severity": "critical",
                }
            ),
            annotations=from_dict(
                {
                    "summary": f"Notifications to {o.item.integration} are being dropped",
                    "description": f"Gave up after {o.item.attempts + 1} attempts: "
                    + (f"HTTP {o.result.status}: " if o.result.status is not None else "")
                    + o.result.body[:300],
                }
            ),
            starts_at_ms=now_ms,
            ends_at_ms=now_ms + 24 * 3_600_000,
        )
        self._dead_letter_alerts[o.item.integration] = alert
        return alert

    # --- test send -------------------------------------------------------------------------------

    def test_receiver(
        self, name: str, *, now_ms: int, alerts: Sequence[Alert] | None = None
    ) -> list[dict[str, object]]:
        """Send a sample notification to every integration of a receiver now (not through the outbox)."""
        ints = self._integrations.get(name)
        if ints is None:
            raise KeyError(name)
        n = sample_notification(
            name, now_ms=now_ms, alerts=alerts, external_url=self.config.global_.external_url
        )
        out: list[dict[str, object]] = []
        timeout_seconds = duration_ms(self.config.outbox.request_timeout) / 1000
        for integ in ints:
            try:
                result = send(self._client, integ.render(n), timeout_seconds=timeout_seconds, now_ms=now_ms)
            except Exception as exc:  # a template error, a bad URL: report it, that is the point of a test
                result = DeliveryResult(ok=False, status=None, body=f"{type(exc).__name__}: {exc}")
            out.append(
                {"integration": integ.name, "ok": result.ok, "status": result.status, "response": result.body}
            )
        return out

    # --- notification history ------------------------------------------------------------------

    def notifications(
        self, *, states: Sequence[str] | None = None, receiver: str | None = None, limit: int = 100
    ) -> list[store.OutboxItem]:
        """The newest notifications with their delivery state (pending, sent, dead) and last answer."""
        with self._engine.connect() as conn:
            return store.list_items(conn, states=states, receiver=receiver, limit=limit, newest_first=True)

    def requeue_dead(self, *, now_ms: int, receiver: str | None = None) -> int:
        """Give dead-lettered notifications a new round of attempts (after fixing the receiver)."""
        with self._engine.begin() as conn:
            n = store.requeue_dead(conn, now_ms=now_ms, receiver=receiver)
        self.wakeup.set()
        return n

    # --- silences --------------------------------------------------------------------------------

    def silences(self) -> list[Silence]:
        with self._lock:
            return sorted(self._silences.values(), key=lambda s: (s.starts_at_ms, s.id))

    def reload_silences(self) -> None:
        with self._engine.connect() as conn:
            loaded = {s.id: s for s in store.load_silences(conn)}
        with self._lock:
            self._silences = loaded

    def put_silence(self, silence: Silence) -> None:
        with self._engine.begin() as conn:
            store.save_silence(conn, silence)
        with self._lock:
            self._silences[silence.id] = silence

    def expire_silence(self, silence_id: str, *, now_ms: int) -> Silence:
        with self._lock:
            silence = self._silences[silence_id].expired(now_ms=now_ms)
        self.put_silence(silence)
        return silence

    # --- views -----------------------------------------------------------------------------------

    def alert_statuses(self, *, now_ms: int) -> list[AlertStatus]:
        with self._lock:
            out = []
            inhibitor = Inhibitor(self._inhibit_rules, self._alerts.values(), now_ms=now_ms)
            for alert in sorted(self._alerts.values(), key=lambda a: a.labels):
                sil = silenced_by(alert.labels, self._silences.values(), now_ms=now_ms)
                inh = inhibitor.inhibited_by(alert.labels)
                receivers = sorted({r.receiver for r in match_routes(self.route, alert.labels)})
                state = "suppressed" if sil or inh else "active"
                out.append(AlertStatus(alert, state, sil, inh, receivers))
            return out

    def groups(self) -> list[tuple[AggregationGroup, list[Alert]]]:
        with self._lock:
            return [(g, g.snapshot()) for g in sorted(self._groups.values(), key=lambda g: g.key)]

    def routes_for(self, alert: Alert) -> list[Route]:
        return match_routes(self.route, alert.labels)

    def close(self) -> None:
        self.outbox.close()


def _changed_at(
    entry: LogEntry | None, alerts: Sequence[Alert], changed_ms: dict[str, int], now_ms: int
) -> int | None:
    """When the oldest change this notification reports reached the dispatcher (firing or resolved;
    for the latency histogram; ``startsAt`` would include the rule's ``for``)."""
    times = []
    for a in alerts:
        if a.is_resolved(now_ms=now_ms):
            if entry is not None and a.fingerprint in entry.firing and a.ends_at_ms is not None:
                times.append(max(a.ends_at_ms, changed_ms.get(a.fingerprint, a.ends_at_ms)))
        elif entry is None or a.fingerprint not in entry.firing:
            times.append(changed_ms.get(a.fingerprint, a.starts_at_ms))
    return min(times, default=None)


def sample_notification(
    receiver: str, *, now_ms: int, alerts: Sequence[Alert] | None = None, external_url: str = ""
) -> Notification:
    """A group of two firing alerts and one resolved, for tests and previews."""
    if alerts is None:
        alerts = [
            Alert(
                from_dict({"alertname": "TestAlert", "severity": "critical", "instance": "web-1:9100"}),
                from_dict(
                    {
                        "summary": "Test notification from watchkeeper <no action needed>",
                        "description": "Sent by POST /api/v2/receivers/{name}/test",
                    }
                ),
                starts_at_ms=now_ms - 300_000,
                generator_url=f"{external_url}/graph",
            ),
            Alert(
                from_dict({"alertname": "TestAlert", "severity": "critical", "instance": "web-2:9100"}),
                from_dict({"summary": "Disk 95% full on web-2 & climbing"}),
                starts_at_ms=now_ms - 120_000,
            ),
            Alert(
                from_dict({"alertname": "TestAlert", "severity": "critical", "instance": "web-3:9100"}),
                from_dict({"summary": "Recovered"}),
                starts_at_ms=now_ms - 600_000,
                ends_at_ms=now_ms - 60_000,
            ),
        ]
    return Notification.build(
        receiver,
        f'{{}}:{{alertname="TestAlert"}}/test/{receiver}',
        from_dict({"alertname": "TestAlert"}),
        alerts,
        now_ms=now_ms,
        external_url=external_url,
    )
