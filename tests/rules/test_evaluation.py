"""Group evaluation against a real store: recording rules, ALERTS series, staleness, limits."""

from __future__ import annotations

import math

from tests.rules.support import Env
from watchkeeper.rules.manager import eval_timestamp_ms
from watchkeeper.rules.state import State
from watchkeeper.tsdb.reader import is_stale

RULES = """
groups:
  - name: g
    interval: 15s
    labels: {team: core}
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - record: job:up:doubled  # sees the rule above's output, same timestamp
        expr: job:up:sum * 2
      - alert: InstanceDown
        expr: up == 0
        for: 30s
        labels: {severity: page}
        annotations:
          summary: "{{ $labels.instance }} of {{ $labels.job }} down; {{ $value }}\\
            \\ (up total: {{ with query \\"sum(up)\\" }}{{ . | first | value }}{{ end }})"
"""


def _key(m: object) -> str:
    return m.groups[0].key  # type: ignore[attr-defined,no-any-return]


def test_recording_rules_write_to_the_store_in_order(env: Env) -> None:
    env.add({"__name__": "up", "job": "api", "instance": "a"}, [(0, 1.0)])
    env.add({"__name__": "up", "job": "api", "instance": "b"}, [(0, 1.0)])
    m = env.manager(RULES)
    m.evaluate(_key(m), 0)
    assert env.query("job:up:sum", 0) == [({"__name__": "job:up:sum", "job": "api", "team": "core"}, 2.0)]
    assert env.query("job:up:doubled", 0) == [
        ({"__name__": "job:up:doubled", "job": "api", "team": "core"}, 4.0)]


def test_alerts_series_pending_then_firing_then_stale(env: Env) -> None:
    env.add({"__name__": "up", "job": "api", "instance": "a"}, [(0, 0.0), (15_000, 0.0), (30_000, 0.0),
                                                                  (45_000, 1.0)])
    m = env.manager(RULES)
    for t in (0, 15_000, 30_000, 45_000):
        m.evaluate(_key(m), t)
    base = {"__name__": "ALERTS", "alertname": "InstanceDown", "instance": "a", "job": "api",
            "severity": "page", "team": "core"}
    assert env.query("ALERTS", 15_000) == [({**base, "alertstate": "pending"}, 1.0)]
    assert env.query("ALERTS", 30_000) == [({**base, "alertstate": "firing"}, 1.0)]
    assert env.query("ALERTS_FOR_STATE", 30_000)[0][1] == 0.0  # ActiveAt in seconds
    # pending disappeared at 30s, firing at 45s: staleness markers, not 5 minutes of lookback
    ts, values = env.raw(tuple(sorted({**base, "alertstate": "pending"}.items())), 60_000)
    assert ts == [0, 15_000, 30_000] and is_stale(values[-1:]).all()
    assert env.query("ALERTS", 50_000) == []


def test_annotations_expand_labels_value_and_query(env: Env) -> None:
    env.add({"__name__": "up", "job": "api", "instance": "a"}, [(0, 0.0)])
    env.add({"__name__": "up", "job": "api", "instance": "b"}, [(0, 1.0)])
    m = env.manager(RULES)
    m.evaluate(_key(m), 0)
    (by_labels,) = m.runtime(_key(m)).alerts.values()
    (alert,) = by_labels.values()
    assert dict(alert.annotations)["summary"] == "a of api down; 0 (up total: 1)"


def test_firing_alerts_are_sent_and_resolutions_at_once(env: Env) -> None:
    env.add({"__name__": "up", "job": "api", "instance": "a"}, [(t, 0.0) for t in range(0, 60_001, 15_000)]
            + [(75_000, 1.0)])
    m = env.manager(RULES)
    for t in range(0, 75_001, 15_000):
        m.evaluate(_key(m), t)
    sent = [(t, [(a.name, a.ends_at_ms) for a in alerts]) for t, alerts in env.sink.sent]
    # fires at 30s (sent, endsAt = 30s + 4 x 1m); no resend within the 1m resend delay; resolved at 75s
    assert sent == [(30_000, [("InstanceDown", 270_000)]), (75_000, [("InstanceDown", 75_000)])]
    assert env.sink.sent[0][1][0].starts_at_ms == 0
    assert "g0.expr=up%20%3D%3D%200" in env.sink.sent[0][1][0].generator_url


def test_limit_discards_everything_the_rule_produced(env: Env) -> None:
    for i in range(3):
        env.add({"__name__": "up", "job": "api", "instance": str(i)}, [(0, 0.0)])
    rules = """
groups:
  - name: g
    limit: 2
    rules:
      - record: r
        expr: up
      - alert: A
        expr: up == 0
"""
    m = env.manager(rules)
    result = m.evaluate(_key(m), 0)
    assert [e for _, e in result.errors] == [
        "exceeded limit of 2 with 3 series", "exceeded limit of 2 with 3 alerts"]
    assert env.query("r", 0) == [] and env.query("ALERTS", 0) == []
    assert all(not v for v in m.runtime(_key(m)).alerts.values())
    assert {h.health for h in m.runtime(_key(m)).health.values()} == {"err"}


def test_duplicate_labelsets_after_rule_labels_are_an_error(env: Env) -> None:
    env.add({"__name__": "up", "job": "a"}, [(0, 1.0)])
    env.add({"__name__": "up", "job": "b"}, [(0, 1.0)])
    m = env.manager("groups:\n- name: g\n  rules:\n  - record: r\n    expr: up\n    labels: {job: x}\n")
    result = m.evaluate(_key(m), 0)
    assert "same labelset after applying rule labels" in result.errors[0][1]


def test_query_offset_shifts_query_and_output_time(env: Env) -> None:
    env.add({"__name__": "x"}, [(0, 1.0), (60_000, 2.0)])
    m = env.manager("groups:\n- name: g\n  query_offset: 1m\n  rules:\n  - record: r\n    expr: x\n")
    m.evaluate(_key(m), 120_000)
    assert env.query("r", 60_000) == [({"__name__": "r"}, 2.0)]


def test_keep_firing_for_and_resolution(env: Env) -> None:
    env.add({"__name__": "x"}, [(0, 1.0), (15_000, 0.0), (30_000, 0.0), (45_000, 0.0)])
    rules = ("groups:\n- name: g\n  interval: 15s\n  rules:\n"
             "  - alert: A\n    expr: x > 0\n    keep_firing_for: 30s\n")
    m = env.manager(rules)
    states = []
    for t in (0, 15_000, 30_000, 45_000):
        m.evaluate(_key(m), t)
        (a,) = next(iter(m.runtime(_key(m)).alerts.values())).values()
        states.append(a.state)
    assert states == [State.FIRING, State.FIRING, State.FIRING, State.INACTIVE]


def test_scalar_expression_alert_and_nan_value(env: Env) -> None:
    m = env.manager("groups:\n- name: g\n  rules:\n  - alert: Always\n    expr: vector(NaN)\n")
    m.evaluate(_key(m), 0)
    (a,) = next(iter(m.runtime(_key(m)).alerts.values())).values()
    assert a.state is State.FIRING and math.isnan(a.value)


def test_reload_keeps_state_of_kept_rules_and_marks_removed_series_stale(env: Env) -> None:
    env.add({"__name__": "up", "job": "api", "instance": "a"}, [(0, 0.0)])
    m = env.manager(RULES)
    m.evaluate(_key(m), 0)
    before = dict(m.runtime(_key(m)).alerts)
    env.now_s = 10.0
    removed = ("      - record: job:up:doubled  # sees the rule above's output, same timestamp\n"
               "        expr: job:up:sum * 2\n")
    (env.tmp_path / "rules.yml").write_text(RULES.replace(removed, ""))
    assert m.reload()
    assert m.runtime(_key(m)).alerts == before
    assert env.query("job:up:doubled", 20_000) == []  # stale at the reload, not 5 minutes later
    (env.tmp_path / "rules.yml").write_text("groups: [{name: g, rules: [{alert: A}]}]")
    assert not m.reload() and "expr" in m.last_reload_error
    assert len(m.groups[0].rules) == 2  # a broken file keeps the running rules


def test_missed_iterations_are_counted(env: Env) -> None:
    m = env.manager("groups:\n- name: g\n  interval: 10s\n  rules:\n  - record: r\n    expr: vector(1)\n")
    key = _key(m)
    first = eval_timestamp_ms(key, 10_000, 100_000)  # the group's aligned slot
    env.now_s = (first + 1_000) / 1000
    m.tick(key)
    env.now_s = (first + 40_500) / 1000  # 4 intervals later: 3 slots missed
    m.tick(key)
    rt = m.runtime(key)
    assert (rt.iterations, rt.iterations_missed) == (2, 3)
    assert m.tick(key) is None  # same slot twice: not re-evaluated


def test_self_metrics(env: Env) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from watchkeeper.rules.metrics import RuleMetricsCollector

    duplicate = """label_replace(vector(1), "a", "1", "", "") or label_replace(vector(2), "a", "2", "", "")"""
    m = env.manager("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: vector(1)\n"
                    f"  - record: r\n    expr: '{duplicate}'\n    labels: {{a: z}}\n")
    m.evaluate(_key(m), 0)
    registry = CollectorRegistry()
    registry.register(RuleMetricsCollector(m))
    text = generate_latest(registry).decode()
    key = _key(m)
    assert f'watchkeeper_rule_group_iterations_total{{rule_group="{key}"}} 1.0' in text
    assert f'watchkeeper_rule_evaluation_failures_total{{rule_group="{key}"}} 1.0' in text
    assert 'watchkeeper_rule_alerts{alertname="A",state="firing"} 1.0' in text


def test_output_is_written_once_per_group_unless_a_later_rule_reads_it(env: Env) -> None:
    from watchkeeper.rules.evaluation import GroupRuntime, engine_query, evaluate_group
    from watchkeeper.rules.manager import StoreWriter
    from watchkeeper.rules.model import parse_rule_file

    class CountingWriter(StoreWriter):
        calls = 0

        def write(self, samples: object, ts_ms: int) -> None:
            CountingWriter.calls += 1
            super().write(samples, ts_ms)  # type: ignore[arg-type]

    text = """
groups:
  - name: independent
    rules:
      - {alert: A, expr: vector(1)}
      - {alert: B, expr: vector(2)}
      - {record: c, expr: vector(3)}
  - name: dependent
    rules:
      - {record: d, expr: vector(4)}
      - {alert: E, expr: d > 1}
      - {alert: F, expr: '{job="x"}'}
"""
    groups, errors = parse_rule_file(text, "f.yml")
    assert errors == []
    writer = CountingWriter(env.storage)
    query = engine_query(env.engine)
    evaluate_group(groups[0], GroupRuntime(), ts_ms=0, query=query, writer=writer)
    assert CountingWriter.calls == 1
    CountingWriter.calls = 0
    evaluate_group(groups[1], GroupRuntime(), ts_ms=0, query=query, writer=writer)
    # flushed before E (reads d) and before F (a selector without a fixed name); F wrote nothing
    assert CountingWriter.calls == 2
    assert [lb["alertname"] for lb, _ in env.query("ALERTS", 0)] == ["A", "B", "E"]


def test_rules_of_a_group_share_selections_but_see_earlier_output(env: Env) -> None:
    """Two thresholds on one expression are one fetch; a rule reading a recording rule's output
    written in the same evaluation still sees it (the shared selections are forgotten then)."""
    from watchkeeper.rules.evaluation import GroupRuntime, engine_query, evaluate_group
    from watchkeeper.rules.manager import StoreWriter
    from watchkeeper.rules.model import parse_rule_file

    env.add({"__name__": "errors", "job": "api"}, [(0, 0.0), (60_000, 600.0)])  # rate[5m]: 2/s
    env.add({"__name__": "errors", "job": "web"}, [(0, 0.0), (60_000, 60.0)])  # 0.2/s
    text = """
groups:
  - name: g
    rules:
      - {alert: Warn, expr: 'rate(errors[5m]) > 0.1', labels: {severity: warning}}
      - {alert: Crit, expr: 'rate(errors[5m]) > 1', labels: {severity: critical}}
      - {record: 'job:errors:rate5m', expr: 'rate(errors[5m])'}
      - {alert: Rec, expr: 'job:errors:rate5m > 0.1'}
      - {alert: Again, expr: 'rate(errors[5m]) > 1.5'}
"""
    groups, errors = parse_rule_file(text, "f.yml")
    assert errors == []
    store = env.storage
    fetches: list[str] = []
    original = store.select_concat

    def counting(matchers, start_ms, end_ms):  # type: ignore[no-untyped-def]
        fetches.append(next(m.value for m in matchers if m.name == "__name__"))
        return original(matchers, start_ms, end_ms)

    store.select_concat = counting  # type: ignore[method-assign]
    try:
        evaluate_group(groups[0], GroupRuntime(), ts_ms=60_000, query=engine_query(env.engine),
                       writer=StoreWriter(store))
    finally:
        del store.select_concat
    # errors once for Warn, Crit and the recording rule; again after the flush before Rec
    assert fetches == ["errors", "job:errors:rate5m", "errors"]
    firing = sorted((lb["alertname"], lb["job"]) for lb, _ in env.query("ALERTS", 60_000))
    assert firing == [("Again", "api"), ("Crit", "api"), ("Rec", "api"), ("Rec", "web"), ("Warn", "api"),
                      ("Warn", "web")]


def test_an_engine_wrapper_without_a_reader_evaluates_without_sharing(env: Env) -> None:
    from watchkeeper.promql.values import QueryResult
    from watchkeeper.rules.evaluation import GroupRuntime, engine_query, evaluate_group
    from watchkeeper.rules.manager import StoreWriter
    from watchkeeper.rules.model import parse_rule_file

    class Wrapper:  # like the results-cache engine: instant(query, time) only, no .reader
        def __init__(self, engine: object) -> None:
            self.inner = engine

        def instant(self, query: object, time_ms: int) -> QueryResult:
            return self.inner.instant(query, time_ms)  # type: ignore[attr-defined,no-any-return]

    env.add({"__name__": "up", "job": "api"}, [(0, 0.0)])
    groups, errors = parse_rule_file(
        "groups:\n  - name: g\n    rules:\n"
        "      - {alert: Down, expr: up == 0}\n      - {alert: Down2, expr: up < 1}\n", "f.yml")
    assert errors == []
    evaluate_group(groups[0], GroupRuntime(), ts_ms=0, query=engine_query(Wrapper(env.engine)),
                   writer=StoreWriter(env.storage))
    assert sorted(lb["alertname"] for lb, _ in env.query("ALERTS", 0)) == ["Down", "Down2"]
