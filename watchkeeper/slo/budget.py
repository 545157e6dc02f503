"""Error budgets as pure functions over query results: no clock, no store.

Counting rule (OpenSLO ``Occurrences``): over a window, the error ratio is *errors / events*
(a ratio of sums); the budget is ``1 - objective`` of the events; the burn rate is the error
ratio divided by the budget (1 = spending exactly the budget over the window).

>>> b = compute_budget(Decimal("99.9"), errors=24, total=50_000, start_ms=0, end_ms=30 * DAY_MS,
...                    now_ms=15 * DAY_MS, short_errors=1, short_total=1000)
>>> round(b.sli_percent, 3), round(b.remaining, 2), round(b.burn_rate_window, 2), b.burn_rate_now
(99.952, 0.52, 0.48, 1.0)

Windows: rolling (``28d``, ``30d``: ending now) or calendar (``month``, ``quarter``, in a time
zone, from the first instant of the period to the first of the next).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Window:
    """``kind`` is ``rolling`` (``days``) or ``month``/``quarter`` (calendar, in ``timezone``)."""

    kind: str = "rolling"
    days: int = 30
    timezone: str = "UTC"

    @classmethod
    def parse(cls, text: str, timezone: str = "UTC") -> Window:
        """``28d``, ``30d``, ``month``, ``quarter``."""
        if text in ("month", "quarter"):
            ZoneInfo(timezone)
            return cls(kind=text, timezone=timezone)
        if text.endswith("d") and text[:-1].isdigit() and int(text[:-1]) > 0:
            return cls(days=int(text[:-1]), timezone=timezone)
        raise ValueError(f"window {text!r}: use 28d, 30d (rolling), month or quarter (calendar)")

    @property
    def label(self) -> str:
        return (
            f"rolling {self.days}d" if self.kind == "rolling" else f"calendar {self.kind} ({self.timezone})"
        )

    def bounds(self, now_ms: int) -> tuple[int, int]:
        """(start_ms, end_ms) of the window containing ``now_ms``; rolling windows end at now."""
        if self.kind == "rolling":
            return now_ms - self.days * DAY_MS, now_ms
        tz = ZoneInfo(self.timezone)
        now = dt.datetime.fromtimestamp(now_ms / 1000, tz)
        first_month = now.month if self.kind == "month" else 3 * ((now.month - 1) // 3) + 1
        start = dt.datetime(now.year, first_month, 1, tzinfo=tz)
        months = 1 if self.kind == "month" else 3
        y, m = divmod(first_month - 1 + months, 12)
        end = dt.datetime(now.year + y, m + 1, 1, tzinfo=tz)
        return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Budget:
    objective: Decimal  # percent
    errors: float
    total: float
    start_ms: int
    end_ms: int  # end of the window (calendar: the end of the period, maybe future)
    now_ms: int
    burn_rate_now: float | None  # over the short window given; None without traffic

    @property
    def allowed_ratio(self) -> float:
        return float(1 - self.objective / 100)

    @property
    def error_ratio(self) -> float | None:
        return self.errors / self.total if self.total > 0 else None

    @property
    def sli_percent(self) -> float:
        """Good events in percent; 100 without traffic (nothing failed)."""
        r = self.error_ratio
        return 100.0 if r is None else (1 - r) * 100

    @property
    def burn_rate_window(self) -> float:
        r = self.error_ratio
        return 0.0 if r is None else r / self.allowed_ratio

    @property
    def consumed(self) -> float:
        """Share of the window's budget spent (1 = all of it). Budget = allowed ratio x events so far."""
        return self.burn_rate_window

    @property
    def remaining(self) -> float:
        """1 - consumed; negative once the SLO is missed."""
        return 1 - self.consumed

    @property
    def met(self) -> bool:
        return self.sli_percent >= float(self.objective)

    @property
    def exhaustion_ms(self) -> int | None:
        """When the remaining budget runs out at the current burn rate; None if it never does
        (no burn; a rolling window burning at most 1x, whose old errors leave as fast as new
        ones come; for calendar windows, not before the period ends). Already out: ``now``.

        Spending at burn rate ``b`` uses ``b / period`` of the budget per unit of time (a linear
        projection: it ignores errors leaving a rolling window, so it errs early, never late).
        """
        if self.remaining <= 0:
            return self.now_ms
        b = self.burn_rate_now
        if not b or b <= 0:
            return None
        rolling = self.end_ms <= self.now_ms
        if rolling and b <= 1:
            return None
        period_ms = self.end_ms - self.start_ms
        at = self.now_ms + int(self.remaining * period_ms / b)
        if self.end_ms > self.now_ms and at > self.end_ms:
            return None
        return at


def compute_budget(
    objective: Decimal,
    *,
    errors: float,
    total: float,
    start_ms: int,
    end_ms: int,
    now_ms: int,
    short_errors: float | None = None,
    short_total: float | None = None,
) -> Budget:
    """A :class:`Budget` from event counts over the window and (optionally) a short recent window."""
    burn_now: float | None = None
    if short_total:
        allowed = float(1 - objective / 100)
        burn_now = (short_errors or 0.0) / short_total / allowed
    return Budget(objective, errors, total, start_ms, end_ms, now_ms, burn_now)


def counter_increase(
    timestamps_ms: npt.ArrayLike, values: npt.ArrayLike, start_ms: int, end_ms: int
) -> float:
    """Exact increase of a counter between the samples in ``[start_ms, end_ms]`` (resets handled,
    no extrapolation, unlike ``increase()``): a reset counts the new value as the increase.

    >>> counter_increase([0, 1, 2, 3], [5, 7, 1, 4], 0, 3)
    6.0
    """
    ts = np.asarray(timestamps_ms, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    keep = (ts >= start_ms) & (ts <= end_ms) & ~np.isnan(v)
    v = v[keep]
    if len(v) < 2:
        return 0.0
    d = np.diff(v)
    return float(np.where(d >= 0, d, v[1:]).sum())


def ratio_of_sums(errors: Sequence[float], totals: Sequence[float]) -> float | None:
    """Σ errors / Σ totals over aligned samples (e.g. recorded 5m rates); None without traffic."""
    e = np.asarray(errors, dtype=np.float64)
    t = np.asarray(totals, dtype=np.float64)
    ok = ~(np.isnan(e) | np.isnan(t))
    s = float(t[ok].sum())
    return float(e[ok].sum()) / s if s > 0 else None


def incident_share(incident_errors: float, budget: Budget) -> float:
    """Share of the window's budget an incident consumed (its errors / allowed errors)."""
    allowed = budget.allowed_ratio * budget.total
    return incident_errors / allowed if allowed > 0 else 0.0


def downtime_share(down_ms: int, counted_ms: int, objective: Decimal) -> float:
    """Share of a time-based budget (uptime) that ``down_ms`` consumed out of ``counted_ms``."""
    allowed = float(1 - objective / 100) * counted_ms
    return down_ms / allowed if allowed > 0 else 0.0


@dataclass(frozen=True, slots=True)
class BudgetIncident:
    """A run of samples burning faster than ``min_burn``: when, how hard, and the budget it took."""

    start_ms: int
    end_ms: int
    peak_burn: float
    budget_share: float  # of the whole window's budget


def budget_incidents(
    timestamps_ms: Sequence[int],
    errors: Sequence[float],
    totals: Sequence[float],
    *,
    objective: Decimal,
    window_ms: int,
    min_burn: float = 1.0,
) -> list[BudgetIncident]:
    """Incidents from aligned per-sample error/total rates, each over the ``window_ms`` before its
    timestamp (e.g. the recorded 5m rates: the sample at t counts the events of (t - 5m, t]).

    An incident is a maximal run of samples whose error ratio exceeds ``min_burn`` x the allowed
    ratio, from the start of its first sample's window to its last sample; its share is its
    errors / the allowed errors of all samples (ratio of sums again).

    >>> [(i.start_ms, i.end_ms, i.peak_burn, round(i.budget_share, 2)) for i in budget_incidents(
    ...     [5, 10, 15, 20], [0, 5, 0, 0], [100, 100, 100, 100], objective=Decimal(99), window_ms=5)]
    [(5, 10, 5.0, 1.25)]
    """
    ts = np.asarray(timestamps_ms, dtype=np.int64)
    e = np.nan_to_num(np.asarray(errors, dtype=np.float64))
    t = np.nan_to_num(np.asarray(totals, dtype=np.float64))
    allowed = float(1 - objective / 100)
    budget = allowed * float(t.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        burn = np.where(t > 0, e / t / allowed, 0.0)
    hot = burn > min_burn
    out: list[BudgetIncident] = []
    i = 0
    while i < len(hot):
        if not hot[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(hot) and hot[j + 1]:
            j += 1
        share = float(e[i : j + 1].sum()) / budget if budget > 0 else 0.0
        out.append(BudgetIncident(int(ts[i]) - window_ms, int(ts[j]), float(burn[i : j + 1].max()), share))
        i = j + 1
    return out
