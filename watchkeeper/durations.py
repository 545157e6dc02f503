"""Prometheus duration strings (``15d``, ``1h30m``, ``250ms``), the one parser every config,
rule file, query parameter and test file uses.

>>> parse_duration("1h30m"), parse_duration("15d"), parse_duration("250ms"), parse_duration("0")
(5400000, 1296000000, 250, 0)
"""

from __future__ import annotations

import re

_DURATION_RE = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_DURATION_UNITS_MS = (365 * 86_400_000, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000, 1)


def parse_duration(text: str) -> int:
    """A Prometheus duration string (``model.ParseDuration``) in milliseconds; ValueError if invalid."""
    text = text.strip()
    if text == "0":
        return 0
    m = _DURATION_RE.match(text)
    if not text or m is None or not any(m.groups()):
        raise ValueError(f"not a valid duration string: {text!r} (examples: 15d, 2h, 1h30m, 500ms)")
    return sum(int(g) * unit for g, unit in zip(m.groups(), _DURATION_UNITS_MS, strict=True) if g)
