"""Generated rules against Sloth's documented output for the same spec, compared by what they
compute: both rule sets run on the same raw samples and every recorded series and alert is
compared value by value.

The reference is Sloth's generated file for its own example specs (slok/sloth
``examples/_gen/getting-started.yml`` and ``examples/_gen/raw-home-wifi.yml``): ``SLOTH_*`` below
are its expressions with the window, selector and budget put in, as Sloth prints them (budget
``0.0009999999999999432``, ``and ignoring (sloth_window)``, the 30d ratio a mean of 5m ratios).
The documented difference, the period ratio, is checked against the raw samples instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from watchkeeper.labels import from_dict
from watchkeeper.promql.engine import Engine
from watchkeeper.rules.model import AlertingRule, RecordingRule, parse_rule_file
from watchkeeper.slo.generate import generate, to_yaml
from watchkeeper.slo.spec import SloSpec, parse_specs
from watchkeeper.tsdb.storage import Storage

from .test_generate import SLOTH_SPEC

MIN = 60_000
STEP = 5 * MIN
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# (short, long, factor) per severity, as Sloth's getting-started output lists them
SLOTH_ROWS = {
    "page": [("5m", "1h", "14.4"), ("30m", "6h", "6")],
    "ticket": [("2h", "1d", "3"), ("6h", "3d", "1")],
}
RAW_SPEC = """
version: prometheus/v1
service: home-wifi
labels: {cluster: valhalla, component: ubiquiti, context: home}
slos:
  - name: wifi-client-satisfaction
    objective: 95
    sli:
      raw:
        error_ratio_query: |
          1 - (
            sum(sum_over_time(unifipoller_client_satisfaction_ratio[{{.window}}]))
            /
            sum(count_over_time(unifipoller_client_satisfaction_ratio[{{.window}}]))
          )
    alerting:
      name: WifiClientSatisfaction
      page_alert: {labels: {severity: home}}
      ticket_alert: {labels: {severity: warning}}
"""


@dataclass(frozen=True)
class Rule:
    name: str
    expr: str
    labels: dict[str, str]


def sloth_documented_rules(spec: SloSpec, objective: str, budget: str) -> tuple[list[Rule], dict[str, str]]:
    """Sloth's output for ``spec``: recording rules in order, and the alert expression per severity.
    ``objective``/``budget`` are the float literals Sloth prints (0.9990000000000001, 1-0.99…)."""
    sel = f'{{sloth_id="{spec.slo_id}", sloth_service="{spec.service}", sloth_slo="{spec.name}"}}'
    base = {**spec.labels, "sloth_id": spec.slo_id, "sloth_service": spec.service, "sloth_slo": spec.name}
    rules = []
    for w in WINDOWS:
        if spec.has_events:
            assert spec.error_query and spec.total_query
            error, total = (q.replace("{{.window}}", w) for q in (spec.error_query, spec.total_query))
            expr = f"({error})\n/\n({total})"
        else:
            assert spec.error_ratio_query
            expr = f"({spec.error_ratio_query.replace('{{.window}}', w)}\n)"
        rules.append(Rule(f"slo:sli_error:ratio_rate{w}", expr, {**base, "sloth_window": w}))
    rules.append(
        Rule(
            "slo:sli_error:ratio_rate30d",
            f"sum_over_time(slo:sli_error:ratio_rate5m{sel}[30d])\n/ ignoring (sloth_window)\n"
            f"count_over_time(slo:sli_error:ratio_rate5m{sel}[30d])",
            {"sloth_window": "30d"},
        )
    )
    on = "/ on(sloth_id, sloth_slo, sloth_service) group_left"
    rules += [
        Rule("slo:objective:ratio", f"vector({objective})", base),
        Rule("slo:error_budget:ratio", f"vector(1-{objective})", base),
        Rule("slo:time_period:days", "vector(30)", base),
        Rule(
            "slo:current_burn_rate:ratio",
            f"slo:sli_error:ratio_rate5m{sel}\n{on}\nslo:error_budget:ratio{sel}",
            base,
        ),
        Rule(
            "slo:period_burn_rate:ratio",
            f"slo:sli_error:ratio_rate30d{sel}\n{on}\nslo:error_budget:ratio{sel}",
            base,
        ),
        Rule("slo:period_error_budget_remaining:ratio", f"1 - slo:period_burn_rate:ratio{sel}", base),
    ]
    alerts = {}
    for severity, rows in SLOTH_ROWS.items():
        alerts[severity] = "\nor ignoring (sloth_window)\n".join(
            f"((slo:sli_error:ratio_rate{short}{sel} > ({factor} * {budget}))\n and ignoring (sloth_window)\n"
            f" (slo:sli_error:ratio_rate{long}{sel} > ({factor} * {budget})))"
            for short, long, factor in rows
        )
    return rules, alerts


def ours(spec_text: str) -> tuple[list[Rule], dict[str, str]]:
    groups, errors = parse_rule_file(to_yaml(generate(parse_specs(spec_text))), "slo.yml")
    assert errors == []
    rules = [r for g in groups for r in g.rules]
    records = [Rule(r.name, r.expr, dict(r.labels)) for r in rules if isinstance(r, RecordingRule)]
    alerts = {dict(r.labels)["sloth_severity"]: r.expr for r in rules if isinstance(r, AlertingRule)}
    return records, alerts


def record(store: Storage, rules: list[Rule], start_ms: int, end_ms: int) -> None:
    """What the rules engine does every STEP, for the whole range at once: rules in order, each
    result appended under its name and labels before the next rule reads it."""
    engine = Engine(store)
    for rule in rules:
        if rule.name == "sloth_slo_info":
            continue
        for s in engine.range(rule.expr, start_ms, end_ms, STEP).series:
            labels = from_dict({**dict(s.labels), **rule.labels, "__name__": rule.name})
            ref = store.series_refs([labels])
            store.append(np.repeat(ref, len(s.timestamps_ms)), s.timestamps_ms, s.values)


def run_both(
    spec_text: str, stores: dict[str, Storage], end_ms: int, *, objective: str, budget: str
) -> tuple[SloSpec, dict[str, str], dict[str, str]]:
    """Sloth's rules recorded into ``stores["sloth"]``, ours into ``stores["ours"]`` (same raw
    samples in both); returns the spec and each side's alert expression per severity."""
    spec = parse_specs(spec_text)[0]
    sloth_rules, sloth_alerts = sloth_documented_rules(spec, objective, budget)
    our_rules, our_alerts = ours(spec_text)
    record(stores["sloth"], sloth_rules, STEP, end_ms)
    record(stores["ours"], our_rules, STEP, end_ms)
    return spec, sloth_alerts, our_alerts


def recorded(store: Storage, name: str, end_ms: int, **labels: str) -> dict[int, float]:
    from watchkeeper.labels import Matcher, MatchOp

    matchers = [Matcher(MatchOp.EQUAL, "__name__", name)] + [
        Matcher(MatchOp.EQUAL, k, v) for k, v in labels.items()
    ]
    [series] = store.select(matchers, 0, end_ms)
    return {int(t): float(v) for t, v in zip(series.timestamps_ms, series.values, strict=True) if v == v}


def firing(store: Storage, expr: str, start_ms: int, end_ms: int) -> list[int]:
    result = Engine(store).range(expr, start_ms, end_ms, STEP)
    return sorted(
        {int(t) for s in result.series for t, v in zip(s.timestamps_ms, s.values, strict=True) if v == v}
    )


def _events_data(store: Storage, days: int) -> tuple[np.ndarray, np.ndarray]:
    """Request counters a minute apart. Traffic and errors change every 5 minutes (constant inside
    each 5-minute slot, so a 5m rate counts its slot exactly): 2000 req/min from 08:00 to 20:00,
    200 at night; errors 0.05% by day, 0.5% at night (one a minute each); on day 2 a slow burn at
    0.45% (ticket), on day 4 a 25-minute outage at 12% (page). Returns the per-minute (requests,
    errors) increments."""
    minutes = days * 1440
    minute = np.arange(minutes)
    hour = (minute // 60) % 24
    day = (hour >= 8) & (hour < 20)
    requests = np.where(day, 2000.0, 200.0)
    ratio = np.where(day, 0.0005, 0.005)
    ratio[(minute >= 1440) & (minute < 2 * 1440)] = 0.0045
    ratio[(minute >= 3 * 1440 + 500) & (minute < 3 * 1440 + 525)] = 0.12
    errors = np.round(requests * ratio)
    labels = [
        from_dict({"__name__": "http_request_duration_seconds_count", "job": "myservice", "code": c})
        for c in ("200", "500")
    ]
    refs = store.series_refs(labels)
    ts = np.arange(minutes + 1) * MIN
    base = 1_000_000.0  # the counters were running before the data starts
    good, bad = base + np.cumsum([0, *(requests - errors)]), base + np.cumsum([0, *errors])
    store.append(np.repeat(refs, minutes + 1), np.concatenate([ts, ts]), np.concatenate([good, bad]))
    return requests, errors


EVENTS_SPEC = SLOTH_SPEC.replace('code=~"(5..|429)"', 'code="500"')


@pytest.mark.slow
def test_events_spec_computes_what_sloths_rules_compute() -> None:
    days = 4
    end = days * 1440 * MIN
    stores = {"sloth": Storage.open(data_dir=None), "ours": Storage.open(data_dir=None)}
    for store in stores.values():
        requests, errors = _events_data(store, days)
    spec, sloth_alerts, our_alerts = run_both(
        EVENTS_SPEC, stores, end, objective="0.9990000000000001", budget="0.0009999999999999432"
    )
    sel = {"sloth_id": spec.slo_id}
    for w in WINDOWS:
        a = recorded(stores["sloth"], f"slo:sli_error:ratio_rate{w}", end, **sel)
        b = recorded(stores["ours"], f"slo:sli_error:ratio_rate{w}", end, **sel)
        assert a.keys() == b.keys() and len(a) > 1000, w
        assert list(b.values()) == pytest.approx(list(a.values()), rel=1e-9), w
    for name in (
        "slo:objective:ratio",
        "slo:error_budget:ratio",
        "slo:time_period:days",
        "slo:current_burn_rate:ratio",
    ):
        a, b = recorded(stores["sloth"], name, end, **sel), recorded(stores["ours"], name, end, **sel)
        assert a.keys() == b.keys() and list(b.values()) == pytest.approx(list(a.values()), rel=1e-12), name
    # page and ticket fire at the same evaluations, but where a window's ratio is exactly a row's
    # threshold: Sloth's float threshold (1 * 0.0009999999999999432) sits just under the ratio
    # 0.001 and fires on a burn of exactly 1x; the exact one (> 0.001) does not
    ratios = {w: recorded(stores["ours"], f"slo:sli_error:ratio_rate{w}", end, **sel) for w in WINDOWS}
    for severity in ("page", "ticket"):
        a = firing(stores["sloth"], sloth_alerts[severity], STEP, end)
        b = firing(stores["ours"], our_alerts[severity], STEP, end)
        assert 0 < len(b) < end // STEP, severity  # fires, and not all the time
        assert set(b) <= set(a), severity
        for t in set(a) - set(b):
            assert any(
                min(ratios[short].get(t, 0), ratios[long].get(t, 0)) == float(factor) * 0.001
                for short, long, factor in SLOTH_ROWS[severity]
            ), (severity, t)
        assert len(set(a) - set(b)) <= 3, severity
    # the documented difference: the 30d ratio. Independent, from the raw samples: errors / requests
    # of every minute up to t (the data is younger than 30 days)
    ours30 = recorded(stores["ours"], "slo:sli_error:ratio_rate30d", end, **sel)
    sloth30 = recorded(stores["sloth"], "slo:sli_error:ratio_rate30d", end, **sel)
    # (increment i is the minute ending at (i + 1) min; the counters have a sample at 0)
    exact = {t: errors[: t // MIN].sum() / requests[: t // MIN].sum() for t in (end // 2, end)}
    # Sloth's: the mean of the 5-minute slots' error ratios, a quiet night's slot weighing as much
    # as a busy day's
    slot_ratios = errors.reshape(-1, 5).sum(axis=1) / requests.reshape(-1, 5).sum(axis=1)
    for t, want in exact.items():
        assert ours30[t] == pytest.approx(want, rel=1e-9)
        assert sloth30[t] == pytest.approx(slot_ratios[: t // STEP].mean(), rel=1e-9)
        assert sloth30[t] > 1.2 * want
    remaining = recorded(stores["ours"], "slo:period_error_budget_remaining:ratio", end, **sel)[end]
    assert remaining == pytest.approx(1 - exact[end] / 0.001, rel=1e-9)


@pytest.mark.slow
def test_raw_spec_computes_what_sloths_rules_compute() -> None:
    # satisfaction ratios of three clients every minute for 2 days, with a bad hour on day 2
    rng = np.random.default_rng(3)
    minutes = 2 * 1440
    end = minutes * MIN
    stores = {"sloth": Storage.open(data_dir=None), "ours": Storage.open(data_dir=None)}
    values = rng.uniform(0.93, 1.0, (3, minutes))
    values[:, 1800:1860] = rng.uniform(0.0, 0.3, (3, 60))
    ts = np.arange(1, minutes + 1) * MIN
    for store in stores.values():
        refs = store.series_refs(
            [
                from_dict({"__name__": "unifipoller_client_satisfaction_ratio", "client": str(i)})
                for i in range(3)
            ]
        )
        store.append(np.repeat(refs, minutes), np.tile(ts, 3), values.ravel())
    spec, sloth_alerts, our_alerts = run_both(RAW_SPEC, stores, end, objective="0.95", budget="0.05")
    sel = {"sloth_id": spec.slo_id}
    for name in [
        *(f"slo:sli_error:ratio_rate{w}" for w in (*WINDOWS, "30d")),
        "slo:period_error_budget_remaining:ratio",
    ]:
        a, b = recorded(stores["sloth"], name, end, **sel), recorded(stores["ours"], name, end, **sel)
        assert a.keys() == b.keys() and len(a) > 500, name
        assert list(b.values()) == pytest.approx(list(a.values()), rel=1e-9), name
    for severity in ("page", "ticket"):
        a = firing(stores["sloth"], sloth_alerts[severity], STEP, end)
        b = firing(stores["ours"], our_alerts[severity], STEP, end)
        assert a == b, severity
    assert firing(stores["ours"], our_alerts["page"], STEP, end)  # the bad hour pages
