"""Label validation (Prometheus' legacy names) and request limits."""

from __future__ import annotations

import pytest

from watchkeeper.collector.limits import InvalidSeries, Limits
from watchkeeper.errors import LimitExceeded

LIMITS = Limits(
    max_labels_per_series=4,
    max_label_name_length=10,
    max_label_value_length=12,
    max_series_per_request=3,
    max_active_series=10,
    max_body_bytes=100,
)


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([("job", "a"), ("__name__", "up")], (("__name__", "up"), ("job", "a"))),
        (
            [("__name__", "ns:rule_x"), ("_x", "")],
            (("__name__", "ns:rule_x"),),
        ),  # empty value dropped
        ([("__name__", "up"), ("__meta", "ok")], (("__meta", "ok"), ("__name__", "up"))),
        ([("__name__", "up"), ("job", "ünïcødé ✓")], (("__name__", "up"), ("job", "ünïcødé ✓"))),
    ],
)
def test_valid(pairs: list[tuple[str, str]], expected: tuple[tuple[str, str], ...]) -> None:
    assert LIMITS.validate_labels(pairs) == expected


@pytest.mark.parametrize(
    ("pairs", "reason"),
    [
        ([("job", "a")], "missing_metric_name"),
        ([("__name__", "")], "missing_metric_name"),
        ([("__name__", "a-b")], "invalid_metric_name"),
        ([("__name__", "up"), ("a:b", "x")], "invalid_label"),  # colons only in metric names
        ([("__name__", "up"), ("é", "x")], "invalid_label"),  # legacy names: ASCII only
        ([("__name__", "up"), ("", "x")], "invalid_label"),
        ([("__name__", "up"), ("job", "a"), ("job", "b")], "duplicate_label"),
        ([("__name__", "up"), ("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")], "too_many_labels"),
        ([("__name__", "up"), ("n" * 11, "1")], "label_name_too_long"),
        ([("__name__", "up"), ("job", "v" * 13)], "label_value_too_long"),
    ],
)
def test_invalid(pairs: list[tuple[str, str]], reason: str) -> None:
    with pytest.raises(InvalidSeries) as info:
        LIMITS.validate_labels(pairs)
    assert info.value.reason == reason


def test_request_limits() -> None:
    LIMITS.check_body_size(100)
    with pytest.raises(LimitExceeded) as info:
        LIMITS.check_body_size(101)
    assert info.value.status == 413
    LIMITS.check_series_per_request(3)
    with pytest.raises(LimitExceeded) as info:
        LIMITS.check_series_per_request(4)
    assert info.value.status == 400
    LIMITS.check_active_series(10, 0)
    LIMITS.check_active_series(5, 5)
    with pytest.raises(LimitExceeded) as info:
        LIMITS.check_active_series(10, 1)
    assert info.value.status == 429
    assert info.value.retry_after_seconds
