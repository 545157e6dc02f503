"""Grafana's time expressions and query steps.

>>> now = 1_700_000_000_000  # 2023-11-14T22:13:20Z
>>> parse_time("now-6h", now) == now - 6 * 3_600_000
True
>>> parse_time("now/d", now, "UTC")  # start of the day
1699920000000
>>> parse_time("now/d", now, "UTC", round_up=True)  # its end, as a "to"
1700006399999
>>> pick_step_ms(6 * 3_600_000, width_px=1200, min_step_ms=15_000)
20000
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from watchkeeper.durations import parse_duration

_REL_RE = re.compile(r"([+-])(\d+)([smhdwMQy])|/([smhdwMQy])")
_FIXED_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
#: the steps panels use, as Grafana rounds intervals: the smallest of these >= range / width
NICE_STEPS_MS = tuple(
    parse_duration(d)
    for d in (
        "1s",
        "2s",
        "5s",
        "10s",
        "15s",
        "20s",
        "30s",
        "1m",
        "2m",
        "5m",
        "10m",
        "15m",
        "20m",
        "30m",
        "1h",
        "2h",
        "3h",
        "6h",
        "12h",
        "1d",
        "2d",
        "7d",
        "30d",
    )
)
MAX_POINTS = 11_000


class TimeError(ValueError):
    """A time expression that cannot be parsed."""


def zone(name: str | None) -> dt.tzinfo:
    if not name or name.lower() in ("utc", "browser"):
        return dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def _add_months(when: dt.datetime, months: int) -> dt.datetime:
    index = when.year * 12 + when.month - 1 + months
    year, month = divmod(index, 12)
    day = min(
        when.day,
        [
            31,
            29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28,
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ][month],
    )
    return when.replace(year=year, month=month + 1, day=day)


def _round(when: dt.datetime, unit: str, up: bool) -> dt.datetime:
    if unit == "s":
        start = when.replace(microsecond=0)
    elif unit == "m":
        start = when.replace(second=0, microsecond=0)
    elif unit == "h":
        start = when.replace(minute=0, second=0, microsecond=0)
    elif unit == "d":
        start = when.replace(hour=0, minute=0, second=0, microsecond=0)
    elif unit == "w":  # weeks start on Monday (ISO)
        start = (when - dt.timedelta(days=when.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    elif unit == "M":
        start = when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    elif unit == "Q":
        start = when.replace(
            month=(when.month - 1) // 3 * 3 + 1, day=1, hour=0, minute=0, second=0, microsecond=0
        )
    else:  # y
        start = when.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    if not up:
        return start
    if unit in _FIXED_MS:
        end = start + dt.timedelta(milliseconds=_FIXED_MS[unit])
    else:
        end = _add_months(start, {"M": 1, "Q": 3, "y": 12}[unit])
    return end - dt.timedelta(milliseconds=1)


def parse_time(text: str, now_ms: int, tz: str | None = None, *, round_up: bool = False) -> int:
    """Epoch ms of ``text``: epoch ms digits, ISO 8601, or ``now`` with offsets and roundings
    (``now-1d/d``, ``now/w``, ``now/d+8h``; units ``s m h d w M Q y``). ``round_up`` rounds a
    ``/unit`` to the end of the period, as Grafana does for the "to" of a range."""
    text = text.strip()
    if re.fullmatch(r"\d{1,15}", text):
        return int(text)
    if text.startswith("now"):
        rest = text[3:]
        when = dt.datetime.fromtimestamp(now_ms / 1000, tz=zone(tz))
        pos = 0
        for m in _REL_RE.finditer(rest):
            if m.start() != pos:
                break
            pos = m.end()
            if m.group(4):
                when = _round(when, m.group(4), round_up)
                continue
            amount = int(m.group(2)) * (1 if m.group(1) == "+" else -1)
            unit = m.group(3)
            if unit in _FIXED_MS:
                when = when + dt.timedelta(milliseconds=amount * _FIXED_MS[unit])
            else:
                when = _add_months(when, amount * {"M": 1, "Q": 3, "y": 12}[unit])
        if pos != len(rest):
            raise TimeError(f"cannot parse time {text!r} (examples: now-6h, now/d, now-1w/w, 1700000000000)")
        return round(when.timestamp() * 1000)
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TimeError(
            f"cannot parse time {text!r} (examples: now-6h, now/d, 2026-01-01T00:00:00Z)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone(tz))
    return round(parsed.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Range:
    start_ms: int
    end_ms: int

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


def resolve_range(from_: str, to: str, now_ms: int, tz: str | None = None) -> Range:
    start = parse_time(from_, now_ms, tz)
    end = parse_time(to, now_ms, tz, round_up=True)
    if end <= start:
        raise TimeError(f"the range ends ({to!r}) before it starts ({from_!r})")
    return Range(start, end)


def pick_step_ms(range_ms: int, *, width_px: int, min_step_ms: int) -> int:
    """A step giving about one point per pixel, rounded up to a nice interval, never below
    ``min_step_ms`` and never more than Prometheus' 11,000 points."""
    raw = max(range_ms / max(width_px, 1), min_step_ms, range_ms / (MAX_POINTS - 1), 1)
    for nice in NICE_STEPS_MS:
        if nice >= raw:
            return nice
    return math.ceil(raw / 1000) * 1000
