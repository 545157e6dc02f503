"""``watchkeeper slo generate SPEC...``: print (or write) the rules generated from SLO specs.

::

    watchkeeper slo generate rules/slo/checkout.yml              # rule file on stdout
    watchkeeper slo generate rules/slo/*.yml -o rules/slo.rules.yml
    watchkeeper slo generate --period 28d spec.yml               # specs without a period use 28d

Exit status: 0 generated, 1 a spec is invalid or an alert could never fire (every reason is
printed on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from watchkeeper.slo.budget import Window
from watchkeeper.slo.generate import generate, to_yaml
from watchkeeper.slo.spec import SpecError, load_spec_files


def slo_generate_main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    parser = argparse.ArgumentParser(
        prog="watchkeeper slo generate", description="Generate Prometheus rules from Sloth/OpenSLO SLO specs."
    )
    parser.add_argument("specs", nargs="+", type=Path, help="spec files (Sloth prometheus/v1 or OpenSLO v1)")
    parser.add_argument("-o", "--out", type=Path, help="write the rule file here instead of stdout")
    parser.add_argument("--period", default="30d", help="SLO period for specs that set none (28d, 30d)")
    try:
        args = parser.parse_args(argv)
        period = Window.parse(args.period)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    except ValueError as exc:
        print(f"error: {exc}", file=err)
        return 2
    try:
        text = to_yaml(generate(load_spec_files(args.specs, default_period_days=period.days)))
    except SpecError as exc:
        for line in exc.errors:
            print(f"error: {line}", file=err)
        return 1
    if args.out:
        args.out.write_text(text)
    else:
        out.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(slo_generate_main())
