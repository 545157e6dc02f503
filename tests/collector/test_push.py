"""Push APIs (JSON push, text import, Pushgateway routes) and ingest auth, against a real server.

`serve` runs watchkeeper's own app (create_app) with the collector router added, as app.py will
wire it, under uvicorn on loopback; the other collector tests reuse it.
"""

from __future__ import annotations

import base64
import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI

from tests.collector import encode
from watchkeeper.app import create_app
from watchkeeper.collector.auth import IngestAuth, IngestAuthConfig, TokenConfig
from watchkeeper.collector.push import PushGroups, grouping_key, parse_json_push
from watchkeeper.config import Settings
from watchkeeper.errors import DecodeError
from watchkeeper.tsdb.reader import is_stale


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_app(tmp_path: Path, **overrides: Any) -> FastAPI:
    """The real app (it mounts the collector routes), without the self-scrape unless asked."""
    settings = Settings.load(
        None, overrides={"data_dir": tmp_path / "data", "wal_fsync": False, "scrape_configs": [], **overrides}
    )
    return create_app(settings)


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """The base URL of `app` served by uvicorn on loopback in a thread, once ready."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, ws="none",
                            lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/-/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.02)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


def query(url: str, expr: str, at_s: float | None = None, token: str | None = None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"query": expr}
    if at_s is not None:
        params["time"] = at_s
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(url + "/api/v1/query", params=params, headers=headers)
    assert r.status_code == 200, r.text
    result: list[dict[str, Any]] = r.json()["data"]["result"]
    return result


def values(url: str, expr: str, at_s: float | None = None, token: str | None = None) -> dict[str, float]:
    """{rendered label set without __name__: value} of an instant query."""
    out = {}
    for item in query(url, expr, at_s, token):
        m = item["metric"]
        key = ",".join(f"{k}={v}" for k, v in sorted(m.items()) if k != "__name__")
        out[key] = float(item["value"][1])
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve(build_app(tmp_path_factory.mktemp("push"))) as url:
        yield url


# --- JSON push ---------------------------------------------------------------------------------


def test_json_push_batch_is_queryable(server: str) -> None:
    now = time.time()
    body = {"samples": [
        {"metric": "jobs_done_total", "labels": {"job": "etl", "step": "load"}, "value": 3},
        {"metric": "jobs_done_total", "labels": {"job": "etl", "step": "dump"}, "value": "+Inf"},
        {"metric": "last_run_seconds", "labels": {"job": "etl"}, "value": 12.5,
         "timestamp_ms": int(now * 1000) - 1000},
    ]}
    r = httpx.post(server + "/api/v1/push", json=body)
    assert r.status_code == 204, r.text
    assert values(server, "jobs_done_total") == {"job=etl,step=dump": float("inf"), "job=etl,step=load": 3.0}
    assert values(server, "last_run_seconds") == {"job=etl": 12.5}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{", "not valid JSON"),
        (b'{"samples": [{"metric": "x"}]}', "samples.0.value"),
        (b'{"samples": [{"metric": "x", "value": "lots"}]}', "not a number"),
        (b'[{"metric": "x y", "value": 1}]', "invalid metric name"),
        (b'[{"metric": "x", "labels": {"a-b": "1"}, "value": 1}]', "invalid label name"),
        (b'[{"metric": "x", "labels": {"__name__": "y"}, "value": 1}]', "__name__"),
        (b'{"samples": [], "extra": 1}', "extra"),
    ],
)
def test_json_push_errors_are_400_with_a_message(server: str, body: bytes, needle: str) -> None:
    r = httpx.post(server + "/api/v1/push", content=body)
    assert r.status_code == 400, r.text
    assert needle in r.text


def test_json_push_accepts_gzip_and_refuses_a_gzip_bomb(tmp_path: Path) -> None:
    settings_limit = 1 << 20
    app = create_app(Settings.load(None, overrides={"data_dir": tmp_path / "d", "wal_fsync": False,
                                                    "limits": {"max_body_bytes": settings_limit}}))
    with serve(app) as url:
        ok = gzip.compress(b'[{"metric": "zipped", "value": 1}]')
        r = httpx.post(url + "/api/v1/push", content=ok, headers={"Content-Encoding": "gzip"})
        assert r.status_code == 204, r.text
        bomb = gzip.compress(b" " * (settings_limit * 4))
        r = httpx.post(url + "/api/v1/push", content=bomb, headers={"Content-Encoding": "gzip"})
        assert r.status_code == 413 and "exceeds the limit" in r.text
        r = httpx.post(url + "/api/v1/push", content=b"x", headers={"Content-Encoding": "br"})
        assert r.status_code == 415


def test_parse_json_push_uses_now_without_timestamp() -> None:
    batch = parse_json_push(b'{"samples": [{"metric": "a", "value": 1}]}', now_ms=42)
    assert batch.timestamps_ms == [42]
    with pytest.raises(DecodeError):
        parse_json_push(b'{"samples": [{"metric": "a", "value": true}]}', now_ms=42)


# --- text import ---------------------------------------------------------------------------------


def test_import_prometheus_text_with_extra_labels(server: str) -> None:
    ts = int(time.time() * 1000) - 5000
    body = (
        "# HELP queue_depth Items waiting.\n# TYPE queue_depth gauge\n"
        f'queue_depth{{queue="mail"}} 12 {ts}\nqueue_depth{{queue="sms"}} 3\n'
    )
    r = httpx.post(server + "/api/v1/import/prometheus", content=body,
                   params={"extra_label": ["job=importer", "queue=override"]})
    assert r.status_code == 204, r.text
    # extra labels replace the body's: both lines become one series; the second sample is newer
    assert values(server, "queue_depth") == {"job=importer,queue=override": 3.0}


def test_import_openmetrics_by_content_type(server: str) -> None:
    body = "# TYPE builds counter\nbuilds_total 5\nbuilds_created 1.7e9\n# EOF\n"
    r = httpx.post(server + "/api/v1/import/prometheus", content=body,
                   headers={"Content-Type": "application/openmetrics-text; version=1.0.0"})
    assert r.status_code == 204, r.text
    assert values(server, "builds_total") == {"": 5.0}
    assert values(server, "builds_created") == {}


def test_import_errors_name_the_line(server: str) -> None:
    r = httpx.post(server + "/api/v1/import/prometheus", content="ok 1\nbroken{a=1} 2\n")
    assert r.status_code == 400
    assert "line 2" in r.text


# --- Pushgateway -------------------------------------------------------------------------------


def test_grouping_key_with_base64_and_errors() -> None:
    encoded = base64.urlsafe_b64encode(b"a/b").decode().rstrip("=")
    assert grouping_key(f"job/backup/path@base64/{encoded}") == {"job": "backup", "path": "a/b"}
    for bad in ("instance/x", "job", "job/a/instance", "job/a/x/1/x/2", "job/"):
        with pytest.raises(DecodeError):
            grouping_key(bad)


def test_pushgateway_put_post_delete(server: str) -> None:
    group = server + "/metrics/job/backup/instance/db1"
    r = httpx.put(group, content="backup_bytes 100\nbackup_files 7\n")
    assert r.status_code == 200, r.text
    assert values(server, "backup_bytes") == {"instance=db1,job=backup": 100.0}
    assert values(server, "push_time_seconds")["instance=db1,job=backup"] == pytest.approx(time.time(), abs=5)
    time.sleep(0.01)
    # POST replaces only the names pushed: backup_files stays
    assert httpx.post(group, content="backup_bytes 200\n").status_code == 200
    assert values(server, "backup_bytes") == {"instance=db1,job=backup": 200.0}
    assert values(server, "backup_files") == {"instance=db1,job=backup": 7.0}
    time.sleep(0.01)
    # PUT replaces the whole group: backup_files goes stale at once
    assert httpx.put(group, content="backup_bytes 300\n").status_code == 200
    assert values(server, "backup_files") == {}
    time.sleep(0.01)
    assert httpx.delete(group).status_code == 202
    assert values(server, "backup_bytes") == {}
    assert values(server, "push_time_seconds") == {}


def test_pushgateway_base64_path_segments(server: str) -> None:
    """As the Pushgateway: ``<label>@base64/<value>`` (URL-safe, padding optional) carries values with
    slashes, and ``@base64/=`` an empty value (the label is then absent)."""
    job = base64.urlsafe_b64encode(b"nightly/backup").decode().rstrip("=")
    path = base64.urlsafe_b64encode(b"/var/lib/db").decode()
    group = f"{server}/metrics/job@base64/{job}/path@base64/{path}/instance@base64/="
    r = httpx.put(group, content="b64_pushed 1\n")
    assert r.status_code == 200, r.text
    assert values(server, "b64_pushed") == {"job=nightly/backup,path=/var/lib/db": 1.0}
    assert httpx.delete(group).status_code == 202
    assert values(server, "b64_pushed") == {}


def test_pushgateway_refuses_conflicts_and_timestamps(server: str) -> None:
    r = httpx.put(server + "/metrics/job/a", content='x{job="b"} 1\n')
    assert r.status_code == 400 and "conflicts with the grouping key" in r.text
    r = httpx.put(server + "/metrics/job/a", content="x 1 1700000000000\n")
    assert r.status_code == 400 and "timestamps" in r.text
    r = httpx.put(server + "/metrics/instance/a", content="x 1\n")
    assert r.status_code == 400 and "/metrics/job/" in r.text


def test_push_groups_are_bounded() -> None:
    groups = PushGroups(max_groups=2)
    from watchkeeper.collector.exposition import parse_exposition

    for job in "abc":
        groups.push({"job": job}, parse_exposition("x 1\n"), replace_all=True, now_ms=1)
    # the oldest group was forgotten: deleting it writes no staleness markers
    assert len(groups.push({"job": "a"}, None, replace_all=True, now_ms=2)) == 0
    batch = groups.push({"job": "c"}, None, replace_all=True, now_ms=2)
    assert len(batch) == 2 and all(is_stale(np.array(batch.values)))


# --- auth and tenant limits ----------------------------------------------------------------------


def _auth(**token: Any) -> IngestAuthConfig:
    return IngestAuthConfig(tokens=[TokenConfig(token="writer-token", tenant="t1", **token),
                                    TokenConfig(token="reader-token", tenant="t2", scopes=["read"])])


def test_tokens_scopes_and_open_loopback(tmp_path: Path) -> None:
    with serve(build_app(tmp_path, ingest_auth=_auth())) as url:
        push: Callable[..., httpx.Response] = lambda **kw: httpx.post(  # noqa: E731
            url + "/api/v1/push", json=[{"metric": "m", "value": 1}], **kw)
        assert push().status_code == 401
        assert push(headers={"Authorization": "Bearer nope-nope"}).status_code == 401
        assert push(headers={"Authorization": "Basic abc"}).status_code == 401
        r = push(headers={"Authorization": "Bearer reader-token"})
        assert r.status_code == 403 and "write" in r.text
        assert push(headers={"Authorization": "Bearer writer-token"}).status_code == 204
    closed = IngestAuth(IngestAuthConfig(), bind_host="0.0.0.0")
    with pytest.raises(Exception, match="loopback"):
        closed.authorize(None)
    assert IngestAuth(IngestAuthConfig(), bind_host="::1").authorize(None).name == "anonymous"


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    with serve(build_app(tmp_path, ingest_auth=_auth(samples_per_second=10, burst_seconds=1))) as url:
        h = {"Authorization": "Bearer writer-token"}
        body = [{"metric": "m", "labels": {"i": str(i)}, "value": 1} for i in range(30)]
        assert httpx.post(url + "/api/v1/push", json=body, headers=h).status_code == 204  # into debt
        r = httpx.post(url + "/api/v1/push", json=body, headers=h)
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 2
        assert "samples/s" in r.text


def test_active_series_limit_per_tenant(tmp_path: Path) -> None:
    with serve(build_app(tmp_path, ingest_auth=_auth(max_active_series=5))) as url:
        h = {"Authorization": "Bearer writer-token"}
        first = [{"metric": "m", "labels": {"i": str(i)}, "value": 1} for i in range(5)]
        assert httpx.post(url + "/api/v1/push", json=first, headers=h).status_code == 204
        assert httpx.post(url + "/api/v1/push", json=first, headers=h).status_code == 204  # same series
        more = [{"metric": "m", "labels": {"i": "new"}, "value": 1}]
        r = httpx.post(url + "/api/v1/push", json=more, headers=h)
        assert r.status_code == 429 and "active series" in r.text and r.headers["Retry-After"]


def test_far_future_samples_are_refused_and_do_not_poison_the_store(server: str) -> None:
    year_2500_ms = 16_725_225_600_000
    r = httpx.post(server + "/api/v1/push", json=[
        {"metric": "future_m", "value": 1, "timestamp_ms": year_2500_ms}, {"metric": "now_m", "value": 2}])
    assert r.status_code == 400
    assert "too far in the future: 1 of 2 samples rejected" in r.text and "1 samples accepted" in r.text
    r = httpx.post(server + "/api/v1/push", json=[{"metric": "later_m", "value": 3}])
    assert r.status_code == 204, r.text
    assert values(server, "now_m") == {"": 2.0} and values(server, "later_m") == {"": 3.0}


def test_write_request_fast_and_general_encodings_agree_bit_exactly() -> None:
    from watchkeeper.collector.push import SampleBatch
    from watchkeeper.collector.remote_write import decode_write_request, parse_labels
    from watchkeeper.tsdb.reader import STALE_NAN

    def batch(timestamps: list[int]) -> SampleBatch:
        b = SampleBatch()
        for i, ts in enumerate(timestamps):
            b.add((("__name__", "m"), ("i", str(i)), ("long", "x" * (i * 9000))), ts,
                  [1.5, STALE_NAN, -0.0, float("inf")][i % 4])
        return b

    now = 1_795_000_000_000
    fast = batch([now, now + 1, now + 2])  # the last label set is 18 KiB: general path
    assert fast.write_request() == fast._write_request_slow()
    small = batch([now, now + 1])
    assert small.write_request() == small._write_request_slow()
    d = decode_write_request(small.write_request())
    assert d.values.view(np.uint64).tolist()[1] == 0x7FF0000000000002
    assert dict(parse_labels(d.keys[0]))["i"] == "0"
    odd = batch([5, -1])  # timestamps outside the 6-byte varint range
    assert decode_write_request(odd.write_request()).timestamps_ms.tolist() == [5, -1]


def _remote_write(url: str, name: str, series: int, **headers: str) -> httpx.Response:
    now_ms = int(time.time() * 1000)
    items = [([("__name__", name), ("i", str(i))], [(now_ms, 1.0)]) for i in range(series)]
    headers = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf", **headers}
    return httpx.post(url + "/api/v1/write", content=encode.body(items), headers=headers)


def test_remote_write_needs_the_write_scope_and_counts_against_the_tenant(tmp_path: Path) -> None:
    auth = _auth(samples_per_second=10, burst_seconds=1, max_active_series=40)
    with serve(build_app(tmp_path, ingest_auth=auth)) as url:
        assert _remote_write(url, "rw", 1).status_code == 401
        r = _remote_write(url, "rw", 1, Authorization="Bearer reader-token")
        assert r.status_code == 403 and "write" in r.text
        writer = {"Authorization": "Bearer writer-token"}
        assert _remote_write(url, "rw", 30, **writer).status_code == 204  # 30 samples: into debt
        r = _remote_write(url, "rw", 1, **writer)
        assert r.status_code == 429 and "samples/s" in r.text and int(r.headers["Retry-After"]) >= 2
        # the samples of JSON pushes and remote-writes are charged to the same tenant
        r = httpx.post(url + "/api/v1/push", json=[{"metric": "m", "value": 1}], headers=writer)
        assert r.status_code == 429
        assert values(url, "count(rw)", token="reader-token") == {"": 30.0}


def test_active_series_of_remote_write_per_tenant(tmp_path: Path) -> None:
    with serve(build_app(tmp_path, ingest_auth=_auth(max_active_series=5))) as url:
        writer = {"Authorization": "Bearer writer-token"}
        assert _remote_write(url, "rw", 5, **writer).status_code == 204
        r = _remote_write(url, "rw", 6, **writer)
        assert r.status_code == 429 and "active series" in r.text and r.headers["Retry-After"]
        assert values(url, "count(rw)", token="reader-token") == {"": 5.0}


def test_ingest_is_closed_on_a_public_bind_without_tokens(tmp_path: Path) -> None:
    """Settings say 0.0.0.0 (served here on loopback): with no tokens every ingest route refuses
    (the security gate answers first, 401, naming the reason), and nothing is written."""
    with serve(build_app(tmp_path, host="0.0.0.0")) as url:  # nosec B104 (a setting, nothing binds it)
        answers = [
            httpx.post(url + "/api/v1/push", json=[{"metric": "m", "value": 1}]),
            _remote_write(url, "rw", 1),
            httpx.put(url + "/metrics/job/a", content=b"x 1\n"),
            httpx.post(url + "/v1/metrics", content=b"", headers={"Content-Type": "application/x-protobuf"}),
            httpx.post(url + "/api/v1/import/prometheus", content=b"x 1\n"),
        ]
        for r in answers:
            assert r.status_code in (401, 403) and "not a loopback address" in r.text, (r.url, r.text)
        assert values(url, "count({__name__=~'m|rw|x'})") == {}


def test_documented_json_schema_is_the_one_the_server_validates() -> None:
    import json
    import re

    from watchkeeper.collector.push import PushBody

    doc = (Path(__file__).resolve().parents[2] / "docs" / "ingest.md").read_text()
    (block,) = re.findall(r"```json\n(.*?)```", doc, re.S)
    assert json.loads(block) == PushBody.model_json_schema()
