"""What the /alerts, /silences, /targets and /rules pages read, as small Protocols.

Rule evaluation, alerting and the scrape manager implement these (or an adapter does); a page
whose provider is not wired renders an empty state saying so. Values are plain, already-formatted
data, so the pages do not depend on those packages.

>>> class NoAlerts:
...     def alerts(self): return []
...     def history(self, limit): return []
>>> isinstance(NoAlerts(), AlertsProvider)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from watchkeeper.labels import Labels


@dataclass(frozen=True, slots=True)
class AlertView:
    name: str
    state: str
    """``firing`` or ``pending``."""
    labels: Labels
    annotations: Labels = ()
    active_at_ms: int = 0
    value: float = float("nan")


@dataclass(frozen=True, slots=True)
class AlertTransitionView:
    name: str
    labels: Labels
    from_state: str
    to_state: str
    at_ms: int
    value: float = float("nan")


@runtime_checkable
class AlertsProvider(Protocol):
    def alerts(self) -> Sequence[AlertView]: ...

    def history(self, limit: int) -> Sequence[AlertTransitionView]: ...


@dataclass(frozen=True, slots=True)
class SilenceView:
    id: str
    matchers: str
    """As text: ``{alertname="HighLatency", route=~"/api/.*"}``."""
    starts_at_ms: int
    ends_at_ms: int
    created_by: str = ""
    comment: str = ""
    state: str = "active"


@runtime_checkable
class SilencesProvider(Protocol):
    def silences(self) -> Sequence[SilenceView]: ...


@dataclass(frozen=True, slots=True)
class TargetView:
    job: str
    url: str
    health: str
    """``up``, ``down`` or ``unknown``."""
    labels: Labels = ()
    last_scrape_ms: int | None = None
    last_scrape_duration_seconds: float | None = None
    last_error: str = ""


@runtime_checkable
class TargetsProvider(Protocol):
    def targets(self) -> Sequence[TargetView]: ...


@dataclass(frozen=True, slots=True)
class RuleView:
    name: str
    kind: str
    """``alerting`` or ``recording``."""
    expr: str
    health: str = "unknown"
    state: str = ""
    last_error: str = ""
    last_evaluation_ms: int | None = None
    evaluation_seconds: float | None = None
    for_: str = ""
    labels: Labels = ()


@dataclass(frozen=True, slots=True)
class RuleGroupView:
    name: str
    file: str
    interval_seconds: float
    rules: Sequence[RuleView] = field(default_factory=tuple)


@runtime_checkable
class RulesProvider(Protocol):
    def rule_groups(self) -> Sequence[RuleGroupView]: ...
