"""Error budgets checked against values computed here from the raw samples."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from watchkeeper.labels import Matcher, MatchOp
from watchkeeper.slo.budget import (
    DAY_MS,
    Window,
    budget_incidents,
    compute_budget,
    counter_increase,
    incident_share,
    ratio_of_sums,
)
from watchkeeper.tsdb.storage import Storage

HOUR = 3_600_000


def _ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0, tz: str = "UTC") -> int:
    return int(dt.datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(tz)).timestamp() * 1000)


@pytest.mark.parametrize(
    ("window", "now", "start", "end"),
    [
        (
            Window.parse("month", "Europe/Paris"),
            _ms(2026, 3, 31, 23, 30, tz="Europe/Paris"),
            _ms(2026, 3, 1, tz="Europe/Paris"),
            _ms(2026, 4, 1, tz="Europe/Paris"),
        ),
        # 2026-03-31 22:30 UTC is already April in Paris
        (
            Window.parse("month", "Europe/Paris"),
            _ms(2026, 3, 31, 22, 30),
            _ms(2026, 4, 1, tz="Europe/Paris"),
            _ms(2026, 5, 1, tz="Europe/Paris"),
        ),
        (
            Window.parse("quarter", "America/New_York"),
            _ms(2026, 12, 31, 12),
            _ms(2026, 10, 1, tz="America/New_York"),
            _ms(2027, 1, 1, tz="America/New_York"),
        ),
        (Window.parse("28d"), 100 * DAY_MS, 72 * DAY_MS, 100 * DAY_MS),
    ],
)
def test_window_bounds(window: Window, now: int, start: int, end: int) -> None:
    assert window.bounds(now) == (start, end)


def test_march_in_paris_is_one_hour_short() -> None:
    a, b = Window.parse("month", "Europe/Paris").bounds(_ms(2026, 3, 15))
    assert b - a == 31 * DAY_MS - HOUR  # the DST change: a calendar month is not 31 x 24 h


def test_budget_from_raw_counters_with_reset_and_incident() -> None:
    # 30 days of requests, a sample every 15 min: ~1500 requests each, 0.05% errors, a counter
    # reset on day 10 (restart), and an incident on day 20 (1 h at 30% errors)
    rng = np.random.default_rng(7)
    per_day = 96
    n = 30 * per_day
    req = rng.poisson(1500, n).astype(float)
    err = rng.binomial(req.astype(int), 0.0005).astype(float)
    incident = slice(20 * per_day, 20 * per_day + 4)
    err[incident] = np.round(req[incident] * 0.3)
    ts = np.arange(1, n + 1) * 900_000
    store = Storage.open(data_dir=None)
    refs = store.series_refs([(("__name__", "req_total"),), (("__name__", "err_total"),)])

    def counter(inc: np.ndarray) -> np.ndarray:
        c = np.cumsum(inc)
        reset = 10 * per_day
        c[reset:] -= c[reset - 1]  # the process restarted: the counter starts again from 0
        return c

    store.append(np.repeat(refs, n), np.concatenate([ts, ts]), np.concatenate([counter(req), counter(err)]))
    data = {
        s.labels[0][1]: s
        for s in store.select([Matcher(MatchOp.EQUAL, "__name__", "err_total")], 0, n * 900_000)
    }
    data |= {
        s.labels[0][1]: s
        for s in store.select([Matcher(MatchOp.EQUAL, "__name__", "req_total")], 0, n * 900_000)
    }
    start, end = Window.parse("30d").bounds(ts[-1])
    errors = counter_increase(data["err_total"].timestamps_ms, data["err_total"].values, start, end)
    total = counter_increase(data["req_total"].timestamps_ms, data["req_total"].values, start, end)
    # independent: the increments the test generated (the first sample is the baseline)
    assert errors == err[1:].sum() and total == req[1:].sum()
    last_hour = ts[-1] - HOUR
    b = compute_budget(
        Decimal("99.9"),
        errors=errors,
        total=total,
        start_ms=start,
        end_ms=end,
        now_ms=end,
        short_errors=float(err[-4:].sum()),
        short_total=float(req[-4:].sum()),
    )
    ratio = err[1:].sum() / req[1:].sum()
    assert b.error_ratio == pytest.approx(ratio)
    assert b.remaining == pytest.approx(1 - ratio / 0.001)
    assert b.burn_rate_now == pytest.approx(err[-4:].sum() / req[-4:].sum() / 0.001)
    assert last_hour > start
    share = incident_share(float(err[incident].sum()), b)
    assert share == pytest.approx(err[incident].sum() / (0.001 * req[1:].sum()))
    assert 0.3 < share < 0.9  # the incident is most of the spend


def test_exhaustion_date() -> None:
    # 50% left of a 30-day budget, burning at 2x: the remaining half lasts 0.5 x 30d / 2 = 7.5 days
    b = compute_budget(
        Decimal("99"),
        errors=50,
        total=10_000,
        start_ms=0,
        end_ms=30 * DAY_MS,
        now_ms=30 * DAY_MS,
        short_errors=20,
        short_total=1000,
    )
    assert b.remaining == pytest.approx(0.5)
    assert b.exhaustion_ms == 30 * DAY_MS + int(7.5 * DAY_MS)
    # calendar window: exhaustion after the period ends is "not this period"
    c = compute_budget(
        Decimal("99"),
        errors=50,
        total=10_000,
        start_ms=0,
        end_ms=30 * DAY_MS,
        now_ms=25 * DAY_MS,
        short_errors=20,
        short_total=1000,
    )
    assert c.exhaustion_ms is None
    spent = compute_budget(Decimal("99"), errors=200, total=10_000, start_ms=0, end_ms=1, now_ms=1)
    assert spent.remaining < 0 and spent.exhaustion_ms == 1 and not spent.met


def test_ratio_of_sums_is_not_mean_of_ratios() -> None:
    errors, totals = [1.0, 1.0], [1000.0, 10.0]
    assert ratio_of_sums(errors, totals) == pytest.approx(2 / 1010)
    assert ratio_of_sums([float("nan")], [0.0]) is None


def test_budget_incidents_against_raw_rates() -> None:
    # a day of 5m rates: 10 req/s, 0.05% errors, two bursts (1 h at 2%, 30 min at 0.5%)
    ts = list(range(0, DAY_MS, 300_000))
    totals = [10.0] * len(ts)
    errors = [0.005] * len(ts)
    burst1, burst2 = range(100, 112), range(200, 206)
    for i in burst1:
        errors[i] = 0.2
    for i in burst2:
        errors[i] = 0.05
    found = budget_incidents(ts, errors, totals, objective=Decimal("99.9"), window_ms=300_000)
    # the rate at ts[i] counts (ts[i - 1], ts[i]]: burst 1 ran from ts[99] to ts[111]
    assert [(i.start_ms, i.end_ms) for i in found] == [(ts[99], ts[111]), (ts[199], ts[205])]
    allowed_errors = 0.001 * sum(totals)  # independent: the window's budget in the same units
    assert found[0].budget_share == pytest.approx(12 * 0.2 / allowed_errors)
    assert found[1].budget_share == pytest.approx(6 * 0.05 / allowed_errors)
    assert found[0].peak_burn == pytest.approx(20.0)
