"""HTTP routes of the collector beyond remote-write: OTLP/HTTP, JSON push, text import,
Pushgateway-compatible pushes and ``/api/v1/targets``. Each route reads the request, calls the pure
core (decode -> `SampleBatch`) and appends through the remote-write ingest core in a worker thread;
`IngestError`s become plain-text 4xx answers in the app's exception handler.

>>> app.include_router(collector_router(state.require_ingester, auth=IngestAuth(cfg, bind_host=host),
...                                     get_scrape=lambda: state.scrape_manager))  # doctest: +SKIP
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from typing import Any, Protocol

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from watchkeeper.collector.auth import IngestAuth, Tenant
from watchkeeper.collector.exposition import parse_exposition
from watchkeeper.collector.otlp import OtlpConverter, decode_otlp, otlp_response
from watchkeeper.collector.push import (
    Ingester,
    PushGroups,
    SampleBatch,
    append_samples,
    grouping_key,
    parse_import,
    parse_json_push,
    raise_for_report,
)
from watchkeeper.collector.router import UnsupportedMediaType, read_body
from watchkeeper.errors import DecodeError, IngestError, LimitExceeded


class TargetsSource(Protocol):
    """What ``/api/v1/targets`` needs (`scrape.ScrapeManager`)."""

    def targets_api(self, *, state: str, scrape_pool: str | None) -> dict[str, Any]: ...


def decompress(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """The body by its Content-Encoding (identity, gzip, deflate), never inflating past
    `max_bytes` (413): a small gzip bomb cannot exhaust memory."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        return body
    if enc not in ("gzip", "x-gzip", "deflate"):
        raise UnsupportedMediaType(f"unsupported Content-Encoding {enc[:40]!r} (use gzip or none)")
    wbits = 16 + zlib.MAX_WBITS if enc != "deflate" else zlib.MAX_WBITS
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise DecodeError(f"{enc} decode error: {exc}") from None
    if len(out) > max_bytes:
        raise LimitExceeded(f"decompressed body exceeds the limit of {max_bytes} bytes", status=413)
    if not d.eof:
        raise DecodeError(f"{enc} decode error: the compressed stream is truncated")
    return out


def collector_router(
    get_ingest: Callable[[], Ingester],
    *,
    auth: IngestAuth,
    otlp: OtlpConverter | None = None,
    push_groups: PushGroups | None = None,
    get_scrape: Callable[[], TargetsSource | None] | None = None,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """OTLP (``POST /v1/metrics``, ``/api/v1/otlp/v1/metrics``), ``POST /api/v1/push``,
    ``POST /api/v1/import/prometheus``, ``PUT|POST|DELETE /metrics/job/...`` and
    ``GET /api/v1/targets``. Ingest is behind `auth`'s write scope and the tenant's limits."""
    router = APIRouter()
    converter = otlp or OtlpConverter()
    groups = push_groups or PushGroups()

    async def body_of(request: Request) -> tuple[Ingester, Tenant, bytes]:
        tenant = auth.authorize(request.headers.get("authorization"))
        ingester = get_ingest()
        max_bytes = ingester.limits.max_body_bytes
        raw = await read_body(request, max_bytes)
        return ingester, tenant, decompress(raw, request.headers.get("content-encoding"), max_bytes)

    async def append(ingester: Ingester, tenant: Tenant, batch: SampleBatch) -> None:
        admit = auth.admitter(tenant)
        report = await anyio.to_thread.run_sync(lambda: append_samples(ingester, batch, admit))
        raise_for_report(report)

    async def otlp_metrics(request: Request) -> Response:
        ingester, tenant, body = await body_of(request)
        content_type = request.headers.get("content-type", "application/x-protobuf").lower()
        as_json = "json" in content_type
        if not as_json and "protobuf" not in content_type:
            raise UnsupportedMediaType(
                f"unsupported Content-Type {content_type[:60]!r}: "
                "send application/x-protobuf or application/json"
            )
        now_ms = int(clock() * 1000)
        result = await anyio.to_thread.run_sync(
            lambda: converter.convert(decode_otlp(body, as_json), now_ms=now_ms)
        )
        if ingester.metrics is not None:
            for reason, count in result.reasons.items():
                ingester.metrics.reject(f"otlp_{reason}", count)
        await append(ingester, tenant, result.batch)
        payload, media = otlp_response(result.rejected, result.message(), as_json)
        return Response(payload, media_type=media)

    router.add_api_route("/v1/metrics", otlp_metrics, methods=["POST"], response_class=Response)
    router.add_api_route("/api/v1/otlp/v1/metrics", otlp_metrics, methods=["POST"], response_class=Response)

    @router.post("/api/v1/push", status_code=204, response_class=Response)
    async def json_push(request: Request) -> Response:
        ingester, tenant, body = await body_of(request)
        now_ms = int(clock() * 1000)
        batch = await anyio.to_thread.run_sync(lambda: parse_json_push(body, now_ms=now_ms))
        await append(ingester, tenant, batch)
        return Response(status_code=204)

    @router.post("/api/v1/import/prometheus", status_code=204, response_class=Response)
    async def import_prometheus(request: Request) -> Response:
        ingester, tenant, body = await body_of(request)
        extra: dict[str, str] = {}
        for item in request.query_params.getlist("extra_label"):
            name, eq, value = item.partition("=")
            if not eq or not name:
                raise DecodeError(f"extra_label must be name=value, got {item[:80]!r}")
            extra[name] = value
        content_type = request.headers.get("content-type", "")
        now_ms = int(clock() * 1000)
        batch = await anyio.to_thread.run_sync(
            lambda: parse_import(body, content_type, now_ms=now_ms, extra=extra)
        )
        await append(ingester, tenant, batch)
        return Response(status_code=204)

    async def pushgateway(request: Request) -> Response:
        group = grouping_key(request.path_params["grouping"])
        now_ms = int(clock() * 1000)
        if request.method == "DELETE":
            tenant = auth.authorize(request.headers.get("authorization"))
            ingester = get_ingest()
            await append(ingester, tenant, groups.push(group, None, replace_all=True, now_ms=now_ms))
            return Response(status_code=202)
        ingester, tenant, body = await body_of(request)
        if request.headers.get("content-type", "").startswith("application/vnd.google.protobuf"):
            raise UnsupportedMediaType("the protobuf push format is not supported; push the text format")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"body is not valid UTF-8 (byte {exc.start})") from None
        replace_all = request.method == "PUT"
        batch = await anyio.to_thread.run_sync(
            lambda: groups.push(group, parse_exposition(text), replace_all=replace_all, now_ms=now_ms)
        )
        await append(ingester, tenant, batch)
        return Response(status_code=200)

    router.add_api_route(
        "/metrics/{grouping:path}", pushgateway, methods=["PUT", "POST", "DELETE"], response_class=Response
    )

    @router.get("/api/v1/targets")
    async def targets(state: str = "any", scrapePool: str | None = None) -> JSONResponse:
        manager = get_scrape() if get_scrape is not None else None
        data: dict[str, Any] = {"activeTargets": [], "droppedTargets": [], "droppedTargetCounts": {}}
        if manager is not None:
            data = manager.targets_api(state=state, scrape_pool=scrapePool)
        return JSONResponse({"status": "success", "data": data})

    return router


__all__ = ["IngestError", "collector_router", "decompress"]
