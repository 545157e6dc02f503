"""Grafana dashboard JSON (classic model) to a watchkeeper dashboard, listing what was dropped.

>>> result = convert({"title": "API", "panels": [{"type": "graph", "id": 1, "title": "rps",
...     "gridPos": {"x": 0, "y": 0, "w": 12, "h": 8},
...     "targets": [{"expr": "rate(http_requests_total[5m])", "legendFormat": "{{route}}"}]}]})
>>> result.dashboard.rows[0].panels[0].type, result.warnings
('timeseries', [])

Accepted: the classic model, the same inside a V1 resource (``spec``) or an API envelope
(``{"dashboard": ...}``), and pre-16 ``rows[]`` layouts (``span`` x 2 = width). Rejected: the V2
resource model (``elements`` + ``layout``). Everything not converted is named in ``warnings``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from watchkeeper.dashboards.model import UID_RE, Dashboard, dump, slugify
from watchkeeper.dashboards.units import css_color, normalize_unit
from watchkeeper.errors import ConfigError

PANEL_TYPES = {
    "timeseries": "timeseries",
    "graph": "timeseries",
    "barchart": "timeseries",
    "trend": "timeseries",
    "stat": "stat",
    "singlestat": "stat",
    "gauge": "gauge",
    "bargauge": "bargauge",
    "table": "table",
    "table-old": "table",
    "heatmap": "heatmap",
    "text": "text",
}
REDUCERS = {
    "lastNotNull": "last",
    "last": "last",
    "firstNotNull": "first",
    "first": "first",
    "mean": "mean",
    "max": "max",
    "min": "min",
    "sum": "sum",
    "count": "count",
    "avg": "mean",
    "current": "last",
    "total": "sum",
}
_PANEL_IGNORED = ("transformations", "repeat", "libraryPanel", "timeFrom", "timeShift", "maxDataPoints")


class GrafanaImportError(ConfigError):
    """The JSON is not a Grafana dashboard we can convert."""


@dataclass
class ImportResult:
    dashboard: Dashboard
    warnings: list[str] = field(default_factory=list)

    def to_yaml(self) -> str:
        return to_yaml(self.dashboard)


def to_yaml(dashboard: Dashboard) -> str:
    return yaml.safe_dump(dump(dashboard), sort_keys=False, allow_unicode=True, width=110)


def _unwrap(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise GrafanaImportError("a Grafana dashboard must be a JSON object")
    api_version = str(data.get("apiVersion", ""))
    if api_version.startswith("dashboard.grafana.app/"):
        spec = data.get("spec")
        if not isinstance(spec, dict) or "elements" in spec or api_version.split("/")[-1].startswith("v2"):
            raise GrafanaImportError(
                "the V2 dashboard resource model (elements + layout) is not supported; "
                "export the dashboard with the classic JSON model"
            )
        return spec
    if isinstance(data.get("dashboard"), dict) and "panels" not in data and "rows" not in data:
        return dict(data["dashboard"])
    return data


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


class _Converter:
    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.next_id = 1
        self.used_ids: set[int] = set()

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    # --- dashboard ------------------------------------------------------------------------------
    def dashboard(self, g: dict[str, Any]) -> dict[str, Any]:
        title = _text(g.get("title")).strip() or "Imported dashboard"
        uid = _text(g.get("uid"))
        clean = re.sub(r"[^a-z0-9-]+", "-", uid.lower()).strip("-")[:40]
        if not UID_RE.match(clean):
            clean = slugify(title)[:40].strip("-") or "imported"
        if uid and clean != uid:
            self.warn(f"uid {uid!r} changed to {clean!r} (uids are [a-z0-9-], at most 40 characters)")
        out: dict[str, Any] = {"uid": clean, "title": title}
        if g.get("description"):
            out["description"] = _text(g["description"])
        tags = [t for t in g.get("tags") or [] if isinstance(t, str)]
        if tags:
            out["tags"] = tags
        time = g.get("time")
        if isinstance(time, dict) and time.get("from") and time.get("to"):
            out["time"] = {"from": str(time["from"]), "to": str(time["to"])}
        refresh = g.get("refresh")
        if isinstance(refresh, str) and refresh and re.fullmatch(r"(\d+[smhdwy])+", refresh):
            out["refresh"] = refresh
        elif refresh not in (None, False, ""):
            self.warn(f"refresh {refresh!r} not understood; auto-refresh is off")
        if g.get("timezone") == "utc":
            out["timezone"] = "utc"
        tooltip = g.get("graphTooltip")
        out["graph_tooltip"] = {0: "none", 1: "crosshair", 2: "tooltip"}.get(
            tooltip if isinstance(tooltip, int) else 0, "none"
        )
        templating = g.get("templating")
        variables = [
            v
            for v in (
                self.variable(item)
                for item in (templating.get("list") or [] if isinstance(templating, dict) else [])
            )
            if v
        ]
        if variables:
            out["variables"] = variables
        annotations = g.get("annotations")
        anns = [
            a
            for a in (
                self.annotation(item)
                for item in (annotations.get("list") or [] if isinstance(annotations, dict) else [])
            )
            if a
        ]
        if anns:
            out["annotations"] = anns
        links = [lk for lk in (self.link(item) for item in g.get("links") or []) if lk]
        if links:
            out["links"] = links
        if "panels" in g:
            out["rows"] = self.rows_from_panels(g.get("panels") or [])
        elif "rows" in g:
            out["rows"] = self.legacy_rows(g.get("rows") or [])
        else:
            out["rows"] = []
        if g.get("__requires") or g.get("__inputs"):
            for req in g.get("__requires") or []:
                if (
                    isinstance(req, dict)
                    and req.get("type") == "datasource"
                    and req.get("id") != "prometheus"
                ):
                    self.warn(f"requires data source {req.get('id')!r}: its queries are not imported")
        return out

    # --- layout ---------------------------------------------------------------------------------
    def rows_from_panels(self, panels: list[Any]) -> list[dict[str, Any]]:
        # reserve the ids already given so converted panels keep theirs
        for p in self._walk(panels):
            if isinstance(p.get("id"), int) and p.get("type") != "row":
                self.used_ids.add(p["id"])
        rows: list[dict[str, Any]] = []
        current: dict[str, Any] = {"title": "", "panels": []}
        members: list[dict[str, Any]] = []

        def close() -> None:
            members.sort(key=lambda p: (_grid(p)[1], _grid(p)[0]))
            current["panels"] = [c for c in (self.panel(p) for p in members) if c]
            if current["panels"] or current["title"]:
                rows.append(dict(current))

        ordered = sorted((p for p in panels if isinstance(p, dict)), key=lambda p: (_grid(p)[1], _grid(p)[0]))
        for p in ordered:
            if p.get("type") == "row":
                close()
                members = []
                current = {"title": _text(p.get("title")), "panels": []}
                if p.get("collapsed"):
                    current["collapsed"] = True
                    members.extend(c for c in p.get("panels") or [] if isinstance(c, dict))
                if p.get("repeat"):
                    self.warn(f"row {p.get('title')!r}: repeat is not supported (shown once)")
            else:
                members.append(p)
        close()
        return rows

    def _walk(self, panels: list[Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for p in panels:
            if isinstance(p, dict):
                out.append(p)
                out.extend(self._walk(p.get("panels") or []))
        return out

    def legacy_rows(self, rows: list[Any]) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            if not isinstance(row, dict):
                continue
            height = row.get("height", "250px")
            try:
                h = max(1, math.ceil(float(str(height).removesuffix("px")) / 30))
            except ValueError:
                h = 8
            panels = []
            for p in row.get("panels") or []:
                if isinstance(p, dict):
                    span = p.get("span", 12)
                    p = {**p, "gridPos": {"x": 0, "y": 0, "w": min(24, max(1, int(span * 2))), "h": h}}
                    converted = self.panel(p)
                    if converted:
                        panels.append(converted)
            entry: dict[str, Any] = {
                "title": _text(row.get("title")) if row.get("showTitle") else "",
                "panels": panels,
            }
            if row.get("collapse"):
                entry["collapsed"] = True
            out.append(entry)
        return out

    # --- panels ---------------------------------------------------------------------------------
    def _panel_id(self, given: Any) -> int:
        if isinstance(given, int) and given >= 1:
            return given
        while self.next_id in self.used_ids:
            self.next_id += 1
        self.used_ids.add(self.next_id)
        return self.next_id

    def panel(self, p: dict[str, Any]) -> dict[str, Any] | None:
        gtype = _text(p.get("type"))
        title = _text(p.get("title"))
        name = f"panel {title!r}" if title else f"panel {p.get('id')}"
        ptype = PANEL_TYPES.get(gtype)
        if ptype is None:
            self.warn(f"{name}: panel type {gtype!r} is not supported (skipped)")
            return None
        out: dict[str, Any] = {"id": self._panel_id(p.get("id")), "type": ptype}
        if title:
            out["title"] = title
        if p.get("description"):
            out["description"] = _text(p["description"])
        w, h = _grid(p)[2:]
        out["grid"] = {"w": w, "h": h}
        for key in _PANEL_IGNORED:
            if p.get(key):
                self.warn(f"{name}: {key} is not supported (ignored)")
        if ptype == "text":
            options = _dict(p.get("options"))
            content = _text(options.get("content")) or _text(p.get("content"))
            mode = options.get("mode") or p.get("mode") or "markdown"
            if mode == "html":
                self.warn(f"{name}: HTML text is shown as Markdown (HTML is escaped)")
            out["content"] = content
            return out
        queries = self.targets(p, name)
        if not queries:
            self.warn(f"{name}: no Prometheus queries (skipped)")
            return None
        out["queries"] = queries
        if p.get("interval"):
            interval = str(p["interval"]).lstrip(">")
            if re.fullmatch(r"(\d+(ms|[smhdwy]))+", interval):
                out["min_interval"] = interval
        self.field_config(p, out, name)
        if gtype == "graph":
            self.legacy_graph(p, out, name)
        elif gtype == "singlestat":
            self.legacy_singlestat(p, out, name)
        elif gtype == "barchart":
            out["style"] = "bars"
        self.options(p, out)
        return out

    def targets(self, p: dict[str, Any], name: str) -> list[dict[str, Any]]:
        panel_ds = p.get("datasource")
        queries = []
        for t in p.get("targets") or []:
            if not isinstance(t, dict):
                continue
            ds = t.get("datasource", panel_ds)
            if not _is_prometheus(ds):
                self.warn(f"{name}: a query of data source {_ds_name(ds)!r} is not Prometheus (skipped)")
                continue
            expr = _text(t.get("expr")).strip()
            if not expr:
                continue
            q: dict[str, Any] = {"expr": expr}
            legend = _text(t.get("legendFormat"))
            if legend and legend != "__auto":
                q["legend"] = legend
            if t.get("refId"):
                q["ref"] = str(t["refId"])
            if t.get("instant") and not t.get("range"):
                q["instant"] = True
            elif t.get("instant") and t.get("range"):
                self.warn(f"{name}: query {t.get('refId', '')} asks for instant and range; range is used")
            fmt = t.get("format")
            if fmt in ("table", "heatmap"):
                q["format"] = fmt
            if t.get("hide"):
                q["hide"] = True
            if t.get("interval"):
                interval = str(t["interval"]).lstrip(">")
                if re.fullmatch(r"(\d+(ms|[smhdwy]))+", interval):
                    p.setdefault("interval", interval)
            queries.append(q)
        return queries

    def field_config(self, p: dict[str, Any], out: dict[str, Any], name: str) -> None:
        fc = p.get("fieldConfig")
        if not isinstance(fc, dict):
            return
        d = _dict(fc.get("defaults"))
        self.unit(d.get("unit"), out, name)
        if isinstance(d.get("decimals"), int):
            out["decimals"] = max(0, min(10, d["decimals"]))
        for key in ("min", "max"):
            if isinstance(d.get(key), int | float):
                out[key] = d[key]
        thresholds = self.thresholds(d.get("thresholds"))
        if thresholds:
            out["thresholds"] = thresholds
        custom = _dict(d.get("custom"))
        draw = custom.get("drawStyle")
        if draw == "bars":
            out["style"] = "bars"
        elif draw == "points":
            out["style"] = "points"
        elif isinstance(custom.get("fillOpacity"), int | float) and custom["fillOpacity"] > 0:
            out["style"] = "area"
        stacking = custom.get("stacking")
        if isinstance(stacking, dict) and stacking.get("mode") in ("normal", "percent"):
            out["stack"] = True
            if stacking["mode"] == "percent":
                self.warn(f"{name}: percent stacking is drawn as normal stacking")
        style = custom.get("thresholdsStyle")
        if isinstance(style, dict) and str(style.get("mode", "off")) != "off" and "thresholds" in out:
            out["thresholds"] = {**out["thresholds"], "show": True}
        if d.get("mappings"):
            self.warn(f"{name}: value mappings are not supported (ignored)")
        if d.get("links"):
            self.warn(f"{name}: data links are not supported (ignored)")
        if fc.get("overrides"):
            self.warn(f"{name}: field overrides are not supported (ignored)")

    def unit(self, unit: Any, out: dict[str, Any], name: str) -> None:
        if not isinstance(unit, str) or not unit:
            return
        ours = normalize_unit(unit)
        if ours is None:
            self.warn(f"{name}: unit {unit!r} is not known; shown as a plain number")
        elif ours != "short":
            out["unit"] = ours

    def thresholds(self, t: Any) -> dict[str, Any] | None:
        if not isinstance(t, dict) or not isinstance(t.get("steps"), list):
            return None
        steps: list[dict[str, Any]] = []
        for s in t["steps"]:
            if isinstance(s, dict) and isinstance(s.get("color"), str):
                value = s.get("value")
                steps.append(
                    {
                        "color": css_color(s["color"]),
                        "value": float(value) if isinstance(value, int | float) else None,
                    }
                )
        if not steps:
            return None
        steps = [
            steps[0],
            *sorted((s for s in steps[1:] if s["value"] is not None), key=lambda s: s["value"]),
        ]
        out: dict[str, Any] = {"steps": steps}
        if t.get("mode") == "percentage":
            out["mode"] = "percentage"
        return out

    def options(self, p: dict[str, Any], out: dict[str, Any]) -> None:
        options = _dict(p.get("options"))
        reduce = _dict(options.get("reduceOptions"))
        calcs = reduce.get("calcs") or []
        if calcs and isinstance(calcs[0], str) and calcs[0] in REDUCERS:
            out["reduce"] = REDUCERS[calcs[0]]
        legend = _dict(options.get("legend"))
        if legend.get("showLegend") is False or legend.get("displayMode") == "hidden":
            out["legend"] = {"show": False}
        elif legend.get("placement") == "right":
            out["legend"] = {"placement": "right"}
        if options.get("graphMode") == "none" and out["type"] == "stat":
            out["sparkline"] = False

    def legacy_graph(self, p: dict[str, Any], out: dict[str, Any], name: str) -> None:
        yaxes = p.get("yaxes")
        if isinstance(yaxes, list) and yaxes and isinstance(yaxes[0], dict):
            self.unit(yaxes[0].get("format"), out, name)
            for key in ("min", "max"):
                try:
                    if yaxes[0].get(key) is not None:
                        out[key] = float(yaxes[0][key])
                except (TypeError, ValueError):
                    pass
        if p.get("bars") and not p.get("lines", True):
            out["style"] = "bars"
        elif p.get("fill"):
            out["style"] = "area"
        if p.get("stack"):
            out["stack"] = True
        legend = p.get("legend")
        if isinstance(legend, dict) and legend.get("show") is False:
            out["legend"] = {"show": False}
        if p.get("seriesOverrides"):
            self.warn(f"{name}: series overrides are not supported (ignored)")

    def legacy_singlestat(self, p: dict[str, Any], out: dict[str, Any], name: str) -> None:
        self.unit(p.get("format"), out, name)
        values = [v.strip() for v in str(p.get("thresholds") or "").split(",") if v.strip()]
        colors = [c for c in p.get("colors") or [] if isinstance(c, str)]
        if values and len(colors) >= len(values) + 1:
            try:
                steps = [{"color": colors[0], "value": None}] + [
                    {"color": c, "value": float(v)} for c, v in zip(colors[1:], values, strict=False)
                ]
                out["thresholds"] = {"steps": steps}
            except ValueError:
                self.warn(f"{name}: thresholds {p.get('thresholds')!r} not understood")
        sparkline = p.get("sparkline")
        out["sparkline"] = bool(isinstance(sparkline, dict) and sparkline.get("show"))
        stat = p.get("valueName")
        if isinstance(stat, str) and stat in REDUCERS:
            out["reduce"] = REDUCERS[stat]

    # --- variables, annotations, links ---------------------------------------------------------
    def variable(self, v: Any) -> dict[str, Any] | None:
        if not isinstance(v, dict) or not v.get("name"):
            return None
        vtype, vname = v.get("type"), str(v["name"])
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", vname) or vname.startswith("__"):
            self.warn(f"variable {vname!r}: not an identifier (skipped)")
            return None
        out: dict[str, Any] = {"name": vname}
        if v.get("label"):
            out["label"] = str(v["label"])
        if v.get("hide") == 2:
            out["hide"] = True
        current = _dict(v.get("current"))
        cur = current.get("value")
        default = [str(c) for c in (cur if isinstance(cur, list) else [cur] if cur else [])]
        default = ["$__all" if c == "$__all" else c for c in default]
        if vtype == "query":
            query = v.get("query")
            text = query.get("query") if isinstance(query, dict) else query
            text = _text(text) or _text(v.get("definition"))
            if not text:
                self.warn(f"variable {vname!r}: empty query (skipped)")
                return None
            if not _is_prometheus(v.get("datasource")):
                self.warn(
                    f"variable {vname!r}: data source {_ds_name(v.get('datasource'))!r} is not "
                    "Prometheus (skipped)"
                )
                return None
            out.update(type="query", query=text)
            if v.get("regex"):
                out["regex"] = str(v["regex"])
            self._multi(v, out)
            if v.get("sort") in (3, 4, 7, 8):
                out["sort"] = "numeric"
            elif v.get("sort") == 0:
                out["sort"] = "none"
        elif vtype in ("custom", "interval"):
            raw = _text(v.get("query"))
            options = [o.strip() for o in re.split(r"(?<!\\),", raw) if o.strip()]
            options = [o.split(" : ")[-1] for o in options]
            if not options:
                options = [str(o.get("value")) for o in v.get("options") or [] if isinstance(o, dict)]
            if not options:
                self.warn(f"variable {vname!r}: no options (skipped)")
                return None
            out.update(type=vtype, options=[o for o in options if o != "$__auto_interval"] or options)
            if vtype == "custom":
                self._multi(v, out)
            elif not all(re.fullmatch(r"(\d+(ms|[smhdwy]))+", o) for o in out["options"]):
                self.warn(f"variable {vname!r}: interval options {raw!r} not understood (skipped)")
                return None
        elif vtype in ("constant", "textbox"):
            out.update(type=vtype, value=_text(v.get("query")))
            return out
        elif vtype == "datasource":
            return None  # watchkeeper is the only data source; "$datasource" refs resolve to it
        else:
            self.warn(f"variable {vname!r}: type {vtype!r} is not supported (skipped)")
            return None
        if (default and default != ["$__all"]) or (default == ["$__all"] and out.get("include_all")):
            out["default"] = default
        return out

    def _multi(self, v: dict[str, Any], out: dict[str, Any]) -> None:
        if v.get("multi"):
            out["multi"] = True
        if v.get("includeAll"):
            out["include_all"] = True
            if v.get("allValue"):
                out["all_value"] = str(v["allValue"])

    def annotation(self, a: Any) -> dict[str, Any] | None:
        if not isinstance(a, dict):
            return None
        name = _text(a.get("name")) or "annotations"
        if a.get("builtIn") == 1:
            return {"name": "Alerts", "source": "alerts", "enabled": a.get("enable", True) is not False}
        expr = _text(a.get("expr")) or _text(
            (a.get("target") or {}).get("expr") if isinstance(a.get("target"), dict) else ""
        )
        if not expr or not _is_prometheus(a.get("datasource")):
            self.warn(f"annotation {name!r}: only Prometheus query annotations are imported (skipped)")
            return None
        out: dict[str, Any] = {"name": name, "expr": expr}
        title = _text(a.get("titleFormat")) or _text(a.get("textFormat"))
        if title:
            out["title"] = title
        if isinstance(a.get("iconColor"), str):
            out["color"] = css_color(a["iconColor"])
        if a.get("enable") is False:
            out["enabled"] = False
        return out

    def link(self, lk: Any) -> dict[str, Any] | None:
        if not isinstance(lk, dict):
            return None
        out: dict[str, Any] = {"title": _text(lk.get("title"))}
        if lk.get("type") == "dashboards":
            out["tags"] = [t for t in lk.get("tags") or [] if isinstance(t, str)]
        else:
            out["url"] = _text(lk.get("url"))
            if out["url"] and not re.match(r"^(https?://|mailto:|/|\?|#|\.)", out["url"], re.IGNORECASE):
                self.warn(f"link {out['title']!r}: url {out['url']!r} is not http(s) or relative (skipped)")
                return None
        if lk.get("keepTime"):
            out["keep_time"] = True
        if lk.get("includeVars"):
            out["include_vars"] = True
        if lk.get("targetBlank"):
            out["target_blank"] = True
        return out


def _grid(p: dict[str, Any]) -> tuple[int, int, int, int]:
    g = _dict(p.get("gridPos"))

    def num(key: str, default: int) -> int:
        v = g.get(key, default)
        return int(v) if isinstance(v, int | float) else default

    return num("x", 0), num("y", 0), max(1, min(24, num("w", 12))), max(1, min(60, num("h", 8)))


def _is_prometheus(ds: Any) -> bool:
    if ds is None or ds == "" or ds == "default":
        return True
    if isinstance(ds, str):
        return ds.startswith("$") or "prometheus" in ds.lower() or ds.startswith("${")
    if isinstance(ds, dict):
        dtype = ds.get("type")
        uid = str(ds.get("uid", ""))
        return (
            dtype in (None, "prometheus")
            or uid.startswith("$")
            or (dtype == "datasource" and uid == "grafana")
        )
    return False


def _ds_name(ds: Any) -> str:
    if isinstance(ds, dict):
        return str(ds.get("type") or ds.get("uid"))
    return str(ds)


def convert(data: Any) -> ImportResult:
    """Convert a Grafana dashboard (parsed JSON) to a :class:`Dashboard` and warnings."""
    g = _unwrap(data)
    converter = _Converter()
    raw = converter.dashboard(g)
    try:
        dashboard = Dashboard.model_validate(raw)
    except ValueError as exc:
        raise GrafanaImportError(f"the converted dashboard is not valid: {exc}") from None
    return ImportResult(dashboard, converter.warnings)
