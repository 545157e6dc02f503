"""What rule evaluation hands to the notification pipeline, with Prometheus' notifier semantics.

After each evaluation, every firing alert that was not sent within the resend delay and every
alert resolved since it was last sent goes to the :class:`AlertSink`: firing ones with
``ends_at = now + 4 × max(interval, resend delay)`` (so the receiver resolves them by itself if
evaluation stops), resolved ones with ``ends_at`` = the resolution time, re-sent for the 15
minutes a resolved instance is kept. External labels are added to alert labels that lack them.

>>> sink = ListSink()
>>> send_alerts(sink, group, runtime, now_ms=..., resend_delay_ms=60_000)   # doctest: +SKIP
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from watchkeeper.alerting.model import Alert
from watchkeeper.labels import Labels, from_dict
from watchkeeper.rules.evaluation import GroupRuntime
from watchkeeper.rules.model import AlertingRule, RuleGroup, rule_key
from watchkeeper.rules.state import AlertState, State, mark_sent, needs_sending


class AlertSink(Protocol):
    """Where evaluated alerts go (the dispatcher, or a list in tests)."""

    def send(self, alerts: Sequence[Alert], now_ms: int) -> None: ...


class Receiver(Protocol):
    def receive(self, alerts: Sequence[Alert], now_ms: int) -> None: ...


@dataclass(frozen=True, slots=True)
class DispatcherSink:
    """Adapts ``watchkeeper.alerting`` 's dispatcher (``receive(alerts, now_ms)``) to :class:`AlertSink`."""

    dispatcher: Receiver

    def send(self, alerts: Sequence[Alert], now_ms: int) -> None:
        self.dispatcher.receive(alerts, now_ms)


@dataclass(slots=True)
class ListSink:
    """Collects what was sent (tests, ``watchkeeper test rules``)."""

    sent: list[tuple[int, list[Alert]]] = field(default_factory=list)

    def send(self, alerts: Sequence[Alert], now_ms: int) -> None:
        self.sent.append((now_ms, list(alerts)))


def generator_url(external_url: str, expr: str) -> str:
    """Prometheus' ``generatorURL``: the graph page of the rule's expression."""
    return f"{external_url.rstrip('/')}/graph?g0.expr={urllib.parse.quote(expr, safe='')}&g0.tab=1"


def to_alert(a: AlertState, *, expr: str, external_labels: Mapping[str, str], external_url: str) -> Alert:
    labels: Labels = a.labels
    if external_labels:
        labels = from_dict({**external_labels, **dict(a.labels)})
    ends = a.resolved_at_ms if a.state is State.INACTIVE else a.valid_until_ms
    return Alert(labels=labels, annotations=a.annotations, starts_at_ms=a.active_at_ms, ends_at_ms=ends,
                 generator_url=generator_url(external_url, expr))


def due_alerts(
    group: RuleGroup,
    runtime: GroupRuntime,
    *,
    now_ms: int,
    resend_delay_ms: int,
    external_labels: Mapping[str, str] | None = None,
    external_url: str = "",
) -> list[Alert]:
    """The alerts to send now; marks them sent in ``runtime`` (pure apart from that update)."""
    out: list[Alert] = []
    for rule in group.rules:
        if not isinstance(rule, AlertingRule):
            continue
        key = rule_key(rule)
        instances = runtime.alerts.get(key)
        if not instances:
            continue
        for labels, a in list(instances.items()):
            if not needs_sending(a, now_ms=now_ms, resend_delay_ms=resend_delay_ms):
                continue
            sent = mark_sent(a, now_ms=now_ms, resend_delay_ms=resend_delay_ms, interval_ms=group.interval_ms)
            instances[labels] = sent
            out.append(to_alert(sent, expr=rule.expr, external_labels=external_labels or {},
                                external_url=external_url))
    return out
