"""``watchkeeper check rules``: validate rule files as ``promtool check rules`` does.

Exit status: 0 when every file is valid, 1 when one is not (each error printed), 3 when lint
findings were made fatal with ``--lint-fatal``. The default lint is ``duplicate-rules``: two rules
with the same name and labels in one file.

>>> check_rules_main(["rules.yml"])   # doctest: +SKIP
Checking rules.yml
  SUCCESS: 5 rules found
0
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from watchkeeper.labels import Labels
from watchkeeper.rules.model import RuleGroup, parse_rule_file

EXIT_OK, EXIT_ERROR, EXIT_LINT = 0, 1, 3


def duplicate_rules(groups: Sequence[RuleGroup]) -> list[tuple[str, Labels]]:
    """(name, labels) of rules that appear more than once across the groups of a file."""
    counts = Counter((rule.name, rule.labels) for group in groups for rule in group.rules)
    return sorted(key for key, n in counts.items() if n > 1)


def check_file(path: str, *, lint: str, out: TextIO) -> tuple[bool, bool]:
    """Check one file; returns (ok, had lint findings)."""
    print(f"Checking {path}", file=out)
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        print("  FAILED:", file=out)
        print(f"{path}: {exc.strerror or exc}", file=out)
        return False, False
    groups, errors = parse_rule_file(text, path)
    if errors:
        print("  FAILED:", file=out)
        for error in errors:
            print(error, file=out)
        return False, False
    findings = False
    if lint in ("all", "duplicate-rules"):
        dups = duplicate_rules(groups)
        if dups:
            findings = True
            print(f"{len(dups)} duplicate rule(s) found.", file=out)
            for name, labels in dups:
                print(f"Metric: {name}\nLabel(s):", file=out)
                for k, v in labels:
                    print(f"\t{k}: {v}", file=out)
            print("Might cause inconsistency while recording expressions.", file=out)
    n = sum(len(g.rules) for g in groups)
    print(f"  SUCCESS: {n} rules found", file=out)
    return True, findings


def check_rules_main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """``watchkeeper check rules [--lint=duplicate-rules|none|all] [--lint-fatal] FILE...``."""
    stream = out or sys.stdout
    parser = argparse.ArgumentParser(prog="watchkeeper check rules", description="Check rule files.")
    parser.add_argument("--lint", default="duplicate-rules", choices=["all", "duplicate-rules", "none"])
    parser.add_argument("--lint-fatal", action="store_true", help="exit 3 on lint findings")
    parser.add_argument("files", nargs="*", metavar="FILE", help="rule files ('-' or none: standard input)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    failed = linted = False
    for path in args.files or ["-"]:
        ok, findings = check_file(path, lint=args.lint, out=stream)
        failed |= not ok
        linted |= findings
        print(file=stream)
    if failed:
        return EXIT_ERROR
    if linted and args.lint_fatal:
        return EXIT_LINT
    return EXIT_OK
