from __future__ import annotations

import pytest

from watchkeeper.dashboards.templating import (
    VarValue,
    apply_regex,
    escape_regex_value,
    interpolate,
    parse_variable_query,
    series_name,
)


def test_single_value_is_inserted_as_written() -> None:
    assert interpolate('up{job="$job"}', {"job": ["api"]}) == 'up{job="api"}'
    assert interpolate('up{job="${job}"}', {"job": ["a.b"]}) == 'up{job="a.b"}'
    assert interpolate('up{job="[[job]]"}', {"job": ["api"]}) == 'up{job="api"}'


def test_multi_values_become_an_escaped_alternation() -> None:
    value = VarValue(("/a.b", "/c"), regex=True)
    assert interpolate('x{route=~"$route"}', {"route": value}) == 'x{route=~"(/a\\\\.b|/c)"}'


def test_all_uses_the_all_value() -> None:
    value = VarValue(("a", "b"), regex=True, all_value=".*")
    assert interpolate('x{r=~"$r"}', {"r": value}) == 'x{r=~".*"}'


def test_builtins_and_longest_names_first() -> None:
    builtins = {"__interval": "30s", "__interval_ms": "30000", "__rate_interval": "1m", "__range": "6h"}
    text = "rate(x[$__rate_interval]) $__interval $__interval_ms ${__range}"
    assert interpolate(text, {}, builtins) == "rate(x[1m]) 30s 30000 6h"


def test_unknown_variables_are_left_visible() -> None:
    assert interpolate('up{job="$nope"}', {}) == 'up{job="$nope"}'


def test_formats() -> None:
    value = VarValue(("a", "b"), regex=True)
    assert interpolate("${v:csv}", {"v": value}) == "a,b"
    assert interpolate("${v:raw}", {"v": VarValue(("a.b",), regex=True)}) == "a.b"


def test_escape_regex_value_for_a_promql_string() -> None:
    # a.b -> regex a\.b -> in a double-quoted PromQL string a\\.b
    assert escape_regex_value("a.b") == "a\\\\.b"
    assert escape_regex_value("x|y(z)") == "x\\\\|y\\\\(z\\\\)"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{route}} {{ status }}", "/a 500"),
        ("{{missing}}x", "x"),
        ("", '{route="/a", status="500"}'),
        ("__auto", '{route="/a", status="500"}'),
    ],
)
def test_series_names(template: str, expected: str) -> None:
    assert series_name(template, (("route", "/a"), ("status", "500"))) == expected


@pytest.mark.parametrize(
    ("text", "kind", "selector", "label"),
    [
        ("label_values(job)", "label_values", "", "job"),
        ('label_values(up{job="a,b"}, instance)', "label_values", 'up{job="a,b"}', "instance"),
        ("label_names()", "label_names", "", ""),
        ("metrics(http_.*)", "metrics", "", ""),
        ("query_result(topk(3, up))", "query_result", "", ""),
        ("up", "query_result", "", ""),
    ],
)
def test_parse_variable_query(text: str, kind: str, selector: str, label: str) -> None:
    q = parse_variable_query(text)
    assert (q.kind, q.selector, q.label) == (kind, selector, label)


def test_variable_regex_filters_and_captures() -> None:
    assert apply_regex(["/health", "/api", "/apps"], "/^\\/(?!health).*/") == ["/api", "/apps"]
    assert apply_regex(["app-1:80", "app-2:80"], "/(.*):80/") == ["app-1", "app-2"]
    assert apply_regex(["a=1", "b=2"], "/(?<value>\\d)/") == ["1", "2"]
