"""The dashboards web UI and its JSON endpoints, as one FastAPI router.

>>> app.include_router(dashboards_router(state.require_engine, state.require_storage,
...     DashboardOptions(dirs=(BUILTIN_DIR, Path("dashboards")))))  # doctest: +SKIP

Pages: ``/dashboards`` (list and search),
``/d/<uid>/<slug>?from=&to=&refresh=&var-x=&theme=&kiosk&viewPanel=``,
``/explore``, ``/alerts``, ``/silences``, ``/targets``, ``/rules``. JSON: ``/d/<uid>/panels/<id>.json``
(and ``.csv``), ``/d/<uid>/annotations.json``, ``/d/<uid>/variables.json``, ``/explore/query.json``,
``/api/dashboards``, ``/api/dashboards/<uid>``, ``POST /api/dashboards/import``. Static files (Plotly
and ours) under ``/static/wk/``, cacheable for a year (names carry versions).

The router parses requests and maps errors; the work is in ``panels``, ``variables``, ``grafana``.
Queries run in a worker thread (the engine is CPU-bound and synchronous).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio.to_thread
import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response

from watchkeeper.dashboards import markdown
from watchkeeper.dashboards.grafana import GrafanaImportError, convert, to_yaml
from watchkeeper.dashboards.loader import BUILTIN_DIR, Catalog
from watchkeeper.dashboards.model import Dashboard, Panel, Query, dump
from watchkeeper.dashboards.panels import (
    QueryContext,
    QueryEngine,
    alert_annotation_regions,
    panel_csv,
    panel_json,
    query_annotation_regions,
    run_expr,
    run_panel,
)
from watchkeeper.dashboards.providers import AlertsProvider, RulesProvider, SilencesProvider, TargetsProvider
from watchkeeper.dashboards.templating import ALL, interpolate
from watchkeeper.dashboards.timerange import Range, TimeError, pick_step_ms, resolve_range
from watchkeeper.dashboards.units import format_value
from watchkeeper.dashboards.variables import MetadataStore, ResolvedVariable, requested_from_query, resolve
from watchkeeper.durations import parse_duration
from watchkeeper.labels import format_labels

STATIC_DIR = Path(__file__).parent / "static"
TEMPLATES_DIR = Path(__file__).parent / "templates"
PLOTLY_FILE = "plotly-2.35.3.min.js"
REFRESH_CHOICES = ("5s", "10s", "30s", "1m", "5m", "15m", "30m", "1h", "2h", "1d")
QUICK_RANGES = (
    ("Last 5 minutes", "now-5m"),
    ("Last 15 minutes", "now-15m"),
    ("Last 1 hour", "now-1h"),
    ("Last 3 hours", "now-3h"),
    ("Last 6 hours", "now-6h"),
    ("Last 12 hours", "now-12h"),
    ("Last 24 hours", "now-24h"),
    ("Last 2 days", "now-2d"),
    ("Last 7 days", "now-7d"),
    ("Last 30 days", "now-30d"),
    ("Today", "now/d"),
    ("This week", "now/w"),
)
MAX_WIDTH_PX = 4000
ALERT_HISTORY_LIMIT = 1000
"""Alert annotations read at most this many of the newest transitions."""

GetEngine = Callable[[], QueryEngine]
GetStore = Callable[[], MetadataStore]


@dataclass(frozen=True)
class DashboardOptions:
    """Settings of the dashboards UI. ``dirs`` are searched in order (a later one overrides a
    built-in with the same uid); imports are saved to the last one that is not the built-ins."""

    dirs: Sequence[Path] = (BUILTIN_DIR,)
    scrape_interval_ms: int = 15_000
    min_refresh_ms: int = 5_000
    check_interval_seconds: float = 1.0
    get_alerts: Callable[[], AlertsProvider | None] = field(default=lambda: None)
    get_silences: Callable[[], SilencesProvider | None] = field(default=lambda: None)
    get_targets: Callable[[], TargetsProvider | None] = field(default=lambda: None)
    get_rules: Callable[[], RulesProvider | None] = field(default=lambda: None)
    now_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))


class _Static:
    """Our static files, read once, with a content hash in their URL and a gzip copy."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, bytes, str]] = {}
        self.versions: dict[str, str] = {}
        for path in STATIC_DIR.iterdir():
            if path.suffix not in (".js", ".css", ".txt"):
                continue
            body = path.read_bytes()
            kind = {".js": "text/javascript", ".css": "text/css"}.get(path.suffix, "text/plain")
            self.files[path.name] = (body, gzip.compress(body, 6), f"{kind}; charset=utf-8")
            self.versions[path.name] = hashlib.sha256(body).hexdigest()[:10]

    def url(self, name: str) -> str:
        return f"/static/wk/{name}?v={self.versions[name]}"

    def response(self, name: str, request: Request) -> Response:
        entry = self.files.get(name)
        if entry is None:
            return PlainTextResponse("not found\n", status_code=404)
        body, zipped, media = entry
        headers = {"Cache-Control": "public, max-age=31536000, immutable", "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(zipped, media_type=media, headers=headers)
        return Response(body, media_type=media, headers=headers)


def _environment(static: _Static) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True, trim_blocks=True, lstrip_blocks=True
    )
    env.globals["static"] = static.url
    env.globals["plotly_url"] = static.url(PLOTLY_FILE)
    env.filters["labels"] = format_labels
    env.filters["markdown"] = markdown.render
    env.filters["fmt_ms"] = lambda ms: (
        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + " UTC" if ms else "–"
    )
    env.filters["fmt_value"] = format_value
    return env


@dataclass(frozen=True, slots=True)
class _View:
    """The URL state of a dashboard view."""

    from_: str
    to: str
    tz: str | None
    refresh: str | None
    theme: str | None
    kiosk: bool
    view_panel: int | None
    requested: dict[str, list[str]]


def _view(request: Request, dashboard: Dashboard | None, min_refresh_ms: int) -> _View:
    q = request.query_params
    refresh = q.get("refresh", dashboard.refresh if dashboard else None) or None
    if refresh is not None:
        try:
            refresh = refresh if parse_duration(refresh) >= min_refresh_ms else f"{min_refresh_ms // 1000}s"
        except ValueError:
            refresh = None
    theme = q.get("theme")
    view_panel = q.get("viewPanel")
    return _View(
        from_=q.get("from") or (dashboard.time.from_ if dashboard else "now-1h"),
        to=q.get("to") or (dashboard.time.to if dashboard else "now"),
        tz=q.get("tz") or (dashboard.timezone if dashboard else None),
        refresh=refresh,
        theme=theme if theme in ("dark", "light") else None,
        kiosk="kiosk" in q,
        view_panel=int(view_panel) if view_panel and view_panel.isdigit() else None,
        requested=requested_from_query(list(q.multi_items())),
    )


def _width(request: Request) -> int:
    try:
        return max(50, min(MAX_WIDTH_PX, int(request.query_params.get("width", "1000"))))
    except ValueError:
        return 1000


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "error": message}, status_code=status)


def dashboards_router(
    get_engine: GetEngine, get_storage: GetStore, options: DashboardOptions | None = None
) -> APIRouter:
    """The dashboards UI; ``get_engine``/``get_storage`` may raise while the store opens (the
    app's exception handler answers 503)."""
    opts = options or DashboardOptions()
    catalog = Catalog(list(opts.dirs), check_interval_seconds=opts.check_interval_seconds)
    static = _Static()
    env = _environment(static)
    router = APIRouter()

    def page(template: str, request: Request, status: int = 200, **context: Any) -> HTMLResponse:
        theme = request.query_params.get("theme")
        context.setdefault("theme", theme if theme in ("dark", "light") else None)
        context.setdefault("kiosk", "kiosk" in request.query_params)
        context.setdefault("nav", request.url.path)
        return HTMLResponse(env.get_template(template).render(**context), status_code=status)

    def time_range(view: _View) -> Range:
        return resolve_range(view.from_, view.to, opts.now_ms(), view.tz)

    def context_for(
        dashboard: Dashboard, request: Request
    ) -> tuple[_View, Range, QueryContext, list[ResolvedVariable]]:
        view = _view(request, dashboard, opts.min_refresh_ms)
        rng = time_range(view)
        resolved, values = resolve(
            dashboard, view.requested, store=get_storage(), engine=get_engine(), rng=rng
        )
        ctx = QueryContext(rng, _width(request), opts.scrape_interval_ms, values)
        return view, rng, ctx, resolved

    # --- pages -----------------------------------------------------------------------------------
    @router.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/dashboards", status_code=302)

    @router.get("/dashboards", response_class=HTMLResponse)
    async def home(request: Request, q: str = "", tag: str = "") -> HTMLResponse:
        dashboards = catalog.all()
        if q:
            needle = q.lower()
            dashboards = [
                d
                for d in dashboards
                if needle in d.title.lower() or needle in d.uid or any(needle in t.lower() for t in d.tags)
            ]
        if tag:
            dashboards = [d for d in dashboards if tag in d.tags]
        tags = sorted({t for d in catalog.all() for t in d.tags})
        return page(
            "home.html",
            request,
            dashboards=dashboards,
            q=q,
            tag=tag,
            tags=tags,
            errors=catalog.errors,
            dirs=[str(d) for d in catalog.dirs],
            title="Dashboards",
        )

    async def dashboard_page(request: Request, uid: str, slug: str = "") -> Response:
        started = time.perf_counter()
        dashboard = catalog.get(uid)
        if dashboard is None:
            return page(
                "not_found.html",
                request,
                status=404,
                title="Not found",
                message=f"No dashboard with uid {uid!r}.",
            )
        if slug != dashboard.slug:
            query = f"?{request.url.query}" if request.url.query else ""
            return RedirectResponse(f"/d/{uid}/{dashboard.slug}{query}", status_code=302)
        try:
            view, rng, ctx, resolved = await anyio.to_thread.run_sync(context_for, dashboard, request)
        except TimeError as exc:
            return page("not_found.html", request, status=400, title="Bad time range", message=str(exc))
        links = _links(dashboard, view, resolved, catalog.all())
        config = {
            "uid": dashboard.uid,
            "slug": dashboard.slug,
            "panels": [
                {"id": p.id, "type": p.type, "title": p.title, "collapsed": row.collapsed}
                for row in dashboard.rows
                for p in row.panels
            ],
            "time": {"from": view.from_, "to": view.to},
            "default_time": {"from": dashboard.time.from_, "to": dashboard.time.to},
            "refresh": view.refresh,
            "min_refresh_ms": opts.min_refresh_ms,
            "graph_tooltip": dashboard.graph_tooltip,
            "timezone": view.tz or dashboard.timezone,
            "annotations": any(a.enabled for a in dashboard.annotations),
            "variables": [v.name for v in resolved if v.type != "constant"],
            "view_panel": view.view_panel,
        }
        response = page(
            "dashboard.html",
            request,
            title=dashboard.title,
            dashboard=dashboard,
            view=view,
            rng=rng,
            variables=resolved,
            links=links,
            config=config,
            ALL=ALL,
            quick_ranges=QUICK_RANGES,
            refresh_choices=REFRESH_CHOICES,
            titles={p.id: interpolate(p.title, ctx.variables) for p in dashboard.panels()},
        )
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
        return response

    @router.get("/explore", response_class=HTMLResponse)
    async def explore(request: Request) -> HTMLResponse:
        q = request.query_params
        config = {
            "expr": q.get("expr", ""),
            "time": {"from": q.get("from", "now-1h"), "to": q.get("to", "now")},
            "step": q.get("step", ""),
            "min_refresh_ms": opts.min_refresh_ms,
        }
        return page("explore.html", request, title="Explore", config=config, quick_ranges=QUICK_RANGES)

    @router.get("/alerts", response_class=HTMLResponse)
    async def alerts_page(request: Request) -> HTMLResponse:
        provider = opts.get_alerts()
        # the history is read from the database: off the event loop
        alerts, history = await anyio.to_thread.run_sync(
            lambda: (list(provider.alerts()), list(provider.history(100))) if provider else ([], [])
        )
        return page(
            "alerts.html",
            request,
            title="Alerts",
            wired=provider is not None,
            firing=[a for a in alerts if a.state == "firing"],
            pending=[a for a in alerts if a.state == "pending"],
            history=history,
        )

    @router.get("/silences", response_class=HTMLResponse)
    async def silences_page(request: Request) -> HTMLResponse:
        provider = opts.get_silences()
        silences = list(provider.silences()) if provider else []
        return page(
            "silences.html",
            request,
            title="Silences",
            wired=provider is not None,
            silences=silences,
            prefill=request.query_params.get("matchers", ""),
        )

    @router.get("/targets", response_class=HTMLResponse)
    async def targets_page(request: Request) -> HTMLResponse:
        provider = opts.get_targets()
        targets = list(provider.targets()) if provider else []
        jobs: dict[str, list[Any]] = {}
        for t in targets:
            jobs.setdefault(t.job, []).append(t)
        return page("targets.html", request, title="Targets", wired=provider is not None, jobs=jobs)

    @router.get("/rules", response_class=HTMLResponse)
    async def rules_page(request: Request) -> HTMLResponse:
        provider = opts.get_rules()
        groups = list(provider.rule_groups()) if provider else []
        return page("rules.html", request, title="Rules", wired=provider is not None, groups=groups)

    # --- panel data ------------------------------------------------------------------------------
    def _panel_runs(uid: str, panel_id: int, request: Request) -> tuple[Any, ...] | JSONResponse:
        dashboard = catalog.get(uid)
        if dashboard is None:
            return _error(404, f"no dashboard with uid {uid!r}")
        panel = dashboard.panel(panel_id)
        if panel is None or panel.type == "text":
            return _error(404, f"dashboard {uid!r} has no query panel {panel_id}")
        try:
            _, _rng, ctx, _resolved = context_for(dashboard, request)
        except TimeError as exc:
            return _error(400, str(exc))
        started = time.perf_counter()
        runs = run_panel(get_engine(), panel, ctx)
        return panel, runs, ctx, (time.perf_counter() - started) * 1000

    @router.get("/d/{uid}/panels/{panel_id}.json")
    async def panel_data(request: Request, uid: str, panel_id: int) -> Response:
        started = time.perf_counter()
        out = await anyio.to_thread.run_sync(_panel_runs, uid, panel_id, request)
        if isinstance(out, JSONResponse):
            return out
        panel, runs, ctx, _query_ms = out
        body = panel_json(panel, runs, ctx)
        text = json.dumps(body, allow_nan=False, separators=(",", ":"))
        server_ms = (time.perf_counter() - started) * 1000
        return Response(
            text.removesuffix("}") + f',"server_ms":{server_ms:.2f}}}',
            media_type="application/json",
            headers={"Cache-Control": "no-store", "Server-Timing": f"app;dur={server_ms:.2f}"},
        )

    @router.get("/d/{uid}/panels/{panel_id}.csv")
    async def panel_csv_download(request: Request, uid: str, panel_id: int) -> Response:
        out = await anyio.to_thread.run_sync(_panel_runs, uid, panel_id, request)
        if isinstance(out, JSONResponse):
            return out
        panel, runs, _ctx, _query_ms = out
        filename = f"{uid}-panel-{panel_id}.csv"
        return Response(
            panel_csv(panel, runs),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    def _annotations(uid: str, request: Request) -> JSONResponse:
        dashboard = catalog.get(uid)
        if dashboard is None:
            return _error(404, f"no dashboard with uid {uid!r}")
        try:
            _, rng, ctx, _resolved = context_for(dashboard, request)
        except TimeError as exc:
            return _error(400, str(exc))
        regions: list[dict[str, Any]] = []
        errors = []
        step = pick_step_ms(rng.duration_ms, width_px=ctx.width_px, min_step_ms=opts.scrape_interval_ms)
        for annotation in dashboard.annotations:
            if not annotation.enabled:
                continue
            if annotation.source == "alerts":
                provider = opts.get_alerts()
                if provider is not None:
                    history = provider.history(ALERT_HISTORY_LIMIT)
                    regions.extend(alert_annotation_regions(provider.alerts(), history, rng, annotation))
                continue
            expr = interpolate(annotation.expr, ctx.variables, ctx.builtins(step))
            run = run_expr(get_engine(), expr, ctx, step)
            if run.error:
                errors.append(f"{annotation.name}: {run.error}")
            regions.extend(query_annotation_regions(run, annotation))
        return JSONResponse({"regions": regions, "errors": errors})

    @router.get("/d/{uid}/annotations.json")
    async def annotations(request: Request, uid: str) -> JSONResponse:
        return await anyio.to_thread.run_sync(_annotations, uid, request)

    def _variables(uid: str, request: Request) -> JSONResponse:
        dashboard = catalog.get(uid)
        if dashboard is None:
            return _error(404, f"no dashboard with uid {uid!r}")
        try:
            _, _rng, _ctx, resolved = context_for(dashboard, request)
        except TimeError as exc:
            return _error(400, str(exc))
        return JSONResponse(
            {
                "variables": [
                    {"name": v.name, "options": v.options, "selected": v.selected, "error": v.error}
                    for v in resolved
                ]
            }
        )

    @router.get("/d/{uid}/variables.json")
    async def variables(request: Request, uid: str) -> JSONResponse:
        return await anyio.to_thread.run_sync(_variables, uid, request)

    def _explore_query(request: Request) -> JSONResponse:
        q = request.query_params
        expr = q.get("expr", "").strip()
        if not expr:
            return _error(400, "missing expr")
        view = _view(request, None, opts.min_refresh_ms)
        try:
            rng = time_range(view)
        except TimeError as exc:
            return _error(400, str(exc))
        ctx = QueryContext(rng, _width(request), opts.scrape_interval_ms, {})
        step = pick_step_ms(rng.duration_ms, width_px=ctx.width_px, min_step_ms=opts.scrape_interval_ms)
        if q.get("step"):
            try:
                step = max(1, parse_duration(q["step"]))
            except ValueError as exc:
                return _error(400, str(exc))
        graph = Panel(id=1, type="timeseries", queries=[Query(expr=expr)], unit=q.get("unit", "short"))
        table = Panel(id=2, type="table", queries=[Query(expr=expr, instant=True)])
        builtins = ctx.builtins(step)
        expr = interpolate(expr, {}, builtins)
        graph_run = run_expr(get_engine(), expr, ctx, step)
        table_run = run_expr(get_engine(), expr, ctx, step, instant=True)
        graph_json = panel_json(graph, [graph_run], ctx)
        graph_json["step_ms"] = step
        return JSONResponse({"graph": graph_json, "table": panel_json(table, [table_run], ctx)})

    @router.get("/explore/query.json")
    async def explore_query(request: Request) -> JSONResponse:
        return await anyio.to_thread.run_sync(_explore_query, request)

    # --- dashboards API --------------------------------------------------------------------------
    @router.get("/api/dashboards")
    async def list_dashboards() -> JSONResponse:
        return JSONResponse(
            {
                "dashboards": [
                    {"uid": d.uid, "title": d.title, "tags": d.tags, "url": f"/d/{d.uid}/{d.slug}"}
                    for d in catalog.all()
                ],
                "errors": [{"path": e.path, "field": e.field, "message": e.message} for e in catalog.errors],
            }
        )

    @router.get("/api/dashboards/{uid}")
    async def get_dashboard(uid: str) -> Response:
        dashboard = catalog.get(uid)
        if dashboard is None:
            return _error(404, f"no dashboard with uid {uid!r}")
        return JSONResponse({"dashboard": dump(dashboard), "yaml": to_yaml(dashboard)})

    @router.post("/api/dashboards/import")
    async def import_dashboard(request: Request) -> Response:
        """Grafana JSON in; ``{"dashboard", "yaml", "warnings", "url", "saved"}`` out. ``?save=true``
        writes ``<uid>.yml`` to the dashboards directory (``&overwrite=true`` to replace one)."""
        try:
            data = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, f"the body is not JSON: {exc}")
        try:
            result = convert(data)
        except GrafanaImportError as exc:
            return _error(400, str(exc))
        dashboard = result.dashboard
        text = result.to_yaml()
        saved = None
        if request.query_params.get("save", "").lower() in ("1", "true", "yes"):
            directory = catalog.writable_dir()
            if directory is None:
                return _error(409, "no dashboards directory to save to (set dashboards_dir)")
            path = directory / f"{dashboard.uid}.yml"
            existing = catalog.get(dashboard.uid)
            overwrite = request.query_params.get("overwrite", "").lower() in ("1", "true", "yes")
            existing_path = catalog.path(dashboard.uid)
            user_owned = existing_path is not None and existing_path.parent.resolve() != BUILTIN_DIR.resolve()
            if existing is not None and user_owned and not overwrite:
                return _error(409, f"a dashboard with uid {dashboard.uid!r} exists; add overwrite=true")
            directory.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            catalog.refresh(force=True)
            saved = str(path)
        return JSONResponse(
            {
                "dashboard": dump(dashboard),
                "yaml": text,
                "warnings": result.warnings,
                "url": f"/d/{dashboard.uid}/{dashboard.slug}",
                "saved": saved,
            }
        )

    @router.get("/static/wk/{name}", include_in_schema=False)
    async def static_file(name: str, request: Request) -> Response:
        return static.response(name, request)

    # last: /d/<uid>/<slug> would otherwise shadow /d/<uid>/annotations.json and variables.json
    router.add_api_route("/d/{uid}", dashboard_page, methods=["GET"], response_class=HTMLResponse)
    router.add_api_route("/d/{uid}/{slug}", dashboard_page, methods=["GET"], response_class=HTMLResponse)
    router.catalog = catalog  # type: ignore[attr-defined]  # for tests and the app: reload, errors
    return router


def _links(
    dashboard: Dashboard, view: _View, resolved: list[ResolvedVariable], everything: list[Dashboard]
) -> list[dict[str, Any]]:
    out = []
    for link in dashboard.links:
        params: list[tuple[str, str]] = []
        if link.keep_time:
            params += [("from", view.from_), ("to", view.to)]
        if link.include_vars:
            params += [(f"var-{v.name}", s) for v in resolved for s in v.selected]
        query = urlencode(params)
        targets = (
            [(link.title or link.url, link.url)]
            if link.url
            else [
                (d.title, f"/d/{d.uid}/{d.slug}")
                for d in everything
                if d.uid != dashboard.uid and set(link.tags) & set(d.tags)
            ]
        )
        for title, url in targets:
            sep = "&" if "?" in url else "?"
            out.append(
                {
                    "title": title,
                    "url": url + (sep + query if query else ""),
                    "target_blank": link.target_blank,
                }
            )
    return out
