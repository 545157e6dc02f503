"""What pages and reports show, read from the store and computed by the pure cores.

``MonitorView`` (uptime of a probe over several ranges, its timeline, incidents, latency) and
``SloView`` (budget over a window from the recorded ``slo:*`` series) are plain data; the router
renders them as HTML, the reports as HTML, CSV and chat text.

>>> monitor_view(store, probe_cfg, maintenance=[], now_ms=now)      # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from watchkeeper.labels import Matcher, MatchOp
from watchkeeper.slo.budget import DAY_MS, Budget, BudgetIncident, Window, budget_incidents, compute_budget
from watchkeeper.slo.config import ProbeConfig
from watchkeeper.slo.generate import alert_rows
from watchkeeper.slo.spec import SloSpec
from watchkeeper.slo.uptime import (
    Incident,
    MaintenanceWindow,
    Segment,
    Summary,
    incidents,
    segments,
    summarize,
)

RANGES_DAYS = (1, 7, 30, 90)
RATE_WINDOW_MS = 300_000  # the recorded slo:sli_*_events:rate5m
HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class MonitorView:
    cfg: ProbeConfig
    now_ms: int
    timeline: list[Segment]  # the longest range (90 days)
    summaries: dict[int, Summary]  # days -> summary
    incidents: list[Incident]
    latency: tuple[list[int], list[float]]  # probe_duration_seconds, last 24 h
    maintenance: list[tuple[int, int, str]]
    state: str  # current: up, degraded, down, unknown, maintenance
    cert_expiry_ms: int | None  # the last probe_ssl_earliest_cert_expiry (HTTPS), if any


def _matchers(name: str, **labels: str) -> list[Matcher]:
    return [
        Matcher(MatchOp.EQUAL, "__name__", name),
        *(Matcher(MatchOp.EQUAL, k, v) for k, v in labels.items()),
    ]


def _series(store: Any, name: str, start_ms: int, end_ms: int, **labels: str) -> tuple[Any, Any]:
    """Samples in ``[start_ms, end_ms]`` of every series matching, merged in time order; values at
    one timestamp are summed. A probe whose URL changed has two series (old and new ``instance``),
    both its history; an SLI recorded per label value (``sum by (region)``) counts all of them."""
    found = store.select(_matchers(name, **labels), start_ms, end_ms)
    if not found:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    ts = np.concatenate([s.timestamps_ms for s in found])
    values = np.concatenate([s.values for s in found])
    keep = ~np.isnan(values)
    stamps, at = np.unique(ts[keep], return_inverse=True)
    return stamps, np.bincount(at, weights=values[keep], minlength=len(stamps))


def maintenance_for(
    windows: Sequence[MaintenanceWindow], monitor: str, start_ms: int, end_ms: int
) -> list[tuple[int, int, str]]:
    return sorted(
        (a, b, w.name) for w in windows if w.applies_to(monitor) for a, b in w.occurrences(start_ms, end_ms)
    )


def monitor_view(
    store: Any,
    cfg: ProbeConfig,
    *,
    maintenance: Sequence[MaintenanceWindow],
    now_ms: int,
    days: int = max(RANGES_DAYS),
) -> MonitorView:
    start = now_ms - days * DAY_MS
    ts, ok = _series(store, "probe_success", start, now_ms, probe=cfg.name)
    dts, dur = _series(store, "probe_duration_seconds", start, now_ms, probe=cfg.name)
    gts, deg = _series(store, "probe_degraded", start, now_ms, probe=cfg.name)
    causes = _causes(store, cfg.name, start, now_ms)
    degraded = dict(zip(gts.tolist(), deg.tolist(), strict=True))
    windows = maintenance_for(maintenance, cfg.name, start, now_ms)
    segs = segments(
        ts.tolist(),
        ok.tolist(),
        interval_ms=cfg.interval_ms,
        start_ms=start,
        end_ms=now_ms,
        degraded=[bool(degraded.get(t)) for t in ts.tolist()],
        causes=[causes.get(t, "probe failed") for t in ts.tolist()],
        maintenance=[(a, b) for a, b, _ in windows],
    )
    summaries = {d: summarize(_clip(segs, now_ms - d * DAY_MS, now_ms)) for d in RANGES_DAYS if d <= days}
    last_day = dts >= now_ms - DAY_MS
    state = segs[-1].state if segs else "unknown"
    _, cert = _series(store, "probe_ssl_earliest_cert_expiry", now_ms - DAY_MS, now_ms, probe=cfg.name)
    return MonitorView(
        cfg,
        now_ms,
        segs,
        summaries,
        incidents(segs, end_ms=now_ms),
        (dts[last_day].tolist(), dur[last_day].tolist()),
        windows,
        state,
        int(cert[-1] * 1000) if len(cert) else None,
    )


def _causes(store: Any, probe: str, start_ms: int, end_ms: int) -> dict[int, str]:
    out: dict[int, str] = {}
    for s in store.select(_matchers("probe_failure_info", probe=probe), start_ms, end_ms):
        reason = dict(s.labels).get("reason", "probe failed")
        for t, v in zip(s.timestamps_ms.tolist(), s.values.tolist(), strict=True):
            if v == 1.0:
                out[t] = reason
    return out


def _clip(segs: Sequence[Segment], a: int, b: int) -> list[Segment]:
    return [
        Segment(max(s.start_ms, a), min(s.end_ms, b), s.state, s.cause)
        for s in segs
        if s.end_ms > a and s.start_ms < b
    ]


def _event_counts(store: Any, sel: dict[str, str], start_ms: int, end_ms: int) -> tuple[Any, Any, Any]:
    """(timestamps, error events, total events) from the recorded 5m event rates, at the timestamps
    both have: each rate (per second) times the time since the previous sample, at most the 5m the
    rate covers (rules evaluated every minute or every 5 count each event once either way)."""
    ets, err = _series(store, "slo:sli_error_events:rate5m", start_ms, end_ms, **sel)
    tts, tot = _series(store, "slo:sli_total_events:rate5m", start_ms, end_ms, **sel)
    common, ei, ti = np.intersect1d(ets, tts, return_indices=True)
    if not len(common):
        return common, err[ei], tot[ti]
    gaps = np.diff(common)
    first = gaps[0] if len(gaps) else RATE_WINDOW_MS
    seconds = np.minimum(np.concatenate([[first], gaps]), RATE_WINDOW_MS) / 1000
    return common, err[ei] * seconds, tot[ti] * seconds


def _budget_samples(store: Any, spec: SloSpec, start_ms: int, end_ms: int) -> tuple[Any, Any, Any]:
    """(timestamps, bad, all) per recorded sample, whose sums over a window make its budget: event
    counts for an events SLI; for a raw ratio SLI the 5m error ratio and 1, so the window's ratio
    is Sloth's mean of 5m ratios (no counts exist) and an incident's share is of that."""
    if spec.has_events:
        return _event_counts(store, {"sloth_id": spec.slo_id}, start_ms, end_ms)
    ts, ratio = _series(store, "slo:sli_error:ratio_rate5m", start_ms, end_ms, sloth_id=spec.slo_id)
    return ts, ratio, np.ones(len(ratio))


@dataclass(frozen=True, slots=True)
class SloView:
    spec: SloSpec
    window: Window
    budget: Budget
    rows: list[str]  # the alert rows explained
    burn_rates: dict[str, float | None]  # window -> current burn rate (5m ... 3d)
    incidents: list[BudgetIncident]  # runs burning faster than 1x, with the budget each took

    @property
    def risk(self) -> float:
        """Sort key: least budget left first."""
        return self.budget.remaining


def slo_view(store: Any, spec: SloSpec, window: Window, *, now_ms: int) -> SloView:
    """Budget from the recorded 5m rates (events over the window: a ratio of sums) and burn rates."""
    start, end = window.bounds(now_ms)
    sel = {"sloth_id": spec.slo_id}
    # a 5m rate recorded at t counts the events of (t - 5m, t]: the window (start, now] takes the
    # samples after start, the last hour those after now - 1h
    ts, bad, counted = _budget_samples(store, spec, start + 1, min(end, now_ms))
    errors, total = float(bad.sum()), float(counted.sum())
    incidents = budget_incidents(
        ts.tolist(), bad.tolist(), counted.tolist(), objective=spec.objective, window_ms=RATE_WINDOW_MS
    )
    recent = ts > now_ms - HOUR_MS
    short_e, short_t = float(bad[recent].sum()), float(counted[recent].sum())
    budget = compute_budget(
        spec.objective,
        errors=errors,
        total=total,
        start_ms=start,
        end_ms=end,
        now_ms=now_ms,
        short_errors=short_e,
        short_total=short_t or None,
    )
    burn: dict[str, float | None] = {}
    allowed = float(spec.error_budget)
    for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
        _, v = _series(store, f"slo:sli_error:ratio_rate{w}", now_ms - 600_000, now_ms, **sel)
        burn[w] = float(v[-1]) / allowed if len(v) else None
    rows = [r.explain(spec.period_days) for r in alert_rows(spec)]
    return SloView(spec, window, budget, rows, burn, incidents)


def budget_series(
    store: Any, spec: SloSpec, window: Window, *, now_ms: int, points: int = 120
) -> tuple[list[int], list[float]]:
    """Budget remaining over the window, ``points`` evenly spaced (for the budget chart)."""
    start, _end = window.bounds(now_ms)
    common, err, tot = _budget_samples(store, spec, start + 1, now_ms)
    if not len(common):
        return [], []
    ce, ct = np.cumsum(err), np.cumsum(tot)
    allowed = float(spec.error_budget)
    xs: list[int] = []
    ys: list[float] = []
    for t in np.linspace(max(start, int(common[0])), now_ms, points).astype(np.int64).tolist():
        i = int(np.searchsorted(common, t, side="right")) - 1
        if i >= 0 and ct[i] > 0:
            xs.append(t)
            ys.append(round(1 - float(ce[i] / ct[i]) / allowed, 6))
    return xs, ys


def objective_text(objective: Decimal) -> str:
    return f"{objective.normalize():f}%"
