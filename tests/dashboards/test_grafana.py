from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from watchkeeper.dashboards.grafana import GrafanaImportError, convert
from watchkeeper.dashboards.loader import parse_dashboard
from watchkeeper.dashboards.model import ConstantVariable, CustomVariable, IntervalVariable, QueryVariable

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def test_modern_dashboard_converts_field_by_field() -> None:
    result = convert(load("grafana-api-service.json"))
    d = result.dashboard
    assert (d.uid, d.title, d.tags, d.refresh, d.timezone, d.graph_tooltip) == (
        "api-red-xy7",
        "API service (RED)",
        ["api", "red"],
        "30s",
        "utc",
        "crosshair",
    )
    assert d.time.from_ == "now-3h"
    assert [r.title for r in d.rows] == ["Overview", "Details"]
    assert d.rows[1].collapsed
    stat, gauge, bars, series, heat = d.rows[0].panels
    assert (stat.type, stat.unit, stat.grid.w, stat.grid.h, stat.reduce) == ("stat", "reqps", 6, 4, "last")
    assert stat.queries[0].legend == ""  # __auto
    assert [(s.color, s.value) for s in stat.thresholds.steps] == [("#73bf69", None), ("#f2495c", 80.0)]
    assert (gauge.type, gauge.unit, gauge.min, gauge.max, gauge.reduce) == (
        "gauge",
        "percentunit",
        0,
        1,
        "mean",
    )
    assert [s.color for s in gauge.thresholds.steps] == ["#73bf69", "#ff9830", "#f2495c"]
    assert (bars.type, bars.decimals, bars.thresholds.mode, bars.queries[0].instant) == (
        "bargauge",
        2,
        "percentage",
        True,
    )
    assert (series.style, series.stack, series.min_interval, series.legend.placement) == (
        "area",
        True,
        "30s",
        "right",
    )
    assert series.thresholds.show
    assert series.queries[0].legend == "{{route}}" and series.queries[1].hide
    assert (heat.type, heat.queries[0].format) == ("heatmap", "heatmap")
    table, text = d.rows[1].panels
    assert (table.type, table.queries[0].format, table.queries[0].instant) == ("table", "table", True)
    assert text.type == "text" and "[the runbook](https://runbooks.example.com/api)" in text.content


def test_variables_annotations_and_links() -> None:
    d = convert(load("grafana-api-service.json")).dashboard
    job, route, window, env, cluster = d.variables
    assert isinstance(job, QueryVariable) and job.query == "label_values(http_requests_total, job)"
    assert job.default == ["core-api"]
    assert isinstance(route, QueryVariable) and route.multi and route.include_all and route.all_value == ".*"
    assert route.regex == "/^\\/(?!health).*/" and route.default == ["$__all"]
    assert isinstance(window, IntervalVariable) and window.options == ["1m", "5m", "10m", "1h"]
    assert isinstance(env, CustomVariable) and env.options == ["prod", "staging", "dev"]
    assert isinstance(cluster, ConstantVariable) and cluster.value == "eu-1" and cluster.hide
    alerts, deploys = d.annotations
    assert alerts.source == "alerts"
    assert deploys.expr.startswith("changes(app_build_info") and deploys.title == "deploy {{version}}"
    first = d.links[0]
    assert (first.title, first.tags, first.keep_time, first.include_vars) == (
        "API dashboards",
        ["api"],
        True,
        True,
    )
    assert d.links[1].url == "https://runbooks.example.com/api" and d.links[1].target_blank


def test_everything_dropped_is_listed() -> None:
    warnings = convert(load("grafana-api-service.json")).warnings
    expected = [
        "uid 'api-red_Xy7' changed",
        "variable 'Filters': type 'adhoc' is not supported",
        "annotation 'Panics'",
        "panel 'Requests by route': field overrides",
        "panel 'Top routes': transformations",
        "panel 'Logs': panel type 'logs'",
        "panel 'Status share': panel type 'piechart'",
        "requires data source 'loki'",
    ]
    for fragment in expected:
        assert any(fragment in w for w in warnings), (fragment, warnings)
    assert len(warnings) == len(expected)


def test_legacy_rows_and_angular_panels() -> None:
    result = convert(load("grafana-legacy-rows.json"))
    d = result.dashboard
    assert d.uid == "legacy-node-schema-14" and d.refresh is None and d.timezone == "browser"
    cpu_row, disk_row = d.rows
    assert cpu_row.title == "CPU" and disk_row.title == "" and disk_row.collapsed
    graph, single = cpu_row.panels
    assert (graph.type, graph.grid.w, graph.grid.h, graph.unit, graph.stack, graph.style) == (
        "timeseries",
        16,
        9,
        "percentunit",
        True,
        "area",
    )
    assert (graph.min, graph.max, graph.min_interval) == (0.0, 1.0, "1m")
    assert (single.type, single.grid.w, single.reduce, single.sparkline, single.unit) == (
        "stat",
        8,
        "mean",
        True,
        "none",
    )
    assert [(s.value) for s in single.thresholds.steps] == [None, 2.0, 4.0]
    (io,) = disk_row.panels
    assert (io.style, io.unit, io.grid.w) == ("bars", "Bps", 24)
    assert any("series overrides" in w for w in result.warnings)
    assert any("'Elastic'" in w and "no Prometheus queries" in w for w in result.warnings)
    variable = d.variables[0]
    assert isinstance(variable, QueryVariable) and variable.include_all and variable.default == ["$__all"]


def test_v1_resource_is_unwrapped() -> None:
    result = convert(load("grafana-v1-resource.json"))
    panel = result.dashboard.rows[0].panels[0]
    assert result.dashboard.uid == "cache-overview"
    assert (panel.style, panel.unit, panel.legend.show, panel.grid.w) == ("bars", "percentunit", False, 24)
    assert result.warnings == []


def test_api_envelope_is_unwrapped() -> None:
    inner = load("grafana-v1-resource.json")["spec"]
    assert convert({"dashboard": inner, "meta": {"slug": "x"}}).dashboard.title == "Cache overview"


def test_v2_and_non_dashboards_are_refused() -> None:
    with pytest.raises(GrafanaImportError, match="V2"):
        convert(
            {
                "apiVersion": "dashboard.grafana.app/v2beta1",
                "kind": "Dashboard",
                "spec": {"title": "x", "elements": {}, "layout": {}},
            }
        )
    with pytest.raises(GrafanaImportError):
        convert([1, 2])


@pytest.mark.parametrize(
    "name", ["grafana-api-service.json", "grafana-legacy-rows.json", "grafana-v1-resource.json"]
)
def test_the_yaml_loads_back_to_the_same_dashboard(name: str) -> None:
    result = convert(load(name))
    assert parse_dashboard(result.to_yaml()) == result.dashboard


def test_panel_ids_stay_unique_when_grafana_omits_them() -> None:
    g = {
        "title": "t",
        "panels": [
            {"type": "stat", "targets": [{"expr": "up"}]},
            {"id": 1, "type": "stat", "targets": [{"expr": "up"}]},
            {"type": "stat", "targets": [{"expr": "up"}]},
        ],
    }
    ids = [p.id for p in convert(g).dashboard.panels()]
    assert len(set(ids)) == 3 and 1 in ids


def test_script_links_are_not_imported() -> None:
    g = {
        "title": "t",
        "links": [
            {"type": "link", "title": "x", "url": "javascript:alert(1)"},
            {"type": "link", "title": "ok", "url": "/d/other"},
        ],
        "panels": [],
    }
    result = convert(g)
    assert [lk.url for lk in result.dashboard.links] == ["/d/other"]
    assert any("javascript:alert(1)" in w for w in result.warnings)
