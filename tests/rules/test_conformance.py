"""promtool's own unit-test files (``../shared/conformance/rules``) through ``test rules``.

``unittest.yml`` and ``start-time-test.yml`` must pass (exit 0); ``failing.yml`` must fail (exit 1)
with messages naming each failing test and the expected and actual values. The directory
missing is a skip on a laptop and a failure in CI.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tests.environment import unavailable
from watchkeeper.rules.check import check_rules_main
from watchkeeper.rules.unit_tests import test_rules_main as run_test_rules

CONFORMANCE_DIR = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "rules"


@pytest.fixture(scope="module")
def conformance_dir() -> Path:
    if not CONFORMANCE_DIR.is_dir():
        unavailable(f"{CONFORMANCE_DIR} is missing")
    return CONFORMANCE_DIR


def _run(path: Path) -> tuple[int, str]:
    out = io.StringIO()
    code = run_test_rules([str(path)], out=out)
    return code, out.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unittest.yml", "start-time-test.yml"])
def test_upstream_passing_files_pass(conformance_dir: Path, name: str) -> None:
    code, output = _run(conformance_dir / name)
    assert code == 0, output
    assert output.splitlines()[1] == "  SUCCESS"


def test_failing_file_fails_with_a_readable_diff(conformance_dir: Path) -> None:
    code, output = _run(conformance_dir / "failing.yml")
    assert code == 1
    assert "  FAILED:" in output
    # the promql test: expected 1, got 0, as a -/+ diff
    assert 'expr: "test", time: 0s' in output
    assert '- {__name__="test"} 1E+00' in output
    assert '+ {__name__="test"} 0E+00' in output
    # the alert tests: an expected alert that never fired, and firing alerts nobody expected
    assert "alertname: Test, time: 0s" in output
    assert '- Labels:{alertname="Test"} Annotations:{}' in output
    assert "alertname: InstanceDown, time: 5m" in output
    assert '+ Labels:{alertname="AlwaysFiring"} Annotations:{}' in output
    assert "name: Failing alert test," in output


def test_check_rules_accepts_the_upstream_rule_file(conformance_dir: Path) -> None:
    out = io.StringIO()
    assert check_rules_main([str(conformance_dir / "rules.yml")], out=out) == 0
    assert "SUCCESS: 5 rules found" in out.getvalue()


def test_run_filter_selects_test_groups(conformance_dir: Path) -> None:
    out = io.StringIO()
    code = run_test_rules(["--run", "^Failing test$", str(conformance_dir / "failing.yml")], out=out)
    assert code == 1
    assert "Failing alert test" not in out.getvalue()


def test_junit_report(conformance_dir: Path, tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    code = run_test_rules(["--diff", "--junit", str(report), str(conformance_dir / "failing.yml")],
                          out=io.StringIO())
    assert code == 1
    text = report.read_text()
    assert 'failures="1"' in text and "alertname: Test" in text


def test_malformed_test_files_fail(tmp_path: Path) -> None:
    cases = {
        "unknown.yml": ("tests:\n- interval: 1m\n  inputs: []\n", "field inputs not found"),
        "noname.yml": ("tests:\n- alert_rule_test:\n  - eval_time: 1m\n",
                       "misses required attribute alertname"),
        "order.yml": ("group_eval_order: [a, a]\ntests: []\n", "group name repeated"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        out = io.StringIO()
        assert run_test_rules([str(path)], out=out) == 1
        assert message in out.getvalue()


def test_missing_rule_file_pattern_only_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.yml"
    path.write_text("rule_files: [nothing-*.yml]\ntests:\n- promql_expr_test:\n  - expr: vector(1)\n"
                    "    exp_samples: [{value: 1}]\n")
    assert run_test_rules([str(path)], out=io.StringIO()) == 0
    assert "WARNING: no file match pattern nothing-*.yml" in capsys.readouterr().err


def test_own_example_covers_templates_keep_firing_and_recording() -> None:
    """``data/api_test.yml``: templated labels, $externalLabels, query in annotations, keep_firing_for."""
    code, output = _run(Path(__file__).parent / "data" / "api_test.yml")
    assert code == 0, output
