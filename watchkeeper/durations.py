"""Prometheus duration strings (``15d``, ``1h30m``, ``250ms``): the one parser and printer every
config, rule file, query, dashboard and test file uses.

>>> parse_duration("1h30m"), parse_duration("15d"), parse_duration("250ms"), parse_duration("0")
(5400000, 1296000000, 250, 0)
"""

from __future__ import annotations

import re

_DURATION_RE = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_DURATION_UNITS_MS = (365 * 86_400_000, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000, 1)
# (unit, size, only when it divides exactly): years and weeks only when exact, as Prometheus prints
_UNITS = (
    ("y", 365 * 24 * 3_600_000, True),
    ("w", 7 * 24 * 3_600_000, True),
    ("d", 24 * 3_600_000, False),
    ("h", 3_600_000, False),
    ("m", 60_000, False),
    ("s", 1000, False),
    ("ms", 1, False),
)


def parse_duration(text: str) -> int:
    """A Prometheus duration string (``model.ParseDuration``) in milliseconds; ValueError if invalid."""
    text = text.strip()
    if text == "0":
        return 0
    m = _DURATION_RE.match(text)
    if not text or m is None or not any(m.groups()):
        raise ValueError(f"not a valid duration string: {text!r} (examples: 15d, 2h, 1h30m, 500ms)")
    return sum(int(g) * unit for g, unit in zip(m.groups(), _DURATION_UNITS_MS, strict=True) if g)


def format_duration(ms: int) -> str:
    """A duration in Prometheus' notation, exact to the millisecond.

    >>> format_duration(60_001), format_duration(0), format_duration(90 * 86_400_000)
    ('1m1ms', '0s', '90d')
    """
    if ms == 0:
        return "0s"
    if ms < 0:
        return "-" + format_duration(-ms)
    out = []
    for unit, size, exact in _UNITS:
        if exact and ms % size:
            continue
        count, ms = divmod(ms, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)
