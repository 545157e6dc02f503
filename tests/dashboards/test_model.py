from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from watchkeeper.dashboards.loader import BUILTIN_DIR, Catalog, DashboardFileError, load_dirs, parse_dashboard
from watchkeeper.dashboards.model import Dashboard, QueryVariable, dump

GOOD = """
uid: svc
title: Service (RED)
tags: [a]
time: {from: now-1h, to: now}
refresh: 30s
variables:
  - {name: route, type: query, query: 'label_values(http_requests_total, route)',
     multi: true, include_all: true}
  - {name: env, type: custom, options: [prod, dev]}
  - {name: win, type: interval, options: [1m, 5m]}
  - {name: c, type: constant, value: x}
annotations:
  - {name: deploys, expr: 'changes(build_info[1m]) > 0', title: 'deploy {{version}}'}
rows:
  - title: Traffic
    panels:
      - {title: rps, unit: reqps, queries: [{expr: 'sum(rate(http_requests_total[$__rate_interval]))'}]}
      - {id: 7, type: stat, title: errors, queries: [{expr: up}],
         thresholds: {steps: [{color: green}, {color: red, value: 1}]}}
      - {type: text, content: '# hi'}
"""


def test_a_dashboard_parses_with_defaults_and_numbered_panels() -> None:
    d = parse_dashboard(GOOD)
    assert d.uid == "svc" and d.slug == "service-red"
    assert [p.id for p in d.panels()] == [8, 7, 9]
    assert d.panel(7) is not None and d.panel(7).type == "stat"  # type: ignore[union-attr]
    assert isinstance(d.variables[0], QueryVariable) and d.variables[0].multi
    assert d.time.from_ == "now-1h" and d.refresh == "30s"


def test_dump_round_trips_through_yaml() -> None:
    d = parse_dashboard(GOOD)
    again = parse_dashboard(yaml.safe_dump(dump(d)))
    assert again == d


@pytest.mark.parametrize(
    ("patch", "field", "message"),
    [
        ({"uid": "Not OK"}, "uid", "uid must match"),
        ({"links": [{"url": "javascript:alert(1)"}]}, "links.0.url", "must be http(s)"),
        ({"refresh": "soon"}, "refresh", "not a valid duration"),
        (
            {"rows": [{"panels": [{"unit": "parsecs", "queries": [{"expr": "up"}]}]}]},
            "rows.0.panels.0.unit",
            "unknown unit",
        ),
        ({"rows": [{"panels": [{"type": "stat"}]}]}, "rows.0.panels.0", "needs at least one query"),
        (
            {"rows": [{"panels": [{"queries": [{"expr": "up"}], "colour": "red"}]}]},
            "rows.0.panels.0.colour",
            "Extra inputs",
        ),
        (
            {
                "rows": [
                    {
                        "panels": [
                            {"id": 1, "queries": [{"expr": "up"}]},
                            {"id": 1, "queries": [{"expr": "up"}]},
                        ]
                    }
                ]
            },
            "",
            "panel id 1 is used twice",
        ),
        (
            {"variables": [{"name": "x", "type": "interval", "options": ["fast"]}]},
            "variables.0.options",
            "not a valid duration",
        ),
        (
            {
                "variables": [
                    {"name": "x", "type": "custom", "options": ["a"]},
                    {"name": "x", "type": "custom", "options": ["b"]},
                ]
            },
            "variables",
            "defined twice",
        ),
        (
            {
                "rows": [
                    {
                        "panels": [
                            {
                                "queries": [{"expr": "up"}],
                                "thresholds": {
                                    "steps": [{"color": "red", "value": 5}, {"color": "g", "value": 1}]
                                },
                            }
                        ]
                    }
                ]
            },
            "rows.0.panels.0.thresholds.steps",
            "increasing order",
        ),
    ],
)
def test_bad_values_are_reported_with_their_field(patch: dict[str, object], field: str, message: str) -> None:
    data = {"uid": "x", "title": "X", **patch}
    with pytest.raises(DashboardFileError) as info:
        parse_dashboard(yaml.safe_dump(data), "dash.yml")
    assert any(
        e.field == field and message in e.message and e.path == "dash.yml" for e in info.value.errors
    ), info.value.errors


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(DashboardFileError) as info:
        parse_dashboard("uid: x\ntitle: [unclosed\n", "broken.yml")
    assert info.value.errors[0].field.startswith("line ")


def test_a_bad_file_does_not_stop_the_others(tmp_path: Path) -> None:
    (tmp_path / "good.yml").write_text(GOOD)
    (tmp_path / "bad.yml").write_text(
        "uid: bad\ntitle: Bad\nrows: [{panels: [{unit: nope, queries: [{expr: up}]}]}]\n"
    )
    (tmp_path / "dupe.yaml").write_text("uid: svc\ntitle: Again\n")
    (tmp_path / "notes.txt").write_text("ignored")
    loaded = load_dirs([tmp_path])
    assert list(loaded.dashboards) == ["svc"]
    assert sorted(Path(e.path).name for e in loaded.errors) == [
        "bad.yml",
        "good.yml",
    ]  # good.yml sorted after dupe
    assert any("already used" in e.message for e in loaded.errors)


def test_later_directories_override_built_ins(tmp_path: Path) -> None:
    (tmp_path / "mine.yml").write_text("uid: errors\ntitle: My errors\n")
    catalog = Catalog([BUILTIN_DIR, tmp_path])
    assert catalog.get("errors").title == "My errors"  # type: ignore[union-attr]
    assert catalog.writable_dir() == tmp_path


def test_the_catalog_reloads_changed_files(tmp_path: Path) -> None:
    path = tmp_path / "a.yml"
    path.write_text("uid: a\ntitle: First\n")
    catalog = Catalog([tmp_path], check_interval_seconds=0)
    assert catalog.get("a").title == "First"  # type: ignore[union-attr]
    path.write_text("uid: a\ntitle: Second version\n")
    assert catalog.get("a").title == "Second version"  # type: ignore[union-attr]
    path.unlink()
    assert catalog.get("a") is None


def test_every_built_in_dashboard_loads() -> None:
    loaded = load_dirs([BUILTIN_DIR])
    assert loaded.errors == []
    assert set(loaded.dashboards) == {
        "service-overview",
        "errors",
        "cache",
        "database",
        "infrastructure",
        "business",
        "watchkeeper",
    }
    for d in loaded.dashboards.values():
        assert isinstance(d, Dashboard) and d.panels()


def test_the_reference_deployment_dashboards_load() -> None:
    reference = Path(__file__).parents[2] / "dashboards"
    loaded = load_dirs([reference])
    assert loaded.errors == []
    assert "core-api-business" in loaded.dashboards
