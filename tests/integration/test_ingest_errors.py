"""Every bad remote-write input against a running server: it answers 4xx with a message, stays up,
and what was written before is intact and queryable."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import cramjam
import pytest

from tests.collector.encode import Pairs, field, label, sample, snappy, write_request
from tests.integration.conftest import Server

T0 = (int(time.time()) - 3600) * 1000  # recent: the server's own self-scrape makes much older samples too old
GOOD = [(("__name__", "good_total"), ("job", "api"), ("instance", f"i{i}")) for i in range(5)]

LIMITS_ENV = {
    "WATCHKEEPER_LIMITS__MAX_BODY_BYTES": "200000",
    "WATCHKEEPER_LIMITS__MAX_LABELS_PER_SERIES": "8",
    "WATCHKEEPER_LIMITS__MAX_LABEL_NAME_LENGTH": "40",
    "WATCHKEEPER_LIMITS__MAX_LABEL_VALUE_LENGTH": "100",
    "WATCHKEEPER_LIMITS__MAX_SERIES_PER_REQUEST": "50",
    "WATCHKEEPER_LIMITS__MAX_ACTIVE_SERIES": "40",
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("errors") / "data", LIMITS_ENV)
    server.start()
    r = server.write([(labels, [(T0, 1.0), (T0 + 15_000, 2.0)]) for labels in GOOD])
    assert r.status_code == 204, r.text
    yield server
    server.close()


def assert_intact(srv: Server) -> None:
    assert srv.alive()
    assert srv.client.get("/-/ready").status_code == 200
    got = srv.raw_samples('good_total{job="api"}', T0 + 15_000)
    assert len(got) == len(GOOD)
    for samples in got.values():
        assert samples[:2] == [(T0, 1.0), (T0 + 15_000, 2.0)]


def one(
    labels: list[tuple[str, str]], ts: int = T0 + 30_000, value: float = 1.0
) -> list[tuple[Pairs, list[tuple[int, float]]]]:
    return [(labels, [(ts, value)])]


BAD_SERIES: list[tuple[str, list[tuple[str, str]], str]] = [
    ("invalid label name", [("__name__", "m"), ("bad-name", "x")], "invalid label name 'bad-name'"),
    ("label name starting with a digit", [("__name__", "m"), ("1abc", "x")], "invalid label name '1abc'"),
    ("invalid metric name", [("__name__", "1m")], "invalid metric name '1m'"),
    ("missing metric name", [("job", "api")], "without a metric name"),
    ("duplicate label names", [("__name__", "m"), ("job", "a"), ("job", "b")], "duplicate label name 'job'"),
    ("too many labels", [("__name__", "m")] + [(f"l{i}", "v") for i in range(8)], "more than the limit of 8"),
    ("label name too long", [("__name__", "m"), ("n" * 41, "v")], "longer than 40 characters"),
    ("label value too long", [("__name__", "m"), ("job", "v" * 101)], "longer than 100 characters"),
]


@pytest.mark.parametrize(("case", "labels", "message"), BAD_SERIES, ids=[c[0] for c in BAD_SERIES])
def test_invalid_series_is_refused_and_the_valid_ones_kept(
    srv: Server, case: str, labels: list[tuple[str, str]], message: str
) -> None:
    ok = [("__name__", "kept_total"), ("case", case.replace(" ", "_"))]
    r = srv.write(one(labels) + one(ok), sort=False)
    assert r.status_code == 400
    assert message in r.text
    assert "1 samples rejected" in r.text
    assert r.headers["content-type"].startswith("text/plain")
    kept = srv.raw_samples(f'kept_total{{case="{case.replace(" ", "_")}"}}', T0 + 30_000)
    assert list(kept.values()) == [[(T0 + 30_000, 1.0)]]
    assert_intact(srv)


def test_unsorted_labels_are_sorted_not_refused(srv: Server) -> None:
    labels = [("zone", "eu"), ("job", "api"), ("__name__", "unsorted_total")]
    assert srv.write(one(labels), sort=False).status_code == 204
    assert srv.write(one(labels, T0 + 45_000, 2.0), sort=True).status_code == 204  # same series
    got = srv.raw_samples("unsorted_total", T0 + 45_000)
    assert got == {
        (("__name__", "unsorted_total"), ("job", "api"), ("zone", "eu")): [
            (T0 + 30_000, 1.0),
            (T0 + 45_000, 2.0),
        ]
    }


def test_compressed_body_too_large_is_413(srv: Server) -> None:
    r = srv.post_raw(bytes(range(256)) * 1000)  # 256 kB > 200 kB
    assert r.status_code == 413
    assert "exceeds the limit of 200000 bytes" in r.text
    assert_intact(srv)


def test_decompressed_body_too_large_is_413(srv: Server) -> None:
    bomb = snappy(b"\x00" * 1_000_000)
    assert len(bomb) < 200_000
    r = srv.post_raw(bomb)
    assert r.status_code == 413
    assert "decompressed body of 1000000 bytes" in r.text
    assert_intact(srv)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff" * 12, "snappy"),
        (b"not snappy at all", "snappy"),
        (snappy(b"\x0a\x7f\x0a\x02"), "protobuf decode error"),  # truncated series
        (snappy(b"\x0b\x01\x02"), "protobuf decode error"),  # wire type 3 (group): unsupported
        (snappy(field(1, field(1, b"\x0a\x05ab"))), "protobuf decode error"),  # label runs past its end
        (snappy(field(1, field(1, label("__name__", "m")) + field(2, b"\x09\x00"))), "protobuf decode error"),
        (
            snappy(field(1, field(1, field(1, b"\xff\xfe") + field(2, b"v")) + field(2, sample(1, 1.0)))),
            "UTF-8",
        ),
    ],
    ids=[
        "bad-snappy-header",
        "not-snappy",
        "truncated-series",
        "group-wire-type",
        "label-overrun",
        "truncated-sample",
        "bad-utf8",
    ],
)
def test_malformed_body_is_400(srv: Server, content: bytes, message: str) -> None:
    r = srv.post_raw(content)
    assert r.status_code == 400
    assert message in r.text
    assert_intact(srv)


def test_too_many_series_in_one_request_is_400(srv: Server) -> None:
    items = [([("__name__", "wide"), ("i", str(i))], [(T0, 1.0)]) for i in range(51)]
    r = srv.write(items)
    assert r.status_code == 400
    assert "request has 51 series, more than the limit of 50" in r.text
    assert srv.raw_samples("wide", T0) == {}
    assert_intact(srv)


def test_active_series_limit_is_429_with_retry_after(srv: Server) -> None:
    items = [([("__name__", "many"), ("i", str(i))], [(T0, 1.0)]) for i in range(45)]
    r = srv.write(items)
    assert r.status_code == 429
    assert "too many active series" in r.text
    assert int(r.headers["retry-after"]) > 0
    assert srv.raw_samples("many", T0) == {}
    assert_intact(srv)


def test_out_of_order_and_duplicate_samples_are_counted_and_the_rest_kept(srv: Server) -> None:
    s = [("__name__", "ooo_total"), ("job", "api")]
    t = [("__name__", "dup_total"), ("job", "api")]
    assert srv.write([(s, [(T0 + 60_000, 5.0)]), (t, [(T0 + 60_000, 5.0)])]).status_code == 204
    r = srv.write(
        [
            (s, [(T0 + 30_000, 1.0), (T0 + 45_000, 2.0), (T0 + 75_000, 6.0)]),  # two too early, one fine
            (t, [(T0 + 60_000, 9.0), (T0 + 90_000, 7.0)]),  # a different value for a stored timestamp
        ]
    )
    assert r.status_code == 400
    assert "out of order sample: 2 of 5 samples rejected" in r.text
    assert "duplicate sample for timestamp: 1 of 5 samples rejected" in r.text
    assert "(2 samples accepted)" in r.text
    assert list(srv.raw_samples("ooo_total", T0 + 90_000).values()) == [
        [(T0 + 60_000, 5.0), (T0 + 75_000, 6.0)]
    ]
    assert list(srv.raw_samples("dup_total", T0 + 90_000).values()) == [
        [(T0 + 60_000, 5.0), (T0 + 90_000, 7.0)]
    ]
    # the same sample again (same timestamp, same value) is not an error, as in Prometheus
    assert srv.write([(s, [(T0 + 75_000, 6.0)])]).status_code == 204
    metrics = srv.client.get("/metrics").text
    assert 'watchkeeper_ingest_rejected_samples_total{reason="out_of_order"} 2.0' in metrics
    assert 'watchkeeper_ingest_rejected_samples_total{reason="duplicate"} 1.0' in metrics
    assert_intact(srv)


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({"Content-Encoding": "gzip"}, 415, "Content-Encoding"),
        ({"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request"}, 415, "2.0"),
    ],
)
def test_unsupported_encodings_are_415(
    srv: Server, headers: dict[str, str], status: int, message: str
) -> None:
    content = snappy(write_request(one([("__name__", "x")])))
    if headers.get("Content-Encoding") == "gzip":
        content = bytes(cramjam.gzip.compress(write_request(one([("__name__", "x")]))))
    r = srv.post_raw(content, {"Content-Type": "application/x-protobuf", **headers})
    assert r.status_code == status
    assert message in r.text
    assert_intact(srv)


def test_empty_request_is_fine(srv: Server) -> None:
    assert srv.post_raw(snappy(b"")).status_code == 204
    assert_intact(srv)


def test_server_survived_everything(srv: Server, make_server: Callable[..., Server]) -> None:
    assert_intact(srv)
    assert srv.client.get("/-/healthy").status_code == 200
