"""SLO, uptime, status and report pages as one FastAPI router.

>>> state = SloState.load(settings.slo, store=storage, engine=engine, base_dir=config_dir)   # doctest: +SKIP
>>> app.include_router(slo_router(lambda: state))                                           # doctest: +SKIP

Pages: ``/slo?window=30d|28d|month|quarter`` (every SLO, least budget left first),
``/slo/<id>`` (budget over time, burn rates, alert windows), ``/uptime`` (monitors, 24h/7d/30d/90d,
response time, incidents, maintenance), ``/status/<slug>`` (public: components, 90-day bars,
incident history; no URLs, no causes), ``/reports/<name>`` and ``/reports/<name>.csv``.
Internal pages extend the dashboards' ``base.html`` and use its stylesheet and Plotly, served by
the dashboards router under ``/static/wk/``. The router only parses, calls the views, renders.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio.to_thread
import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from watchkeeper.dashboards.router import PLOTLY_FILE, STATIC_DIR
from watchkeeper.dashboards.router import TEMPLATES_DIR as DASHBOARD_TEMPLATES
from watchkeeper.rules.model import RulesConfig, expand_patterns
from watchkeeper.slo.budget import Window
from watchkeeper.slo.config import SloConfig
from watchkeeper.slo.generate import generate, to_yaml
from watchkeeper.slo.reports import SLO_METHOD, UPTIME_METHOD, Report, build_report, to_csv
from watchkeeper.slo.spec import SloSpec, load_spec_files
from watchkeeper.slo.uptime import Summary, calendar_days, daily_bars
from watchkeeper.slo.views import RANGES_DAYS, monitor_view, objective_text, slo_view

TEMPLATES_DIR = Path(__file__).parent / "templates"
WINDOWS = ("30d", "28d", "month", "quarter")


@dataclass
class SloState:
    """What the pages need: config, loaded specs, the store and the engine."""

    config: SloConfig
    store: Any
    engine: Any
    specs: list[SloSpec] = field(default_factory=list)
    clock: Callable[[], float] = time.time

    @classmethod
    def load(
        cls,
        config: SloConfig,
        *,
        store: Any,
        engine: Any,
        base_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> SloState:
        """Load the spec files (:class:`~watchkeeper.slo.spec.SpecError` lists every problem)."""
        specs = load_spec_files(
            expand_patterns(config.spec_files, base_dir), default_period_days=config.default_period_days
        )
        generate(specs)  # reject unreachable alerts at start-up, not at the first page view
        return cls(config, store, engine, specs, clock)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)


def write_rule_files(specs: Sequence[SloSpec], out_dir: Path) -> list[Path]:
    """Write one generated rule file per SLO into ``out_dir`` (stale ones removed) for the rules engine."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in specs:
        path = out_dir / f"{spec.slo_id}.yml"
        text = to_yaml(generate([spec]))
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    for old in out_dir.glob("*.yml"):
        if old not in written:
            old.unlink()
    return written


def load_slo(
    config: SloConfig, rules: RulesConfig, *, store: Any, engine: Any, base_dir: Path | None, rules_dir: Path
) -> tuple[SloState, RulesConfig]:
    """At start-up and on every reload: the specs loaded (the pages' state), their rules written to
    ``rules_dir``, and ``rules`` with those files added, for the rules engine to (re)load.
    An invalid spec raises :class:`~watchkeeper.slo.spec.SpecError` before anything is written."""
    state = SloState.load(config, store=store, engine=engine, base_dir=base_dir)
    files = [str(p) for p in write_rule_files(state.specs, rules_dir)]
    return state, rules.model_copy(update={"rule_files": [*rules.rule_files, *files]})


def _static_url(name: str) -> str:
    path = STATIC_DIR / name
    version = hashlib.sha256(path.read_bytes()).hexdigest()[:10] if path.exists() else "0"
    return f"/static/wk/{name}?v={version}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [jinja2.FileSystemLoader(TEMPLATES_DIR), jinja2.FileSystemLoader(DASHBOARD_TEMPLATES)]
        ),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["static"] = _static_url
    env.globals["plotly_url"] = _static_url(PLOTLY_FILE)
    env.globals["objective"] = objective_text
    return env


def _dur(ms: int | None) -> str:
    if ms is None:
        return ""
    minutes = ms // 60_000
    d, rest = divmod(minutes, 1440)
    h, m = divmod(rest, 60)
    return (f"{d}d " if d else "") + (f"{h}h " if h or d else "") + f"{m}m"


def _day_note(summary: Summary) -> str:
    """What a status bar's figure leaves out: time not observed, planned maintenance."""
    unknown, maintenance = summary.durations_ms.get("unknown", 0), summary.durations_ms.get("maintenance", 0)
    parts = [f"{_dur(unknown)} not observed"] if unknown and summary.counted_ms else []
    parts += [f"{_dur(maintenance)} planned maintenance"] if maintenance else []
    return f" ({'; '.join(parts)}: not counted)" if parts else ""


def slo_router(get_state: Callable[[], SloState]) -> APIRouter:
    """The pages, over the state ``get_state()`` returns (so reloads can swap it)."""
    router = APIRouter()
    env = _environment()

    def render(name: str, **ctx: Any) -> HTMLResponse:
        state = get_state()
        tz = ZoneInfo(state.config.timezone)

        def when(ms: int | None) -> str:
            return (
                "" if ms is None else dt.datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M %Z")
            )

        html = env.get_template(name).render(when=when, dur=_dur, theme=None, kiosk=False, **ctx)
        return HTMLResponse(html)

    def window_of(request: Request, state: SloState) -> Window:
        text = request.query_params.get("window", state.config.budget_window)
        return Window.parse(text if text in WINDOWS else state.config.budget_window, state.config.timezone)

    @router.get("/slo", response_class=HTMLResponse)
    async def slo_list(request: Request) -> HTMLResponse:
        state = get_state()
        window = window_of(request, state)
        now = state.now_ms()
        views = await anyio.to_thread.run_sync(
            lambda: sorted(
                (slo_view(state.store, s, window, now_ms=now) for s in state.specs), key=lambda v: v.risk
            )
        )
        key = window.kind if window.kind != "rolling" else f"{window.days}d"
        return render(
            "slo_list.html",
            title="SLOs",
            nav="/slo",
            views=views,
            window=key,
            windows=WINDOWS,
            window_label=window.label,
            method=SLO_METHOD,
        )

    @router.get("/slo/{slo_id}", response_class=HTMLResponse)
    async def slo_detail(slo_id: str, request: Request) -> Response:
        state = get_state()
        spec = next((s for s in state.specs if s.slo_id == slo_id or s.name == slo_id), None)
        if spec is None:
            return PlainTextResponse(f"no SLO {slo_id}\n", status_code=404)
        window = window_of(request, state)
        now = state.now_ms()

        def work() -> tuple[Any, tuple[list[int], list[float]]]:
            from watchkeeper.slo.views import budget_series

            return slo_view(state.store, spec, window, now_ms=now), budget_series(
                state.store, spec, window, now_ms=now
            )

        view, (bx, by) = await anyio.to_thread.run_sync(work)
        burn = [(w, v) for w, v in view.burn_rates.items() if v is not None]
        return render(
            "slo_detail.html",
            title=spec.slo_id,
            nav="/slo",
            view=view,
            budget_x=bx,
            budget_y=by,
            burn_x=[w for w, _ in burn],
            burn_y=[v for _, v in burn],
            method=SLO_METHOD,
        )

    @router.get("/uptime", response_class=HTMLResponse)
    async def uptime(request: Request) -> HTMLResponse:
        state = get_state()
        now = state.now_ms()
        monitors = await anyio.to_thread.run_sync(
            lambda: [
                monitor_view(state.store, p, maintenance=state.config.maintenance, now_ms=now)
                for p in state.config.probes
            ]
        )
        incidents = sorted(
            ((m.cfg.name, i) for m in monitors for i in m.incidents), key=lambda x: -x[1].start_ms
        )
        maintenance = sorted(
            {(m.cfg.name, a, b, what) for m in monitors for a, b, what in m.maintenance}, key=lambda x: -x[1]
        )
        latency = [{"name": m.cfg.name, "x": m.latency[0], "y": m.latency[1]} for m in monitors]
        return render(
            "uptime.html",
            title="Uptime",
            nav="/uptime",
            monitors=monitors,
            ranges=RANGES_DAYS,
            incidents=incidents[:100],
            maintenance=maintenance[:50],
            latency=latency,
            method=UPTIME_METHOD,
        )

    @router.get("/status/{slug}", response_class=HTMLResponse)
    async def status_page(slug: str) -> Response:
        state = get_state()
        page = next((p for p in state.config.status_pages if p.slug == slug), None)
        if page is None:
            return PlainTextResponse("not found\n", status_code=404)
        now = state.now_ms()
        probes = [p for p in state.config.probes if not page.monitors or p.name in page.monitors]
        views = await anyio.to_thread.run_sync(
            lambda: [
                monitor_view(state.store, p, maintenance=state.config.maintenance, now_ms=now) for p in probes
            ]
        )
        tz = ZoneInfo(state.config.timezone)

        def day(ms: int) -> str:
            return dt.datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d")

        def minute(ms: int) -> str:
            return dt.datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M %Z")

        components, incidents, states = [], [], []
        days = calendar_days(now, 90, state.config.timezone)  # today is the last bar
        for v in views:
            bars = [
                (
                    d,
                    u,
                    f"{day(d)}: " + ("no data" if u is None else f"{u * 100:.2f}%") + _day_note(sm),
                )
                for d, u, sm in daily_bars(v.timeline, days)
            ]
            components.append({"name": v.cfg.display_name, "uptime": v.summaries[90].uptime, "bars": bars})
            states.append(v.state)
            incidents += [
                (v.cfg.display_name, minute(i.start_ms), _dur(i.duration_ms), i.end_ms is None)
                for i in v.incidents
            ]
        overall = (
            "down"
            if "down" in states
            else "degraded"
            if "degraded" in states
            else "unknown"
            if states and all(s == "unknown" for s in states)
            else "up"
        )
        past = sorted(
            {
                (name, minute(a), _dur(min(b, now) - a))
                for v in views
                for a, b, name in v.maintenance
                if a < now
            },
            key=lambda m: m[1],
            reverse=True,
        )
        upcoming = sorted(
            {
                (w.name, minute(a))
                for w in state.config.maintenance
                for a, _ in w.occurrences(now, now + 7 * 86_400_000)
            }
        )
        html = env.get_template("status.html").render(
            page=page,
            components=components,
            overall=overall,
            incidents=incidents[::-1][:50],
            maintenance=upcoming,
            past_maintenance=past[:20],
        )
        return HTMLResponse(html, headers={"Cache-Control": "public, max-age=30"})

    async def built_report(name: str) -> Report | None:
        """The configured report `name`, built now (off the event loop); None when unknown."""
        state = get_state()
        cfg = next((r for r in state.config.reports if r.name == name), None)
        if cfg is None:
            return None
        return await anyio.to_thread.run_sync(
            lambda: build_report(
                cfg,
                store=state.store,
                engine=state.engine,
                specs=state.specs,
                slo=state.config,
                now_ms=state.now_ms(),
            )
        )

    @router.get("/reports/{name}.csv")
    async def report_csv(name: str) -> Response:
        report = await built_report(name)
        if report is None:
            return PlainTextResponse("not found\n", status_code=404)
        return Response(
            to_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )

    @router.get("/reports/{name}", response_class=HTMLResponse)
    async def report_html(name: str) -> Response:
        report = await built_report(name)
        if report is None:
            return PlainTextResponse("not found\n", status_code=404)
        return render("report.html", title=report.title, nav="/reports", report=report)

    return router
