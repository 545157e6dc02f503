"""Bad input: at least 10,000 malformed or mutated bodies per ingest endpoint (OTLP protobuf and JSON,
JSON push, text import, Pushgateway PUT and POST, remote-write) against a running server. Every
answer must be below 500 (a 4xx carries a message), none may hang, the server stays up, and the
data ingested before the storm is intact and queryable.

The mutator is a seeded, radamsa-style byte and token mutator over valid seed bodies (bit flips,
insertions of format-significant tokens, truncation, duplication, splicing, gzip wrapping), plus
hypothesis-generated JSON documents for the JSON endpoints. Runs in about a minute; marked slow.
``WATCHKEEPER_FUZZ_BODIES`` (read by this test only) raises or lowers the count per endpoint.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from tests.collector.encode import Pairs, snappy, write_request
from tests.collector.test_push import build_app, query, serve, values
from watchkeeper.tsdb.reader import STALE_NAN

BODIES = int(os.environ.get("WATCHKEEPER_FUZZ_BODIES", "10000"))
NOW_NS = time.time_ns() - 60 * 10**9

TOKENS = [
    b"{", b"}", b'"', b"\\", b"\n", b"\r\n", b" ", b"\t", b"#", b"=", b",", b"\x00", b"\xff", b"\xc3",
    b"NaN", b"+Inf", b"-Inf", b"1e999", b"-0", b"9" * 40, b"-9223372036854775809", b"_", b"# EOF\n",
    b"# TYPE x counter\n", b"__name__", b"le", b"[", b"]", b"null", b"true", b"1.5", b":", b"\xed\xa0\x80",
]


def _otlp_seed() -> bytes:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.add(key="service.name").value.string_value = "fuzz"
    rm.resource.attributes.add(key="host.name").value.string_value = "h"
    sm = rm.scope_metrics.add()
    g = sm.metrics.add(name="fuzz.gauge", unit="s")
    g.gauge.data_points.add(time_unix_nano=NOW_NS, as_double=1.5).attributes.add(key="a").value.int_value = 3
    s = sm.metrics.add(name="fuzz.count")
    s.sum.is_monotonic = True
    s.sum.aggregation_temporality = 1
    s.sum.data_points.add(time_unix_nano=NOW_NS, as_int=4)
    h = sm.metrics.add(name="fuzz.hist", unit="ms").histogram.data_points.add(time_unix_nano=NOW_NS, count=3,
                                                                              sum=9)
    h.explicit_bounds.extend([1, 5])
    h.bucket_counts.extend([1, 1, 1])
    e = sm.metrics.add(name="fuzz.exp").exponential_histogram.data_points.add(time_unix_nano=NOW_NS, count=2,
                                                                              scale=3)
    e.positive.offset = -2
    e.positive.bucket_counts.extend([1, 0, 1])
    q = sm.metrics.add(name="fuzz.sum").summary.data_points.add(time_unix_nano=NOW_NS, count=1, sum=2)
    q.quantile_values.add(quantile=0.5, value=2)
    return bytes(req.SerializeToString())


def _remote_write_seed() -> bytes:
    """Uncompressed: the fuzzer mutates the protobuf, then snappy-compresses most cases."""
    ms = NOW_NS // 10**6
    items: list[tuple[Pairs, list[tuple[int, float]]]] = [
        ([("__name__", "fz_rw_total"), ("job", "fuzz"), ("i", str(i))],
         [(ms, float(i)), (ms + 1000, i + 0.5)])
        for i in range(3)
    ]
    items.append(([("__name__", "fz_rw_stale"), ("le", "+Inf")], [(ms, STALE_NAN)]))
    return write_request(items)


def _otlp_json_seed() -> bytes:
    from google.protobuf import json_format

    return str(json_format.MessageToJson(ExportMetricsServiceRequest.FromString(_otlp_seed()))).encode()


SEEDS: dict[str, list[bytes]] = {
    "otlp_protobuf": [_otlp_seed()],
    "otlp_json": [_otlp_json_seed()],
    "json_push": [
        json.dumps({"samples": [{"metric": "fz", "labels": {"a": "b"}, "value": 1,
                                 "timestamp_ms": NOW_NS // 10**6}]}).encode(),
        b'[{"metric": "fz", "value": "NaN"}, {"metric": "fz2", "labels": {}, "value": 2.5}]',
    ],
    "import": [
        b'# HELP fz x\n# TYPE fz counter\nfz_total{a="b",c="d\\"e"} 1\nfz2 NaN\n',
        b"# TYPE fz histogram\nfz_bucket{le=\"0.1\"} 1\nfz_bucket{le=\"+Inf\"} 2\nfz_sum 3\nfz_count 2\n",
    ],
    "pushgateway": [b'fz{a="b"} 1\nfz2 2\n# TYPE fz3 gauge\nfz3 -1e10\n'],
    "remote_write": [_remote_write_seed()],
}

ENDPOINTS: dict[str, tuple[str, str, dict[str, str]]] = {
    "otlp_protobuf": ("POST", "/v1/metrics", {"Content-Type": "application/x-protobuf"}),
    "otlp_json": ("POST", "/api/v1/otlp/v1/metrics", {"Content-Type": "application/json"}),
    "json_push": ("POST", "/api/v1/push", {"Content-Type": "application/json"}),
    "import": ("POST", "/api/v1/import/prometheus", {"Content-Type": "text/plain"}),
    "pushgateway": ("PUT", "/metrics/job/fuzz/instance/x", {"Content-Type": "text/plain"}),
    "remote_write": ("POST", "/api/v1/write", {"Content-Type": "application/x-protobuf",
                                               "Content-Encoding": "snappy",
                                               "X-Prometheus-Remote-Write-Version": "0.1.0"}),
}


def wire(endpoint: str, body: bytes) -> bytes:
    """The body as the endpoint takes it: remote-write bodies are snappy blocks."""
    return snappy(body) if endpoint == "remote_write" else body


def case(rng: random.Random, endpoint: str) -> tuple[bytes, dict[str, str]]:
    """One mutated request body and its extra headers. Remote-write: most mutations are of the
    protobuf inside a valid snappy block; some of the snappy block itself; some sent as they are."""
    body, headers = mutate(rng, SEEDS[endpoint])
    if endpoint != "remote_write" or headers:
        return body, headers
    roll = rng.random()
    if roll < 0.8:
        return snappy(body), headers
    if roll < 0.9:
        return mutate(rng, [wire(endpoint, seed) for seed in SEEDS[endpoint]])
    return body, headers


def mutate(rng: random.Random, seeds: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """One mutated body (and extra headers, e.g. gzip)."""
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        op = rng.randrange(9)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:  # bit flip
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # insert a token
            data[pos:pos] = rng.choice(TOKENS)
        elif op == 2:  # truncate
            del data[pos:]
        elif op == 3 and data:  # delete a span
            del data[pos : pos + rng.randrange(1, 16)]
        elif op == 4:  # duplicate a span
            end = min(len(data), pos + rng.randrange(1, 64))
            data[pos:pos] = data[pos:end] * rng.randrange(1, 4)
        elif op == 5:  # splice another seed
            other = rng.choice(seeds)
            cut = rng.randrange(len(other) + 1)
            data = data[:pos] + bytearray(other[cut:])
        elif op == 6 and data:  # random byte
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 7:  # random garbage
            data[pos:pos] = rng.randbytes(rng.randrange(1, 32))
        elif op == 8 and data:  # overwrite a digit run with an extreme number
            data[pos:pos] = rng.choice((b"18446744073709551616", b"-1", b"4294967296", b"0"))
    headers: dict[str, str] = {}
    roll = rng.random()
    if roll < 0.08:
        headers["Content-Encoding"] = "gzip"
        data = bytearray(gzip.compress(bytes(data)))
        if rng.random() < 0.5:  # corrupt or truncate the gzip stream
            data = data[: rng.randrange(len(data) + 1)]
    elif roll < 0.1:
        headers["Content-Encoding"] = rng.choice(["gzip", "snappy", "deflate", "br", ""])
    return bytes(data), headers


CANARY_MS = NOW_NS // 10**6
CANARY = [(CANARY_MS, 1.5), (CANARY_MS + 15_000, 2.5)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve(build_app(tmp_path_factory.mktemp("fuzz"))) as url:
        body = snappy(write_request([([("__name__", "fuzz_canary_rw")], CANARY)]))
        r = httpx.post(url + "/api/v1/write", content=body, headers=ENDPOINTS["remote_write"][2])
        assert r.status_code == 204, r.text
        yield url
        for client in _clients.values():
            client.close()
        _clients.clear()


def _canary(url: str) -> None:
    """Data written before each storm (the module's server also has `CANARY`, remote-written once)."""
    r = httpx.post(url + "/api/v1/push", json=[{"metric": "fuzz_canary", "labels": {"k": "v"}, "value": 42}])
    assert r.status_code == 204, r.text


def _check(r: httpx.Response, what: str) -> None:
    _check_status(r.status_code, r.content, what)


def _check_status(status: int, body: bytes, what: str) -> None:
    assert status < 500, f"{what}: {status} {body[:300]!r}"
    if status >= 400:
        assert body.strip(), f"{what}: {status} without a message"


class RawClient:
    """A minimal HTTP/1.1 keep-alive client over one socket: the fuzz loop's cost is then the
    server's, not httpx's (which would double the test's run time)."""

    def __init__(self, url: str, timeout_seconds: float = 10) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.timeout_seconds = timeout_seconds
        self.sock: socket.socket | None = None
        self.buf = b""

    def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=self.timeout_seconds)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf = b""
        head = f"{method} {path} HTTP/1.1\r\nHost: fuzz\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items() if v) + "\r\n"
        self.sock.sendall(head.encode("latin-1") + body)
        while b"\r\n\r\n" not in self.buf:
            self._read()
        header, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = header.split(b"\r\n")
        status = int(lines[0].split()[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in lines[1:])}
        length = int(fields.get(b"content-length", b"0"))
        while len(rest) < length:
            self.buf = rest
            self._read()
            rest = self.buf
        self.buf = rest[length:]
        if fields.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, rest[:length]

    def _read(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_mutated_bodies_never_5xx(server: str, endpoint: str) -> None:
    _canary(server)
    method, path, base_headers = ENDPOINTS[endpoint]
    rng = random.Random(f"watchkeeper-fuzz-{endpoint}")
    cases = [case(rng, endpoint) for _ in range(BODIES)]
    statuses: dict[int, int] = {}

    def send(chunk: list[tuple[bytes, dict[str, str]]]) -> list[int]:
        out = []
        client = RawClient(server)
        try:
            for i, (body, headers) in enumerate(chunk):
                verb = "POST" if endpoint == "pushgateway" and i % 2 else method  # PUT and POST alike
                status, text = client.request(verb, path, body, {**base_headers, **headers})
                _check_status(status, text, f"{endpoint} body #{i} {body[:200]!r} {headers}")
                out.append(status)
        finally:
            client.close()
        return out

    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        for codes in pool.map(send, [cases[i::2] for i in range(2)]):
            for code in codes:
                statuses[code] = statuses.get(code, 0) + 1
    elapsed = time.monotonic() - started
    assert sum(statuses.values()) == BODIES
    assert sum(n for code, n in statuses.items() if code >= 400) > BODIES // 3, statuses  # mostly refused
    assert elapsed < 120, f"{BODIES} bodies took {elapsed:.0f} s"
    assert httpx.get(server + "/-/healthy").status_code == 200
    assert values(server, "fuzz_canary") == {"k=v": 42.0}
    (stored,) = query(server, "fuzz_canary_rw[1h]", at_s=(CANARY_MS + 15_000) / 1000)
    assert [(round(float(t) * 1000), float(v)) for t, v in stored["values"]] == CANARY


def _json_value() -> st.SearchStrategy[object]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                        st.text(max_size=20))
    return st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=4),
                                                     st.dictionaries(st.text(max_size=12), c, max_size=4)),
                        max_leaves=20)


_push_item = st.fixed_dictionaries(
    {"metric": st.one_of(st.text(max_size=12), st.integers()),
     "value": st.one_of(st.floats(), st.integers(), st.text(max_size=6), st.none())},
    optional={"labels": st.one_of(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
                                  _json_value()),
              "timestamp_ms": st.one_of(st.integers(), st.floats(), st.text(max_size=5))},
)


@pytest.mark.slow
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.one_of(_json_value(), st.lists(_push_item, max_size=5),
                     st.fixed_dictionaries({"samples": st.lists(_push_item, max_size=5)}),
                     st.fixed_dictionaries({"resourceMetrics": _json_value()})))
def test_generated_json_documents(server: str, doc: object) -> None:
    body = json.dumps(doc).encode()
    client = _clients.setdefault(server, RawClient(server))
    for path in ("/api/v1/push", "/v1/metrics"):
        status, text = client.request("POST", path, body, {"Content-Type": "application/json"})
        _check_status(status, text, f"{path} {body[:300]!r}")


_clients: dict[str, RawClient] = {}


@pytest.mark.slow
def test_pushgateway_paths(server: str) -> None:
    rng = random.Random("paths")
    alphabet = "ab/@base64=%_-.job instance" + "\u00e9"
    send: Callable[[str], httpx.Response]
    with httpx.Client(base_url=server, timeout=10) as client:
        def send(p: str) -> httpx.Response:
            return client.put("/metrics/" + p, content=b"x 1\n")

        for _ in range(500):
            path = "job/" + "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 30)))
            _check(send(path), path)


def test_seeds_are_accepted(tmp_path: Path) -> None:
    """The fuzzer starts from bodies the server takes, so mutations test the edges, not only the door."""
    with serve(build_app(tmp_path)) as url:
        for name, (method, path, headers) in ENDPOINTS.items():
            for seed in SEEDS[name]:
                r = httpx.request(method, url + path, content=wire(name, seed), headers=headers)
                assert r.status_code < 300, (name, r.status_code, r.text)
