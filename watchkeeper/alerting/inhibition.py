"""Inhibition: an alert is muted while a matching *source* alert fires (``inhibit_rules``).

Alertmanager's semantics: the target matches ``target_matchers``, some unresolved alert matches
``source_matchers``, and both have the same value (a missing label counts as empty) for every
label in ``equal``. An alert matching both sides cannot inhibit itself, nor any other alert that
also matches both sides.

>>> from watchkeeper.alerting.config import InhibitRuleConfig
>>> from watchkeeper.alerting.model import Alert
>>> from watchkeeper.labels import from_dict
>>> rule = InhibitRule.from_config(InhibitRuleConfig(
...     source_matchers=['severity="critical"'], target_matchers=['severity="warning"'], equal=["cluster"]))
>>> crit = Alert(from_dict({"alertname": "A", "severity": "critical", "cluster": "eu"}), (), 0)
>>> warn = Alert(from_dict({"alertname": "B", "severity": "warning", "cluster": "eu"}), (), 0)
>>> inhibited_by(warn.labels, [rule], [crit], now_ms=1)
['4a1bdb517bbd5cb9']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from watchkeeper.alerting.config import InhibitRuleConfig, parse_matchers
from watchkeeper.alerting.model import Alert
from watchkeeper.labels import Labels, Matcher, get


def _all_match(matchers: tuple[Matcher, ...], labels: Labels) -> bool:
    return all(m.matches(get(labels, m.name)) for m in matchers)


@dataclass(frozen=True, slots=True)
class InhibitRule:
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]

    @classmethod
    def from_config(cls, cfg: InhibitRuleConfig) -> InhibitRule:
        source = tuple(Matcher.parse_op("=", k, v) for k, v in sorted(cfg.source_match.items()))
        target = tuple(Matcher.parse_op("=", k, v) for k, v in sorted(cfg.target_match.items()))
        return cls(
            source=source + parse_matchers(cfg.source_matchers),
            target=target + parse_matchers(cfg.target_matchers),
            equal=tuple(cfg.equal),
        )


def inhibited_by(
    labels: Labels, rules: Sequence[InhibitRule], alerts: Iterable[Alert], *, now_ms: int
) -> list[str]:
    """Fingerprints of the firing alerts that inhibit an alert with ``labels`` (empty: not inhibited)."""
    applicable = [r for r in rules if _all_match(r.target, labels)]
    if not applicable:
        return []
    sources = [a for a in alerts if not a.is_resolved(now_ms=now_ms)]
    found: set[str] = set()
    for rule in applicable:
        two_sided = _all_match(rule.source, labels)
        for src in sources:
            if not _all_match(rule.source, src.labels):
                continue
            if any(get(src.labels, name) != get(labels, name) for name in rule.equal):
                continue
            if two_sided and _all_match(rule.target, src.labels):
                continue
            found.add(src.fingerprint)
    return sorted(found)
