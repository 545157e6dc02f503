"""The app in-process (Starlette's TestClient runs the lifespan): probes, self-metrics, error mapping,
the TSDB status page. Real-process behaviour is in tests/integration/."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.collector.encode import body
from watchkeeper.app import create_app
from watchkeeper.config import Settings

HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"}
T0 = 1_700_000_000_000


def settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings.load(None, overrides={"data_dir": tmp_path / "data", **overrides})


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(tmp_path))) as c:
        wait_ready(c)
        yield c


def wait_ready(c: TestClient) -> None:
    for _ in range(400):
        if c.get("/-/ready").status_code == 200:
            return
        import time

        time.sleep(0.01)
    raise AssertionError(c.get("/-/ready").text)


def write(c: TestClient, n: int = 3, t: int = T0) -> None:
    items = [([("__name__", "req_total"), ("job", "api"), ("i", str(i))], [(t, float(i))]) for i in range(n)]
    r = c.post("/api/v1/write", content=body(items), headers=HEADERS)
    assert r.status_code == 204, r.text


def test_healthy_at_once_and_ready_only_once_the_store_is_open(tmp_path: Path) -> None:
    c = TestClient(create_app(settings(tmp_path)))  # no lifespan: the store never opens
    r = c.get("/-/healthy")
    assert (r.status_code, r.text) == (200, "watchkeeper is Healthy.\n")
    r = c.get("/-/ready")
    assert r.status_code == 503
    assert "not ready" in r.text
    r = c.post("/api/v1/write", content=body([]), headers=HEADERS)
    assert r.status_code == 503
    r = c.get("/api/v1/query", params={"query": "up"})
    assert r.status_code == 503
    assert r.json()["status"] == "error"
    with c:
        wait_ready(c)
        assert c.get("/-/ready").text == "watchkeeper is Ready.\n"


def test_a_store_that_cannot_open_leaves_the_server_up_but_not_ready(tmp_path: Path) -> None:
    s = settings(tmp_path, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    with TestClient(create_app(s)) as c:
        for _ in range(500):
            r = c.get("/-/ready")
            if "failed to open" in r.text:
                break
            import time

            time.sleep(0.01)
        assert r.status_code == 503
        assert "the store failed to open" in r.text
        assert c.get("/-/healthy").status_code == 200


def test_metrics_count_ingest_and_label_http_by_route_template(client: TestClient) -> None:
    write(client, 3)
    client.get("/api/v1/label/job/values")
    client.get("/api/v1/label/i/values")
    client.get("/no/such/path")
    text = client.get("/metrics").text
    assert "watchkeeper_ingest_samples_total 3.0" in text
    assert "watchkeeper_head_series 3.0" in text
    assert "watchkeeper_wal_fsync_duration_seconds_count" in text
    assert "watchkeeper_ingest_bytes_total 0.0" not in text
    assert 'handler="/api/v1/write",method="POST"' in text
    assert 'code="204",handler="/api/v1/write"' in text
    assert 'handler="/api/v1/label/{name}/values"' in text
    assert 'handler="/api/v1/label/job/values"' not in text  # never the raw path
    assert 'handler="other"' in text


def test_metrics_in_openmetrics_when_asked(client: TestClient) -> None:
    r = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")


def test_written_samples_are_queryable(client: TestClient) -> None:
    write(client, 3)
    r = client.get("/api/v1/query", params={"query": "sum(req_total)", "time": (T0 + 1000) / 1000})
    assert r.status_code == 200
    assert r.json()["data"]["result"][0]["value"][1] == "3"


def test_query_errors_are_prometheus_json(client: TestClient) -> None:
    r = client.get("/api/v1/query", params={"query": "sum(("})
    assert r.status_code == 400
    assert r.json()["status"] == "error"
    assert r.json()["errorType"] == "bad_data"


def test_ingest_errors_are_plain_text(client: TestClient) -> None:
    r = client.post("/api/v1/write", content=b"\xff" * 12, headers=HEADERS)
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("text/plain")
    assert "snappy" in r.text


def test_tsdb_status_has_prometheus_fields_and_ours(client: TestClient) -> None:
    write(client, 3)
    write(client, 3, T0 + 15_000)
    r = client.get("/api/v1/status/tsdb")
    assert r.status_code == 200
    doc = r.json()
    assert doc["status"] == "success"
    data = doc["data"]
    assert data["headStats"] == {
        "numSeries": 3,
        "numLabelPairs": 5,  # __name__=req_total, job=api, i=0, i=1, i=2
        "chunkCount": data["headStats"]["chunkCount"],
        "minTime": T0,
        "maxTime": T0 + 15_000,
    }
    assert data["headStats"]["chunkCount"] >= 3
    assert data["seriesCountByMetricName"] == [{"name": "req_total", "value": 3}]
    assert data["labelValueCountByLabelName"][0] == {"name": "i", "value": 3}
    assert {"name": "job=api", "value": 3} in data["seriesCountByLabelValuePair"]
    assert {"name": "i", "value": 3} in data["memoryInBytesByLabelName"]
    ours = data["watchkeeper"]
    assert ours["samplesAppended"] == 6
    assert ours["bytesOnDisk"] > 0
    assert set(ours) >= {"headSamples", "chunksWritten", "bytesPerSample"}
    json.dumps(doc)


def test_tsdb_status_limit(client: TestClient) -> None:
    write(client, 3)
    data = client.get("/api/v1/status/tsdb", params={"limit": 1}).json()["data"]
    assert len(data["seriesCountByLabelValuePair"]) == 1
    assert client.get("/api/v1/status/tsdb", params={"limit": 0}).status_code == 422


def test_retention_job_deletes_old_data(tmp_path: Path) -> None:
    s = settings(tmp_path, retention="1h", retention_interval="50ms", scrape_configs=[])
    app = create_app(s)
    with TestClient(app) as c:
        wait_ready(c)
        storage = app.state.watchkeeper.storage
        write(c, 3)  # T0 is years ago: older than the retention (queries stop at its cutoff at once)
        deadline = time.monotonic() + 20
        while storage.num_series and time.monotonic() < deadline:
            time.sleep(0.02)
        assert storage.num_series == 0  # the retention job deleted the series themselves
        write(c, 3, T0 + 60_000)  # 204: the ingester dropped its cache, the series are created again
        assert storage.num_series == 3


def test_json_and_text_logs() -> None:
    import io
    import logging

    from watchkeeper.logging import configure_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        out = io.StringIO()
        configure_logging("info", "json", out)
        logging.getLogger("watchkeeper.test").info("ingested %d", 5, extra={"samples": 5, "path": "/x"})
        logging.getLogger("watchkeeper.test").debug("hidden")
        line = json.loads(out.getvalue())
        assert line["level"] == "info"
        assert line["logger"] == "watchkeeper.test"
        assert line["msg"] == "ingested 5"
        assert (line["samples"], line["path"]) == (5, "/x")
        assert line["ts"].endswith("Z")
        out = io.StringIO()
        configure_logging("debug", "text", out)
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("watchkeeper.test").exception("failed", extra={"n": 1})
        text = out.getvalue()
        assert "ERROR watchkeeper.test: failed n=1" in text
        assert "ValueError: boom" in text
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


def test_tsdb_status_of_an_empty_store(client: TestClient) -> None:
    data = client.get("/api/v1/status/tsdb").json()["data"]
    assert data["headStats"]["numSeries"] == 0
    assert (data["headStats"]["minTime"], data["headStats"]["maxTime"]) == (2**63 - 1, -(2**63))
    assert data["seriesCountByMetricName"] == []


def test_own_metrics_parse_as_exposition_with_every_component_running(client: TestClient) -> None:
    """The self-scrape reads /metrics: every family (store, rules, alerting) once, in both formats."""
    from watchkeeper.collector.exposition import parse_exposition

    text = client.get("/metrics").text
    parsed = parse_exposition(text)
    assert parsed.samples
    assert "watchkeeper_rule_alerts" in text and "watchkeeper_alerts" in text
    om = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}).text
    assert parse_exposition(om, openmetrics=True).samples


def test_rules_alerting_and_dashboards_are_mounted(client: TestClient) -> None:
    assert client.get("/api/v1/rules").json()["status"] == "success"
    assert client.get("/api/v2/silences").json() == []
    assert client.get("/api/v1/targets").json()["data"]["activeTargets"][0]["labels"]["job"] == "watchkeeper"
    assert client.get("/dashboards").status_code == 200
    assert client.post("/-/reload").status_code == 200


def test_slo_specs_become_rules_and_pages(tmp_path: Path) -> None:
    spec = Path(__file__).resolve().parents[1] / "rules" / "slo" / "checkout.yml"
    app = create_app(settings(tmp_path, slo={"spec_files": [str(spec)]}))
    with TestClient(app) as c:
        wait_ready(c)
        groups = c.get("/api/v1/rules").json()["data"]["groups"]
        assert any("sloth" in g["name"] or "slo" in g["name"] for g in groups), [g["name"] for g in groups]
        assert c.get("/slo").status_code == 200
