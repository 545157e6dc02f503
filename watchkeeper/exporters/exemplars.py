"""Trace ids of the active OpenTelemetry span, for exemplars.

prometheus-client shows exemplars only in OpenMetrics output, and drops them in multiprocess mode.

```python
current = trace_id_reader()        # None when opentelemetry-api is not installed
trace_id = current() if current else None
```
"""

from __future__ import annotations

from collections.abc import Callable


def trace_id_reader() -> Callable[[], str | None] | None:
    """A function returning the sampled active span's trace id as 32 hex digits, or None."""
    try:
        from opentelemetry.trace import get_current_span
    except ImportError:  # pragma: no cover - opentelemetry-api comes with FastAPI
        return None

    def current_trace_id() -> str | None:
        context = get_current_span().get_span_context()
        if context.trace_flags & 0x01 and context.trace_id:
            return f"{context.trace_id:032x}"
        return None

    return current_trace_id
