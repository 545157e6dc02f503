"""The text exposition and OpenMetrics parser: table of lines, errors, and prometheus_client output."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from watchkeeper.collector.exposition import Pairs, parse_exposition
from watchkeeper.errors import DecodeError


def one(line: str, openmetrics: bool = False) -> tuple[Pairs, float, int | None]:
    text = line + "\n" + ("# EOF\n" if openmetrics else "")
    exp = parse_exposition(text, openmetrics=openmetrics)
    assert len(exp.samples) == 1
    s = exp.samples[0]
    return s.labels, s.value, s.timestamp_ms


@pytest.mark.parametrize(
    ("line", "labels", "value", "ts"),
    [
        ("up 1", (("__name__", "up"),), 1.0, None),
        ("up\t1\t1700000000000", (("__name__", "up"),), 1.0, 1700000000000),
        ("a:b_c 2.5e3 -5", (("__name__", "a:b_c"),), 2500.0, -5),
        ('x{a="1",b="2"} 3', (("__name__", "x"), ("a", "1"), ("b", "2")), 3.0, None),
        ('x{a="1",} 3', (("__name__", "x"), ("a", "1")), 3.0, None),
        ("x{} 3", (("__name__", "x"),), 3.0, None),
        ('x { a = "1" } 3', (("__name__", "x"), ("a", "1")), 3.0, None),
        ('x{p="a\\\\b\\"c\\nd"} 1', (("__name__", "x"), ("p", 'a\\b"c\nd')), 1.0, None),
        ('x{p="} 9"} 1', (("__name__", "x"), ("p", "} 9")), 1.0, None),
        ('x{p="ünï"} 1', (("__name__", "x"), ("p", "ünï")), 1.0, None),
        ("x +Inf", (("__name__", "x"),), math.inf, None),
        ("x -Inf", (("__name__", "x"),), -math.inf, None),
    ],
)
def test_text_lines(line: str, labels: Pairs, value: float, ts: int | None) -> None:
    assert one(line) == (labels, value, ts)


def test_nan_and_comments_and_blank_lines() -> None:
    exp = parse_exposition("# a comment\n\n# HELP x Some help.\n# TYPE x gauge\nx NaN\n  \n")
    assert math.isnan(exp.samples[0].value)
    assert exp.types == {"x": "gauge"} and exp.help == {"x": "Some help."}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("x\n", "line 1: expected a value"),
        ("ok 1\n1x 2\n", "line 2: invalid metric name"),
        ('x{a=1} 2\n', "invalid label"),
        ('x{a="1" b="2"} 2\n', "expected ',' or '}'"),
        ('x{a="1\n', "invalid label"),
        ('x{a="\\q"} 1\n', "invalid escape"),
        ("x 1_000\n", "invalid value"),
        ("x one\n", "invalid value"),
        ("x 1 2.5\n", "invalid timestamp"),
        ("x 1 2 3\n", "unexpected text"),
        ("# TYPE x nonsense\n", "unknown metric type"),
        ("# TYPE x gauge\n# TYPE x gauge\n", "second TYPE"),
        ("# TYPE\n", "needs a valid metric name"),
        ('x{a-b="1"} 1\n', "invalid label"),
    ],
)
def test_text_errors_name_the_line(text: str, needle: str) -> None:
    with pytest.raises(DecodeError, match=needle):
        parse_exposition(text)


def test_openmetrics_timestamps_exemplars_created_and_eof() -> None:
    text = (
        "# TYPE req counter\n# UNIT req seconds\n"
        'req_total{code="200"} 7 1700000000.5 # {trace_id="abc"} 1.0 1700000000.1\n'
        "req_created 1700000000\n"
        "# TYPE temp gauge\ntemp_created 5\n"
        "# EOF\n"
    )
    exp = parse_exposition(text, openmetrics=True)
    assert [(s.labels[0][1], s.value, s.timestamp_ms) for s in exp.samples] == [
        ("req_total", 7.0, 1700000000500),
        ("temp_created", 5.0, None),  # only counters', histograms' and summaries' _created are dropped
    ]
    with pytest.raises(DecodeError, match="EOF"):
        parse_exposition("x 1\n", openmetrics=True)
    with pytest.raises(DecodeError, match="after '# EOF'"):
        parse_exposition("# EOF\nx 1\n", openmetrics=True)
    with pytest.raises(DecodeError, match="empty lines"):
        parse_exposition("x 1\n\n# EOF\n", openmetrics=True)


def test_cache_skips_reparsing_but_gives_same_labels() -> None:
    cache: dict[str, Pairs] = {}
    first = parse_exposition('x{a="1"} 1\ny 2\n', cache=cache)
    assert set(cache) == {'x{a="1"}', "y"}
    second = parse_exposition('x{a="1"} 5\ny 6\n', cache=cache)
    assert [s.labels for s in first.samples] == [s.labels for s in second.samples]
    assert [s.value for s in second.samples] == [5.0, 6.0]
    # a cached key never lets a bad line through
    with pytest.raises(DecodeError):
        parse_exposition('x{a="1"} 5 }\n', cache=cache)


def _registry() -> CollectorRegistry:
    r = CollectorRegistry()
    c = Counter("http_requests", "Requests.", ["route", "code"], registry=r)
    c.labels("/a", "200").inc(3)
    c.labels('/b"q\\', "500").inc()
    Gauge("in_flight", "In flight.", registry=r).set(2)
    h = Histogram("latency_seconds", "Latency.", buckets=(0.1, 1.0), registry=r)
    h.observe(0.05)
    h.observe(5)
    Summary("size_bytes", "Size.", registry=r).observe(10)
    return r


def test_prometheus_client_text_output() -> None:
    exp = parse_exposition(generate_latest(_registry()).decode())
    got = {tuple(s.labels): s.value for s in exp.samples}
    assert got[(("__name__", "http_requests_total"), ("code", "500"), ("route", '/b"q\\'))] == 1.0
    assert got[(("__name__", "latency_seconds_bucket"), ("le", "+Inf"))] == 2.0
    assert got[(("__name__", "latency_seconds_bucket"), ("le", "0.1"))] == 1.0
    assert exp.types["latency_seconds"] == "histogram"


def test_prometheus_client_openmetrics_output() -> None:
    body = generate_openmetrics(_registry())  # type: ignore[no-untyped-call]
    exp = parse_exposition(body.decode(), openmetrics=True)
    names = {s.labels[0][1] for s in exp.samples}
    assert "http_requests_total" in names and "size_bytes_count" in names
    assert not any(n.endswith("_created") for n in names)


label_value = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), label_value, max_size=4),
       st.floats(allow_nan=False))
def test_escaped_label_values_round_trip(labels: dict[str, str], value: float) -> None:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    body = ",".join(f'{k}="{esc(v)}"' for k, v in labels.items())
    exp = parse_exposition(f"m{{{body}}} {value!r}\n")
    s = exp.samples[0]
    assert dict(s.labels[1:]) == labels and s.value == value


def test_known_series_are_not_parsed_again() -> None:
    exp = parse_exposition('x{a="1"} 5\ny 6\nz{b="2"} 7\n', known={'x{a="1"}', "y"})
    assert [(s.key, s.labels, s.value) for s in exp.samples] == [
        ('x{a="1"}', (), 5.0), ("y", (), 6.0), ('z{b="2"}', (("__name__", "z"), ("b", "2")), 7.0)]
