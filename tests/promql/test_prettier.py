"""``prettify``: the cases of Prometheus' ``promql/parser/prettier_test.go`` (its tests set the
line limit to 10 columns so that small queries split), and the 100-column default."""

# ruff: noqa: E501
# (the expected layouts of upstream's cases are kept as whole lines, easier to compare with it)
from __future__ import annotations

import pytest

from watchkeeper.promql.parser import parse
from watchkeeper.promql.printer import prettify, to_promql

CASES = [
    # TestAggregateExprPretty
    ("sum(foo)", "sum(foo)"),
    ('sum by() (task:errors:rate10s{job="s"})', 'sum(\n  task:errors:rate10s{job="s"}\n)'),
    ('sum without(job,foo) (task:errors:rate10s{job="s"})',
     'sum without (job, foo) (\n  task:errors:rate10s{job="s"}\n)'),
    ('sum(task:errors:rate10s{job="s"}) without(job,foo)',
     'sum without (job, foo) (\n  task:errors:rate10s{job="s"}\n)'),
    ('sum by(job,foo) (task:errors:rate10s{job="s"})', 'sum by (job, foo) (\n  task:errors:rate10s{job="s"}\n)'),
    ('sum (task:errors:rate10s{job="s"}) by(job,foo)', 'sum by (job, foo) (\n  task:errors:rate10s{job="s"}\n)'),
    ('topk(10, ask:errors:rate10s{job="s"})', 'topk(\n  10,\n  ask:errors:rate10s{job="s"}\n)'),
    ('sum by(job,foo) (sum by(job,foo) (task:errors:rate10s{job="s"}))',
     'sum by (job, foo) (\n  sum by (job, foo) (\n    task:errors:rate10s{job="s"}\n  )\n)'),
    ('sum by(job,foo) (sum by(job,foo) (sum by(job,foo) (task:errors:rate10s{job="s"})))',
     'sum by (job, foo) (\n  sum by (job, foo) (\n    sum by (job, foo) (\n      task:errors:rate10s{job="s"}\n'
     '    )\n  )\n)'),
    ('sum by(job,foo)\n(sum by(job,foo) (task:errors:rate10s{job="s"}))',
     'sum by (job, foo) (\n  sum by (job, foo) (\n    task:errors:rate10s{job="s"}\n  )\n)'),
    ('sum by(job,foo)\n(sum(task:errors:rate10s{job="s"}) without(job,foo))',
     'sum by (job, foo) (\n  sum without (job, foo) (\n    task:errors:rate10s{job="s"}\n  )\n)'),
    ('sum by(job,foo) # Comment 1.\n(sum by(job,foo) ( # Comment 2.\ntask:errors:rate10s{job="s"}))',
     'sum by (job, foo) (\n  sum by (job, foo) (\n    task:errors:rate10s{job="s"}\n  )\n)'),
    # TestBinaryExprPretty
    ("a+b", "a + b"),
    ("a == bool 1", "  a\n== bool\n  1"),
    ("a + ignoring(job) b", "  a\n+ ignoring (job)\n  b"),
    ("foo_1 + foo_2", "  foo_1\n+\n  foo_2"),
    ("foo_1 + foo_2 + foo_3", "    foo_1\n  +\n    foo_2\n+\n  foo_3"),
    ("foo + baar + foo_3", "  foo + baar\n+\n  foo_3"),
    ("foo_1 + foo_2 + foo_3 + foo_4", "      foo_1\n    +\n      foo_2\n  +\n    foo_3\n+\n  foo_4"),
    ("foo_1 + ignoring(foo) foo_2 + ignoring(job) group_left foo_3 + on(instance) group_right foo_4",
     "      foo_1\n    + ignoring (foo)\n      foo_2\n  + ignoring (job) group_left ()\n    foo_3\n"
     "+ on (instance) group_right ()\n  foo_4"),
    # TestCallExprPretty
    ("rate(foo[1m])", "rate(\n  foo[1m]\n)"),
    ("sum_over_time(foo[1m])", "sum_over_time(\n  foo[1m]\n)"),
    ("rate(long_vector_selector[10m:1m] @ start() offset 1m)",
     "rate(\n  long_vector_selector[10m:1m] @ start() offset 1m\n)"),
    ("histogram_quantile(0.9, rate(foo[1m]))", "histogram_quantile(\n  0.9,\n  rate(\n    foo[1m]\n  )\n)"),
    ("max_over_time(rate(demo_api_request_duration_seconds_count[1m])[1m:] @ start() offset 1m)",
     "max_over_time(\n  rate(\n    demo_api_request_duration_seconds_count[1m]\n  )[1m:] @ start() offset 1m\n)"),
    ('label_replace(up{job="api-server",service="a:c"}, "foo", "$1", "service", "(.*):.*")',
     'label_replace(\n  up{job="api-server",service="a:c"},\n  "foo",\n  "$1",\n  "service",\n  "(.*):.*"\n)'),
    ('label_replace(label_replace(up{job="api-server",service="a:c"}, "foo", "$1", "service", "(.*):.*"), '
     '"foo", "$1", "service", "(.*):.*")',
     'label_replace(\n  label_replace(\n    up{job="api-server",service="a:c"},\n    "foo",\n    "$1",\n'
     '    "service",\n    "(.*):.*"\n  ),\n  "foo",\n  "$1",\n  "service",\n  "(.*):.*"\n)'),
    # TestParenExprPretty
    ("(foo)", "(foo)"),
    ("(_foo_long_)", "(\n  _foo_long_\n)"),
    ("((foo_long))", "(\n  (foo_long)\n)"),
    ("((_foo_long_))", "(\n  (\n    _foo_long_\n  )\n)"),
    ("(((foo_long)))", "(\n  (\n    (foo_long)\n  )\n)"),
    # TestStepInvariantExpr
    ("a @ 1", "a @ 1.000"),
    ("a @ start()", "a @ start()"),
    ("vector_selector @ start()", "vector_selector @ start()"),
    # TestExprPretty
    ("(1 + 2)", "(1 + 2)"),
    ("(foo + bar)", "(\n  foo + bar\n)"),
    ("(foo_long + bar_long)", "(\n    foo_long\n  +\n    bar_long\n)"),
    ("(foo_long + bar_long + bar_2_long)", "(\n      foo_long\n    +\n      bar_long\n  +\n    bar_2_long\n)"),
    ("((foo_long + bar_long) + bar_2_long)",
     "(\n    (\n        foo_long\n      +\n        bar_long\n    )\n  +\n    bar_2_long\n)"),
    ("(1111 + 2222)", "(\n    1111\n  +\n    2222\n)"),
    ("(sum_over_time(foo[1m]))", "(\n  sum_over_time(\n    foo[1m]\n  )\n)"),
    ("histogram_quantile(0.9, rate(foo[1m] @ start()))",
     "histogram_quantile(\n  0.9,\n  rate(\n    foo[1m] @ start()\n  )\n)"),
    ('(label_replace(up{job="api-server",service="a:c"}, "foo", "$1", "service", "(.*):.*"))',
     '(\n  label_replace(\n    up{job="api-server",service="a:c"},\n    "foo",\n    "$1",\n    "service",\n'
     '    "(.*):.*"\n  )\n)'),
    ('(label_replace(label_replace((up{job="api-server",service="a:c"}), "foo", "$1", "service", "(.*):.*"), '
     '"foo", "$1", "service", "(.*):.*"))',
     '(\n  label_replace(\n    label_replace(\n      (\n        up{job="api-server",service="a:c"}\n      ),\n'
     '      "foo",\n      "$1",\n      "service",\n      "(.*):.*"\n    ),\n    "foo",\n    "$1",\n    "service",\n'
     '    "(.*):.*"\n  )\n)'),
    ('(node_filesystem_avail_bytes{job="node",fstype!=""} / node_filesystem_size_bytes{job="node",fstype!=""} '
     '* 100 < 40 and predict_linear(node_filesystem_avail_bytes{job="node",fstype!=""}[6h], 24*60*60) < 0 '
     'and node_filesystem_readonly{job="node",fstype!=""} == 0)',
     '(\n            node_filesystem_avail_bytes{fstype!="",job="node"}\n          /\n'
     '            node_filesystem_size_bytes{fstype!="",job="node"}\n        *\n          100\n      <\n'
     '        40\n    and\n        predict_linear(\n          node_filesystem_avail_bytes{fstype!="",job="node"}[6h],\n'
     '            24 * 60\n          *\n            60\n        )\n      <\n        0\n  and\n'
     '      node_filesystem_readonly{fstype!="",job="node"}\n    ==\n      0\n)'),
    ("(node_timex_offset_seconds > 0.05 and deriv(node_timex_offset_seconds[5m]) >= 0) or "
     "(node_timex_offset_seconds < -0.05 and deriv(node_timex_offset_seconds[5m]) <= 0)",
     "  (\n        node_timex_offset_seconds\n      >\n        0.05\n    and\n        deriv(\n"
     "          node_timex_offset_seconds[5m]\n        )\n      >=\n        0\n  )\nor\n  (\n"
     "        node_timex_offset_seconds\n      <\n        -0.05\n    and\n        deriv(\n"
     "          node_timex_offset_seconds[5m]\n        )\n      <=\n        0\n  )"),
    ('1 - ((node_memory_MemAvailable_bytes{job="node"} or (node_memory_Buffers_bytes{job="node"} + '
     'node_memory_Cached_bytes{job="node"} + node_memory_MemFree_bytes{job="node"} + '
     'node_memory_Slab_bytes{job="node"}) ) / node_memory_MemTotal_bytes{job="node"})',
     '  1\n-\n  (\n      (\n          node_memory_MemAvailable_bytes{job="node"}\n        or\n          (\n'
     '                  node_memory_Buffers_bytes{job="node"}\n                +\n'
     '                  node_memory_Cached_bytes{job="node"}\n              +\n'
     '                node_memory_MemFree_bytes{job="node"}\n            +\n'
     '              node_memory_Slab_bytes{job="node"}\n          )\n      )\n    /\n'
     '      node_memory_MemTotal_bytes{job="node"}\n  )'),
    ('min by (job, integration) (rate(alertmanager_notifications_failed_total{job="alertmanager", '
     'integration=~".*"}[5m]) / rate(alertmanager_notifications_total{job="alertmanager", '
     'integration="~.*"}[5m])) > 0.01',
     '  min by (job, integration) (\n      rate(\n'
     '        alertmanager_notifications_failed_total{integration=~".*",job="alertmanager"}[5m]\n      )\n'
     '    /\n      rate(\n        alertmanager_notifications_total{integration="~.*",job="alertmanager"}[5m]\n'
     '      )\n  )\n>\n  0.01'),
    ('(count by (job) (changes(process_start_time_seconds{job="alertmanager"}[10m]) > 4) / '
     'count by (job) (up{job="alertmanager"})) >= 0.5',
     '  (\n      count by (job) (\n          changes(\n'
     '            process_start_time_seconds{job="alertmanager"}[10m]\n          )\n        >\n          4\n'
     '      )\n    /\n      count by (job) (\n        up{job="alertmanager"}\n      )\n  )\n>=\n  0.5'),
    # TestUnaryPretty
    ("-1", "-1"),
    ("-vector_selector", "-vector_selector"),
    ("(-vector_selector)", "(\n  -vector_selector\n)"),
    ("-histogram_quantile(0.9,rate(foo[1m]))", "-histogram_quantile(\n  0.9,\n  rate(\n    foo[1m]\n  )\n)"),
    ("-histogram_quantile(0.99, sum by (le) (rate(foo[1m])))",
     "-histogram_quantile(\n  0.99,\n  sum by (le) (\n    rate(\n      foo[1m]\n    )\n  )\n)"),
    ("-histogram_quantile(0.9, -rate(foo[1m] @ start()))",
     "-histogram_quantile(\n  0.9,\n  -rate(\n    foo[1m] @ start()\n  )\n)"),
    ("(-histogram_quantile(0.9, -rate(foo[1m] @ start())))",
     "(\n  -histogram_quantile(\n    0.9,\n    -rate(\n      foo[1m] @ start()\n    )\n  )\n)"),
]


@pytest.mark.parametrize(("query", "expected"), CASES)
def test_prometheus_prettier_cases(query: str, expected: str) -> None:
    pretty = prettify(parse(query), max_line=10)
    assert pretty == expected
    # the same query, only laid out (and with its label matchers sorted)
    assert to_promql(parse(pretty), sorted_matchers=True) == to_promql(parse(query), sorted_matchers=True)


def test_default_limit_is_100_columns() -> None:
    # The answer of Prometheus 2.42's /api/v1/format_query for this query.
    query = ('sum(rate(foo{job="api-server",service="a:c"}[5m])) by (job) / on(job) group_left '
             'sum(rate(bar_total_requests_long_name{job="api-server",service="a:c"}[5m])) by (job)')
    assert prettify(parse(query)) == (
        '  sum by (job) (rate(foo{job="api-server",service="a:c"}[5m]))\n/ on (job) group_left ()\n'
        '  sum by (job) (rate(bar_total_requests_long_name{job="api-server",service="a:c"}[5m]))')
    short = 'up{job="a", code="5"} > 1'
    assert prettify(parse(short)) == 'up{code="5",job="a"} > 1'
