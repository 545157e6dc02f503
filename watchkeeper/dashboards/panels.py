"""Panel data: run a panel's queries and shape the result as the JSON its page draws.

Pure apart from the engine call: ``run_panel(engine, panel, ctx)`` returns ``QueryRun``s and
``panel_json(panel, runs, ctx)`` turns them into a dict (Plotly-ready, values scaled to the panel's
axis unit, long series downsampled to the panel's pixel width). The same runs give the CSV.

>>> ctx = QueryContext(Range(0, 3_600_000), width_px=600, scrape_interval_ms=15_000, variables={})
>>> ctx.builtins(30_000)["__rate_interval"]
'1m'
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import math
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from watchkeeper.dashboards.downsample import minmax_downsample
from watchkeeper.dashboards.model import Annotation, Panel, Thresholds
from watchkeeper.dashboards.providers import AlertTransitionView, AlertView
from watchkeeper.dashboards.templating import VarValue, interpolate, series_name
from watchkeeper.dashboards.timerange import Range, pick_step_ms
from watchkeeper.dashboards.units import axis_scale, css_color, format_value
from watchkeeper.durations import format_duration, parse_duration
from watchkeeper.errors import WatchkeeperError
from watchkeeper.labels import Labels, format_labels
from watchkeeper.promql.values import QueryResult, ResultSeries

F64 = np.ndarray[Any, np.dtype[np.float64]]


class QueryEngine(Protocol):
    def instant(self, query: str, time_ms: int) -> QueryResult: ...

    def range(self, query: str, start_ms: int, end_ms: int, step_ms: int) -> QueryResult: ...


@dataclass(frozen=True, slots=True)
class QueryContext:
    """Everything a query depends on besides the panel: range, pixel width, variable values."""

    range: Range
    width_px: int
    scrape_interval_ms: int
    variables: Mapping[str, VarValue]

    def builtins(self, step_ms: int) -> dict[str, str]:
        rate_ms = max(step_ms + self.scrape_interval_ms, 4 * self.scrape_interval_ms)
        range_ms = self.range.duration_ms
        return {
            "__interval": format_duration(step_ms),
            "__interval_ms": str(step_ms),
            "__rate_interval": format_duration(rate_ms),
            "__rate_interval_ms": str(rate_ms),
            "__range": format_duration(range_ms),
            "__range_s": str(range_ms // 1000),
            "__range_ms": str(range_ms),
        }

    def step_ms(self, panel: Panel) -> int:
        min_step = self.scrape_interval_ms
        if panel.min_interval:
            with contextlib.suppress(ValueError):  # a bad $variable value: keep the scrape interval
                min_step = parse_duration(interpolate(panel.min_interval, self.variables))
        return pick_step_ms(self.range.duration_ms, width_px=self.width_px, min_step_ms=min_step)


@dataclass
class QueryRun:
    """One query of a panel as it ran (the query inspector shows these)."""

    ref: str
    legend: str
    expr: str
    instant: bool
    format: str
    step_ms: int
    duration_ms: float = 0.0
    cpu_ms: float = 0.0
    """CPU time of the evaluating thread (wall time on a busy machine includes waiting for a core)."""
    series: list[ResultSeries] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


def run_expr(
    engine: QueryEngine,
    expr: str,
    ctx: QueryContext,
    step_ms: int,
    *,
    instant: bool = False,
    ref: str = "A",
    legend: str = "",
    fmt: str = "time_series",
) -> QueryRun:
    run = QueryRun(ref, legend, expr, instant, fmt, step_ms)
    started, cpu_started = time.perf_counter(), time.thread_time()
    try:
        if instant:
            result = engine.instant(expr, ctx.range.end_ms)
        else:
            start = (
                ctx.range.start_ms - ctx.range.start_ms % step_ms
            )  # aligned steps: stable points on refresh
            result = engine.range(expr, start, ctx.range.end_ms, step_ms)
        run.series = list(result.series) if result.result_type in ("vector", "matrix", "scalar") else []
        run.warnings = list(result.warnings)
    except (WatchkeeperError, ValueError) as exc:
        run.error = str(exc)
    run.duration_ms = (time.perf_counter() - started) * 1000
    run.cpu_ms = (time.thread_time() - cpu_started) * 1000
    return run


def run_panel(engine: QueryEngine, panel: Panel, ctx: QueryContext) -> list[QueryRun]:
    step = ctx.step_ms(panel)
    builtins = ctx.builtins(step)
    jobs = []
    for i, q in enumerate(panel.queries):
        if q.hide:
            continue
        expr = interpolate(q.expr, ctx.variables, builtins)
        instant = q.instant or (panel.type == "table" and q.format == "table")
        jobs.append(
            functools.partial(
                run_expr,
                engine,
                expr,
                ctx,
                step,
                instant=instant,
                ref=q.ref or chr(65 + i % 26),
                legend=q.legend,
                fmt=q.format,
            )
        )
    if len(jobs) <= 1:
        return [job() for job in jobs]
    # the engine's NumPy kernels release the GIL: a panel's queries overlap on several cores
    with ThreadPoolExecutor(max_workers=min(len(jobs), 4), thread_name_prefix="panel-query") as pool:
        return list(pool.map(lambda job: job(), jobs))


# --- reductions and colours ----------------------------------------------------------------------


def reduce_values(values: F64, how: str) -> float | None:
    finite = values[~np.isnan(values)]
    if how == "count":
        return float(len(finite))
    if not len(finite):
        return None
    if how == "last":
        return float(finite[-1])
    if how == "first":
        return float(finite[0])
    if how == "mean":
        return float(finite.mean())
    if how == "max":
        return float(finite.max())
    if how == "min":
        return float(finite.min())
    return float(finite.sum())


def threshold_color(
    value: float | None, thresholds: Thresholds, lo: float | None = None, hi: float | None = None
) -> str | None:
    """The colour of the highest step at or below ``value`` (percentage mode: of min..max)."""
    if value is None or not thresholds.steps:
        return None
    v = value
    if thresholds.mode == "percentage":
        lo_, hi_ = lo if lo is not None else 0.0, hi if hi is not None else 100.0
        v = (value - lo_) / (hi_ - lo_) * 100 if hi_ != lo_ else 0.0
    color = thresholds.steps[0].color
    for step in thresholds.steps:
        if step.value is None or v >= step.value:
            color = step.color
    return css_color(color)


def _json_floats(values: F64) -> list[float | None]:
    return [None if not math.isfinite(v) else v for v in values.tolist()]


# --- shaping -------------------------------------------------------------------------------------


def _named(runs: Sequence[QueryRun]) -> list[tuple[str, Labels, ResultSeries, QueryRun]]:
    out = []
    for run in runs:
        for s in run.series:
            out.append((series_name(run.legend, s.labels), s.labels, s, run))
    return out


def _timeseries(panel: Panel, runs: Sequence[QueryRun], ctx: QueryContext) -> dict[str, Any]:
    named = _named(runs)
    max_abs = 0.0
    for _, _, s, _ in named:
        finite = np.abs(s.values[np.isfinite(s.values)])
        if len(finite):
            max_abs = max(max_abs, float(finite.max()))
    scale = axis_scale(panel.unit, max_abs)
    series = []
    for name, labels, s, run in named:
        x = s.timestamps_ms.astype(np.float64)
        y = s.values.astype(np.float64)
        x, y = minmax_downsample(x, y, max(ctx.width_px // 2, 1))
        series.append(
            {
                "name": name,
                "labels": dict(labels),
                "ref": run.ref,
                "x": [int(t) for t in x.tolist()],
                "y": _json_floats(y * scale.factor),
            }
        )
    out: dict[str, Any] = {
        "series": series,
        "style": panel.style,
        "stack": panel.stack,
        "legend": {"show": panel.legend.show, "placement": panel.legend.placement},
        "min": panel.min,
        "max": panel.max,
        "axis": {"suffix": scale.suffix, "tickformat": scale.tickformat, "factor": scale.factor},
    }
    if panel.thresholds.show:
        out["threshold_lines"] = [
            {"value": st.value * scale.factor, "color": css_color(st.color)}
            for st in panel.thresholds.steps
            if st.value is not None
        ]
    return out


def _reduced(panel: Panel, runs: Sequence[QueryRun]) -> dict[str, Any]:
    values = []
    for name, labels, s, _ in _named(runs):
        v = reduce_values(s.values, panel.reduce)
        entry: dict[str, Any] = {
            "name": name,
            "labels": dict(labels),
            "value": v,
            "text": format_value(v, panel.unit, panel.decimals),
            "color": threshold_color(v, panel.thresholds, panel.min, panel.max),
        }
        if panel.type == "stat" and panel.sparkline and len(s.values) > 1:
            x, y = minmax_downsample(s.timestamps_ms.astype(np.float64), s.values.astype(np.float64), 100)
            entry["spark"] = {"x": [int(t) for t in x.tolist()], "y": _json_floats(y)}
        values.append(entry)
    lo = panel.min if panel.min is not None else 0.0
    hi = panel.max
    if hi is None:
        hi = 1.0 if panel.unit == "percentunit" else 100.0 if panel.unit == "percent" else None
    if hi is None:
        finite = [v["value"] for v in values if v["value"] is not None]
        hi = max(finite, default=1.0) * 1.2 or 1.0
    steps = [{"value": st.value, "color": css_color(st.color)} for st in panel.thresholds.steps]
    return {"values": values, "min": lo, "max": hi, "steps": steps}


def _table(panel: Panel, runs: Sequence[QueryRun]) -> dict[str, Any]:
    named = _named(runs)
    label_names = sorted({k for _, labels, _, _ in named for k, _ in labels if k != "__name__"})
    if any(dict(labels).get("__name__") for _, labels, _, _ in named):
        label_names = ["__name__", *label_names]
    refs = sorted({run.ref for run in runs})
    value_cols = [f"Value #{r}" if len(refs) > 1 else "Value" for r in refs]
    rows: dict[Labels, dict[str, Any]] = {}
    for _, labels, s, run in named:
        row = rows.setdefault(labels, {"labels": dict(labels), "values": {}})
        row["values"][run.ref] = reduce_values(s.values, "last")
    table_rows = []
    for row in rows.values():
        cells: list[Any] = [row["labels"].get(n, "") for n in label_names]
        for ref in refs:
            v = row["values"].get(ref)
            cells.append(
                {
                    "value": v,
                    "text": format_value(v, panel.unit, panel.decimals),
                    "color": threshold_color(v, panel.thresholds, panel.min, panel.max),
                }
            )
        table_rows.append(cells)
    return {"columns": [*label_names, *value_cols], "rows": table_rows}


def _le(labels: Labels) -> float | None:
    le = dict(labels).get("le")
    if le is None:
        return None
    try:
        return float(le)
    except ValueError:
        return None


def _heatmap(panel: Panel, runs: Sequence[QueryRun]) -> dict[str, Any]:
    buckets: dict[float, ResultSeries] = {}
    for run in runs:
        for s in run.series:
            le = _le(s.labels)
            if le is not None and le not in buckets:
                buckets[le] = s
    if not buckets:
        return {"heatmap": None}
    bounds = sorted(buckets)
    times = np.unique(np.concatenate([buckets[b].timestamps_ms for b in bounds]))
    grid = np.full((len(bounds), len(times)), np.nan)
    for i, b in enumerate(bounds):
        s = buckets[b]
        grid[i, np.searchsorted(times, s.timestamps_ms)] = s.values
    counts = np.diff(np.nan_to_num(grid), axis=0, prepend=0.0).clip(min=0.0)
    counts[np.isnan(grid)] = np.nan
    labels = [format_value(b, panel.unit) if math.isfinite(b) else "+Inf" for b in bounds]
    return {
        "heatmap": {
            "x": [int(t) for t in times.tolist()],
            "y": labels,
            "z": [_json_floats(row) for row in counts],
        }
    }


def panel_json(panel: Panel, runs: Sequence[QueryRun], ctx: QueryContext) -> dict[str, Any]:
    """The JSON a panel draws from; see the module docstring."""
    step = ctx.step_ms(panel)
    out: dict[str, Any] = {
        "id": panel.id,
        "type": panel.type,
        "title": interpolate(panel.title, ctx.variables),
        "unit": panel.unit,
        "start_ms": ctx.range.start_ms,
        "end_ms": ctx.range.end_ms,
        "step_ms": step,
        "queries": [
            {
                "ref": r.ref,
                "expr": r.expr,
                "instant": r.instant,
                "step_ms": r.step_ms,
                "duration_ms": round(r.duration_ms, 2),
                "cpu_ms": round(r.cpu_ms, 2),
                "series": len(r.series),
                "points": int(sum(len(s.values) for s in r.series)),
                "warnings": r.warnings,
                "error": r.error,
            }
            for r in runs
        ],
        "errors": [f"{r.ref}: {r.error}" for r in runs if r.error],
    }
    if panel.type == "timeseries":
        out.update(_timeseries(panel, runs, ctx))
    elif panel.type in ("stat", "gauge", "bargauge"):
        out.update(_reduced(panel, runs))
    elif panel.type == "table":
        out.update(_table(panel, runs))
    elif panel.type == "heatmap":
        out.update(_heatmap(panel, runs))
    return out


def panel_csv(panel: Panel, runs: Sequence[QueryRun]) -> str:
    """CSV of the panel's data: a table panel's rows, or one column per series by time."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if panel.type == "table":
        table = _table(panel, runs)
        writer.writerow(table["columns"])
        for row in table["rows"]:
            writer.writerow([c["value"] if isinstance(c, dict) else c for c in row])
        return buf.getvalue()
    named = _named(runs)
    times = sorted({int(t) for _, _, s, _ in named for t in s.timestamps_ms.tolist()})
    index = {t: i for i, t in enumerate(times)}
    columns = [[""] * len(times) for _ in named]
    for col, (_, _, s, _) in zip(columns, named, strict=True):
        for t, v in zip(s.timestamps_ms.tolist(), s.values.tolist(), strict=True):
            col[index[int(t)]] = repr(v) if math.isfinite(v) else ""
    writer.writerow(["time", *[n for n, _, _, _ in named]])
    for i, t in enumerate(times):
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t / 1000)) + f".{t % 1000:03d}Z"
        writer.writerow([iso, *[c[i] for c in columns]])
    return buf.getvalue()


# --- annotations ---------------------------------------------------------------------------------


def query_annotation_regions(run: QueryRun, annotation: Annotation) -> list[dict[str, Any]]:
    """Regions where an annotation query is non-zero: consecutive steps merge into one region."""
    regions = []
    for s in run.series:
        active = np.isfinite(s.values) & (s.values != 0)
        if not active.any():
            continue
        edges = np.diff(np.r_[0, active.astype(np.int8), 0])
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
        text = series_name(annotation.title, s.labels) if annotation.title else annotation.name
        for a, b in zip(starts, ends, strict=True):
            regions.append(
                {
                    "start_ms": int(s.timestamps_ms[a]),
                    "end_ms": int(s.timestamps_ms[b]),
                    "text": text,
                    "color": css_color(annotation.color),
                    "source": annotation.name,
                }
            )
    return regions


def alert_annotation_regions(
    alerts: Sequence[AlertView],
    history: Sequence[AlertTransitionView],
    rng: Range,
    annotation: Annotation,
) -> list[dict[str, Any]]:
    """Regions where alerts fired within ``rng``: each entry into ``firing`` in the history until
    the transition out of it, and the alerts firing now until the end of the range. A firing that
    began before the oldest transition read starts at the range's start; an alert firing now with no
    transition read starts when it became active."""

    def key(name: str, labels: Labels) -> tuple[str, Labels]:
        return name, tuple(p for p in labels if p[0] != "alertname")

    fired: dict[tuple[str, Labels], int] = {}
    spans: list[tuple[tuple[str, Labels], int, int]] = []
    for t in sorted(history, key=lambda t: t.at_ms):
        k = key(t.name, t.labels)
        if t.to_state == "firing":
            fired.setdefault(k, t.at_ms)
        elif t.from_state == "firing":
            spans.append((k, fired.pop(k, rng.start_ms), t.at_ms))
    for a in alerts:
        if a.state == "firing":
            k = key(a.name, a.labels)
            spans.append((k, fired.pop(k, a.active_at_ms), rng.end_ms))
    spans.extend((k, start, rng.end_ms) for k, start in fired.items())  # no end read: still firing
    return [
        {
            "start_ms": max(start, rng.start_ms),
            "end_ms": min(end, rng.end_ms),
            "text": f"{name} {format_labels(labels)}" if labels else name,
            "color": css_color(annotation.color),
            "source": annotation.name,
        }
        for (name, labels), start, end in spans
        if start <= rng.end_ms and end >= rng.start_ms
    ]
