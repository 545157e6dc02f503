"""Ingest limits and label validation, shared by every ingest path.

Label names are checked with Prometheus' *legacy* rules (``[a-zA-Z_][a-zA-Z0-9_]*``, metric names
``[a-zA-Z_:][a-zA-Z0-9_:]*``): the PromQL parser and the query API of this release only speak the
legacy names, so accepting UTF-8 names would store series nobody can select.

>>> limits = Limits()
>>> limits.validate_labels([("job", "api"), ("__name__", "up")])
(('__name__', 'up'), ('job', 'api'))
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from watchkeeper.errors import LimitExceeded
from watchkeeper.labels import METRIC_NAME, Labels, format_labels

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")

MiB = 1024 * 1024

#: Seconds a client is asked to wait when the active-series limit is reached.
ACTIVE_SERIES_RETRY_AFTER_SECONDS = 60


class InvalidSeries(ValueError):
    """One series is invalid; `reason` is the label of the rejected-samples counter."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of one ingest endpoint (built from `config.LimitsSettings`)."""

    max_body_bytes: int = 32 * MiB
    max_labels_per_series: int = 64
    max_label_name_length: int = 1024
    max_label_value_length: int = 4096
    max_series_per_request: int = 100_000
    max_active_series: int = 2_000_000

    def check_body_size(self, size_bytes: int, what: str = "request body") -> None:
        """413 when a body (compressed, or its announced decompressed size) is too large."""
        if size_bytes > self.max_body_bytes:
            raise LimitExceeded(
                f"{what} of {size_bytes} bytes exceeds the limit of {self.max_body_bytes} bytes",
                status=413,
            )

    def check_series_per_request(self, count: int) -> None:
        if count > self.max_series_per_request:
            raise LimitExceeded(
                f"request has {count} series, more than the limit of {self.max_series_per_request}"
            )

    def check_active_series(self, active: int, new: int) -> None:
        """429 with Retry-After when creating `new` series would pass the active-series limit."""
        if new and active + new > self.max_active_series:
            raise LimitExceeded(
                f"too many active series: {active} active + {new} new would exceed the limit of "
                f"{self.max_active_series}",
                status=429,
                retry_after_seconds=ACTIVE_SERIES_RETRY_AFTER_SECONDS,
            )

    def validate_labels(self, pairs: Iterable[tuple[str, str]]) -> Labels:
        """The sorted label set, or `InvalidSeries` saying what is wrong. Empty values are dropped
        (an empty value means "no such label" in Prometheus)."""
        items = sorted((n, v) for n, v in pairs if v != "")
        if len(items) > self.max_labels_per_series:
            raise InvalidSeries(
                f"series has {len(items)} labels, more than the limit of {self.max_labels_per_series}: "
                f"{_short(items)}",
                "too_many_labels",
            )
        name = ""
        previous = None
        for label, value in items:
            if label == previous:
                raise InvalidSeries(
                    f"duplicate label name {label!r} in series {_short(items)}", "duplicate_label"
                )
            previous = label
            if len(label) > self.max_label_name_length:
                raise InvalidSeries(
                    f"label name {label[:64]!r}... is longer than {self.max_label_name_length} characters",
                    "label_name_too_long",
                )
            if len(value) > self.max_label_value_length:
                raise InvalidSeries(
                    f"value of label {label!r} is longer than {self.max_label_value_length} characters "
                    f"in series {_short(items)}",
                    "label_value_too_long",
                )
            if _LABEL_NAME.fullmatch(label) is None:
                raise InvalidSeries(
                    f"invalid label name {label!r} in series {_short(items)}", "invalid_label"
                )
            if label == METRIC_NAME:
                name = value
        if not name:
            raise InvalidSeries(
                f"series without a metric name (__name__): {_short(items)}", "missing_metric_name"
            )
        if _METRIC_NAME.fullmatch(name) is None:
            raise InvalidSeries(f"invalid metric name {name!r}", "invalid_metric_name")
        return tuple(items)


def _short(items: list[tuple[str, str]]) -> str:
    text = format_labels(tuple((n[:64], v[:64]) for n, v in items[:16]))
    return text if len(text) <= 300 else text[:300] + "..."
