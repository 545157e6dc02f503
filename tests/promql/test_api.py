"""The Prometheus HTTP query API over a small in-memory store, through FastAPI's test client.

Golden bodies in ``golden/`` follow the examples of Prometheus' ``docs/querying/api.md`` (same
series and timestamps; results in Prometheus' label order).
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from watchkeeper.errors import EvalError, QueryError, QueryTimeout
from watchkeeper.labels import Labels
from watchkeeper.promql import ast
from watchkeeper.promql.api import (
    QueryCosts,
    parse_duration_param_ms,
    parse_time_ms,
    query_router,
    unescape_label_name,
)
from watchkeeper.promql.engine import Engine
from watchkeeper.promql.formatting import format_sample_value, format_timestamp
from watchkeeper.promql.values import QueryResult, ResultSeries
from watchkeeper.tsdb.storage import Storage

GOLDEN = Path(__file__).parent / "golden"
T0_MS = 1435781430781  # 2015-07-01T20:10:30.781Z, the api.md examples' range start

PROMETHEUS: Labels = (("__name__", "up"), ("instance", "localhost:9090"), ("job", "prometheus"))
NODE: Labels = (("__name__", "up"), ("instance", "localhost:9100"), ("job", "node"))
START_TIME: Labels = (
    ("__name__", "process_start_time_seconds"),
    ("instance", "localhost:9090"),
    ("job", "prometheus"),
)


@pytest.fixture
def storage() -> Iterator[Storage]:
    store = Storage.open(data_dir=None)
    refs = store.series_refs([PROMETHEUS, NODE, START_TIME])
    times = [T0_MS, T0_MS + 15_000, T0_MS + 30_000]
    store.append(np.repeat(refs, 3), np.array(times * 3), np.array([1, 1, 1, 0, 0, 1, 1.4e9, 1.4e9, 1.4e9]))
    yield store
    store.close()


def make_client(engine: Any, storage: Storage) -> TestClient:
    app = FastAPI()
    app.include_router(query_router(lambda: engine, lambda: storage))
    return TestClient(app)


@pytest.fixture
def client(storage: Storage) -> TestClient:
    return make_client(Engine(storage), storage)


def golden(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text())


# --- golden answers -------------------------------------------------------------------------------


def test_instant_vector(client: TestClient) -> None:
    response = client.get("/api/v1/query", params={"query": "up", "time": "2015-07-01T20:10:51.781Z"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == golden("query_vector.json")
    assert '"value":[1435781451.781,"0"]' in response.text  # seconds with ms, value as a string


def test_range_matrix(client: TestClient) -> None:
    params = {
        "query": "up",
        "start": "2015-07-01T20:10:30.781Z",
        "end": "2015-07-01T20:11:00.781Z",
        "step": "15s",
    }
    response = client.get("/api/v1/query_range", params=params)
    assert response.status_code == 200
    assert response.json() == golden("query_range_matrix.json")


def test_grafana_save_and_test_is_a_scalar(client: TestClient) -> None:
    response = client.post("/api/v1/query", data={"query": "1+1", "time": "4"})
    assert response.status_code == 200
    assert response.text == (GOLDEN / "query_scalar.json").read_text().strip()


def test_string(client: TestClient) -> None:
    response = client.get("/api/v1/query", params={"query": '"hello"', "time": "1435781451.781"})
    assert response.text == (GOLDEN / "query_string.json").read_text().strip()


def test_bad_parameter_error(client: TestClient) -> None:
    params = {"query": "up", "start": "yesterday", "end": "1", "step": "1"}
    response = client.get("/api/v1/query_range", params=params)
    assert response.status_code == 400
    assert response.text == (GOLDEN / "error_bad_start.json").read_text().strip()


def test_series(client: TestClient) -> None:
    response = client.get(
        "/api/v1/series",
        params=[("match[]", "up"), ("match[]", 'process_start_time_seconds{job="prometheus"}')],
    )
    assert response.json() == golden("series.json")


def test_labels_and_label_values(client: TestClient) -> None:
    assert client.get("/api/v1/labels").json() == golden("labels.json")
    assert client.get("/api/v1/label/job/values").json() == golden("label_values.json")


# --- parameters -----------------------------------------------------------------------------------


def test_instant_query_as_form_post_with_unix_time(client: TestClient) -> None:
    response = client.post("/api/v1/query", data={"query": "up", "time": "1435781451.781"})
    assert response.json() == golden("query_vector.json")


def test_form_values_win_over_the_url(client: TestClient) -> None:
    response = client.post("/api/v1/query?query=up&time=1", data={"query": "2", "time": "4"})
    assert response.json()["data"] == {"resultType": "scalar", "result": [4, "2"]}


def test_range_as_form_post_with_float_step(client: TestClient) -> None:
    data = {"query": "up", "start": str(T0_MS / 1000), "end": str(T0_MS / 1000 + 30), "step": "15.0"}
    response = client.post("/api/v1/query_range", data=data)
    assert response.json() == golden("query_range_matrix.json")


def test_matrix_from_an_instant_query(client: TestClient) -> None:
    response = client.get(
        "/api/v1/query", params={"query": 'up{job="node"}[31s]', "time": str(T0_MS / 1000 + 30)}
    )
    (series,) = response.json()["data"]["result"]
    assert response.json()["data"]["resultType"] == "matrix"
    assert series["values"] == [[1435781430.781, "0"], [1435781445.781, "0"], [1435781460.781, "1"]]


@pytest.mark.parametrize(
    ("params", "error"),
    [
        (
            {"query": "up", "start": "1", "end": "x", "step": "1"},
            'invalid parameter "end": cannot parse "x" to a valid timestamp',
        ),
        (
            {"query": "up", "start": "10", "end": "5", "step": "1"},
            "end timestamp must not be before start time",
        ),
        (
            {"query": "up", "start": "1", "end": "5", "step": "0"},
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ),
        (
            {"query": "up", "start": "1", "end": "5", "step": "-1s"},
            'invalid parameter "step": cannot parse "-1s" to a valid duration',
        ),
        (
            {"query": "up", "start": "1", "end": "5", "step": "soon"},
            'invalid parameter "step": cannot parse "soon" to a valid duration',
        ),
        (
            {"query": "up", "start": "0", "end": "11001", "step": "1"},
            "exceeded maximum resolution of 11,000 points per timeseries. "
            "Try decreasing the query resolution (?step=XX)",
        ),
        (
            {"query": "up", "start": "1", "end": "5", "step": "1", "timeout": "later"},
            'invalid parameter "timeout": cannot parse "later" to a valid duration',
        ),
        ({"query": "up{", "start": "1", "end": "5", "step": "1"}, 'invalid parameter "query": '),
        (
            {"query": "up", "start": "1", "end": "5", "step": "1", "limit": "-1"},
            'invalid parameter "limit": limit must be non-negative',
        ),
    ],
)
def test_range_parameter_errors(client: TestClient, params: dict[str, str], error: str) -> None:
    response = client.get("/api/v1/query_range", params=params)
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "error" and body["errorType"] == "bad_data"
    assert body["error"].startswith(error)


def test_missing_range_start(client: TestClient) -> None:
    response = client.get("/api/v1/query_range", params={"query": "up", "end": "5", "step": "1"})
    assert response.json()["error"] == 'invalid parameter "start": cannot parse "" to a valid timestamp'


def test_bad_instant_time(client: TestClient) -> None:
    response = client.get("/api/v1/query", params={"query": "up", "time": "2015-13-01T00:00:00Z"})
    assert response.status_code == 400
    assert (
        response.json()["error"]
        == 'invalid parameter "time": cannot parse "2015-13-01T00:00:00Z" to a valid timestamp'
    )


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("4", 4000),
        ("1435781451.781", 1435781451781),
        ("1.0006", 1001),
        ("1.0625", 1063),  # a half: away from zero, as Go rounds
        ("-0.0625", -63),
        ("-1.5", -1500),
        ("2015-07-01T20:10:51.781Z", 1435781451781),
        ("2015-07-01T22:10:51.781123456+02:00", 1435781451781),
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_time_parameters(text: str, ms: int) -> None:
    assert parse_time_ms(text) == ms


@pytest.mark.parametrize("text", ["", "now", "NaN", "Inf", "2015-07-01", "2015-07-01 20:10:51Z", "1_000"])
def test_bad_time_parameters(text: str) -> None:
    with pytest.raises(ValueError, match="to a valid timestamp"):
        parse_time_ms(text)


@pytest.mark.parametrize(
    ("text", "ms"), [("15", 15_000), ("0.5", 500), ("15s", 15_000), ("1m30s", 90_000), ("1h", 3_600_000)]
)
def test_duration_parameters(text: str, ms: int) -> None:
    assert parse_duration_param_ms(text) == ms


def test_limit_truncates_with_a_warning(client: TestClient) -> None:
    body = client.get("/api/v1/query", params={"query": "up", "time": "1435781451.781", "limit": "1"}).json()
    assert len(body["data"]["result"]) == 1
    assert body["warnings"] == ["results truncated due to limit"]
    series = client.get("/api/v1/series", params={"match[]": "up", "limit": "1"}).json()
    assert len(series["data"]) == 1 and series["warnings"] == ["results truncated due to limit"]


def test_series_needs_a_match(client: TestClient) -> None:
    response = client.get("/api/v1/series")
    assert response.status_code == 400
    assert response.json() == {
        "status": "error",
        "errorType": "bad_data",
        "error": "no match[] parameter provided",
    }
    bad = client.get("/api/v1/series", params={"match[]": "up{"})
    assert bad.status_code == 400 and bad.json()["error"].startswith('invalid parameter "match[]": ')


def test_series_as_form_post_with_time_range(client: TestClient) -> None:
    response = client.post(
        "/api/v1/series", data={"match[]": "up", "start": str(T0_MS / 1000 + 60), "end": "2e9"}
    )
    assert response.json() == {"status": "success", "data": []}  # no sample after start
    response = client.post("/api/v1/series", data={"match[]": 'up{job="node"}'})
    assert response.json()["data"] == [{"__name__": "up", "instance": "localhost:9100", "job": "node"}]


def test_labels_and_values_with_match(client: TestClient) -> None:
    names = client.post("/api/v1/labels", data={"match[]": "process_start_time_seconds"}).json()
    assert names["data"] == ["__name__", "instance", "job"]
    values = client.get("/api/v1/label/instance/values", params={"match[]": 'up{job="node"}'}).json()
    assert values["data"] == ["localhost:9100"]
    metrics = client.get("/api/v1/label/__name__/values").json()
    assert metrics["data"] == ["process_start_time_seconds", "up"]
    assert client.get("/api/v1/label/nothing/values").json() == {"status": "success", "data": []}


def test_escaped_label_names() -> None:
    assert unescape_label_name("U__http_2e_status__code") == "http.status_code"
    assert unescape_label_name("job") == "job"
    assert unescape_label_name("U__bad_zz_") == "U__bad_zz_"


def test_metadata_exemplars_and_buildinfo(client: TestClient) -> None:
    assert client.get("/api/v1/metadata").json() == {"status": "success", "data": {}}
    probe = client.post(
        "/api/v1/query_exemplars", data={"query": "test", "start": "1700000000000", "end": "1700000001000"}
    )
    assert probe.json() == {"status": "success", "data": []}
    info = client.get("/api/v1/status/buildinfo").json()["data"]
    assert set(info) == {"version", "revision", "branch", "buildUser", "buildDate", "goVersion"}
    assert "features" not in info  # Grafana would take us for Mimir
    assert info["version"].split(".")[0] >= "2"


def test_format_query(client: TestClient) -> None:
    response = client.post("/api/v1/format_query", data={"query": "sum(rate(x[5m]))by(job)"})
    assert response.json() == {"status": "success", "data": "sum by (job) (rate(x[5m]))"}
    assert client.get("/api/v1/format_query", params={"query": "sum("}).status_code == 400
    # longer than 100 columns: laid out over lines as Prometheus' Pretty() does
    long = ('sum(rate(foo{job="api-server",service="a:c"}[5m])) by (job) / on(job) group_left '
            'sum(rate(bar_total_requests_long_name{job="api-server",service="a:c"}[5m])) by (job)')
    assert client.get("/api/v1/format_query", params={"query": long}).json()["data"].split("\n") == [
        '  sum by (job) (rate(foo{job="api-server",service="a:c"}[5m]))',
        "/ on (job) group_left ()",
        '  sum by (job) (rate(bar_total_requests_long_name{job="api-server",service="a:c"}[5m]))',
    ]


# --- errors, warnings and infos from the engine ----------------------------------------------------


class ScriptedEngine:
    """Answers every query with one prepared result or error, and remembers its options."""

    def __init__(self, outcome: QueryResult | QueryError, timeout_seconds: float = 120.0) -> None:
        self.outcome = outcome
        self.timeout_seconds = timeout_seconds
        self.lookback_ms = 300_000
        self.seen: list[tuple[float, int]] = []

    def instant(self, query: str | ast.Expr, time_ms: int) -> QueryResult:
        return self._answer()

    def range(self, query: str | ast.Expr, start_ms: int, end_ms: int, step_ms: int) -> QueryResult:
        return self._answer()

    def _answer(self) -> QueryResult:
        self.seen.append((self.timeout_seconds, self.lookback_ms))
        if isinstance(self.outcome, QueryError):
            raise self.outcome
        return self.outcome


@pytest.mark.parametrize(
    ("error", "status", "error_type"),
    [
        (EvalError("vector cannot contain metrics with the same labelset"), 422, "execution"),
        (QueryTimeout("query timed out in expression evaluation"), 503, "timeout"),
    ],
)
def test_engine_errors(storage: Storage, error: QueryError, status: int, error_type: str) -> None:
    client = make_client(ScriptedEngine(error), storage)
    for response in (
        client.get("/api/v1/query", params={"query": "up"}),
        client.post("/api/v1/query_range", data={"query": "up", "start": "0", "end": "60", "step": "15"}),
    ):
        assert response.status_code == status
        assert response.json() == {"status": "error", "errorType": error_type, "error": str(error)}


def test_warnings_and_infos_are_passed_on(storage: Storage) -> None:
    result = QueryResult(
        "vector",
        [ResultSeries(NODE, np.array([5000]), np.array([math.inf]))],
        warnings=["PromQL warning: quantile value should be between 0 and 1, got NaN (1:10)"],
        infos=[
            "PromQL info: metric might not be a counter, name does not end in "
            '_total/_sum/_count/_bucket: "up" (1:6)'
        ],
    )
    body = make_client(ScriptedEngine(result), storage).get(
        "/api/v1/query", params={"query": "x", "time": "5"}
    )
    assert body.text.endswith(
        '"warnings":["PromQL warning: quantile value should be between 0 and 1, got NaN (1:10)"],'
        '"infos":["PromQL info: metric might not be a counter, name does not end in '
        "_total/_sum/_count/_bucket: "
        '\\"up\\" (1:6)"]}'
    )
    assert body.json()["data"]["result"][0]["value"] == [5, "+Inf"]


def test_timeout_and_lookback_parameters_reach_the_engine(storage: Storage) -> None:
    engine = ScriptedEngine(QueryResult("scalar", [ResultSeries((), np.array([0]), np.array([1.0]))]), 60.0)
    client = make_client(engine, storage)
    client.get("/api/v1/query", params={"query": "1", "timeout": "5s", "lookback_delta": "1m"})
    client.get("/api/v1/query", params={"query": "1", "timeout": "600"})  # capped by the server's
    client.get("/api/v1/query", params={"query": "1"})
    assert engine.seen == [(5.0, 60_000), (60.0, 300_000), (60.0, 300_000)]


# --- Prometheus' number formats -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (0.1, "0.1"),
        (-2.5, "-2.5"),
        (100.0, "100"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1e100, "1e+100"),
        (1e-6, "0.000001"),
        (1e-7, "1e-07"),
        (1.5e-7, "1.5e-07"),
        (123456789.125, "123456789.125"),
        (1 / 3, "0.3333333333333333"),
        (0.0, "0"),
        (-0.0, "-0"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
        (5e-324, "5e-324"),
    ],
)
def test_sample_values_are_formatted_like_go(value: float, text: str) -> None:
    assert format_sample_value(value) == text


@pytest.mark.parametrize("first_ms", [-3000, 1050])
@pytest.mark.parametrize("with_orjson", [True, False])
def test_matrix_bodies_format_every_point_like_go(
    with_orjson: bool, first_ms: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Range results format all values of a series at once (orjson's or ``repr``'s shortest
    digits, fixed up) and each distinct timestamp once: the same text as ``format_sample_value``
    and ``format_timestamp`` point by point (with and without negative times)."""
    from watchkeeper.promql import formatting

    if not with_orjson:
        monkeypatch.setattr(formatting, "_orjson", None)
    else:
        assert formatting._orjson is not None, "orjson is a dependency"
    rng = np.random.default_rng(5)
    special = [0.0, -0.0, 1.0, 100.0, 1e-6, 9.99e-7, 1e15, 1e16, 1e21, 9.99e20, 5e-324, 2.0**63,
               math.nan, math.inf, -math.inf, 1 / 3, -2.5]  # fmt: skip
    values = np.concatenate([special, rng.random(2000) * 10.0 ** rng.integers(-12, 24, 2000),
                             np.round(rng.random(500) * 1000)])
    times = np.arange(values.shape[0], dtype=np.int64) * 1507 + first_ms
    series = [
        ResultSeries((("a", "b"),), times, values),
        ResultSeries((("a", "c"),), times[::7], values[::7]),
        ResultSeries((("a", "d"),), times[:0], values[:0]),
    ]
    body = formatting.result_json(QueryResult("matrix", series))
    items = [
        f'{{"metric":{{"a":"{s.labels[0][1]}"}},"values":['
        + ",".join(
            f'[{format_timestamp(t)},"{format_sample_value(v)}"]'
            for t, v in zip(s.timestamps_ms.tolist(), s.values.tolist(), strict=True)
        )
        + "]}"
        for s in series
    ]
    assert body == f'{{"resultType":"matrix","result":[{",".join(items)}]}}'
    assert formatting._value_texts(np.empty(0)) == []


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0"), (4000, "4"), (1050, "1.050"), (1435781451781, "1435781451.781"), (-1500, "-1.500")],
)
def test_timestamps_are_seconds_with_milliseconds(ms: int, text: str) -> None:
    assert format_timestamp(ms) == text


def test_label_values_are_escaped_like_go(storage: Storage) -> None:
    storage.append(
        storage.series_refs([(("__name__", "m"), ("a", '<b>&"\n'))]), np.array([T0_MS]), np.array([1.0])
    )
    client = make_client(Engine(storage), storage)
    response = client.get("/api/v1/series", params={"match[]": "m"})
    assert (
        response.text == '{"status":"success","data":[{"__name__":"m","a":"\\u003cb\\u003e\\u0026\\"\\n"}]}'
    )


def _threads_of(costs: QueryCosts, runs: int, key: tuple[str, int, int] = ("up", 0, 0)) -> list[bool]:
    """For each of ``runs`` answers to the same query: whether it was evaluated on the loop's thread."""
    seen: list[bool] = []

    async def main() -> None:
        loop_thread = threading.get_ident()

        def evaluate() -> QueryResult:
            seen.append(threading.get_ident() == loop_thread)
            return QueryResult("scalar", [ResultSeries((), np.array([T0_MS]), np.array([1.0]))])

        for _ in range(runs):
            response = await costs.answer(key, evaluate, 0)
            body = b'{"status":"success","data":{"resultType":"scalar","result":[1435781430.781,"1"]}}'
            assert bytes(response.body) == body

    asyncio.run(main())
    return seen


def test_a_query_that_was_fast_last_time_is_answered_on_the_event_loop() -> None:
    assert _threads_of(QueryCosts(inline_below_s=60.0), 3) == [False, True, True]


def test_slow_queries_stay_in_worker_threads() -> None:
    assert _threads_of(QueryCosts(inline_below_s=0.0), 3) == [False, False, False]


def test_query_costs_forget_everything_when_full() -> None:
    costs = QueryCosts(inline_below_s=60.0, max_entries=2)
    _threads_of(costs, 1, ("a", 0, 0))
    _threads_of(costs, 1, ("b", 0, 0))
    assert _threads_of(costs, 2, ("c", 0, 0)) == [False, True]
    assert list(costs.seconds) == [("c", 0, 0)]
    assert _threads_of(costs, 1, ("a", 0, 0)) == [False]


@pytest.mark.parametrize("path", ["/api/v1/query", "/api/v1/query_range"])
def test_a_query_that_does_not_parse_is_bad_data_with_its_position(storage: Storage, path: str) -> None:
    client = make_client(Engine(storage), storage)
    params = {"query": "foo bar", "time": "4", "start": "0", "end": "10", "step": "1"}
    response = client.get(path, params=params)
    assert response.status_code == 400
    assert response.json() == {
        "status": "error",
        "errorType": "bad_data",
        "error": 'invalid parameter "query": 1:5: parse error: unexpected identifier "bar"',
    }
