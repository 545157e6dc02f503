"""The budget and uptime figures that pages and reports show, checked against values computed
here from the raw samples the test writes.

Budget: request counters -> the generated recording rules (run by the PromQL engine, as the rules
engine would every 5 minutes) -> ``slo_view`` and the SLO report, for a calendar month in
Europe/Paris that began two days ago. Uptime: probe results with a prober outage, a one-off and a
recurring (DST-crossing) maintenance window -> ``monitor_view`` and the uptime report.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from watchkeeper.labels import from_dict
from watchkeeper.slo.budget import Window
from watchkeeper.slo.config import ReportConfig, SloConfig
from watchkeeper.slo.probes import ProbeResult, result_samples
from watchkeeper.slo.reports import build_report
from watchkeeper.slo.spec import parse_specs
from watchkeeper.slo.views import budget_series, monitor_view, slo_view
from watchkeeper.tsdb.storage import Storage

from .conftest import SPEC
from .test_sloth_semantics import RAW_SPEC, ours, record

MIN = 60_000
PARIS = ZoneInfo("Europe/Paris")


def _ms(d: dt.datetime) -> int:
    return int(d.timestamp() * 1000)


@pytest.mark.slow
def test_budget_figures_from_raw_counters_calendar_month_in_paris() -> None:
    start_data = _ms(dt.datetime(2027, 2, 26, tzinfo=dt.UTC))
    now = _ms(dt.datetime(2027, 3, 2, 10, 0, tzinfo=PARIS))
    month_start = _ms(dt.datetime(2027, 3, 1, tzinfo=PARIS))  # 2027-02-28 23:00 UTC
    month_end = _ms(dt.datetime(2027, 4, 1, tzinfo=PARIS))
    minutes = (now - start_data) // MIN
    end_ts = start_data + np.arange(1, minutes + 1) * MIN  # minute i ends at end_ts[i]
    # constant inside each 5-minute slot: 3000 req/min by day (Paris), 150 at night; 1 error a
    # minute by day; an incident 2027-03-02 07:00-07:30 at 5%; the last hour burning at 0.3%
    local_hour = np.array([dt.datetime.fromtimestamp((t - MIN) / 1000, PARIS).hour for t in end_ts])
    requests = np.where((local_hour >= 8) & (local_hour < 20), 3000.0, 150.0)
    errors = np.where(requests > 1000, 1.0, 0.0)
    incident = (end_ts > _ms(dt.datetime(2027, 3, 2, 7, tzinfo=PARIS))) & (
        end_ts <= _ms(dt.datetime(2027, 3, 2, 7, 30, tzinfo=PARIS))
    )
    errors[incident] = requests[incident] * 0.05
    last_hour = end_ts > now - 60 * MIN
    errors[last_hour] = requests[last_hour] * 0.003
    store = Storage.open(data_dir=None, retention_ms=90 * 1440 * MIN)
    refs = store.series_refs(
        [from_dict({"__name__": "http_requests_total", "job": "checkout", "code": c}) for c in ("200", "500")]
    )
    good, bad = np.cumsum(requests - errors), np.cumsum(errors)
    restart = minutes // 2 + 2  # the service restarted mid-slot: both counters start again from 0
    good[restart:] -= good[restart - 1]
    bad[restart:] -= bad[restart - 1]
    ts = np.concatenate([[start_data], end_ts])
    store.append(
        np.repeat(refs, minutes + 1),
        np.concatenate([ts, ts]),
        np.concatenate(
            [
                [1e6],
                good + 1e6 * (np.arange(minutes) < restart),
                [1e3],
                bad + 1e3 * (np.arange(minutes) < restart),
            ]
        ),
    )
    rules, _ = ours(SPEC)
    record(store, rules, start_data + 5 * MIN, now)
    spec = parse_specs(SPEC)[0]
    view = slo_view(store, spec, Window.parse("month", "Europe/Paris"), now_ms=now)
    b = view.budget

    # independent: the minutes of this month (ending after its first instant, up to now)
    in_month = end_ts > month_start
    ratio = errors[in_month].sum() / requests[in_month].sum()
    assert (b.start_ms, b.end_ms) == (month_start, month_end)
    assert b.sli_percent == pytest.approx((1 - ratio) * 100, rel=1e-12)
    assert b.remaining == pytest.approx(1 - ratio / 0.001, rel=1e-9)
    assert b.burn_rate_window == pytest.approx(ratio / 0.001, rel=1e-9)
    assert b.burn_rate_now == pytest.approx(0.003 / 0.001, rel=1e-9)
    exhausted = now + (1 - ratio / 0.001) * (month_end - month_start) / 3.0
    assert b.exhaustion_ms == pytest.approx(exhausted, abs=1)
    assert month_start < b.exhaustion_ms < month_end
    # incidents: the 30 minutes at 5% and the last hour (ongoing), with the budget each used
    allowed = 0.001 * requests[in_month].sum()
    assert [(i.start_ms, i.end_ms) for i in view.incidents] == [
        (_ms(dt.datetime(2027, 3, 2, 7, tzinfo=PARIS)), _ms(dt.datetime(2027, 3, 2, 7, 30, tzinfo=PARIS))),
        (now - 60 * MIN, now),
    ]
    assert view.incidents[0].budget_share == pytest.approx(errors[incident].sum() / allowed, rel=1e-9)
    assert view.incidents[1].budget_share == pytest.approx(errors[last_hour].sum() / allowed, rel=1e-9)
    assert view.incidents[0].peak_burn == pytest.approx(50.0)

    # a rolling 30d window holds all the data (the first minute's increment has no earlier sample)
    rolling = slo_view(store, spec, Window.parse("30d"), now_ms=now).budget
    assert rolling.remaining == pytest.approx(1 - errors.sum() / requests.sum() / 0.001, rel=1e-9)

    # the report says the same, in words and in its CSV row
    cfg = ReportConfig(name="monthly", kind="slo", window="month", timezone="Europe/Paris")
    slo = SloConfig(timezone="Europe/Paris")
    report = build_report(cfg, store=store, engine=None, specs=[spec], slo=slo, now_ms=now)
    when = dt.datetime.fromtimestamp(exhausted / 1000, PARIS).strftime("%Y-%m-%d %H:%M %Z")
    shares = (errors[incident].sum() + errors[last_hour].sum()) / allowed
    verb = "met" if ratio <= 0.001 else "missed"
    assert report.sentences == [
        f"Checkout availability {verb} {(1 - ratio) * 100:.2f}% against 99.9%; "
        f"{(1 - ratio / 0.001) * 100:.0f}% of budget left, exhausted by {when} at the current burn rate; "
        f"2 incidents used {shares * 100:.0f}% of it."
    ]
    row = dict(zip(report.columns, report.rows[0], strict=True))
    assert row["budget_left_percent"] == round((1 - ratio / 0.001) * 100, 1)
    assert (row["events"], row["bad_events"]) == (requests[in_month].sum(), errors[in_month].sum())


def _utc(*args: int) -> int:
    return _ms(dt.datetime(*args, tzinfo=dt.UTC))  # type: ignore[misc]


@pytest.mark.slow
def test_uptime_figures_with_prober_outage_and_maintenance() -> None:
    now = _utc(2026, 11, 10, 12)
    first = _utc(2026, 10, 20)  # the probe was added then: the 90 days before are not observed
    config = SloConfig.model_validate(
        {
            "probes": [
                {"name": "web", "url": "https://shop.example/health", "interval": "1m", "timeout": "5s"}
            ],
            "maintenance": [
                # Sundays 01:30-02:30 in New York; DST ends on 2026-11-01 at 02:00 (clocks back to 01:00)
                {
                    "name": "weekly",
                    "weekdays": ["sun"],
                    "at": "01:30",
                    "duration": "1h",
                    "timezone": "America/New_York",
                },
                {
                    "name": "db move",
                    "monitors": ["web"],
                    "start": "2026-11-03T11:00:00+01:00",
                    "end": "2026-11-03T11:45:00+01:00",
                },
                {
                    "name": "other service",
                    "monitors": ["api"],
                    "start": "2026-11-04T00:00:00Z",
                    "end": "2026-11-04T06:00:00Z",
                },
            ],
        }
    )
    probe = config.probes[0]
    # the maintenance, worked out by hand in UTC: every Sunday of the 90 days at 01:30 New York
    # time, which is EDT (UTC-4) up to 1 November (01:30 happens twice that night, EDT then EST:
    # the first counts) and EST (UTC-5) after; and the one-off window of this monitor
    sundays = [dt.date(2026, 8, 16) + dt.timedelta(weeks=w) for w in range(13)]
    maintenance = [
        (_utc(d.year, d.month, d.day, h, 30), _utc(d.year, d.month, d.day, h + 1, 30))
        for d in sundays
        for h in [5 if d <= dt.date(2026, 11, 1) else 6]
    ]
    maintenance.append((_utc(2026, 11, 3, 10), _utc(2026, 11, 3, 10, 45)))
    prober_down = (_utc(2026, 11, 5, 3), _utc(2026, 11, 5, 5))  # watchkeeper itself was down
    outage = (_utc(2026, 11, 6, 14), _utc(2026, 11, 6, 14, 20))
    slow = (_utc(2026, 11, 7, 9), _utc(2026, 11, 7, 9, 30))

    def within(t: int, *spans: tuple[int, int]) -> bool:
        return any(a <= t < b for a, b in spans)

    store = Storage.open(data_dir=None, retention_ms=200 * 1440 * MIN)
    refs_all, ts_all, values_all = [], [], []
    for t in range(first, now, MIN):
        if within(t, prober_down):
            continue
        failing = within(t, outage, maintenance[12])  # it also failed in the Nov 8 maintenance
        result = ProbeResult(not failing, 0.05, "status 503" if failing else "", degraded=within(t, slow))
        samples = result_samples(probe, result)
        refs = store.series_refs([lb for lb, _ in samples])
        refs_all += refs.tolist()
        ts_all += [t] * len(samples)
        values_all += [v for _, v in samples]
    store.append(np.array(refs_all), np.array(ts_all), np.array(values_all))

    # independent: the state of every minute of the last 90 days
    start = now - 90 * 1440 * MIN
    state = []
    for t in range(start, now, MIN):
        if within(t, *maintenance):
            state.append("maintenance")
        elif t < first or within(t, prober_down):
            state.append("unknown")
        elif within(t, outage):
            state.append("down")
        elif within(t, slow):
            state.append("degraded")
        else:
            state.append("up")
    states = np.array(state)

    view = monitor_view(store, probe, maintenance=config.maintenance, now_ms=now)
    for days in (1, 7, 30, 90):
        last = states[-days * 1440 :]
        expected = {
            s: int((last == s).sum()) * MIN for s in ("up", "degraded", "down", "unknown", "maintenance")
        }
        assert view.summaries[days].durations_ms == expected, days
        counted = expected["up"] + expected["degraded"] + expected["down"]
        want = None if counted == 0 else (expected["up"] + expected["degraded"]) / counted
        assert view.summaries[days].uptime == want, days
    assert view.summaries[30].uptime != (states[-30 * 1440 :] != "down").mean()  # unknown is not up
    [incident] = view.incidents  # the failures inside the maintenance are no incident
    assert (incident.start_ms, incident.end_ms, incident.cause) == (*outage, "status 503")
    assert [(a, b) for a, b, _ in view.maintenance] == sorted(maintenance)

    # the public status page's 90 daily bars
    from watchkeeper.slo.uptime import daily_bars

    bars = daily_bars(view.timeline, [start + d * 1440 * MIN for d in range(91)])
    for d, (_, uptime, _) in enumerate(bars):
        day = states[d * 1440 : (d + 1) * 1440]
        counted = int(np.isin(day, ["up", "degraded", "down"]).sum())
        assert uptime == (None if counted == 0 else int(np.isin(day, ["up", "degraded"]).sum()) / counted), d

    # the uptime report over 30 days: the same figures, and it says what it left out
    cfg = ReportConfig(name="uptime", kind="uptime", window="30d")
    report = build_report(cfg, store=store, engine=None, specs=[], slo=config, now_ms=now)
    last30 = states[-30 * 1440 :]
    up = int(np.isin(last30, ["up", "degraded"]).sum())
    counted = up + int((last30 == "down").sum())
    row = dict(zip(report.columns, report.rows[0], strict=True))
    assert row["uptime_percent"] == round(up / counted * 100, 4)
    unknown_min = int((last30 == "unknown").sum())
    maint_min = int((last30 == "maintenance").sum())
    assert (row["down"], row["unknown"], row["maintenance"], row["incidents"]) == (
        "20m",
        f"{unknown_min // 60}h{unknown_min % 60:02d}m",
        f"{maint_min // 60}h{maint_min % 60:02d}m",
        1,
    )
    assert report.sentences == [
        f"web was up {up / counted * 100:.3f}% of the observed time (1 outage, 20m down; "
        f"{unknown_min // 60}h{unknown_min % 60:02d}m not observed; "
        f"{maint_min // 60}h{maint_min % 60:02d}m maintenance excluded)."
    ]


def test_raw_ratio_slo_budget_chart_and_incident() -> None:
    # a raw SLI (Sloth's home-wifi): satisfaction ratios of two clients a minute apart for a day,
    # a bad hour from 10:00; the budget is Sloth's mean of the 5-minute error ratios
    minutes = 1440
    now = minutes * MIN
    rng = np.random.default_rng(5)
    values = rng.uniform(0.97, 1.0, (2, minutes))
    values[:, 600:660] = 0.5
    store = Storage.open(data_dir=None)
    refs = store.series_refs(
        [from_dict({"__name__": "unifipoller_client_satisfaction_ratio", "client": c}) for c in "ab"]
    )
    ts = np.arange(1, minutes + 1) * MIN
    store.append(np.repeat(refs, minutes), np.tile(ts, 2), values.ravel())
    rules, _ = ours(RAW_SPEC)
    record(store, rules, 5 * MIN, now)
    spec = parse_specs(RAW_SPEC)[0]
    view = slo_view(store, spec, Window.parse("30d"), now_ms=now)
    # independent: each 5-minute slot's error ratio from the raw values (the 5m window at t holds
    # the samples of (t - 5m, t]), then their mean
    slot_error = 1 - values.reshape(2, -1, 5).sum(axis=(0, 2)) / 10
    assert view.budget.error_ratio == pytest.approx(slot_error.mean(), rel=1e-9)
    assert view.budget.remaining == pytest.approx(1 - slot_error.mean() / 0.05, rel=1e-9)
    [incident] = view.incidents  # the bad hour: 12 slots at 50% errors, 10x the budget
    assert (incident.start_ms, incident.end_ms) == (600 * MIN, 660 * MIN)
    assert incident.budget_share == pytest.approx(slot_error[120:132].sum() / (0.05 * len(slot_error)))
    xs, ys = budget_series(store, spec, Window.parse("30d"), now_ms=now)
    assert xs[-1] == now and ys[-1] == pytest.approx(view.budget.remaining, abs=1e-6)
    before = [y for x, y in zip(xs, ys, strict=True) if x < 600 * MIN]
    assert min(before) > ys[-1]  # the bad hour spent budget
