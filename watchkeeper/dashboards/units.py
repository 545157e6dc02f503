"""Units: Grafana's unit ids, formatted for humans and scaled for Plotly axes.

>>> format_value(0.0123, "s")
'12.3 ms'
>>> format_value(1536, "bytes")
'1.5 KiB'
>>> format_value(0.995, "percentunit")
'99.5%'
>>> axis_scale("s", 0.25)
AxisScale(factor=1000.0, suffix=' ms', tickformat='~r')

Time series are drawn in one scale per panel: ``axis_scale`` picks it from the largest value so a
latency panel reads ``250 ms`` rather than ``0.25 s``; the panel JSON carries the scaled values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# time units as seconds
_TIME_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_TIME_STEPS = (
    ("ns", 1e-9),
    ("µs", 1e-6),
    ("ms", 1e-3),
    ("s", 1.0),
    ("min", 60.0),
    ("h", 3600.0),
    ("d", 86400.0),
)
_IEC = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_SI_BYTES = ("B", "kB", "MB", "GB", "TB", "PB")
_SI = ("", "k", "M", "G", "T", "P")
_SI_SMALL = (("m", 1e-3), ("µ", 1e-6), ("n", 1e-9))

#: unit id -> suffix for plain (SI-scaled) units
_SUFFIX = {
    "short": "",
    "none": "",
    "reqps": " req/s",
    "rps": " req/s",
    "ops": " ops/s",
    "wps": " wr/s",
    "rps_read": " rd/s",
    "cps": " c/s",
    "percent": "%",
    "hertz": " Hz",
    "celsius": " °C",
    "conn": " conn",
    "bits": "b",
    "bps": "b/s",
    "pps": " p/s",
}
_BYTES = {
    "bytes": (_IEC, 1024.0, ""),
    "decbytes": (_SI_BYTES, 1000.0, ""),
    "Bps": (_SI_BYTES, 1000.0, "/s"),
    "binBps": (_IEC, 1024.0, "/s"),
    "kbytes": (_IEC, 1024.0, ""),
}

KNOWN_UNITS = frozenset({*_TIME_SECONDS, *_SUFFIX, *_BYTES, "percentunit", "dtdurations"})

#: Grafana unit ids that mean the same as one of ours
ALIASES = {
    "decbits": "bits",
    "deckbytes": "decbytes",
    "currencyUSD": "suffix: $",
    "µs": "us",
    "dtdurationms": "ms",
    "dtdurations": "s",
    "iops": "ops",
    "opm": "ops",
    "reqpm": "reqps",
    "percent0": "percent",
    "pct": "percent",
    "lengthm": "suffix: m",
}


def is_known_unit(unit: str) -> bool:
    return unit in KNOWN_UNITS or unit.startswith("suffix:")


def normalize_unit(unit: str) -> str | None:
    """Our id for a Grafana unit id, or None when we have no equivalent."""
    unit = ALIASES.get(unit, unit)
    return unit if is_known_unit(unit) else None


def _num(value: float, decimals: int | None) -> str:
    if decimals is not None:
        return f"{value:.{decimals}f}"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        text = f"{value:.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    elif magnitude >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    if "." in text and "e" not in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _si(value: float, decimals: int | None) -> str:
    magnitude = abs(value)
    if magnitude >= 1000:
        exp = min(int(math.log10(magnitude) // 3), len(_SI) - 1)
        return _num(value / 1000**exp, decimals) + _SI[exp] if exp else _num(value, decimals)
    return _num(value, decimals)


def format_value(value: float | None, unit: str = "short", decimals: int | None = None) -> str:
    """``value`` as a person reads it, in ``unit`` (a Grafana unit id)."""
    if value is None or math.isnan(value):
        return "–"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    unit = ALIASES.get(unit, unit)
    if unit.startswith("suffix:"):
        return _num(value, decimals) + unit[len("suffix:") :]
    if unit in _TIME_SECONDS:
        seconds = value * _TIME_SECONDS[unit]
        if seconds == 0:
            return "0 s"
        name, size = _TIME_STEPS[0]
        for step_name, step_size in _TIME_STEPS:
            if abs(seconds) >= step_size:
                name, size = step_name, step_size
        return f"{_num(seconds / size, decimals)} {name}"
    if unit in _BYTES:
        names, base, per = _BYTES[unit]
        scaled, index = value * (1024.0 if unit == "kbytes" else 1.0), 0
        while abs(scaled) >= base and index < len(names) - 1:
            scaled /= base
            index += 1
        return f"{_num(scaled, decimals)} {names[index]}{per}"
    if unit == "percentunit":
        return _num(value * 100, decimals) + "%"
    if unit == "percent":
        return _num(value, decimals) + "%"
    suffix = _SUFFIX.get(unit, "")
    return (_num(value, decimals) if unit == "none" else _si(value, decimals)) + suffix


@dataclass(frozen=True, slots=True)
class AxisScale:
    """Multiply values by ``factor`` and label the axis with ``suffix`` (Plotly ``ticksuffix``)."""

    factor: float
    suffix: str
    tickformat: str


def axis_scale(unit: str, max_abs: float) -> AxisScale:
    """The scale for an axis whose largest absolute value is ``max_abs``."""
    unit = ALIASES.get(unit, unit)
    if not math.isfinite(max_abs):
        max_abs = 0.0
    if unit.startswith("suffix:"):
        return AxisScale(1.0, unit[len("suffix:") :], "~s")
    if unit in _TIME_SECONDS:
        seconds = max_abs * _TIME_SECONDS[unit]
        name, size = "s", 1.0
        if seconds > 0:
            name, size = _TIME_STEPS[0]
            for step_name, step_size in _TIME_STEPS:
                if seconds >= step_size:
                    name, size = step_name, step_size
        return AxisScale(_TIME_SECONDS[unit] / size, f" {name}", "~r")
    if unit in _BYTES:
        names, base, per = _BYTES[unit]
        factor, index = (1024.0 if unit == "kbytes" else 1.0), 0
        scaled = max_abs * factor
        while scaled >= base and index < len(names) - 1:
            scaled /= base
            factor /= base
            index += 1
        return AxisScale(factor, f" {names[index]}{per}", "~r")
    if unit == "percentunit":
        return AxisScale(1.0, "", ".0%" if max_abs >= 0.1 else ".1%")
    if unit == "percent":
        return AxisScale(1.0, "%", "~r")
    return AxisScale(1.0, _SUFFIX.get(unit, ""), "~s")


#: Grafana's named colours (the base shades), for thresholds imported from Grafana
NAMED_COLORS = {
    "green": "#73bf69",
    "red": "#f2495c",
    "orange": "#ff9830",
    "yellow": "#fade2a",
    "blue": "#5794f2",
    "purple": "#b877d9",
    "text": "#ccccdc",
    "transparent": "transparent",
}


def css_color(color: str) -> str:
    """A colour CSS and Plotly understand: Grafana names (``semi-dark-red``) map to their base hue."""
    base = color
    for prefix in ("super-light-", "light-", "semi-dark-", "dark-"):
        if base.startswith(prefix):
            base = base[len(prefix) :]
            break
    return NAMED_COLORS.get(base, color)
