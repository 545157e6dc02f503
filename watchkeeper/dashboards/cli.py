"""``watchkeeper dashboards import FILE.json``: convert a Grafana dashboard to watchkeeper YAML.

>>> dashboards_import_main(["grafana.json", "--out-dir", "dashboards"])  # doctest: +SKIP
0

Writes the YAML to stdout (or ``--output FILE``, or ``<uid>.yml`` in ``--out-dir``) and lists on
stderr what could not be converted. Exit status: 0 converted, 1 not a dashboard we can convert
(or the file exists without ``--force``), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from watchkeeper.dashboards.grafana import GrafanaImportError, convert


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="watchkeeper dashboards import",
        description="Convert a Grafana dashboard JSON file to watchkeeper YAML.",
    )
    parser.add_argument("file", type=Path, help="Grafana dashboard JSON ('-' for stdin)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("-o", "--output", type=Path, help="write the YAML to this file")
    where.add_argument(
        "--out-dir", type=Path, help="write <uid>.yml into this directory (the dashboards dir)"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    return parser


def dashboards_import_main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text(encoding="utf-8")
        result = convert(json.loads(text))
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    except json.JSONDecodeError as exc:
        print(f"error: {args.file} is not JSON: {exc}", file=sys.stderr)
        return 1
    except GrafanaImportError as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return 1
    yaml_text = result.to_yaml()
    target = args.output or (args.out_dir / f"{result.dashboard.uid}.yml" if args.out_dir else None)
    if target is None:
        sys.stdout.write(yaml_text)
    else:
        if target.exists() and not args.force:
            print(f"error: {target} exists (use --force to replace it)", file=sys.stderr)
            return 1
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml_text, encoding="utf-8")
        print(f"wrote {target} (uid {result.dashboard.uid})", file=sys.stderr)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0
