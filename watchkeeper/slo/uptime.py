"""Time-weighted uptime from probe results, with unknown time and maintenance shown, not hidden.

A probe result at ``t`` speaks for ``[t, t + interval)``. Where the next result is late (the
prober, i.e. watchkeeper, was down or stalled), the time after ``interval`` is **unknown**: it
is neither up nor down, it is left out of the ratio and reported. Maintenance windows are
excluded the same way and reported separately. States, strongest first::

    maintenance > unknown > down > degraded (up but slower than the threshold) > up

    uptime = (up + degraded) / (up + degraded + down)

>>> s = segments([0, 60_000, 300_000], [1, 0, 1], interval_ms=60_000, start_ms=0, end_ms=360_000)
>>> [(x.start_ms, x.end_ms, x.state) for x in s]
[(0, 60000, 'up'), (60000, 120000, 'down'), (120000, 300000, 'unknown'), (300000, 360000, 'up')]
>>> summarize(s).uptime
0.6666666666666666
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from watchkeeper.durations import parse_duration

STATES = ("up", "degraded", "down", "unknown", "maintenance")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class MaintenanceWindow(BaseModel):
    """One-off (``start``/``end``, ISO 8601 with offset) or recurring (``weekdays`` + ``at`` +
    ``duration`` in ``timezone``). ``monitors`` empty = every monitor.

    >>> w = MaintenanceWindow(name="db", weekdays=["sun"], at="02:00", duration="2h", timezone="Europe/Paris")
    >>> [(a, b - a) for a, b in w.occurrences(1764464400000 - 86_400_000, 1764464400000 + 86_400_000)]
    [(1764464400000, 7200000)]
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    monitors: list[str] = []
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    weekdays: list[str] = []
    at: str = "00:00"
    duration: str = "1h"
    timezone: str = "UTC"

    @field_validator("weekdays")
    @classmethod
    def _days(cls, v: list[str]) -> list[str]:
        bad = [d for d in v if d.lower()[:3] not in _WEEKDAYS]
        if bad:
            raise ValueError(f"unknown weekdays {bad}; use mon..sun")
        return [d.lower()[:3] for d in v]

    @model_validator(mode="after")
    def _shape(self) -> MaintenanceWindow:
        ZoneInfo(self.timezone)
        parse_duration(self.duration)
        if (self.start is None) != (self.end is None):
            raise ValueError("a one-off window needs both start and end")
        if self.start is not None and self.end is not None:
            if self.start.tzinfo is None or self.end.tzinfo is None:
                raise ValueError("start and end need a UTC offset (e.g. 2026-11-29T02:00:00+01:00)")
            if self.end <= self.start:
                raise ValueError("end must be after start")
        elif not self.weekdays:
            raise ValueError("give start/end (one-off) or weekdays/at/duration (recurring)")
        return self

    def applies_to(self, monitor: str) -> bool:
        return not self.monitors or monitor in self.monitors

    def occurrences(self, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
        """The window's intervals overlapping ``[start_ms, end_ms)``, in local wall time (DST-aware)."""
        if self.start is not None and self.end is not None:
            a, b = int(self.start.timestamp() * 1000), int(self.end.timestamp() * 1000)
            return [(a, b)] if a < end_ms and b > start_ms else []
        tz = ZoneInfo(self.timezone)
        hh, mm = (int(x) for x in self.at.split(":"))
        length = parse_duration(self.duration)
        day = dt.datetime.fromtimestamp(start_ms / 1000, tz).date() - dt.timedelta(days=8)
        last = dt.datetime.fromtimestamp(end_ms / 1000, tz).date()
        out = []
        while day <= last:
            if _WEEKDAYS[day.weekday()] in self.weekdays:
                a = int(dt.datetime(day.year, day.month, day.day, hh, mm, tzinfo=tz).timestamp() * 1000)
                if a < end_ms and a + length > start_ms:
                    out.append((a, a + length))
            day += dt.timedelta(days=1)
        return out


@dataclass(frozen=True, slots=True)
class Segment:
    start_ms: int
    end_ms: int
    state: str
    cause: str = ""

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


@dataclass(frozen=True, slots=True)
class Summary:
    durations_ms: dict[str, int] = field(default_factory=dict)

    @property
    def counted_ms(self) -> int:
        return sum(self.durations_ms.get(s, 0) for s in ("up", "degraded", "down"))

    @property
    def uptime(self) -> float | None:
        """(up + degraded) / counted time; None when nothing was observed."""
        counted = self.counted_ms
        if counted == 0:
            return None
        return (self.durations_ms.get("up", 0) + self.durations_ms.get("degraded", 0)) / counted


@dataclass(frozen=True, slots=True)
class Incident:
    start_ms: int
    end_ms: int | None  # None: still down at the end of the range
    cause: str

    @property
    def duration_ms(self) -> int | None:
        return None if self.end_ms is None else self.end_ms - self.start_ms


def segments(
    timestamps_ms: Sequence[int],
    success: Sequence[float],
    *,
    interval_ms: int,
    start_ms: int,
    end_ms: int,
    degraded: Sequence[bool] | None = None,
    causes: Sequence[str] | None = None,
    maintenance: Sequence[tuple[int, int]] = (),
    grace: float = 1.5,
) -> list[Segment]:
    """Timeline of ``[start_ms, end_ms)`` from probe results (sorted by time).

    A result covers ``interval_ms`` after it (``grace`` x interval when the next one is slightly
    late, so jitter does not create unknown slivers); everything else is unknown. ``degraded``
    marks results that succeeded slower than the probe's threshold (the prober decides).
    """
    raw: list[Segment] = []
    n = len(timestamps_ms)
    for i in range(n):
        t = int(timestamps_ms[i])
        nxt = int(timestamps_ms[i + 1]) if i + 1 < n else end_ms
        cover = nxt if nxt - t <= grace * interval_ms else t + interval_ms
        a, b = max(t, start_ms), min(cover, end_ms)
        if b <= a:
            continue
        ok = success[i] >= 1
        state = "up" if ok else "down"
        if ok and degraded is not None and degraded[i]:
            state = "degraded"
        raw.append(Segment(a, b, state, "" if ok or causes is None else causes[i]))
    # fill the gaps with unknown
    filled: list[Segment] = []
    cursor = start_ms
    for s in raw:
        if s.start_ms > cursor:
            filled.append(Segment(cursor, s.start_ms, "unknown"))
        filled.append(s)
        cursor = max(cursor, s.end_ms)
    if cursor < end_ms:
        filled.append(Segment(cursor, end_ms, "unknown"))
    return _merge(_overlay(filled, sorted(maintenance)))


def _overlay(segs: list[Segment], windows: Sequence[tuple[int, int]]) -> list[Segment]:
    """Cut maintenance windows out of the segments and mark them."""
    if not windows:
        return segs
    out: list[Segment] = []
    for s in segs:
        cursor = s.start_ms
        for a, b in windows:
            if b <= cursor or a >= s.end_ms:
                continue
            if a > cursor:
                out.append(Segment(cursor, a, s.state, s.cause))
            out.append(Segment(max(a, cursor), min(b, s.end_ms), "maintenance"))
            cursor = min(b, s.end_ms)
        if cursor < s.end_ms:
            out.append(Segment(cursor, s.end_ms, s.state, s.cause))
    return out


def _merge(segs: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for s in segs:
        if out and out[-1].state == s.state and out[-1].end_ms == s.start_ms:
            prev = out.pop()
            s = Segment(prev.start_ms, s.end_ms, s.state, prev.cause or s.cause)
        out.append(s)
    return out


def summarize(segs: Sequence[Segment]) -> Summary:
    durations = dict.fromkeys(STATES, 0)
    for s in segs:
        durations[s.state] += s.duration_ms
    return Summary(durations)


def incidents(segs: Sequence[Segment], *, end_ms: int | None = None) -> list[Incident]:
    """Down periods. One that reaches the end of the range (``end_ms``) is still open."""
    out = []
    for s in segs:
        if s.state == "down":
            still = end_ms is not None and s.end_ms >= end_ms
            out.append(Incident(s.start_ms, None if still else s.end_ms, s.cause or "probe failed"))
    return out


def calendar_days(now_ms: int, days: int, timezone: str) -> list[int]:
    """The starts of the last ``days`` calendar days in ``timezone`` (today last), then ``now_ms``:
    ``days + 1`` bounds. A day is midnight to midnight, 23 or 25 hours when the clocks change.

    >>> calendar_days(1_800_000_000_000, 2, "UTC")   # 2027-01-15 08:00 UTC
    [1799884800000, 1799971200000, 1800000000000]
    """
    tz = ZoneInfo(timezone)
    today = dt.datetime.fromtimestamp(now_ms / 1000, tz).date()
    starts = [today - dt.timedelta(days=d) for d in range(days - 1, -1, -1)]
    return [int(dt.datetime(d.year, d.month, d.day, tzinfo=tz).timestamp() * 1000) for d in starts] + [now_ms]


def daily_bars(segs: Sequence[Segment], bounds: Sequence[int]) -> list[tuple[int, float | None, Summary]]:
    """Per day ``[bounds[i], bounds[i + 1])``: (its start, uptime or None when nothing was observed,
    summary), for status bars."""
    out = []
    for a, b in itertools.pairwise(bounds):
        clipped = [
            Segment(max(s.start_ms, a), min(s.end_ms, b), s.state)
            for s in segs
            if s.end_ms > a and s.start_ms < b
        ]
        summary = summarize(clipped)
        out.append((a, summary.uptime, summary))
    return out
