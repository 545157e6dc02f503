"""The pure ASGI middleware that measures every HTTP request of an application.

Per request it costs a dict lookup for the method, one in-progress increment and decrement, one
closure around ``send``, and — once the last body chunk has been sent — one cached-series lookup
and two metric updates. The route label is the template read from the scope *after* routing
(``routes.matched_route``); unmatched and 405 requests share ``route="__unmatched__"``; methods outside
the standard set become ``_OTHER``. Nothing raised by the monitoring reaches the application.

```python
app = FastAPI()
app.add_middleware(MetricsMiddleware, metrics=PrometheusHttpMetrics())
```
Most applications call :func:`watchkeeper.exporters.instrument` instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from time import perf_counter
from typing import Any

from watchkeeper.exporters.http_metrics import HttpMetrics, Series, UpDown
from watchkeeper.exporters.otlp_push import RegistryPusher
from watchkeeper.exporters.routes import UNMATCHED, Matched, matched_route, route_template, template_of
from watchkeeper.exporters.safety import dropped

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OTHER_METHOD = "_OTHER"
_METHODS = {m: m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")}
DEFAULT_EXCLUDED_PATHS: tuple[str, ...] = (
    "/metrics", "/health", "/healthz", "/livez", "/readyz", "/ready", "/ping", "/favicon.ico",
)  # fmt: skip
_MAX_CACHED_SERIES = 20_000


class _NullSeries:
    __slots__ = ()

    def record(self, duration_seconds: float | None, trace_id: str | None) -> None:
        return None


class _NullUpDown:
    __slots__ = ()

    def inc(self) -> None:
        return None

    def dec(self) -> None:
        return None


_NULL_SERIES = _NullSeries()
_NULL_UPDOWN = _NullUpDown()


class MetricsMiddleware:
    """Measures HTTP requests (and WebSocket sessions, separately) of the wrapped ASGI app.

    ``endpoint``, when given, answers ``metrics_path`` itself (before the app and unmeasured).
    ``group_unmatched=False`` drops unmatched/405 requests instead of grouping them.
    ``trace_id`` reads the active span's trace id for exemplars (None disables them).
    ``pusher``, when given, is started in the serving process (lifespan start-up or first request).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: HttpMetrics,
        exclude_paths: Iterable[str] = DEFAULT_EXCLUDED_PATHS,
        metrics_path: str | None = "/metrics",
        endpoint: ASGIApp | None = None,
        trace_id: Callable[[], str | None] | None = None,
        body_sizes: bool = False,
        group_unmatched: bool = True,
        pusher: RegistryPusher | None = None,
    ) -> None:
        self.app = app
        self._pusher = pusher
        self.metrics = metrics
        excluded = set(exclude_paths)
        if metrics_path is not None and endpoint is not None:
            excluded.add(metrics_path)
        self._excluded = frozenset(excluded)
        self._metrics_path = metrics_path
        self._endpoint = endpoint
        self._trace_id = trace_id
        self._body_sizes = body_sizes
        self._group_unmatched = group_unmatched
        # (method, status, id(route), mount prefix) -> (series, route label, route object). The route
        # object is kept so that its id cannot be reused while the entry exists.
        self._series: dict[tuple[str, int, int, str], tuple[Series, str | None, object]] = {}
        self._in_progress: dict[str, UpDown] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._pusher is not None and self._pusher.pid is None:
            self._pusher.ensure_started()
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await self._websocket(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in self._excluded:
            if path == self._metrics_path and self._endpoint is not None:
                await self._endpoint(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return

        method = _METHODS.get(scope["method"], OTHER_METHOD)
        in_progress = self._in_progress.get(method)
        if in_progress is None:
            in_progress = self._bind_in_progress(method)
        try:
            in_progress.inc()
        except Exception as exc:
            dropped("http.in_progress", exc)
        status = 0
        done = False
        stream = False
        sizes = [0, 0]
        start = perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, done, stream
            await send(message)
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-type":
                        stream = value.startswith(b"text/event-stream")
                        break
            elif kind == "http.response.body":
                if self._body_sizes:
                    sizes[1] += len(message.get("body", b""))
                if not message.get("more_body", False) and not done:
                    done = True
                    self._finish(scope, method, status, perf_counter() - start, in_progress, stream, sizes)
            elif kind == "http.response.pathsend" and not done:
                done = True
                self._finish(scope, method, status, perf_counter() - start, in_progress, stream, sizes)

        if self._body_sizes:
            receive = self._counting_receive(receive, sizes)
        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException as exc:
            if not done:
                done = True
                self._finish(scope, method, status or 500, perf_counter() - start, in_progress, stream, sizes)
            if isinstance(exc, Exception):
                self._exception(scope, status, exc)
            raise
        if not done:
            # The app returned without finishing a response (client gone, or no response at all:
            # the server then answers 500 itself).
            self._finish(scope, method, status or 500, perf_counter() - start, in_progress, stream, sizes)

    def _finish(
        self,
        scope: Scope,
        method: str,
        status: int,
        duration: float,
        in_progress: UpDown,
        stream: bool,
        sizes: list[int],
    ) -> None:
        try:
            in_progress.dec()
            matched = matched_route(scope) if status != 405 else None
            if matched is None:
                cached = self._series.get((method, status, 0, ""))
            else:
                cached = self._series.get((method, status, id(matched[0]), matched[1]))
            if cached is None:
                cached = self._bind(method, status, matched)
            series, route, _ = cached
            trace_id = self._trace_id() if self._trace_id is not None else None
            series.record(None if stream else duration, trace_id)
            if self._body_sizes and route is not None:
                self.metrics.sizes(method, route, sizes[0], sizes[1])
        except Exception as exc:
            dropped("http.record", exc)

    def _bind(self, method: str, status: int, matched: Matched | None) -> tuple[Series, str | None, object]:
        template = template_of(matched)
        route_object = matched[0] if matched is not None else None
        if template is None and not self._group_unmatched:
            bound: tuple[Series, str | None, object] = (_NULL_SERIES, None, route_object)
        else:
            route = template if template is not None else UNMATCHED
            try:
                bound = (self.metrics.series(method, route, status), route, route_object)
            except Exception as exc:
                dropped("http.bind", exc)
                bound = (_NULL_SERIES, None, route_object)
        if len(self._series) < _MAX_CACHED_SERIES:
            key = (method, status, 0, "") if matched is None else (method, status, id(matched[0]), matched[1])
            self._series[key] = bound
        return bound

    def _bind_in_progress(self, method: str) -> UpDown:
        try:
            bound = self.metrics.in_progress(method)
        except Exception as exc:
            dropped("http.bind", exc)
            bound = _NULL_UPDOWN
        self._in_progress[method] = bound
        return bound

    def _exception(self, scope: Scope, status: int, exc: Exception) -> None:
        try:
            template = route_template(scope) if status != 405 else None
            self.metrics.exception(template or UNMATCHED, type(exc).__name__)
        except Exception as err:
            dropped("http.exception", err)

    @staticmethod
    def _counting_receive(receive: Receive, sizes: list[int]) -> Receive:
        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                sizes[0] += len(message.get("body", b""))
            return message

        return counting_receive

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            try:
                self.metrics.websocket(route_template(scope) or UNMATCHED, perf_counter() - start)
            except Exception as exc:
                dropped("websocket.record", exc)
