from __future__ import annotations

import math

import pytest

from watchkeeper.dashboards.units import axis_scale, css_color, format_value, is_known_unit, normalize_unit


@pytest.mark.parametrize(
    ("value", "unit", "decimals", "expected"),
    [
        (0.0123, "s", None, "12.3 ms"),
        (0.25, "s", None, "250 ms"),
        (1.5, "s", None, "1.5 s"),
        (90, "s", None, "1.5 min"),
        (7200, "s", None, "2 h"),
        (250, "ms", None, "250 ms"),
        (1500, "ms", None, "1.5 s"),
        (0.000004, "s", None, "4 µs"),
        (0, "s", None, "0 s"),
        (1536, "bytes", None, "1.5 KiB"),
        (3 * 1024**3, "bytes", None, "3 GiB"),
        (1500, "decbytes", None, "1.5 kB"),
        (2_000_000, "Bps", None, "2 MB/s"),
        (0.995, "percentunit", None, "99.5%"),
        (0.5, "percentunit", None, "50%"),
        (42, "percent", None, "42%"),
        (1234, "reqps", None, "1.23k req/s"),
        (12.5, "reqps", None, "12.5 req/s"),
        (1_500_000, "short", None, "1.5M"),
        (3.14159, "short", 2, "3.14"),
        (3.14159, "none", None, "3.14"),
        (7, "suffix: items", None, "7 items"),
        (None, "s", None, "–"),
        (math.nan, "bytes", None, "–"),
        (math.inf, "short", None, "+Inf"),
    ],
)
def test_format_value(value: float | None, unit: str, decimals: int | None, expected: str) -> None:
    assert format_value(value, unit, decimals) == expected


@pytest.mark.parametrize(
    ("unit", "max_abs", "factor", "suffix"),
    [
        ("s", 0.25, 1000.0, " ms"),
        ("s", 12.0, 1.0, " s"),
        ("s", 0.0, 1.0, " s"),
        ("ms", 5000.0, 0.001, " s"),
        ("bytes", 3 * 1024**2, 1 / 1024**2, " MiB"),
        ("percentunit", 0.5, 1.0, ""),
        ("reqps", 100.0, 1.0, " req/s"),
    ],
)
def test_axis_scale_picks_one_unit_for_the_axis(
    unit: str, max_abs: float, factor: float, suffix: str
) -> None:
    scale = axis_scale(unit, max_abs)
    assert scale.factor == pytest.approx(factor)
    assert scale.suffix == suffix


def test_axis_scale_percentunit_uses_a_percent_tick_format() -> None:
    assert axis_scale("percentunit", 0.5).tickformat.endswith("%")


def test_grafana_unit_ids_map_to_ours_or_are_refused() -> None:
    assert normalize_unit("dtdurations") == "s"
    assert normalize_unit("reqps") == "reqps"
    assert normalize_unit("lengthmm") is None
    assert is_known_unit("suffix:x") and not is_known_unit("parsecs")


def test_grafana_named_colours_become_css_colours() -> None:
    assert css_color("semi-dark-red") == css_color("red") == "#f2495c"
    assert css_color("#123456") == "#123456"
