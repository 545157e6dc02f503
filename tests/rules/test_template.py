"""Alert templates: Go template syntax and Prometheus' functions, outputs as Prometheus renders them."""

from __future__ import annotations

import math
from typing import Any

import pytest

from watchkeeper.rules.template import Template, TemplateError, expand, expand_or_error

LABELS = {"instance": "db-1.example.com:9100", "job": "node", "severity": "page"}


def _query(q: str) -> list[dict[str, Any]]:
    if q == "up":
        return [{"Labels": {"__name__": "up", "instance": "b"}, "Value": 0.0},
                {"Labels": {"__name__": "up", "instance": "a"}, "Value": 1.0}]
    return []


@pytest.mark.parametrize(
    ("text", "value", "expected"),
    [
        ("{{ $labels.instance }}", 0.0, "db-1.example.com:9100"),
        ("{{ .Labels.job }}/{{ $.Labels.job }}", 0.0, "node/node"),
        ("{{ $labels.missing }}", 0.0, ""),
        ("{{ $value }}", 0.5, "0.5"),
        ("{{ $value }}", 1e6, "1e+06"),
        ("{{ $value }}", math.nan, "NaN"),
        ("{{ $externalLabels.cluster }}", 0.0, "eu-1"),
        ("{{ $value | humanize }}", 1234567.0, "1.235M"),
        ("{{ $value | humanize }}", 0.000123, "123u"),
        ("{{ $value | humanize }}", 0.0, "0"),
        ("{{ humanize1024 $value }}", 1073741824.0, "1Gi"),
        ("{{ humanize1024 $value }}", 512.0, "512"),
        ("{{ humanizeDuration $value }}", 90061.0, "1d 1h 1m 1s"),
        ("{{ humanizeDuration $value }}", 1.5, "1.5s"),
        ("{{ humanizeDuration $value }}", 0.0123, "12.3ms"),
        ("{{ humanizeDuration $value }}", 0.0, "0s"),
        ("{{ humanizePercentage $value }}", 0.8765, "87.65%"),
        ("{{ humanizeTimestamp $value }}", 1435065584.128, "2015-06-23 13:19:44.128 +0000 UTC"),
        ('{{ printf "%.2f" $value }}', 3.14159, "3.14"),
        ('{{ printf "%s=%d %v %q %5.1f%%" "a" 3 true "x" 9.87 }}', 0.0, 'a=3 true "x"   9.9%'),
        ('{{ printf "%d" }}', 0.0, "%!d(MISSING)"),
        ('{{ title "hello wide-world" }}', 0.0, "Hello Wide-World"),
        ("{{ toUpper $labels.job }} {{ toLower \"ABC\" }}", 0.0, "NODE abc"),
        ('{{ reReplaceAll "(.+):(\\\\d+)" "$1 port ${2}" $labels.instance }}', 0.0,
         "db-1.example.com port 9100"),
        ("{{ stripPort $labels.instance }} {{ stripDomain $labels.instance }}", 0.0,
         "db-1.example.com db-1:9100"),
        ('{{ if gt $value 0.9 }}high{{ else if gt $value 0.5 }}mid{{ else }}low{{ end }}', 0.7, "mid"),
        ('{{ if and (eq $labels.job "node") (ne $labels.severity "info") }}yes{{ end }}', 0.0, "yes"),
        ('{{ with $labels.nothing }}set{{ else }}unset{{ end }}', 0.0, "unset"),
        ('{{ range query "up" }}{{ .Labels.instance }}={{ .Value }} {{ end }}', 0.0, "b=0 a=1 "),
        ('{{ range $i, $s := query "up" | sortByLabel "instance" }}'
         '{{ $i }}:{{ label "instance" $s }} {{ end }}',
         0.0, "0:a 1:b "),
        ('{{ with query "up" }}{{ . | first | value | humanize }}{{ end }}', 0.0, "0"),
        ('{{ range query "nothing" }}x{{ else }}no data{{ end }}', 0.0, "no data"),
        ("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", 0.0, "2"),
        ("a  {{- 1 -}}  b {{/* comment */}}c", 0.0, "a1b c"),
        ('{{ len $labels }} {{ index $labels "job" }}', 0.0, "3 node"),
        ('{{ "quoted }} braces" }}', 0.0, "quoted }} braces"),
        ("{{ parseDuration \"1h30m\" }} {{ toDuration 3723.5 }}", 0.0, "5400 1h2m3.5s"),
        ('{{ match "^db" $labels.instance }}', 0.0, "true"),
    ],
)
def test_expansion(text: str, value: float, expected: str) -> None:
    out = expand(text, labels=LABELS, value=value, external_labels={"cluster": "eu-1"}, query=_query)
    assert out == expected


@pytest.mark.parametrize(
    "text",
    ["{{ $labels.x ", "{{ if true }}x", "{{ end }}", "{{ nosuchfunc 1 }}", "{{ else }}",
     '{{ define "x" }}{{ end }}'],
)
def test_parse_errors(text: str) -> None:
    with pytest.raises(TemplateError):
        Template.parse(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ $undefined }}", "undefined variable"),
        ('{{ humanize "abc" }}', "invalid syntax"),
        ('{{ first (query "nothing") }}', "no elements"),
        ("{{ gt $value 1 }}", "incompatible types"),  # Go: float64 vs int
        ("{{ $labels.job.sub }}", "can't evaluate field"),
    ],
)
def test_execution_errors_become_prometheus_error_text(text: str, message: str) -> None:
    out = expand_or_error(text, labels=LABELS, value=1.0, query=_query)
    assert out.startswith("<error expanding template: ")
    assert message in out


def test_no_python_reachable() -> None:
    # field access is a dict lookup on the data given: no attributes, no dunder walking
    out = expand_or_error("{{ $labels.__class__ }}{{ .Labels.__init__ }}", labels={})
    assert out == ""
    assert expand_or_error("{{ $value.__class__ }}", value=1.0).startswith("<error expanding template")


def test_range_over_huge_input_is_refused() -> None:
    out = expand_or_error("{{ range 10000000 }}x{{ end }}", labels={})
    assert out.startswith("<error expanding template")
