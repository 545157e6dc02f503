"""Business metrics with a cardinality cap."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from watchkeeper.exporters.business import BusinessMetrics


def test_counter_gauge_and_event() -> None:
    registry = CollectorRegistry()
    business = BusinessMetrics(registry)
    sessions = business.counter("sessions_created", "Sessions created", labels=("region",))
    sessions.inc(region="eu")
    sessions.inc(2, region="us")
    active = business.gauge("active_sessions", "Open sessions", labels=("region",))
    active.set(5, region="eu")
    active.dec(region="eu")
    business.event("feature_used", feature="dark_mode", region="eu")
    business.event("feature_used", feature="dark_mode", region="eu")
    assert registry.get_sample_value("sessions_created_total", {"region": "eu"}) == 1
    assert registry.get_sample_value("sessions_created_total", {"region": "us"}) == 2
    assert registry.get_sample_value("active_sessions", {"region": "eu"}) == 4
    assert registry.get_sample_value("feature_used_total", {"feature": "dark_mode", "region": "eu"}) == 2
    assert business.counter("sessions_created", labels=("region",)) is sessions


def test_label_values_past_the_cap_fold_into_other_and_are_counted() -> None:
    registry = CollectorRegistry()
    business = BusinessMetrics(registry, max_label_values=3)
    joins = business.counter("joins", labels=("region",))
    for i in range(10):
        joins.inc(region=f"r{i}")
    joins.inc(region="r0")
    joins.inc(region="r9")  # a folded value again: folded (and counted) again
    regions = {s.labels["region"]: s.value for m in registry.collect() for s in m.samples
               if s.name == "joins_total"}  # fmt: skip
    assert regions == {"r0": 2, "r1": 1, "r2": 1, "__other__": 8}
    assert (
        registry.get_sample_value("business_label_overflow_total", {"metric": "joins", "label": "region"})
        == 8
    )


def test_overflow_counts_each_folded_label_of_a_multi_label_metric() -> None:
    registry = CollectorRegistry()
    business = BusinessMetrics(registry, max_label_values=1)
    for _ in range(2):
        business.event("matches", region="eu", sport="tennis")
        business.event("matches", region="us", sport="tennis")  # region folds
        business.event("matches", region="ap", sport="golf")  # both fold
    overflow = {
        s.labels["label"]: s.value
        for m in registry.collect()
        for s in m.samples
        if s.name == "business_label_overflow_total"
    }
    assert overflow == {"region": 4, "sport": 2}
    assert registry.get_sample_value("matches_total", {"region": "__other__", "sport": "__other__"}) == 2
    assert registry.get_sample_value("matches_total", {"region": "eu", "sport": "tennis"}) == 2


def test_wrong_labels_are_dropped_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    business = BusinessMetrics(registry)
    business.event("joined", region="eu")
    with caplog.at_level(logging.WARNING, logger="watchkeeper.exporters"):
        business.event("joined", planet="mars")
        business.event("joined", planet="venus")
    assert registry.get_sample_value("joined_total", {"region": "eu"}) == 1
    assert len([r for r in caplog.records if "business.joined" in r.getMessage()]) == 1


def test_invalid_definitions_are_refused_at_definition_time() -> None:
    business = BusinessMetrics(CollectorRegistry())
    with pytest.raises(ValueError):
        business.counter("bad name")
    with pytest.raises(ValueError):
        business.gauge("ok", labels=("__reserved",))
    business.counter("defined", labels=("a",))
    with pytest.raises(ValueError):
        business.gauge("defined", labels=("a",))
