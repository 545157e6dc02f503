"""Prometheus' own PromQL test files (``../shared/conformance/promql/*.test``), one case per eval.

Each file runs once (its evals depend on its ``load``/``clear`` order); every eval is then its own
test, named ``<file>:<line>``. Evals that need native histograms are skipped with that reason;
every other eval must pass. The directory missing is a skip on a laptop and a failure in CI.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from tests.environment import unavailable
from watchkeeper.promql.promqltest import FileReport, run_file
from watchkeeper.promql.testfile import Eval, TestFileError, parse_test

CONFORMANCE_DIR = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "promql"


def _cases() -> list[tuple[str, int]]:
    if not CONFORMANCE_DIR.is_dir():
        return []
    cases: list[tuple[str, int]] = []
    for path in sorted(CONFORMANCE_DIR.glob("*.test")):
        try:
            commands = parse_test(path.read_text(encoding="utf-8"))
        except TestFileError as exc:
            cases.append((path.name, exc.line))  # reported as a failure by the case itself
            continue
        cases.extend((path.name, c.line) for c in commands if isinstance(c, Eval))
    return cases


@cache
def _report(name: str) -> FileReport:
    return run_file(CONFORMANCE_DIR / name)


def test_conformance_files_are_present() -> None:
    if CONFORMANCE_DIR.is_dir() and any(CONFORMANCE_DIR.glob("*.test")):
        return
    unavailable(f"no PromQL conformance files in {CONFORMANCE_DIR}")


CASES = _cases()


@pytest.mark.parametrize(("name", "line"), CASES, ids=[f"{n}:{ln}" for n, ln in CASES])
def test_eval(name: str, line: int) -> None:
    report = _report(name)
    if report.error is not None:
        pytest.fail(f"{name} could not be run: {report.error}")
    outcome = report.outcome_at(line)
    assert outcome is not None, f"{name}:{line} produced no outcome"
    if outcome.status == "skip":
        pytest.skip(outcome.message)
    if outcome.status == "fail":
        pytest.fail(f"{name}:{line}: {outcome.expr}\n{outcome.message}", pytrace=False)
