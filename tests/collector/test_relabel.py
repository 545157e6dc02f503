"""Relabelling: each action, as Prometheus' relabel tests state it."""
# ruff: noqa: E501  (one rule per line reads best as a table)

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from watchkeeper.collector.relabel import RelabelConfig, compile_rules, relabel

BASE = {"__address__": "db1:9100", "job": "node", "__meta_env": "prod", "__meta_team": "core"}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"source_labels": ["__address__"], "regex": "(.*):(\\d+)", "target_label": "host", "replacement": "$1"},
         {**BASE, "host": "db1"}),
        ({"source_labels": ["__address__"], "regex": "(?P<h>[^:]+):.*", "target_label": "host",
          "replacement": "${h}-x"}, {**BASE, "host": "db1-x"}),
        ({"source_labels": ["job", "__meta_env"], "target_label": "both"}, {**BASE, "both": "node;prod"}),
        ({"source_labels": ["job"], "regex": "nomatch", "target_label": "x"}, BASE),
        ({"source_labels": ["nothere"], "target_label": "job"}, {k: v for k, v in BASE.items() if k != "job"}),
        ({"source_labels": ["job"], "target_label": "$$lit", "replacement": "v"}, BASE),  # invalid name: skipped
        ({"source_labels": ["job"], "regex": "node", "action": "keep"}, BASE),
        ({"source_labels": ["job"], "regex": "nod", "action": "keep"}, None),  # anchored
        ({"source_labels": ["job"], "regex": "no.*", "action": "drop"}, None),
        ({"regex": "__meta_(.*)", "action": "labelmap"}, {**BASE, "env": "prod", "team": "core"}),
        ({"regex": "__meta_.*", "action": "labeldrop"}, {"__address__": "db1:9100", "job": "node"}),
        ({"regex": "job|__address__", "action": "labelkeep"}, {"__address__": "db1:9100", "job": "node"}),
        ({"source_labels": ["__meta_env"], "target_label": "env", "action": "uppercase"}, {**BASE, "env": "PROD"}),
        ({"source_labels": ["job"], "target_label": "job", "action": "keepequal"}, BASE),
        ({"source_labels": ["job"], "target_label": "__meta_env", "action": "keepequal"}, None),
        ({"source_labels": ["job"], "target_label": "job", "action": "dropequal"}, None),
    ],
)
def test_actions(rule: dict[str, Any], expected: dict[str, str] | None) -> None:
    assert relabel(BASE, compile_rules([RelabelConfig(**rule)])) == expected


def test_hashmod_matches_prometheus() -> None:
    # the values of Prometheus' model/relabel/relabel_test.go
    rules = compile_rules([RelabelConfig(source_labels=["a"], target_label="b", modulus=1000, action="hashmod")])
    assert relabel({"a": "baz"}, rules) == {"a": "baz", "b": "976"}
    assert relabel({"a": "foo\nbar"}, rules) == {"a": "foo\nbar", "b": "734"}


@pytest.mark.parametrize(
    "rule",
    [
        {"action": "replace"},
        {"action": "hashmod", "target_label": "x"},
        {"regex": "(", "action": "drop"},
        {"action": "explode"},
    ],
)
def test_invalid_rules_are_config_errors(rule: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RelabelConfig(**rule)
