"""The alert state machine: one alert instance, one evaluation, no I/O.

``inactive -> pending -> firing -> inactive (resolved)``, as Prometheus' ``AlertingRule.Eval``:

* the condition holds (a sample for the alert's labels) and there is no active instance: the alert
  becomes ``pending`` with ``active_at = now``; it fires once ``now - active_at >= for``
  (so ``for: 0s`` fires at once);
* it no longer holds: a pending alert is dropped; a firing one stays firing while
  ``keep_firing_for`` has not elapsed since the condition cleared, then is resolved
  (``inactive`` with ``resolved_at``) and kept 15 minutes so the resolution is re-sent;
* it holds again after a resolution: a new pending instance replaces the resolved one.

>>> s, t = step_alert(None, 5.0, now_ms=0, for_ms=60_000, keep_firing_for_ms=0)
>>> s.state, [x.to_state for x in t]
(<State.PENDING: 'pending'>, [<State.PENDING: 'pending'>])
>>> s, t = step_alert(s, 6.0, now_ms=60_000, for_ms=60_000, keep_firing_for_ms=0)
>>> s.state, s.value
(<State.FIRING: 'firing'>, 6.0)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from watchkeeper.labels import Labels

#: How long a resolved alert is kept (and re-sent) after resolution (Prometheus' resolvedRetention).
RESOLVED_RETENTION_MS = 15 * 60_000


class State(enum.Enum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"


@dataclass(frozen=True, slots=True)
class AlertState:
    """One alert instance of a rule; ``labels`` include ``alertname``."""

    labels: Labels
    annotations: Labels
    state: State
    active_at_ms: int
    value: float
    fired_at_ms: int | None = None
    resolved_at_ms: int | None = None
    keep_firing_since_ms: int | None = None
    last_sent_ms: int | None = None
    valid_until_ms: int | None = None

    @property
    def is_active(self) -> bool:
        """Pending or firing (what ``ALERTS`` and ``/api/v1/alerts`` show)."""
        return self.state is not State.INACTIVE


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change, kept as alert history."""

    labels: Labels
    from_state: State
    to_state: State
    at_ms: int
    value: float


def step_alert(
    current: AlertState | None,
    value: float | None,
    *,
    now_ms: int,
    for_ms: int,
    keep_firing_for_ms: int,
    annotations: Labels = (),
    labels: Labels | None = None,
) -> tuple[AlertState | None, list[Transition]]:
    """The next state of one alert instance and the transitions taken.

    ``value`` is the sample of the rule's expression for this instance's labels, or ``None`` when
    the expression returned nothing for them. ``annotations`` are this evaluation's expansions.
    ``labels`` are needed only when ``current`` is None. Returns ``None`` when the instance is
    forgotten (a pending alert that cleared, a resolution older than the retention).
    """
    transitions: list[Transition] = []
    if value is not None:
        if current is None or current.state is State.INACTIVE:
            ident = labels if labels is not None else current.labels if current else None
            if ident is None:
                raise ValueError("labels are required for a new alert")
            prev = State.INACTIVE
            current = AlertState(ident, annotations, State.PENDING, now_ms, value)
            transitions.append(Transition(ident, prev, State.PENDING, now_ms, value))
        else:
            current = replace(current, value=value, annotations=annotations, keep_firing_since_ms=None)
        if current.state is State.PENDING and now_ms - current.active_at_ms >= for_ms:
            current = replace(current, state=State.FIRING, fired_at_ms=now_ms)
            transitions.append(Transition(current.labels, State.PENDING, State.FIRING, now_ms, value))
        return current, transitions

    if current is None:
        return None, transitions
    keep_firing = False
    if current.state is State.FIRING and keep_firing_for_ms > 0:
        since = current.keep_firing_since_ms if current.keep_firing_since_ms is not None else now_ms
        current = replace(current, keep_firing_since_ms=since)
        keep_firing = now_ms - since < keep_firing_for_ms
    if keep_firing:
        return current, transitions
    if current.state is State.PENDING:
        transitions.append(Transition(current.labels, State.PENDING, State.INACTIVE, now_ms, current.value))
        return None, transitions
    if current.state is State.FIRING:
        transitions.append(Transition(current.labels, State.FIRING, State.INACTIVE, now_ms, current.value))
        resolved = replace(current, state=State.INACTIVE, resolved_at_ms=now_ms, keep_firing_since_ms=None)
        return resolved, transitions
    # inactive (resolved): forget it once the retention has passed
    if current.resolved_at_ms is not None and now_ms - current.resolved_at_ms > RESOLVED_RETENTION_MS:
        return None, transitions
    return current, transitions


def needs_sending(alert: AlertState, *, now_ms: int, resend_delay_ms: int) -> bool:
    """Prometheus' ``needsSending``: firing or resolved alerts, on change or every resend delay."""
    if alert.state is State.PENDING:
        return False
    if alert.last_sent_ms is None:
        return True
    if alert.resolved_at_ms is not None and alert.resolved_at_ms > alert.last_sent_ms:
        return True
    return alert.last_sent_ms + resend_delay_ms < now_ms


def mark_sent(alert: AlertState, *, now_ms: int, resend_delay_ms: int, interval_ms: int) -> AlertState:
    """After sending: ``valid_until = now + 4 × max(interval, resend delay)`` (two missed sends)."""
    return replace(alert, last_sent_ms=now_ms, valid_until_ms=now_ms + 4 * max(interval_ms, resend_delay_ms))
