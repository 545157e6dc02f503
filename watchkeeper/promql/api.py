"""The Prometheus HTTP query API (``docs/querying/api.md``), as Grafana and promtool call it.

>>> app.include_router(query_router(lambda: engine, lambda: storage), prefix="/prometheus")  # doctest: +SKIP

Routes, where Prometheus has them with GET and form-encoded POST (form values win over the URL's):
``/api/v1/query``, ``/api/v1/query_range``, ``/api/v1/series``, ``/api/v1/labels``,
``/api/v1/query_exemplars``, ``/api/v1/format_query``; GET only: ``/api/v1/label/<name>/values``,
``/api/v1/metadata``, ``/api/v1/status/buildinfo``.

Bodies come from :mod:`watchkeeper.promql.formatting` (Go's float format: ``"1"``, ``"+Inf"``,
``"1e-07"``; timestamps as seconds with up to three decimals: ``1435781451.781``). Query errors
become ``{"status":"error","errorType":...,"error":...}`` with Prometheus' status codes (400
``bad_data``, 422 ``execution``, 503 ``timeout``); anything else (the store not being open yet) is
left to the app's exception handler.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol
from urllib.parse import parse_qsl

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from starlette.routing import Route

from watchkeeper import __version__ as watchkeeper_version
from watchkeeper.durations import parse_duration
from watchkeeper.errors import ParseError, QueryError
from watchkeeper.labels import Labels, Matcher
from watchkeeper.promql import ast
from watchkeeper.promql.cache import QueryCache
from watchkeeper.promql.formatting import json_string, labels_json, result_json
from watchkeeper.promql.values import QueryResult

#: What ``/status/buildinfo`` claims: the Prometheus API version whose semantics we follow. Grafana
#: reads it to pick features; ``features`` is left out on purpose (Grafana would assume Mimir).
PROMETHEUS_COMPATIBLE_VERSION = "3.0.0"
MAX_POINTS_PER_SERIES = 11_000
#: ``start``/``end`` defaults of the metadata endpoints: all time.
MIN_TIME_MS, MAX_TIME_MS = -(2**62), 2**62
TRUNCATED_WARNING = "results truncated due to limit"


class QueryEngine(Protocol):
    def instant(self, query: str | ast.Expr, time_ms: int) -> QueryResult: ...

    def range(self, query: str | ast.Expr, start_ms: int, end_ms: int, step_ms: int) -> QueryResult: ...


class MetadataStore(Protocol):
    def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Labels]: ...

    def label_names(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]: ...

    def label_values(
        self, name: str, matchers: Sequence[Matcher], start_ms: int, end_ms: int
    ) -> list[str]: ...


class BadData(QueryError):
    """A request parameter is missing or malformed (``bad_data``, 400)."""

    error_type = "bad_data"
    status = 400


def invalid_parameter(name: str, exc: Exception) -> BadData:
    return BadData(f"invalid parameter {json.dumps(name)}: {exc}")


def success(data_json: str, warnings: Sequence[str] = (), infos: Sequence[str] = ()) -> Response:
    body = f'{{"status":"success","data":{data_json}'
    if warnings:
        body += f',"warnings":[{",".join(map(json_string, warnings))}]'
    if infos:
        body += f',"infos":[{",".join(map(json_string, infos))}]'
    return Response(body + "}", media_type="application/json")


def error_response(exc: QueryError) -> Response:
    body = f'{{"status":"error","errorType":{json_string(exc.error_type)},"error":{json_string(str(exc))}}}'
    return Response(body, status_code=exc.status, media_type="application/json")


# --- parameters ---------------------------------------------------------------------------------

_FLOAT_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)


def parse_time_ms(text: str) -> int:
    """``time``/``start``/``end``: Unix seconds with decimals, or RFC 3339 (Prometheus' ``parseTime``)."""
    if _FLOAT_RE.match(text):
        seconds = float(text)
        if math.isfinite(seconds) and abs(seconds) < 9.2e15:
            whole = math.trunc(seconds)
            fraction_ms = (seconds - whole) * 1000  # Go's math.Round: halves away from zero
            return whole * 1000 + int(math.copysign(math.floor(abs(fraction_ms) + 0.5), fraction_ms))
    elif m := _RFC3339_RE.match(text):
        year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
        try:
            offset = dt.timedelta(0)
            if m.group(9):
                sign = 1 if m.group(9) == "+" else -1
                offset = sign * dt.timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
            when = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.timezone(offset))
        except ValueError:
            pass
        else:
            fraction_ms = int((m.group(7) or "0").ljust(3, "0")[:3])
            return int(when.timestamp()) * 1000 + fraction_ms
    raise ValueError(f"cannot parse {json.dumps(text)} to a valid timestamp")


def parse_duration_param_ms(text: str) -> int:
    """``step``/``timeout``/``lookback_delta``: float seconds or a Prometheus duration (``15s``)."""
    if _FLOAT_RE.match(text):
        seconds = float(text)
        if abs(seconds) * 1e9 >= 2**63:
            raise ValueError(f"cannot parse {json.dumps(text)} to a valid duration. It overflows int64")
        return math.trunc(seconds * 1000)
    try:
        return parse_duration(text)
    except ValueError:
        raise ValueError(f"cannot parse {json.dumps(text)} to a valid duration") from None


def parse_limit(text: str) -> int:
    if not text:
        return 0
    try:
        limit = int(text)
    except ValueError:
        raise ValueError(f"strconv.Atoi: parsing {json.dumps(text)}: invalid syntax") from None
    if limit < 0:
        raise ValueError("limit must be non-negative")
    return limit


class Params:
    """Request parameters: the form body (POST, url-encoded) first, then the URL's query string."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.pairs = list(pairs)

    @classmethod
    async def read(cls, request: Request) -> Params:
        pairs: list[tuple[str, str]] = []
        content_type = request.headers.get("content-type", "")
        if request.method == "POST" and content_type.startswith("application/x-www-form-urlencoded"):
            body = await request.body()
            pairs = parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        return cls(pairs + list(request.query_params.multi_items()))

    def get(self, name: str) -> str:
        return next((v for k, v in self.pairs if k == name), "")

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.pairs if k == name]

    def time_ms(self, name: str, default: int) -> int:
        text = self.get(name)
        if not text:
            return default
        try:
            return parse_time_ms(text)
        except ValueError as exc:
            raise invalid_parameter(name, exc) from exc

    def limit(self) -> int:
        try:
            return parse_limit(self.get("limit"))
        except ValueError as exc:
            raise invalid_parameter("limit", exc) from exc

    def matcher_sets(self) -> list[tuple[Matcher, ...]]:
        sets = []
        for text in self.get_all("match[]"):
            try:
                sets.append(parse_selector(text))
            except (ParseError, ValueError) as exc:
                raise invalid_parameter("match[]", exc) from exc
        return sets


def parse_selector(text: str) -> tuple[Matcher, ...]:
    """A ``match[]`` series selector (``up{job="api"}``) as its matchers."""
    from watchkeeper.promql.parser import parse

    expr = parse(text)
    if not isinstance(expr, ast.VectorSelector):
        raise ParseError(f"parse error: expected a series selector, got {text!r}")
    return expr.matchers


def unescape_label_name(name: str) -> str:
    """Undo Prometheus' ``U__`` name escaping (``U__http_2e_status`` -> ``http.status``)."""
    if not name.startswith("U__"):
        return name
    body, out, i = name[3:], [], 0
    while i < len(body):
        if body.startswith("__", i):
            out.append("_")
            i += 2
        elif body[i] == "_" and (end := body.find("_", i + 1)) > i + 1:
            try:
                out.append(chr(int(body[i + 1 : end], 16)))
            except ValueError:
                return name
            i = end + 1
        elif body[i] == "_":
            return name
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


# --- the router ---------------------------------------------------------------------------------


def _with_options(engine: QueryEngine, params: Params) -> QueryEngine:
    """The engine with the request's ``timeout`` (capped by the engine's) and ``lookback_delta``."""
    changes: dict[str, Any] = {}
    if text := params.get("timeout"):
        try:
            timeout_ms = parse_duration_param_ms(text)
        except ValueError as exc:
            raise invalid_parameter("timeout", exc) from exc
        current = getattr(engine, "timeout_seconds", None)
        if current is not None and timeout_ms > 0:
            changes["timeout_seconds"] = min(float(current), timeout_ms / 1000)
    if text := params.get("lookback_delta"):
        try:
            lookback_ms = parse_duration_param_ms(text)
        except ValueError as exc:
            raise invalid_parameter("lookback_delta", exc) from exc
        if lookback_ms > 0 and hasattr(engine, "lookback_ms"):
            changes["lookback_ms"] = lookback_ms
    if not changes:
        return engine
    adjusted = copy.copy(engine)
    for name, value in changes.items():
        setattr(adjusted, name, value)
    return adjusted


def _parse_query(text: str) -> ast.Expr:
    from watchkeeper.promql.parser import parse

    try:
        return parse(text)
    except ParseError as exc:
        raise invalid_parameter("query", exc) from exc


def _truncate(result: QueryResult, limit: int) -> list[str]:
    if limit and result.result_type in ("vector", "matrix") and len(result.series) > limit:
        result.series = result.series[:limit]
        return [*result.warnings, TRUNCATED_WARNING]
    return list(result.warnings)


Endpoint = Callable[[Request], Awaitable[Response]]


def query_router(
    get_engine: Callable[[], QueryEngine],
    get_storage: Callable[[], MetadataStore],
    get_cache: Callable[[], QueryCache | None] = lambda: None,
) -> APIRouter:
    """The query API; ``get_engine``/``get_storage`` are called per request (they may raise while
    the store is still opening; the app's exception handler answers those). Range queries go
    through the results cache ``get_cache`` returns, when it returns one (see ``cache.py``).

    The routes are plain Starlette routes (``request -> response``): they read their parameters
    themselves, so FastAPI's per-request dependency solving has nothing to do. Parsing (slow for
    long operator chains), evaluation and the JSON body are done together in one worker thread,
    off the event loop, except for queries that were fast the last time (``QueryCosts``)."""
    router = APIRouter()
    both = ["GET", "POST"]
    costs = QueryCosts()

    def route(path: str, methods: list[str]) -> Callable[[Endpoint], Endpoint]:
        """A plain Starlette route that puts itself in the scope (``scope["route"]``), as FastAPI's
        own routes do, so the HTTP metrics label its requests by the template, not the raw path."""

        def add(endpoint: Endpoint) -> Endpoint:
            async def named(request: Request) -> Response:
                request.scope["route"] = plain
                return await endpoint(request)

            plain = Route(path, named, methods=methods)
            router.routes.append(plain)
            return endpoint

        return add

    @route("/api/v1/query", methods=both)
    async def query(request: Request) -> Response:
        params = await Params.read(request)
        try:
            limit = params.limit()
            time_ms = params.time_ms("time", _now_ms())
            engine = _with_options(get_engine(), params)
            text = params.get("query")

            def run() -> QueryResult:
                return engine.instant(_parse_query(text), time_ms)

            return await costs.answer((text, 0, 0), run, limit)
        except QueryError as exc:
            return error_response(exc)

    @route("/api/v1/query_range", methods=both)
    async def query_range(request: Request) -> Response:
        params = await Params.read(request)
        try:
            start_ms, end_ms, step_ms = _range_params(params)
            limit = params.limit()
            engine = _with_options(get_engine(), params)
            text, cache, now_ms = params.get("query"), get_cache(), _now_ms()

            def run() -> QueryResult:
                expr = _parse_query(text)
                if cache is None:
                    return engine.range(expr, start_ms, end_ms, step_ms)
                return cache.range(engine, expr, start_ms, end_ms, step_ms, now_ms=now_ms)

            return await costs.answer((text, end_ms - start_ms, step_ms), run, limit)
        except QueryError as exc:
            return error_response(exc)

    @route("/api/v1/series", methods=both)
    async def series(request: Request) -> Response:
        params = await Params.read(request)
        try:
            if not params.get_all("match[]"):
                raise BadData("no match[] parameter provided")
            limit = params.limit()
            start_ms = params.time_ms("start", MIN_TIME_MS)
            end_ms = params.time_ms("end", MAX_TIME_MS)
            sets = params.matcher_sets()
        except QueryError as exc:
            return error_response(exc)
        store = get_storage()

        def collect() -> list[Labels]:
            found: set[Labels] = set()
            for matchers in sets:
                found.update(store.series(list(matchers), start_ms, end_ms))
            return sorted(found)

        found = await anyio.to_thread.run_sync(collect)
        warnings = [TRUNCATED_WARNING] if limit and len(found) > limit else []
        found = found[:limit] if limit else found
        return success("[" + ",".join(map(labels_json, found)) + "]", warnings)

    @route("/api/v1/labels", methods=both)
    async def labels(request: Request) -> Response:
        params = await Params.read(request)
        try:
            limit, start_ms, end_ms, sets = _listing(params)
        except QueryError as exc:
            return error_response(exc)
        store = get_storage()
        found = await anyio.to_thread.run_sync(
            lambda: _union(sets, lambda m: store.label_names(m, start_ms, end_ms))
        )
        return _string_list(found, limit)

    @route("/api/v1/label/{name}/values", methods=["GET"])
    async def label_values(request: Request) -> Response:
        params = await Params.read(request)
        label = unescape_label_name(request.path_params["name"])
        try:
            if not label:
                raise BadData(f"invalid label name: {json.dumps(label)}")
            limit, start_ms, end_ms, sets = _listing(params)
        except QueryError as exc:
            return error_response(exc)
        store = get_storage()
        found = await anyio.to_thread.run_sync(
            lambda: _union(sets, lambda m: store.label_values(label, m, start_ms, end_ms))
        )
        return _string_list(found, limit)

    @route("/api/v1/metadata", methods=["GET"])
    async def metadata(request: Request) -> Response:
        return success("{}")  # no metric metadata is kept (yet)

    @route("/api/v1/query_exemplars", methods=both)
    async def query_exemplars(request: Request) -> Response:
        params = await Params.read(request)
        try:
            params.time_ms("start", MIN_TIME_MS)
            params.time_ms("end", MAX_TIME_MS)
        except QueryError as exc:
            return error_response(exc)
        return success("[]")  # exemplars are not stored

    @route("/api/v1/status/buildinfo", methods=["GET"])
    async def buildinfo(request: Request) -> Response:
        info = {
            "version": PROMETHEUS_COMPATIBLE_VERSION,
            "revision": f"watchkeeper-{watchkeeper_version}",
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "",
        }
        return success("{" + ",".join(f"{json_string(k)}:{json_string(v)}" for k, v in info.items()) + "}")

    @route("/api/v1/format_query", methods=both)
    async def format_query(request: Request) -> Response:
        from watchkeeper.promql.printer import prettify

        params = await Params.read(request)
        try:
            expr = _parse_query(params.get("query"))
        except QueryError as exc:
            return error_response(exc)
        return success(json_string(prettify(expr)))

    return router


class QueryCosts:
    """Where a query is answered: in a worker thread, unless the same query (text, range length,
    step) took under ``inline_below_s`` the last time, which is then answered on the event loop.

    Dashboards and alert views repeat their queries; for the small ones the hand-off to a worker
    thread and back (two thread wake-ups, ~0.1 ms idle, more on a loaded machine) is a good part
    of the answer time. A query is only inlined after a measured fast run, so a blocked loop is
    bounded by the cost that query had a moment ago (unless its data grew in between; the next
    run measures again). At most ``max_entries`` queries are remembered (then all are forgotten).
    """

    def __init__(self, *, inline_below_s: float = 0.002, max_entries: int = 4096) -> None:
        self.inline_below_s = inline_below_s
        self.max_entries = max_entries
        self.seconds: dict[tuple[str, int, int], float] = {}

    async def answer(
        self, key: tuple[str, int, int], evaluate: Callable[[], QueryResult], limit: int
    ) -> Response:
        if self.seconds.get(key, math.inf) < self.inline_below_s:
            return self._answer(key, evaluate, limit)
        return await anyio.to_thread.run_sync(self._answer, key, evaluate, limit)

    def _answer(self, key: tuple[str, int, int], evaluate: Callable[[], QueryResult], limit: int) -> Response:
        """The response to a query: its result (at most ``limit`` series) as JSON, or its error."""
        started = time.perf_counter()
        try:
            result = evaluate()
        except QueryError as exc:
            return error_response(exc)
        warnings = _truncate(result, limit)
        response = success(result_json(result), warnings, result.infos)
        if len(self.seconds) >= self.max_entries:
            self.seconds.clear()
        self.seconds[key] = time.perf_counter() - started
        return response


def _range_params(params: Params) -> tuple[int, int, int]:
    try:
        start_ms = parse_time_ms(params.get("start"))
    except ValueError as exc:
        raise invalid_parameter("start", exc) from exc
    try:
        end_ms = parse_time_ms(params.get("end"))
    except ValueError as exc:
        raise invalid_parameter("end", exc) from exc
    if end_ms < start_ms:
        raise BadData("end timestamp must not be before start time")
    try:
        step_ms = parse_duration_param_ms(params.get("step"))
    except ValueError as exc:
        raise invalid_parameter("step", exc) from exc
    if step_ms <= 0:
        raise BadData(
            "zero or negative query resolution step widths are not accepted. Try a positive integer"
        )
    if (end_ms - start_ms) // step_ms > MAX_POINTS_PER_SERIES:
        raise BadData(
            "exceeded maximum resolution of 11,000 points per timeseries. "
            "Try decreasing the query resolution (?step=XX)"
        )
    return start_ms, end_ms, step_ms


def _string_list(values: list[str], limit: int) -> Response:
    warnings = [TRUNCATED_WARNING] if limit and len(values) > limit else []
    shown = values[:limit] if limit else values
    return success("[" + ",".join(map(json_string, shown)) + "]", warnings)


def _now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


def _listing(params: Params) -> tuple[int, int, int, list[Any]]:
    """``limit``, ``start``, ``end`` and ``match[]`` of the label listing endpoints."""
    limit = params.limit()
    start_ms = params.time_ms("start", MIN_TIME_MS)
    end_ms = params.time_ms("end", MAX_TIME_MS)
    return limit, start_ms, end_ms, list(params.matcher_sets() or [()])


def _union(sets: list[Any], names: Callable[[list[Matcher]], list[str]]) -> list[str]:
    """Sorted union of a listing over every ``match[]`` selector (or none)."""
    found: set[str] = set()
    for matchers in sets:
        found.update(names(list(matchers)))
    return sorted(found)
