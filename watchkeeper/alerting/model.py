"""The alert as the notification pipeline sees it, and the entry point rule evaluation calls.

An `Alert` is what Prometheus posts to Alertmanager: labels (its identity), annotations, when it
started and, once resolved, when it ended. The rule evaluator hands every active or just-resolved
alert to a `AlertSink` (the dispatcher) at each evaluation:

>>> from watchkeeper.labels import from_dict
>>> a = Alert(labels=from_dict({"alertname": "Down", "job": "api"}), annotations=(), starts_at_ms=1000)
>>> a.fingerprint
'c89fba827b26e2d5'
>>> a.is_resolved(now_ms=2000), a.resolved(at_ms=3000).is_resolved(now_ms=3000)
(False, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Protocol

from watchkeeper.labels import Labels, get

_FNV_OFFSET64 = 14695981039346656037
_FNV_PRIME64 = 1099511628211
_SEPARATOR = 0xFF


@lru_cache(maxsize=65_536)
def fingerprint(labels: Labels) -> str:
    """Alertmanager's fingerprint of a label set: FNV-1a 64 over sorted ``name 0xff value 0xff``.

    The same 16-hex-digit string Alertmanager shows, so fingerprints can be compared across tools.
    """
    h = _FNV_OFFSET64
    for name, value in sorted(labels):
        for part in (name, value):
            for byte in part.encode():
                h = ((h ^ byte) * _FNV_PRIME64) & 0xFFFFFFFFFFFFFFFF
            h = ((h ^ _SEPARATOR) * _FNV_PRIME64) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert instance.

    ``ends_at_ms`` is ``None`` while firing with no known end; an alert is resolved once
    ``ends_at_ms <= now``. A firing alert may carry a future ``ends_at_ms`` (Prometheus sends
    now + 4 × resend delay) after which it counts as resolved unless re-sent.
    """

    labels: Labels
    annotations: Labels
    starts_at_ms: int
    ends_at_ms: int | None = None
    generator_url: str = ""
    fingerprint: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprint", fingerprint(self.labels))

    @property
    def name(self) -> str:
        return get(self.labels, "alertname")

    def is_resolved(self, *, now_ms: int) -> bool:
        return self.ends_at_ms is not None and self.ends_at_ms <= now_ms

    def status(self, *, now_ms: int) -> str:
        """``"firing"`` or ``"resolved"`` (Alertmanager's words)."""
        return "resolved" if self.is_resolved(now_ms=now_ms) else "firing"

    def resolved(self, *, at_ms: int) -> Alert:
        return replace(self, ends_at_ms=at_ms)


class AlertSink(Protocol):
    """What rule evaluation sends alerts to (`watchkeeper.alerting.dispatcher.Dispatcher`).

    Call it after every evaluation with the alerts that are firing and those that just resolved
    (``ends_at_ms`` set to the resolution time); resolved alerts are notified promptly.
    """

    def receive(self, alerts: Sequence[Alert], now_ms: int) -> None: ...
