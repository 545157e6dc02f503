from __future__ import annotations

import pytest

from watchkeeper.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0s"), (90_000, "1m30s"), (86_400_000 + 500, "1d500ms"), (60_001, "1m1ms"), (14 * 86_400_000, "2w"),
     (-300_000, "-5m"), (90 * 86_400_000, "90d")],
)
def test_format_duration_round_trips(ms: int, text: str) -> None:
    assert format_duration(ms) == text
    if ms >= 0:
        assert parse_duration(text) == ms
