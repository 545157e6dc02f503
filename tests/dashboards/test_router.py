from __future__ import annotations

import json
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from watchkeeper.dashboards.providers import (
    AlertTransitionView,
    AlertView,
    RuleGroupView,
    RuleView,
    SilenceView,
    TargetView,
)
from watchkeeper.dashboards.router import DashboardOptions, dashboards_router
from watchkeeper.dashboards.sample import make_app
from watchkeeper.tsdb.storage import Storage

FIXTURES = Path(__file__).parent / "fixtures"


def test_home_lists_and_searches_dashboards(client: TestClient) -> None:
    page = client.get("/dashboards")
    assert page.status_code == 200
    for uid in (
        "service-overview",
        "errors",
        "cache",
        "database",
        "infrastructure",
        "business",
        "watchkeeper",
    ):
        assert f'href="/d/{uid}/' in page.text
    found = client.get("/dashboards", params={"q": "cache"}).text
    assert 'href="/d/cache/cache"' in found and 'href="/d/errors/' not in found


def test_home_reports_files_that_did_not_load(client: TestClient, tmp_path: Path) -> None:
    (tmp_path / "broken.yml").write_text(
        "uid: broken\ntitle: B\nrows: [{panels: [{unit: lightyears, queries: [{expr: up}]}]}]\n"
    )
    page = client.get("/dashboards").text
    assert "did not load" in page and "broken.yml" in page and "rows.0.panels.0.unit" in page
    assert client.get("/api/dashboards").json()["errors"][0]["field"] == "rows.0.panels.0.unit"


def test_dashboard_page_renders_panels_variables_and_local_plotly(client: TestClient) -> None:
    page = client.get("/d/service-overview/service-overview", params={"var-route": ["/players", "/login"]})
    assert page.status_code == 200
    html = page.text
    assert html.count('class="panel ') == 10
    assert "/static/wk/plotly-2.35.3.min.js?v=" in html and "cdn" not in html.lower()
    assert '<option value="/players" selected>' in html and '<option value="/login" selected>' in html
    assert '<option value="/search">' in html
    config = json.loads(
        html.split('<script type="application/json" id="wk-config">')[1].split("</script>")[0]
    )
    assert config["uid"] == "service-overview" and len(config["panels"]) == 10


def test_dashboard_urls_redirect_to_the_slug_and_unknown_uids_are_404(client: TestClient) -> None:
    r = client.get("/d/errors?from=now-1h", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "/d/errors/errors?from=now-1h"
    assert client.get("/d/nope/nope").status_code == 404
    assert client.get("/d/errors/errors", params={"from": "yesterday"}).status_code == 400


def test_timeseries_panel_json_follows_variables_and_width(client: TestClient) -> None:
    base = {"from": "now-6h", "to": "now", "width": "360"}
    every = client.get("/d/service-overview/panels/5.json", params=base).json()
    assert every["errors"] == [] and len(every["series"]) == 10
    one = client.get("/d/service-overview/panels/5.json", params={**base, "var-route": "/players"}).json()
    assert [s["name"] for s in one["series"]] == ["/players"]
    assert 'route=~"/players"' in one["queries"][0]["expr"]
    assert one["step_ms"] == 60_000  # 6 h / 360 px = 60 s
    assert len(one["series"][0]["x"]) <= 361
    assert one["axis"]["suffix"] == " req/s"


def test_latency_panel_is_scaled_to_milliseconds(client: TestClient) -> None:
    data = client.get("/d/service-overview/panels/8.json", params={"width": "600"}).json()
    assert data["axis"]["suffix"] == " ms" and data["axis"]["factor"] == 1000.0
    assert sorted(s["name"] for s in data["series"]) == ["q0.5", "q0.95", "q0.99"]


def test_stat_gauge_table_and_heatmap_shapes(client: TestClient) -> None:
    stat = client.get("/d/service-overview/panels/2.json").json()
    (value,) = stat["values"]
    assert value["text"].endswith("%") and value["color"] in ("#73bf69", "#ff9830", "#f2495c")
    assert len(value["spark"]["x"]) > 10
    gauge = client.get("/d/cache/panels/1.json").json()
    assert (gauge["min"], gauge["max"]) == (0, 1) and 0.5 < gauge["values"][0]["value"] < 1
    table = client.get("/d/service-overview/panels/10.json").json()
    assert table["columns"] == ["method", "route", "Value"] and len(table["rows"]) == 10
    heat = client.get("/d/service-overview/panels/9.json").json()["heatmap"]
    assert heat["y"][-1] == "+Inf" and len(heat["z"]) == 12 and len(heat["z"][0]) == len(heat["x"])


def test_panel_csv_download(client: TestClient) -> None:
    r = client.get("/d/cache/panels/2.csv")
    assert (
        r.headers["content-type"].startswith("text/csv") and "attachment" in r.headers["content-disposition"]
    )
    header, first = r.text.splitlines()[:2]
    assert header == "time,discovery,player,session,statistics"
    assert first.endswith(tuple("0123456789")) and first[:4].isdigit()


def test_query_errors_are_shown_per_panel(client: TestClient, tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text(
        "uid: bad-query\ntitle: Bad query\nrows: [{panels: [{queries: [{expr: 'sum(('}]}]}]\n"
    )
    data = client.get("/d/bad-query/panels/1.json").json()
    assert data["errors"] and data["errors"][0].startswith("A: ")
    assert client.get("/d/bad-query/panels/99.json").status_code == 404


def test_query_annotations_merge_consecutive_steps(client: TestClient, tmp_path: Path) -> None:
    (tmp_path / "ann.yml").write_text(
        "uid: ann\ntitle: Ann\nannotations:\n"
        "  - {name: burst,\n"
        '     expr: \'sum(rate(http_requests_total{route="/discovery", status="500"}[2m])) > 0.5\','
        " title: 'errors burst'}\n"
        "rows: [{panels: [{queries: [{expr: up}]}]}]\n"
    )
    regions = client.get("/d/ann/annotations.json", params={"width": "300"}).json()["regions"]
    assert 1 <= len(regions) <= 3
    assert all(r["end_ms"] >= r["start_ms"] and r["text"] == "errors burst" for r in regions)


def test_variables_json_resolves_chained_variables(client: TestClient) -> None:
    data = client.get("/d/service-overview/variables.json", params={"var-job": "core-api"}).json()
    job, route = data["variables"]
    assert (
        job["options"] == ["core-api"] and "/players" in route["options"] and route["selected"] == ["$__all"]
    )
    # a value that is not an option falls back to the default (here: All), as in Grafana
    data = client.get("/d/service-overview/variables.json", params={"var-job": "nope"}).json()
    assert data["variables"][0]["selected"] == ["$__all"]


def test_a_variable_query_sees_the_variables_before_it(client: TestClient, tmp_path: Path) -> None:
    (tmp_path / "chain.yml").write_text(
        "uid: chain\ntitle: Chain\nvariables:\n"
        "  - {name: cache, type: custom, options: [session, player]}\n"
        "  - {name: result, type: query,\n"
        '     query: \'label_values(cache_requests_total{cache="$cache", result!="miss"}, result)\'}\n'
        "rows: [{panels: [{queries: [{expr: up}]}]}]\n"
    )
    (cache, result) = client.get("/d/chain/variables.json", params={"var-cache": "player"}).json()[
        "variables"
    ]
    assert cache["selected"] == ["player"] and result["options"] == ["hit"]


def test_grafana_import_converts_saves_and_serves(client: TestClient, tmp_path: Path) -> None:
    body = (FIXTURES / "grafana-api-service.json").read_bytes()
    preview = client.post("/api/dashboards/import", content=body).json()
    assert preview["saved"] is None and preview["url"] == "/d/api-red-xy7/api-service-red"
    assert "uid: api-red-xy7" in preview["yaml"] and len(preview["warnings"]) == 8
    saved = client.post("/api/dashboards/import?save=true", content=body).json()
    assert saved["saved"] == str(tmp_path / "api-red-xy7.yml")
    assert client.get(saved["url"]).status_code == 200
    assert client.post("/api/dashboards/import?save=true", content=body).status_code == 409
    assert client.post("/api/dashboards/import?save=true&overwrite=true", content=body).status_code == 200
    assert client.get("/api/dashboards/api-red-xy7").json()["dashboard"]["title"] == "API service (RED)"


def test_import_refuses_what_it_cannot_convert(client: TestClient) -> None:
    assert client.post("/api/dashboards/import", content=b"{nope").status_code == 400
    v2 = {"apiVersion": "dashboard.grafana.app/v2beta1", "spec": {"title": "x", "elements": {}}}
    r = client.post("/api/dashboards/import", json=v2)
    assert r.status_code == 400 and "V2" in r.json()["error"]


def test_explore_query_returns_graph_and_table(client: TestClient) -> None:
    page = client.get("/explore", params={"expr": "up"})
    assert page.status_code == 200 and "explore-form" in page.text
    data = client.get(
        "/explore/query.json",
        params={"expr": "sum by (cache) (rate(cache_requests_total[5m]))", "from": "now-1h", "step": "5m"},
    ).json()
    assert data["graph"]["step_ms"] == 300_000 and len(data["graph"]["series"]) == 4
    assert len(data["graph"]["series"][0]["x"]) in (12, 13)
    assert data["table"]["columns"] == ["cache", "Value"]
    assert client.get("/explore/query.json").status_code == 400


def test_static_files_are_cached_and_compressed(client: TestClient) -> None:
    r = client.get("/static/wk/plotly-2.35.3.min.js", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
    assert r.headers["content-encoding"] == "gzip" and b"plotly.js v2.35.3" in r.content
    assert client.get("/static/wk/nothing.js").status_code == 404


def test_unwired_pages_explain_themselves(client: TestClient) -> None:
    for path, text in (
        ("/alerts", "not connected"),
        ("/silences", "not connected"),
        ("/targets", "scrape manager is not running"),
        ("/rules", "not connected"),
    ):
        page = client.get(path)
        assert page.status_code == 200 and text in page.text, path


class _Fakes:
    def alerts(self) -> list[AlertView]:
        return [
            AlertView(
                "HighErrorRate",
                "firing",
                (("alertname", "HighErrorRate"), ("route", "/a")),
                (("summary", "5xx above 5%"),),
                1_700_000_000_000,
                0.07,
            ),
            AlertView("SlowDB", "pending", (("alertname", "SlowDB"),), (), 1_700_000_000_000, 0.9),
        ]

    def history(self, limit: int) -> list[AlertTransitionView]:
        return [
            AlertTransitionView(
                "HighErrorRate", (("route", "/a"),), "pending", "firing", 1_700_000_000_000, 0.07
            )
        ]

    def silences(self) -> list[SilenceView]:
        return [SilenceView("s1", '{alertname="SlowDB"}', 1, 2, "ana", "maintenance")]

    def targets(self) -> list[TargetView]:
        return [
            TargetView("core-api", "http://app-1:8000/metrics", "up"),
            TargetView("core-api", "http://app-2:8000/metrics", "down", last_error="connection refused"),
        ]

    def rule_groups(self) -> list[RuleGroupView]:
        return [
            RuleGroupView(
                "api",
                "rules/api.yml",
                30.0,
                (RuleView("HighErrorRate", "alerting", "job:errors:ratio > 0.05", "ok", "firing"),),
            )
        ]


def test_wired_pages_show_their_data() -> None:
    fakes = _Fakes()
    storage = Storage.open(data_dir=None)
    app = FastAPI()
    app.include_router(
        dashboards_router(
            lambda: None,
            lambda: storage,
            DashboardOptions(  # type: ignore[arg-type,return-value]
                get_alerts=lambda: fakes,
                get_silences=lambda: fakes,
                get_targets=lambda: fakes,
                get_rules=lambda: fakes,
            ),
        )
    )
    c = TestClient(app)
    alerts = c.get("/alerts").text
    assert "HighErrorRate" in alerts and "5xx above 5%" in alerts and "pending → firing" in alerts
    assert "/silences?matchers=%7Balertname%3D%22HighErrorRate%22" in alerts
    assert "maintenance" in c.get("/silences").text
    targets = c.get("/targets").text
    assert "1/2 up" in targets and "connection refused" in targets
    assert "job:errors:ratio" in c.get("/rules").text
    storage.close()


def test_make_app_composes_with_the_prometheus_api(client: TestClient) -> None:
    r = client.get("/api/v1/query", params={"query": "count(up) or vector(0)"})
    assert r.status_code == 200 and r.json()["status"] == "success"
    assert make_app  # the helper is what the browser tests serve


def test_panel_titles_show_variable_values(client: TestClient) -> None:
    page = client.get("/d/business/business", params={"var-bucket": "1d"}).text
    assert "Sessions created per 1d" in page
    data = client.get("/d/business/panels/6.json", params={"var-bucket": "5m"}).json()
    assert data["title"] == "Sessions created per 5m"


def test_alert_annotations_show_past_and_current_firing(storage: Storage, tmp_path: Path) -> None:
    h = 3_600_000
    now = 1_700_000_000_000
    a, b = (("alertname", "HighErrorRate"), ("route", "/a")), (("alertname", "SlowDB"),)

    class Alerts:
        def alerts(self) -> list[AlertView]:  # firing now, since 1 h ago
            return [AlertView("HighErrorRate", "firing", a, (), now - h - 60_000)]

        def history(self, limit: int) -> list[AlertTransitionView]:  # newest first, as stored
            return [
                AlertTransitionView("HighErrorRate", a, "pending", "firing", now - h),
                AlertTransitionView("HighErrorRate", a, "inactive", "pending", now - h - 60_000),
                AlertTransitionView("SlowDB", b, "firing", "inactive", now - 2 * h),
                AlertTransitionView("SlowDB", b, "pending", "firing", now - 3 * h),
                AlertTransitionView("HighErrorRate", a, "firing", "inactive", now - 5 * h),  # began earlier
                AlertTransitionView("SlowDB", b, "pending", "firing", now - 9 * h),
                AlertTransitionView("SlowDB", b, "firing", "inactive", now - 8 * h),
            ][:limit]

    (tmp_path / "alerted.yml").write_text(
        "uid: alerted\ntitle: Alerted\nannotations: [{name: Alerts, source: alerts, color: red}]\n"
        "rows: [{panels: [{queries: [{expr: up}]}]}]\n"
    )
    app = make_app(storage, dashboards_dir=tmp_path, get_alerts=Alerts, now_ms=lambda: now)
    with TestClient(app) as c:
        regions = c.get("/d/alerted/annotations.json", params={"from": "now-6h", "to": "now"}).json()[
            "regions"
        ]
    spans = sorted((r["text"], (now - r["start_ms"]) / h, (now - r["end_ms"]) / h) for r in regions)
    assert spans == [
        ('HighErrorRate {route="/a"}', 1.0, 0.0),  # from its firing transition
        ('HighErrorRate {route="/a"}', 6.0, 5.0),  # clipped to the range
        ("SlowDB", 3.0, 2.0),
    ]  # SlowDB's firing 9 h to 8 h ago is outside the range
    assert {r["color"] for r in regions} == {"#f2495c"} and {r["source"] for r in regions} == {"Alerts"}
