"""Time intervals (``time_intervals:``): is an instant inside a named, time-zoned interval?

Alertmanager's semantics: an interval matches when every field that is set matches; ``times``
are ``[start, end)`` in minutes of the day, ``weekdays``/``months`` take names or ranges
(``monday:friday``), ``days_of_month`` may be negative (``-1`` is the last day), all read in the
interval's ``location`` (an IANA zone).

>>> from watchkeeper.alerting.config import TimeIntervalSpec
>>> spec = TimeIntervalSpec.model_validate(
...     {"weekdays": ["saturday:sunday"], "location": "Europe/Berlin"})
>>> in_spec(spec, 1_764_284_400_000)   # 2025-11-28T00:00:00+01:00, a Friday in Berlin
False
>>> in_spec(spec, 1_764_370_800_000)   # Saturday 00:00 in Berlin
True
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:  # config validates specs with this module
    from watchkeeper.alerting.config import TimeIntervalConfig, TimeIntervalSpec

_WEEKDAYS = {
    name: i
    for i, name in enumerate(["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"])
}
_MONTHS = {
    name: i
    for i, name in enumerate(
        [
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
        ],
        start=1,
    )
}


def _bound(text: str, names: dict[str, int]) -> int:
    text = text.strip().lower()
    if text in names:
        return names[text]
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"unknown value {text!r}") from None


def _ranges(items: Iterable[str], names: dict[str, int]) -> list[tuple[int, int]]:
    out = []
    for item in items:
        lo, _, hi = item.partition(":")
        a = _bound(lo, names)
        out.append((a, _bound(hi, names) if hi else a))
    return out


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo("UTC" if name.lower() in ("", "utc") else name)


def validate_spec(spec: TimeIntervalSpec) -> None:
    """Raise ValueError for unknown names, zones or out-of-range values."""
    try:
        _zone(spec.location)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {spec.location!r}") from exc
    for a, b in _ranges(spec.weekdays, _WEEKDAYS):
        if not (0 <= a <= b <= 6):
            raise ValueError(f"bad weekday range in {spec.weekdays}")
    for a, b in _ranges(spec.months, _MONTHS):
        if not (1 <= a <= b <= 12):
            raise ValueError(f"bad month range in {spec.months}")
    for a, b in _ranges(spec.days_of_month, {}):
        if a == 0 or b == 0 or not (-31 <= a <= 31 and -31 <= b <= 31):
            raise ValueError(f"bad days_of_month in {spec.days_of_month}")


def in_spec(spec: TimeIntervalSpec, now_ms: int) -> bool:
    t = datetime.fromtimestamp(now_ms / 1000, tz=_zone(spec.location))
    if spec.times:
        minute = t.hour * 60 + t.minute
        if not any(_minutes(r.start_time) <= minute < _minutes(r.end_time) for r in spec.times):
            return False
    if spec.weekdays and not any(a <= t.weekday() <= b for a, b in _ranges(spec.weekdays, _WEEKDAYS)):
        return False
    if spec.days_of_month:
        days_in_month = calendar.monthrange(t.year, t.month)[1]

        def resolve(day: int) -> int:
            return days_in_month + day + 1 if day < 0 else day

        if not any(resolve(a) <= t.day <= resolve(b) for a, b in _ranges(spec.days_of_month, {})):
            return False
    if spec.months and not any(a <= t.month <= b for a, b in _ranges(spec.months, _MONTHS)):
        return False
    return not (spec.years and not any(a <= t.year <= b for a, b in _ranges(spec.years, {})))


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def in_interval(interval: TimeIntervalConfig, now_ms: int) -> bool:
    """Whether ``now_ms`` is inside any of the interval's specs."""
    return any(in_spec(spec, now_ms) for spec in interval.time_intervals)


def is_muted(
    intervals: dict[str, TimeIntervalConfig], mute: Iterable[str], active: Iterable[str], now_ms: int
) -> bool:
    """A route's notifications are muted inside a mute interval, or outside all its active ones."""
    if any(in_interval(intervals[name], now_ms) for name in mute):
        return True
    active = list(active)
    return bool(active) and not any(in_interval(intervals[name], now_ms) for name in active)
