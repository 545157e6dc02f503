from __future__ import annotations

import datetime as dt

import pytest

from watchkeeper.dashboards.timerange import (
    TimeError,
    parse_time,
    pick_step_ms,
    resolve_range,
)

NOW = int(dt.datetime(2026, 3, 18, 14, 37, 21, tzinfo=dt.UTC).timestamp() * 1000)


def ms(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp() * 1000)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "round_up", "expected"),
    [
        ("now", False, NOW),
        ("now-6h", False, NOW - 6 * 3_600_000),
        ("now-90m", False, NOW - 90 * 60_000),
        ("now/d", False, ms(2026, 3, 18)),
        ("now/d", True, ms(2026, 3, 19) - 1),
        ("now-1d/d", False, ms(2026, 3, 17)),
        ("now/w", False, ms(2026, 3, 16)),  # a Monday
        ("now/M", False, ms(2026, 3, 1)),
        ("now-1M/M", True, ms(2026, 3, 1) - 1),
        ("now/Q", False, ms(2026, 1, 1)),
        ("now/y", False, ms(2026, 1, 1)),
        ("now/d+8h", False, ms(2026, 3, 18, 8)),
        ("1700000000000", False, 1_700_000_000_000),
        ("2026-01-31T08:00:00Z", False, ms(2026, 1, 31, 8)),
    ],
)
def test_parse_time(text: str, round_up: bool, expected: int) -> None:
    assert parse_time(text, NOW, "UTC", round_up=round_up) == expected


def test_rounding_follows_the_time_zone() -> None:
    start_of_day_paris = int(
        dt.datetime(2026, 3, 18, tzinfo=dt.timezone(dt.timedelta(hours=1))).timestamp() * 1000
    )
    assert parse_time("now/d", NOW, "Europe/Paris") == start_of_day_paris


@pytest.mark.parametrize("bad", ["now-6x", "yesterday", "now-", "now+1h-"])
def test_bad_times_are_refused(bad: str) -> None:
    with pytest.raises(TimeError):
        parse_time(bad, NOW)


def test_resolve_range_refuses_an_empty_range() -> None:
    assert resolve_range("now-1h", "now", NOW).duration_ms == 3_600_000
    with pytest.raises(TimeError):
        resolve_range("now", "now-1h", NOW)


@pytest.mark.parametrize(
    ("range_ms", "width", "min_step", "expected"),
    [
        (6 * 3_600_000, 1200, 15_000, 20_000),
        (6 * 3_600_000, 300, 15_000, 120_000),
        (3_600_000, 2000, 15_000, 15_000),  # never below the scrape interval
        (30 * 86_400_000, 1000, 15_000, 3_600_000),
        (365 * 86_400_000, 10, 1000, 365 * 86_400_000 // 10),  # past the nice steps: whole seconds
    ],
)
def test_pick_step_is_about_one_point_per_pixel(
    range_ms: int, width: int, min_step: int, expected: int
) -> None:
    assert pick_step_ms(range_ms, width_px=width, min_step_ms=min_step) == expected
    assert range_ms / pick_step_ms(range_ms, width_px=width, min_step_ms=min_step) <= 11_000
