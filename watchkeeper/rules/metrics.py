"""Self-metrics of rule evaluation, read from the manager at scrape time.

Prometheus' names with our prefix, labelled ``rule_group="<file>;<name>"``:
``watchkeeper_rule_group_iterations_total``, ``..._iterations_missed_total``,
``watchkeeper_rule_evaluation_failures_total``, ``watchkeeper_rule_group_last_duration_seconds``,
``watchkeeper_rule_group_interval_seconds``, ``watchkeeper_rule_group_rules`` and
``watchkeeper_rule_alerts{alertname, state}`` (pending and firing instances).

>>> metrics.registry.register(RuleMetricsCollector(manager))   # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from watchkeeper.labels import get
from watchkeeper.rules.manager import RuleManager


class RuleMetricsCollector:
    """A ``prometheus_client`` collector over a :class:`RuleManager`."""

    def __init__(self, manager: RuleManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        groups = self.manager.groups
        label = ["rule_group"]
        iterations = CounterMetricFamily("watchkeeper_rule_group_iterations",
                                         "Scheduled evaluations of the rule group.", labels=label)
        missed = CounterMetricFamily("watchkeeper_rule_group_iterations_missed",
                                     "Evaluations skipped because the previous one overran.", labels=label)
        failures = CounterMetricFamily("watchkeeper_rule_evaluation_failures",
                                       "Rule evaluations that failed.", labels=label)
        duration = GaugeMetricFamily("watchkeeper_rule_group_last_duration_seconds",
                                     "Duration of the last evaluation of the group.", labels=label)
        interval = GaugeMetricFamily("watchkeeper_rule_group_interval_seconds",
                                     "Evaluation interval of the group.", labels=label)
        rules = GaugeMetricFamily("watchkeeper_rule_group_rules", "Rules in the group.", labels=label)
        alerts: Counter[tuple[str, str]] = Counter()
        for g in groups:
            rt = self.manager.runtime(g.key)
            iterations.add_metric([g.key], rt.iterations)
            missed.add_metric([g.key], rt.iterations_missed)
            failures.add_metric([g.key], rt.evaluation_failures)
            duration.add_metric([g.key], rt.evaluation_seconds)
            interval.add_metric([g.key], g.interval_ms / 1000)
            rules.add_metric([g.key], len(g.rules))
            for by_labels in rt.alerts.values():
                for a in by_labels.values():
                    if a.is_active:
                        alerts[(get(a.labels, "alertname"), a.state.value)] += 1
        active = GaugeMetricFamily("watchkeeper_rule_alerts", "Pending and firing alert instances of rules.",
                                   labels=["alertname", "state"])
        for (name, state), n in sorted(alerts.items()):
            active.add_metric([name, state], n)
        yield from (iterations, missed, failures, duration, interval, rules, active)
