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
        from opentelemetry.context import get_current
        from opentelemetry.trace import Span
        from opentelemetry.trace.propagation import _SPAN_KEY
    except ImportError:  # pragma: no cover - opentelemetry-api comes with FastAPI
        return None

    def current_trace_id() -> str | None:
        # get_current_span() without its extra calls: this runs once per request.
        span = get_current().get(_SPAN_KEY)
        if not isinstance(span, Span):
            return None
        context = span.get_span_context()
        if context.trace_flags & 0x01 and context.trace_id:
            return f"{context.trace_id:032x}"
        return None

    return current_trace_id
