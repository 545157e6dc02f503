from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from watchkeeper.alerting.config import TimeIntervalConfig, TimeIntervalSpec
from watchkeeper.alerting.timeintervals import in_spec, is_muted


def at(text: str, zone: str = "UTC") -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp() * 1000)


def spec(**kw: object) -> TimeIntervalSpec:
    return TimeIntervalSpec.model_validate(kw)


@pytest.mark.parametrize(
    ("fields", "instant", "inside"),
    [
        # business hours in New York, checked at UTC instants (EST is UTC-5 in January)
        (
            {"times": [{"start_time": "09:00", "end_time": "17:00"}], "location": "America/New_York"},
            at("2026-01-05T13:59"),
            False,
        ),
        (
            {"times": [{"start_time": "09:00", "end_time": "17:00"}], "location": "America/New_York"},
            at("2026-01-05T14:00"),
            True,
        ),
        (
            {"times": [{"start_time": "09:00", "end_time": "17:00"}], "location": "America/New_York"},
            at("2026-01-05T22:00"),
            False,
        ),  # end is exclusive
        # the same wall-clock hours in July (EDT, UTC-4)
        (
            {"times": [{"start_time": "09:00", "end_time": "17:00"}], "location": "America/New_York"},
            at("2026-07-06T13:00"),
            True,
        ),
        ({"weekdays": ["monday:friday"]}, at("2026-11-28T12:00"), False),  # a Saturday
        ({"weekdays": ["saturday", "sunday"]}, at("2026-11-28T12:00"), True),
        # Saturday 00:30 in Tokyo is still Friday in UTC
        ({"weekdays": ["saturday"], "location": "Asia/Tokyo"}, at("2026-11-27T15:30"), True),
        ({"days_of_month": ["-1"]}, at("2026-02-28T10:00"), True),  # last day of February
        ({"days_of_month": ["-1"]}, at("2026-03-28T10:00"), False),
        ({"days_of_month": ["1:7"], "weekdays": ["monday"]}, at("2026-12-07T10:00"), True),  # first Monday
        ({"months": ["november", "12"], "years": ["2026:2027"]}, at("2026-11-30T10:00"), True),
        ({"years": ["2025"]}, at("2026-11-30T10:00"), False),
        (
            {
                "times": [
                    {"start_time": "22:00", "end_time": "24:00"},
                    {"start_time": "00:00", "end_time": "06:00"},
                ],
                "location": "Europe/Berlin",
            },
            at("2026-11-28T23:30", "Europe/Berlin"),
            True,
        ),
    ],
)
def test_time_interval_fields(fields: dict[str, object], instant: int, inside: bool) -> None:
    assert in_spec(spec(**fields), instant) is inside


def test_wrapping_ranges_are_refused_as_in_alertmanager() -> None:
    with pytest.raises(ValueError, match="month range"):
        spec(months=["december:february"])


def test_mute_and_active_intervals() -> None:
    night = TimeIntervalConfig(
        name="night", time_intervals=[spec(times=[{"start_time": "00:00", "end_time": "06:00"}])]
    )
    intervals = {"night": night}
    assert is_muted(intervals, ["night"], [], at("2026-11-28T03:00"))
    assert not is_muted(intervals, ["night"], [], at("2026-11-28T07:00"))
    assert is_muted(intervals, [], ["night"], at("2026-11-28T07:00"))  # outside its only active interval
    assert not is_muted(intervals, [], ["night"], at("2026-11-28T03:00"))
    assert not is_muted(intervals, [], [], at("2026-11-28T03:00"))
