"""Ingest HTTP routes. They read the request, call the ingest core in a worker thread and map the
outcome; the app's exception handler turns `IngestError`s into plain-text answers, as Prometheus does.

>>> app.include_router(ingest_router(lambda: ingester, auth=auth))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable

import anyio.to_thread
from fastapi import APIRouter, Request, Response

from watchkeeper.collector.auth import IngestAuth
from watchkeeper.collector.remote_write import RemoteWriteIngester
from watchkeeper.errors import IngestError, LimitExceeded


class UnsupportedMediaType(IngestError):
    status = 415


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refusing (413) as soon as it grows past `max_bytes`."""
    announced = request.headers.get("content-length")
    if announced is not None and announced.isdigit() and int(announced) > max_bytes:
        raise LimitExceeded(
            f"request body of {announced} bytes exceeds the limit of {max_bytes} bytes", status=413
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise LimitExceeded(f"request body exceeds the limit of {max_bytes} bytes", status=413)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def ingest_router(get_ingester: Callable[[], RemoteWriteIngester], *, auth: IngestAuth) -> APIRouter:
    """``POST /api/v1/write`` (Prometheus remote-write 1.0), behind `auth`'s write scope and the
    tenant's limits."""
    router = APIRouter()

    @router.post("/api/v1/write", status_code=204, response_class=Response)
    async def remote_write(request: Request) -> Response:
        admit = auth.admitter(auth.authorize(request.headers.get("authorization")))
        encoding = request.headers.get("content-encoding", "snappy").lower()
        if encoding != "snappy":
            raise UnsupportedMediaType(
                f"unsupported Content-Encoding {encoding!r}: remote-write bodies are snappy"
            )
        content_type = request.headers.get("content-type", "")
        if "io.prometheus.write.v2" in content_type:
            raise UnsupportedMediaType(
                "remote-write 2.0 (io.prometheus.write.v2.Request) is not supported; "
                "send 1.0 (prometheus.WriteRequest)"
            )
        ingester = get_ingester()
        body = await read_body(request, ingester.limits.max_body_bytes)
        report = await anyio.to_thread.run_sync(ingester.ingest, body, admit)
        if report.rejected:
            raise IngestError(report.message())
        return Response(status_code=204)

    return router
