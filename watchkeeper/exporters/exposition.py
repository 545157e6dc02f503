"""The ``/metrics`` endpoint: Prometheus text or OpenMetrics by ``Accept``, gzip by ``Accept-Encoding``.

The core is the pure :func:`render`; :class:`MetricsEndpoint` is the ASGI glue around it.

```python
status, headers, body = render(registry, accept="application/openmetrics-text", accept_encoding="gzip")
app.mount("/metrics", MetricsEndpoint(registry))
```
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, MutableMapping
from typing import Any

import anyio.to_thread
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from watchkeeper.exporters.safety import dropped

MIN_GZIP_BYTES = 512


def render(
    registry: CollectorRegistry, *, accept: str = "", accept_encoding: str = ""
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Encode ``registry`` for a scrape; returns (status, headers, body)."""
    encoder, content_type = choose_encoder(accept)
    return respond(encoder(registry), content_type, accept_encoding)


def respond(
    body: bytes, content_type: str, accept_encoding: str = ""
) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) of a scrape answer: gzip when accepted and worth it."""
    headers = [("Content-Type", content_type), ("Vary", "Accept, Accept-Encoding")]
    if len(body) >= MIN_GZIP_BYTES and _accepts_gzip(accept_encoding):
        body = gzip.compress(body, compresslevel=6)
        headers.append(("Content-Encoding", "gzip"))
    return 200, headers, body


def _accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "") != "q=0"
    return False


class MetricsEndpoint:
    """An ASGI app serving a registry, or the body ``encode(accept)`` returns (multiprocess mode)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        encode: Callable[[str], tuple[bytes, str]] | None = None,
    ) -> None:
        if registry is None and encode is None:
            from prometheus_client import REGISTRY

            registry = REGISTRY
        self._registry = registry
        self._encode = encode

    def _render(self, accept: str, accept_encoding: str) -> tuple[int, list[tuple[str, str]], bytes]:
        if self._encode is not None:
            body, content_type = self._encode(accept)
            return respond(body, content_type, accept_encoding)
        if self._registry is None:
            raise RuntimeError("no registry to render")
        return render(self._registry, accept=accept, accept_encoding=accept_encoding)

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Any],
        send: Callable[[MutableMapping[str, Any]], Any],
    ) -> None:
        accept = accept_encoding = ""
        for name, value in scope.get("headers", ()):
            lowered = name.lower()
            if lowered == b"accept":
                accept = value.decode("latin-1")
            elif lowered == b"accept-encoding":
                accept_encoding = value.decode("latin-1")
        try:
            # Collecting can read many files (multiprocess mode) or call slow custom collectors:
            # keep it off the event loop.
            status, headers, body = await anyio.to_thread.run_sync(self._render, accept, accept_encoding)
        except Exception as exc:
            dropped("metrics.render", exc)
            status, headers, body = (
                500,
                [("Content-Type", "text/plain; charset=utf-8")],
                b"metrics unavailable\n",
            )
        raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        raw_headers.append((b"content-length", str(len(body)).encode("ascii")))
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body})
