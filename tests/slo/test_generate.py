"""Generated rules against Sloth's documented output (examples/_gen/getting-started.yml, v0.16),
compared semantically: names, labels, windows, thresholds as numbers; and evaluated on data."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from watchkeeper.labels import from_dict
from watchkeeper.promql.engine import Engine
from watchkeeper.rules.model import AlertingRule, RecordingRule, parse_rule_file
from watchkeeper.slo.generate import alert_rows, generate, infeasible, to_yaml
from watchkeeper.slo.spec import SpecError, parse_specs
from watchkeeper.tsdb.storage import Storage

# Sloth's getting-started spec (its examples/getting-started.yml), same fields and values.
SLOTH_SPEC = """
version: "prometheus/v1"
service: "myservice"
labels: {owner: "myteam", repo: "myorg/myservice", tier: "2"}
slos:
  - name: "requests-availability"
    objective: 99.9
    description: "Common SLO based on availability for HTTP request responses."
    sli:
      events:
        error_query: sum(rate(http_request_duration_seconds_count{job="myservice",code=~"(5..|429)"}[{{.window}}]))
        total_query: sum(rate(http_request_duration_seconds_count{job="myservice"}[{{.window}}]))
    alerting:
      name: MyServiceHighErrorRate
      labels: {category: "availability"}
      annotations: {summary: "High error rate on 'myservice' requests responses"}
      page_alert: {labels: {severity: pageteam, routing_key: myteam}}
      ticket_alert: {labels: {severity: "slack", slack_channel: "#alerts-myteam"}}
"""  # noqa: E501

# What Sloth documents for it, as facts (values parsed from its generated YAML).
SLOTH_WINDOWS = ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"]
SLOTH_ID_LABELS = {
    "sloth_id": "myservice-requests-availability",
    "sloth_service": "myservice",
    "sloth_slo": "requests-availability",
}
SLOTH_SPEC_LABELS = {"owner": "myteam", "repo": "myorg/myservice", "tier": "2"}
SLOTH_META = {
    "slo:objective:ratio": 0.9990000000000001,
    "slo:error_budget:ratio": 1 - 0.9990000000000001,
    "slo:time_period:days": 30.0,
}
SLOTH_META_RECORDS = [
    "slo:objective:ratio",
    "slo:error_budget:ratio",
    "slo:time_period:days",
    "slo:current_burn_rate:ratio",
    "slo:period_burn_rate:ratio",
    "slo:period_error_budget_remaining:ratio",
    "sloth_slo_info",
]
# (severity, [(short, long, factor)], labels) with threshold factor x 0.0009999999999999432
SLOTH_ALERTS = [
    (
        "page",
        [("5m", "1h", 14.4), ("30m", "6h", 6.0)],
        {
            "category": "availability",
            "routing_key": "myteam",
            "severity": "pageteam",
            "sloth_severity": "page",
        },
    ),
    (
        "ticket",
        [("2h", "1d", 3.0), ("6h", "3d", 1.0)],
        {
            "category": "availability",
            "severity": "slack",
            "slack_channel": "#alerts-myteam",
            "sloth_severity": "ticket",
        },
    ),
]
SLOTH_BUDGET = 0.0009999999999999432
REPO = Path(__file__).parents[2]


def _doc(spec: str) -> dict[str, Any]:
    return generate(parse_specs(spec))


def test_matches_sloth_recording_rules() -> None:
    doc = _doc(SLOTH_SPEC)
    names = [g["name"] for g in doc["groups"]]
    assert names == [
        f"sloth-slo-{k}-myservice-requests-availability"
        for k in ("sli-recordings", "meta-recordings", "alerts")
    ]
    ratio = {
        r["labels"]["sloth_window"]: r
        for r in doc["groups"][0]["rules"]
        if r["record"].startswith("slo:sli_error:ratio_rate")
    }
    assert sorted(ratio, key=SLOTH_WINDOWS.index) == SLOTH_WINDOWS
    for w, rule in ratio.items():
        assert rule["record"] == f"slo:sli_error:ratio_rate{w}"
        assert rule["labels"] == {**SLOTH_SPEC_LABELS, **SLOTH_ID_LABELS, "sloth_window": w}
    meta = doc["groups"][1]["rules"]
    assert [r["record"] for r in meta] == SLOTH_META_RECORDS
    for r in meta[:3]:  # same value as Sloth's, but exact: 0.999, not 0.9990000000000001
        value = float(r["expr"].removeprefix("vector(").removesuffix(")"))
        assert value == pytest.approx(SLOTH_META[r["record"]], rel=1e-12)
    assert meta[0]["expr"] == "vector(0.999)" and meta[1]["expr"] == "vector(0.001)"
    assert meta[-1]["labels"]["sloth_objective"] == "99.9"


def test_matches_sloth_alerts_with_exact_thresholds() -> None:
    alerts = _doc(SLOTH_SPEC)["groups"][2]["rules"]
    assert len(alerts) == len(SLOTH_ALERTS)
    for rule, (severity, rows, labels) in zip(alerts, SLOTH_ALERTS, strict=True):
        assert rule["alert"] == "MyServiceHighErrorRate"
        assert "for" not in rule
        assert rule["labels"] == labels
        assert rule["annotations"]["summary"] == "High error rate on 'myservice' requests responses"
        assert rule["annotations"]["title"].startswith(f"({severity}) {{{{$labels.sloth_service}}}}")
        for short, long, factor in rows:
            threshold = Decimal(str(factor)) * Decimal("0.001")
            for w in (short, long):
                assert f"slo:sli_error:ratio_rate{w}{{" in rule["expr"]
                assert f"> {threshold.normalize():f})" in rule["expr"]
            assert float(threshold) == pytest.approx(factor * SLOTH_BUDGET, rel=1e-12)
    text = to_yaml(_doc(SLOTH_SPEC))
    assert "0.0009999999999999432" not in text and "0.9990000000000001" not in text
    # every generated rule is a valid Prometheus rule for our rules engine
    groups, errors = parse_rule_file(text, "slo.yml")
    assert errors == [] and sum(len(g.rules) for g in groups) == 7 * 3 + 1 + 7 + 2


def test_openslo_ratio_metric_and_28d_factors() -> None:
    spec = parse_specs((REPO / "rules/slo/openslo-search.yml").read_text())[0]
    assert (spec.service, spec.objective, spec.period_days) == ("search", Decimal("99.5"), 28)
    assert [str(r.factor.normalize()) for r in alert_rows(spec)][:3] == ["13.44", "5.6", "2.8"]
    assert spec.total_query is not None and "[{{.window}}]" in spec.total_query
    groups, errors = parse_rule_file(to_yaml(generate([spec])), "o.yml")
    assert errors == [] and groups


@pytest.mark.parametrize(
    ("objective", "reason"),
    [
        ("10", "page alert 1h/5m needs an error ratio above 12.96"),  # slok/sloth#341
        ("95", "page alert 1h/5m needs an error ratio above 0.72"),
    ],
)
def test_rejects_alerts_that_can_never_fire(objective: str, reason: str) -> None:
    text = SLOTH_SPEC.replace("objective: 99.9", f"objective: {objective}")
    if objective == "95":
        assert infeasible(parse_specs(text)[0]) == []  # 0.72 < 1: can fire
        return
    with pytest.raises(SpecError) as exc:
        _doc(text)
    assert reason in str(exc.value) and "disable: true" in str(exc.value)
    # with the impossible alerts disabled it is accepted
    ok = text.replace("page_alert: {labels", "page_alert: {disable: true, labels").replace(
        "ticket_alert: {labels", "ticket_alert: {disable: true, labels"
    )
    assert [g["name"].split("-")[2] for g in _doc(ok)["groups"]] == ["sli", "meta"]


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ("objective: 99.9", "objective: 100", "budget is zero"),
        ("[{{.window}}]))\n    alerting", "[5m]))\n    alerting", "has no {{.window}}"),
        ('version: "prometheus/v1"', "version: prometheus/v2", "version must be prometheus/v1"),
        ("objective: 99.9", "objective: lots", "not a number"),
    ],
)
def test_rejects_invalid_specs(old: str, new: str, reason: str) -> None:
    assert old in SLOTH_SPEC
    with pytest.raises(SpecError, match=reason.replace("{", r"\{").replace("}", r"\}")):
        parse_specs(SLOTH_SPEC.replace(old, new))


# --- evaluated on data ------------------------------------------------------------------------------

MIN = 60_000


def _store_counters(store: Storage, minutes: int, per_minute: list[tuple[int, int]]) -> tuple[int, int]:
    """http_requests_total by code, one sample a minute; returns (errors, total) appended."""
    labels = [
        from_dict({"__name__": "http_requests_total", "job": "checkout", "code": c}) for c in ("200", "500")
    ]
    refs = store.series_refs(labels)
    ok = err = 0.0
    ts, vals, rr = [], [], []
    for m in range(minutes + 1):
        if m:
            good, bad = per_minute[m - 1]
            ok, err = ok + good, err + bad
        ts += [m * MIN] * 2
        vals += [ok, err]
        rr += [refs[0], refs[1]]
    store.append(np.array(rr), np.array(ts), np.array(vals))
    return int(err), int(err + ok)


def _run_recordings(
    store: Storage, engine: Engine, rules: list[RecordingRule], end_ms: int, step_ms: int
) -> None:
    """Evaluate recording rules in order over [step, end] (what the rules engine does every step)."""
    for rule in rules:
        res = engine.range(rule.expr, step_ms, end_ms, step_ms)
        for s in res.series:
            labels = from_dict({**dict(s.labels), **dict(rule.labels), "__name__": rule.name})
            ref = store.series_refs([labels])
            store.append(np.repeat(ref, len(s.timestamps_ms)), s.timestamps_ms, s.values)


def _checkout_spec(period: str, min_events: int) -> str:
    return f"""
version: prometheus/v1
service: checkout
slos:
  - name: availability
    objective: 99
    period: {period}
    min_events: {min_events}
    sli:
      events:
        error_query: sum(rate(http_requests_total{{job="checkout",code="500"}}[{{{{.window}}}}]))
        total_query: sum(rate(http_requests_total{{job="checkout"}}[{{{{.window}}}}]))
    alerting: {{name: CheckoutErrors}}
"""


def _rules(spec_text: str) -> tuple[list[RecordingRule], list[AlertingRule]]:
    groups, errors = parse_rule_file(to_yaml(generate(parse_specs(spec_text))), "g.yml")
    assert errors == []
    rules = [r for g in groups for r in g.rules]
    return (
        [r for r in rules if isinstance(r, RecordingRule)],
        [r for r in rules if isinstance(r, AlertingRule)],
    )


def test_period_ratio_is_a_ratio_of_sums() -> None:
    # 12 busy hours (1000 req/min, 0.1% errors), then 12 quiet hours (10 req/min, 10% errors)
    minutes = 24 * 60
    traffic = [(999, 1) if m < 720 else (9, 1) for m in range(minutes)]
    store = Storage.open(data_dir=None)
    errors, total = _store_counters(store, minutes, traffic)
    engine = Engine(store)
    records, _ = _rules(_checkout_spec("1d", 0))
    _run_recordings(
        store,
        engine,
        [
            r
            for r in records
            if r.name.endswith("5m")
            or r.name.endswith("1d")
            or (r.name.startswith("slo:") and "ratio_rate" not in r.name and "events" not in r.name)
        ],
        minutes * MIN,
        5 * MIN,
    )
    got = engine.instant('slo:sli_error:ratio_rate1d{sloth_window="1d"}', minutes * MIN).series[0].values[0]
    expected = errors / total  # independent: from the counters the test wrote
    mean_of_ratios = (720 * 0.001 + 720 * 0.1) / 1440
    assert got == pytest.approx(expected, rel=0.02)
    assert abs(got - mean_of_ratios) > 10 * abs(got - expected)  # Sloth's formula would say ~5%
    remaining = engine.instant("slo:period_error_budget_remaining:ratio", minutes * MIN).series[0].values[0]
    assert remaining == pytest.approx(1 - expected / 0.01, rel=0.05)


@pytest.mark.parametrize(("per_minute", "fires"), [((2, 8), False), ((200, 800), True)])
def test_min_events_guard_keeps_low_traffic_quiet(per_minute: tuple[int, int], fires: bool) -> None:
    # 80% errors for 2 h: a burn of 80x; with 10 req/min the 1h window holds 600 events,
    # (3600 estimated over 6h), below min_events=5000, so only the busy service pages
    minutes = 120
    store = Storage.open(data_dir=None)
    _store_counters(store, minutes, [per_minute] * minutes)
    engine = Engine(store)
    records, alerts = _rules(_checkout_spec("30d", 5000))
    short = [r for r in records if r.name.endswith(("5m", "30m", "1h", "6h"))]
    _run_recordings(store, engine, short, minutes * MIN, MIN)
    page = next(a for a in alerts if dict(a.labels)["sloth_severity"] == "page")
    result = engine.instant(page.expr, minutes * MIN)
    assert bool(result.series) is fires


def test_reference_specs_in_repo_generate() -> None:
    for path in ("rules/slo/checkout.yml", "rules/slo/openslo-search.yml"):
        doc = yaml.safe_load(to_yaml(generate(parse_specs((REPO / path).read_text(), path))))
        assert doc["groups"]


def test_openslo_inline_indicator_bad_over_total_calendar_window() -> None:
    text = """
apiVersion: openslo/v1
kind: SLO
metadata: {name: pay}
spec:
  service: payments
  timeWindow: [{duration: 1M, calendar: {startTime: "2026-01-01 00:00:00", timeZone: Europe/Paris}}]
  budgetingMethod: Occurrences
  objectives: [{target: 0.995}]
  indicator:
    metadata: {name: pay-errors}
    spec:
      ratioMetric:
        counter: true
        bad: {metricSource: {type: Prometheus, spec: {query: 'payments_total{result="error"}'}}}
        total: {metricSource: {type: Prometheus, spec: {query: payments_total}}}
"""
    spec = parse_specs(text)[0]
    assert spec.objective == Decimal("99.5") and spec.period_days == 30
    assert spec.error_query == 'sum(rate(payments_total{result="error"}[{{.window}}]))'
    with pytest.raises(SpecError, match="Timeslices is not supported"):
        parse_specs(text.replace("Occurrences", "Timeslices"))


def test_alert_for_as_sloths_alert_for_plugin() -> None:
    # Sloth's getting-started spec sets page_alert.for: 5m and ticket_alert.for: 10m
    text = SLOTH_SPEC.replace("page_alert: {labels", "page_alert: {for: 5m, labels").replace(
        "ticket_alert: {labels", "ticket_alert: {for: 10m, labels"
    )
    groups, errors = parse_rule_file(to_yaml(_doc(text)), "slo.yml")
    assert errors == []
    alerts = [r for g in groups for r in g.rules if isinstance(r, AlertingRule)]
    assert [(dict(a.labels)["sloth_severity"], a.for_ms) for a in alerts] == [
        ("page", 5 * 60_000),
        ("ticket", 10 * 60_000),
    ]
    assert all("for" not in r for r in _doc(SLOTH_SPEC)["groups"][2]["rules"])  # none unless asked
    with pytest.raises(SpecError, match=r"page_alert\.for: 'soon' is not a duration"):
        parse_specs(SLOTH_SPEC.replace("page_alert: {labels", "page_alert: {for: soon, labels"))
