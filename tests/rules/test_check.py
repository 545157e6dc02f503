"""Rule file validation and ``check rules`` exit codes (promtool's: 0 ok, 1 errors, 3 fatal lint)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from watchkeeper.rules.check import check_rules_main
from watchkeeper.rules.model import (
    AlertingRule,
    RecordingRule,
    RuleFileError,
    load_rule_files,
    parse_rule_file,
)

GOOD = """
groups:
  - name: api
    interval: 30s
    query_offset: 1m
    limit: 10
    labels: {team: core}
    rules:
      - record: job:http_requests:rate5m
        expr: sum by (job) (rate(http_requests_total[5m]))
      - alert: HighErrorRate
        expr: job:http_requests:rate5m > 0x10
        for: 5m
        keep_firing_for: 2m
        labels: {severity: page, team: web}
        annotations:
          summary: "{{ $labels.job }} at {{ $value | humanize }}"
"""


def test_model_of_a_valid_file() -> None:
    groups, errors = parse_rule_file(GOOD, "good.yml")
    assert errors == []
    (g,) = groups
    assert (g.name, g.interval_ms, g.query_offset_ms, g.limit) == ("api", 30_000, 60_000, 10)
    assert g.key == "good.yml;api"
    rec, alert = g.rules
    assert isinstance(rec, RecordingRule) and rec.labels == (("team", "core"),)
    assert isinstance(alert, AlertingRule)
    assert alert.expr == "job:http_requests:rate5m > 0x10"  # kept as written, not read as YAML int 16
    assert (alert.for_ms, alert.keep_firing_for_ms) == (300_000, 120_000)
    assert alert.labels == (("severity", "page"), ("team", "web"))  # rule labels win over group labels


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("- record: x\n  expr: up\n  for: 5m", "invalid field 'for' in recording rule"),
        ("- record: x\n  expr: up\n  annotations: {a: b}", "invalid field 'annotations' in recording rule"),
        ("- record: 'not valid'\n  expr: up", "invalid recording rule name"),
        ("- alert: A", "field 'expr' must be set in rule"),
        ("- expr: up", "one of 'record' or 'alert' must be set"),
        ("- record: a\n  alert: b\n  expr: up", "only one of 'record' and 'alert' must be set"),
        ("- alert: A\n  expr: rate(hi)", "could not parse expression"),
        ("- alert: A\n  expr: up[5m]", "must evaluate to a vector or scalar"),
        ("- alert: A\n  expr: up\n  for: 5 minutes", "not a valid duration string"),
        ("- alert: A\n  expr: up\n  labels: {'bad-name': x}", "invalid label name"),
        ("- alert: A\n  expr: up\n  annotations: {s: '{{ $labels.x '}", "template"),
        ("- alert: A\n  expr: up\n  unknown: 1", "field unknown not found"),
    ],
)
def test_invalid_rules_are_reported(rule: str, message: str) -> None:
    text = "groups:\n  - name: g\n    rules:\n" + "\n".join("      " + line for line in rule.splitlines())
    _, errors = parse_rule_file(text, "bad.yml")
    assert any(message in e for e in errors), errors
    assert all(e.startswith("bad.yml: g: rule 1") for e in errors)


def test_repeated_group_name_and_empty_name() -> None:
    text = "groups:\n- name: a\n  rules: []\n- name: a\n  rules: []\n- rules: []\n"
    _, errors = parse_rule_file(text, "f.yml")
    assert 'groupname: "a" is repeated in the same file' in errors[0]
    assert "Groupname must not be empty" in errors[1]


def test_load_rule_files_globs_and_collects_every_error(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(GOOD)
    (tmp_path / "b.yml").write_text("groups:\n- name: b\n  rules:\n  - alert: X\n")
    with pytest.raises(RuleFileError) as info:
        load_rule_files(["*.yml"], base_dir=tmp_path)
    assert len(info.value.errors) == 1 and "b.yml" in info.value.errors[0]
    (tmp_path / "b.yml").write_text("groups: []\n")
    assert [g.name for g in load_rule_files(["*.yml"], base_dir=tmp_path)] == ["api"]


def _check(tmp_path: Path, text: str, *args: str) -> tuple[int, str]:
    path = tmp_path / "rules.yml"
    path.write_text(text)
    out = io.StringIO()
    return check_rules_main([*args, str(path)], out=out), out.getvalue()


def test_check_rules_exit_codes(tmp_path: Path) -> None:
    code, out = _check(tmp_path, GOOD)
    assert code == 0 and "SUCCESS: 2 rules found" in out
    code, out = _check(tmp_path, "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: rate(x)\n")
    assert code == 1 and "FAILED:" in out and "could not parse expression" in out
    dup = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n  - alert: A\n    expr: down\n"
    code, out = _check(tmp_path, dup)
    assert code == 0 and "1 duplicate rule(s) found." in out and "Metric: A" in out
    assert _check(tmp_path, dup, "--lint-fatal")[0] == 3
    assert _check(tmp_path, dup, "--lint=none", "--lint-fatal")[0] == 0


def test_check_rules_missing_file(tmp_path: Path) -> None:
    out = io.StringIO()
    assert check_rules_main([str(tmp_path / "nope.yml")], out=out) == 1
    assert "FAILED" in out.getvalue()
