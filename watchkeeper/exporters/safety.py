"""Failure containment for code that runs inside someone else's request path.

A failure in monitoring must never become a failure of the application: every hook of the SDK
catches its own exceptions, logs the first one of each kind once, counts the rest, and drops the
measurement (as OpenTelemetry's ``Counter.add`` does).

```python
try:
    series.observe(duration)
except Exception as exc:
    dropped("http.record", exc)
```
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger("watchkeeper.exporters")

_lock = threading.Lock()
_seen: set[tuple[str, type[BaseException]]] = set()
_dropped: dict[str, int] = {}


def dropped(where: str, exc: BaseException) -> None:
    """Record that a measurement at ``where`` was dropped because of ``exc``; log the first one."""
    try:
        key = (where, type(exc))
        with _lock:
            _dropped[where] = _dropped.get(where, 0) + 1
            first = key not in _seen
            if first:
                _seen.add(key)
        if first:
            logger.warning(
                "watchkeeper SDK: dropping measurements at %s after %s: %s (logged once)",
                where,
                type(exc).__name__,
                exc,
            )
    except Exception:  # pragma: no cover - logging itself failed; nothing left to do  # nosec B110
        pass


def dropped_counts() -> dict[str, int]:
    """How many measurements were dropped so far, by hook (for tests and self-diagnosis)."""
    with _lock:
        return dict(_dropped)
