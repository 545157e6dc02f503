from __future__ import annotations

from watchkeeper.alerting.config import InhibitRuleConfig
from watchkeeper.alerting.inhibition import Inhibitor, InhibitRule, inhibited_by
from watchkeeper.alerting.model import Alert
from watchkeeper.labels import from_dict

RULE = InhibitRule.from_config(
    InhibitRuleConfig(
        source_matchers=['severity="critical"'],
        target_matchers=['severity="warning"'],
        equal=["cluster", "zone"],
    )
)


def alert(ends_at_ms: int | None = None, **labels: str) -> Alert:
    return Alert(from_dict(labels), (), 0, ends_at_ms)


def test_equal_labels_must_agree() -> None:
    crit = alert(alertname="NodeDown", severity="critical", cluster="eu", zone="a")
    assert inhibited_by(
        alert(severity="warning", cluster="eu", zone="a").labels, [RULE], [crit], now_ms=1
    ) == [crit.fingerprint]
    assert (
        inhibited_by(alert(severity="warning", cluster="us", zone="a").labels, [RULE], [crit], now_ms=1) == []
    )


def test_missing_label_equals_empty() -> None:
    crit = alert(severity="critical", cluster="eu")  # no zone
    assert inhibited_by(alert(severity="warning", cluster="eu").labels, [RULE], [crit], now_ms=1)
    assert not inhibited_by(
        alert(severity="warning", cluster="eu", zone="b").labels, [RULE], [crit], now_ms=1
    )


def test_resolved_source_does_not_inhibit() -> None:
    crit = alert(ends_at_ms=10, severity="critical", cluster="eu")
    target = alert(severity="warning", cluster="eu").labels
    assert inhibited_by(target, [RULE], [crit], now_ms=5)
    assert not inhibited_by(target, [RULE], [crit], now_ms=10)


def test_is_inhibited_agrees_with_inhibited_by() -> None:
    both = InhibitRule.from_config(
        InhibitRuleConfig(source_matchers=['team="db"'], target_matchers=['team=~"db|web"'])
    )
    alerts = [
        alert(alertname=n, team=t, cluster=c) for n in "AB" for t in ("db", "web") for c in ("eu", "us")
    ]
    alerts += [
        alert(severity="critical", cluster="eu"),
        alert(ends_at_ms=1, severity="critical", cluster="us"),
    ]
    inhibitor = Inhibitor([RULE, both], alerts, now_ms=5)
    for target in [*alerts, alert(severity="warning", cluster="eu"), alert(severity="warning", cluster="us")]:
        assert inhibitor.is_inhibited(target.labels) == bool(inhibitor.inhibited_by(target.labels)), target


def test_alert_matching_both_sides_cannot_inhibit_itself() -> None:
    rule = InhibitRule.from_config(
        InhibitRuleConfig(source_matchers=['team="db"'], target_matchers=['team="db"'])
    )
    a = alert(alertname="A", team="db")
    b = alert(alertname="B", team="db")
    assert inhibited_by(a.labels, [rule], [a], now_ms=1) == []
    assert inhibited_by(a.labels, [rule], [a, b], now_ms=1) == []  # b matches both sides too
    legacy = InhibitRule.from_config(InhibitRuleConfig(source_match={"a": "1"}, target_match={"b": "2"}))
    assert inhibited_by(from_dict({"b": "2"}), [legacy], [alert(a="1")], now_ms=1)
