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


class Inhibitor:
    """The firing source alerts of every rule, indexed by their ``equal`` label values.

    Built once per flush, it answers for each target in time independent of the number of alerts.
    """

    def __init__(self, rules: Sequence[InhibitRule], alerts: Iterable[Alert], *, now_ms: int) -> None:
        self._rules = list(rules)
        self._index: list[dict[tuple[str, ...], list[tuple[str, bool]]]] = [{} for _ in self._rules]
        if not self._rules:
            return
        for a in alerts:
            if a.is_resolved(now_ms=now_ms):
                continue
            for rule, index in zip(self._rules, self._index, strict=True):
                if _all_match(rule.source, a.labels):
                    key = tuple(get(a.labels, name) for name in rule.equal)
                    index.setdefault(key, []).append((a.fingerprint, _all_match(rule.target, a.labels)))

    def is_inhibited(self, labels: Labels) -> bool:
        """Whether some firing source inhibits ``labels`` (stops at the first)."""
        for rule, index in zip(self._rules, self._index, strict=True):
            if not _all_match(rule.target, labels):
                continue
            sources = index.get(tuple(get(labels, name) for name in rule.equal), ())
            if not sources:
                continue
            if not _all_match(rule.source, labels) or any(
                not matches_target for _, matches_target in sources
            ):
                return True
        return False

    def inhibited_by(self, labels: Labels) -> list[str]:
        found: set[str] = set()
        for rule, index in zip(self._rules, self._index, strict=True):
            if not _all_match(rule.target, labels):
                continue
            sources = index.get(tuple(get(labels, name) for name in rule.equal), ())
            two_sided = _all_match(rule.source, labels)
            found.update(fp for fp, matches_target in sources if not (two_sided and matches_target))
        return sorted(found)


def inhibited_by(
    labels: Labels, rules: Sequence[InhibitRule], alerts: Iterable[Alert], *, now_ms: int
) -> list[str]:
    """Fingerprints of the firing alerts that inhibit an alert with ``labels`` (empty: not inhibited)."""
    return Inhibitor(rules, alerts, now_ms=now_ms).inhibited_by(labels)
