"""The dashboard model: one YAML file per dashboard, validated with pydantic.

```yaml
uid: service-overview
title: Service overview
tags: [sdk, red]
time: {from: now-6h, to: now}
refresh: 30s
variables:
  - {name: route, type: query, query: 'label_values(http_requests_total, route)', multi: true}
rows:
  - title: Traffic
    panels:
      - title: Requests per second
        type: timeseries
        unit: reqps
        grid: {w: 12, h: 8}
        queries:
          - expr: sum by (route) (rate(http_requests_total{route=~"$route"}[$__rate_interval]))
            legend: "{{route}}"
```

>>> Dashboard.model_validate({"uid": "x", "title": "X", "rows": []}).time.from_
'now-6h'

Unknown keys are errors (a typo must not silently drop a setting). Panel ids are unique within a
dashboard; panels without one are numbered after the highest given id.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from watchkeeper.dashboards.units import is_known_unit
from watchkeeper.durations import parse_duration

UID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
VAR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

PanelType = Literal["timeseries", "stat", "gauge", "bargauge", "table", "heatmap", "text"]
Reducer = Literal["last", "first", "mean", "max", "min", "sum", "count"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _duration(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    parse_duration(value)
    return value


class TimeRange(_Model):
    from_: str = Field(default="now-6h", alias="from")
    to: str = "now"


class ThresholdStep(_Model):
    color: str
    value: float | None = None
    """None is the base step (below every other)."""


class Thresholds(_Model):
    mode: Literal["absolute", "percentage"] = "absolute"
    steps: list[ThresholdStep] = Field(default_factory=list)
    show: bool = False
    """Draw the steps as dashed lines on time series panels."""

    @field_validator("steps")
    @classmethod
    def _ordered(cls, steps: list[ThresholdStep]) -> list[ThresholdStep]:
        values = [s.value for s in steps if s.value is not None]
        if values != sorted(values):
            raise ValueError("threshold steps must be in increasing order of value")
        return steps


class Query(_Model):
    expr: str = Field(min_length=1)
    legend: str = ""
    """``{{label}}`` templates; empty means the series' labels (Grafana's ``__auto``)."""
    ref: str = ""
    instant: bool = False
    format: Literal["time_series", "table", "heatmap"] = "time_series"
    hide: bool = False


class Grid(_Model):
    w: int = Field(default=12, ge=1, le=24)
    """Width in 24ths of the row."""
    h: int = Field(default=8, ge=1, le=60)
    """Height in units of 30 px (Grafana's grid unit)."""


class Legend(_Model):
    show: bool = True
    placement: Literal["bottom", "right"] = "bottom"


class Panel(_Model):
    id: int | None = Field(default=None, ge=1)
    type: PanelType = "timeseries"
    title: str = ""
    description: str = ""
    grid: Grid = Grid()
    queries: list[Query] = Field(default_factory=list)
    unit: str = "short"
    decimals: int | None = Field(default=None, ge=0, le=10)
    min: float | None = None
    max: float | None = None
    min_interval: str | None = None
    """Smallest query step (``30s``); defaults to the scrape interval."""
    style: Literal["lines", "area", "bars", "points"] = "lines"
    stack: bool = False
    thresholds: Thresholds = Thresholds()
    reduce: Reducer = "last"
    """How stat, gauge and bar gauge panels reduce a series to one value."""
    sparkline: bool = True
    legend: Legend = Legend()
    content: str = ""
    """Markdown of a text panel."""

    @field_validator("min_interval")
    @classmethod
    def _interval(cls, value: str | None) -> str | None:
        # a variable ($bucket) is checked when the panel runs
        return value if value and "$" in value else _duration(value)

    @field_validator("unit")
    @classmethod
    def _unit(cls, unit: str) -> str:
        if not is_known_unit(unit):
            raise ValueError(f"unknown unit {unit!r} (examples: s, ms, bytes, percentunit, reqps, suffix:x)")
        return unit

    @model_validator(mode="after")
    def _has_queries(self) -> Panel:
        if self.type != "text" and not self.queries:
            raise ValueError(f"a {self.type} panel needs at least one query")
        return self


class Row(_Model):
    title: str = ""
    collapsed: bool = False
    panels: list[Panel] = Field(default_factory=list)


class QueryVariable(_Model):
    type: Literal["query"]
    name: str
    label: str = ""
    query: str = Field(min_length=1)
    """``label_values([selector,] label)``, ``label_names()``, ``metrics(regex)``, ``query_result(expr)``."""
    regex: str = ""
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None
    default: list[str] = Field(default_factory=list)
    hide: bool = False
    sort: Literal["none", "alpha", "numeric"] = "alpha"


class CustomVariable(_Model):
    type: Literal["custom"]
    name: str
    label: str = ""
    options: list[str] = Field(min_length=1)
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None
    default: list[str] = Field(default_factory=list)
    hide: bool = False


class IntervalVariable(_Model):
    type: Literal["interval"]
    name: str
    label: str = ""
    options: list[str] = Field(min_length=1)
    default: list[str] = Field(default_factory=list)
    hide: bool = False

    @field_validator("options")
    @classmethod
    def _durations(cls, options: list[str]) -> list[str]:
        for option in options:
            parse_duration(option)
        return options


class ConstantVariable(_Model):
    type: Literal["constant", "textbox"]
    name: str
    label: str = ""
    value: str = ""
    hide: bool = False


Variable = Annotated[
    QueryVariable | CustomVariable | IntervalVariable | ConstantVariable, Field(discriminator="type")
]


class Annotation(_Model):
    name: str
    source: Literal["alerts", "query"] = "query"
    expr: str = ""
    """For ``source: query``: every step where the expression has a non-zero value is marked;
    consecutive steps merge into one region."""
    title: str = ""
    """``{{label}}`` template for the marker's text."""
    color: str = "#f2495c"
    enabled: bool = True

    @model_validator(mode="after")
    def _expr(self) -> Annotation:
        if self.source == "query" and not self.expr:
            raise ValueError("a query annotation needs an expr")
        return self


class Link(_Model):
    title: str = ""
    url: str = ""
    tags: list[str] = Field(default_factory=list)
    """With no url: one link per dashboard carrying any of these tags."""
    keep_time: bool = False
    include_vars: bool = False
    target_blank: bool = False

    @field_validator("url")
    @classmethod
    def _safe_url(cls, url: str) -> str:
        # links come from imported JSON too: only web, mail and relative URLs (no javascript:)
        if url and not re.match(r"^(https?://|mailto:|/|\?|#|\.)", url, re.IGNORECASE):
            raise ValueError("a link url must be http(s)://, mailto:, or relative (/, ?, #, .)")
        return url


class Dashboard(_Model):
    uid: str
    title: str = Field(min_length=1)
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    time: TimeRange = TimeRange()
    refresh: str | None = None
    timezone: Literal["browser", "utc"] = "browser"
    graph_tooltip: Literal["none", "crosshair", "tooltip"] = "crosshair"
    variables: list[Variable] = Field(default_factory=list)
    annotations: list[Annotation] = Field(default_factory=list)
    links: list[Link] = Field(default_factory=list)
    rows: list[Row] = Field(default_factory=list)

    _refresh = field_validator("refresh")(_duration)

    @field_validator("uid")
    @classmethod
    def _uid(cls, uid: str) -> str:
        if not UID_RE.match(uid):
            raise ValueError("uid must match [a-z0-9][a-z0-9-]{0,39}")
        return uid

    @field_validator("variables")
    @classmethod
    def _variable_names(cls, variables: list[Variable]) -> list[Variable]:
        seen: set[str] = set()
        for v in variables:
            if not VAR_NAME_RE.match(v.name) or v.name.startswith("__"):
                raise ValueError(f"variable name {v.name!r} must be an identifier not starting with __")
            if v.name in seen:
                raise ValueError(f"variable {v.name!r} is defined twice")
            seen.add(v.name)
        return variables

    @model_validator(mode="before")
    @classmethod
    def _number_panels(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
            return data
        given: list[int] = []
        for row in data["rows"]:
            for panel in (row.get("panels") or []) if isinstance(row, dict) else []:
                if isinstance(panel, dict) and isinstance(panel.get("id"), int):
                    if panel["id"] in given:
                        raise ValueError(f"panel id {panel['id']} is used twice")
                    given.append(panel["id"])
        next_id = max(given, default=0) + 1
        rows = []
        for row in data["rows"]:
            if isinstance(row, dict) and isinstance(row.get("panels"), list):
                panels = []
                for panel in row["panels"]:
                    if isinstance(panel, dict) and panel.get("id") is None:
                        panel = {**panel, "id": next_id}
                        next_id += 1
                    panels.append(panel)
                row = {**row, "panels": panels}
            rows.append(row)
        return {**data, "rows": rows}

    @property
    def slug(self) -> str:
        return slugify(self.title)

    def panels(self) -> list[Panel]:
        return [p for row in self.rows for p in row.panels]

    def panel(self, panel_id: int) -> Panel | None:
        return next((p for p in self.panels() if p.id == panel_id), None)

    def variable(self, name: str) -> Variable | None:
        return next((v for v in self.variables if v.name == name), None)


def slugify(title: str) -> str:
    """A URL slug of a title.

    >>> slugify("Service overview (RED)")
    'service-overview-red'
    """
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60] or "dashboard"


def dump(dashboard: Dashboard) -> dict[str, Any]:
    """The dashboard as plain data for YAML, without the fields left at their defaults."""
    return dashboard.model_dump(mode="json", by_alias=True, exclude_defaults=True)
