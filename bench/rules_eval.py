"""Rule evaluation cost: 1,000 alerting rules over 10,000 series, in groups, on this machine.

    python bench/rules_eval.py [--rules 1000] [--series 10000] [--groups 10] [--rounds 3] [--quiet]
                               [--persistent] [--tiers 1]

10,000 series (100 metrics x 100 instances, 15 s scrapes over the last 10 minutes) in the
in-memory store; 1,000 alerting rules of four common shapes (threshold on a selector, ``rate``
over 5m, ``sum by (job) (rate(...))``, ``avg_over_time``), each selecting one metric (100 series),
with a templated annotation, split into groups of equal size. By default the thresholds make
~18,000 alert instances active (a worst case: every rule has alerts to template and write);
``--quiet`` makes none fire. ``--tiers 2`` writes each expression twice in its group with two
thresholds (warning/critical pairs, as real rule sets do), so half the selections repeat one made
just before at the same timestamp (the group shares them). Each round evaluates every group
once through ``RuleManager.evaluate`` (query, state machine, ALERTS writes, notifier) and prints
the wall and CPU time per group. The target is that all groups together fit in a 15 s
evaluation interval: groups run on a thread pool but share one interpreter (GIL), so the sum is
what counts.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from watchkeeper.labels import from_dict
from watchkeeper.promql.engine import Engine
from watchkeeper.rules.manager import RuleManager
from watchkeeper.rules.model import RulesConfig
from watchkeeper.rules.notify import ListSink
from watchkeeper.tsdb.storage import Storage

SCRAPE_MS = 15_000
HISTORY_MS = 600_000


def load(storage: Storage, n_series: int, now_ms: int) -> int:
    metrics = 100
    per_metric = n_series // metrics
    labels = [
        from_dict({"__name__": f"app_metric_{m}_total", "job": f"job{i % 10}", "instance": f"host{i}:9100"})
        for m in range(metrics) for i in range(per_metric)
    ]
    refs = storage.series_refs(labels)
    rng = np.random.default_rng(1)
    steps = np.arange(now_ms - HISTORY_MS, now_ms + 1, SCRAPE_MS, dtype=np.int64)
    rates = rng.uniform(0, 20, len(refs))
    for j, t in enumerate(steps):
        storage.append(refs, np.full(len(refs), t, dtype=np.int64), rates * j * 15)
    return len(refs) * len(steps)


def rules_yaml(n_rules: int, n_groups: int, *, quiet: bool = False, tiers: int = 1) -> str:
    shapes = [
        'app_metric_{m}_total{{job="job{j}"}} > {t}',
        "rate(app_metric_{m}_total[5m]) > {r}",
        "sum by (job) (rate(app_metric_{m}_total[5m])) > {s}",
        "avg_over_time(app_metric_{m}_total[5m]) > {t}",
    ]
    per_group = n_rules // n_groups
    lines = ["groups:"]
    for g in range(n_groups):
        lines += [f"  - name: group{g}", "    interval: 15s", "    rules:"]
        for k in range(per_group):
            i = g * per_group + k
            b, tier = i // tiers, i % tiers  # the expression, and which of its thresholds
            scale = (1000 if quiet else 1) * (1 + tier)  # --quiet: thresholds no series reaches
            expr = shapes[b % 4].format(m=b % 100, j=b % 10, t=(5000 + b) * scale, r=(10 + b % 10) * scale,
                                        s=(100 + b % 50) * scale)
            lines += [
                f"      - alert: Rule{i}",
                f"        expr: '{expr}'",
                "        for: 1m",
                "        labels: {severity: warning}",
                "        annotations:",
                "          summary: '{{ $labels.instance }} at {{ $value | humanize }}'",
            ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quiet", action="store_true", help="thresholds that never fire (the common case)")
    parser.add_argument("--tiers", type=int, default=1, help="thresholds per expression within a group")
    parser.add_argument("--persistent", action="store_true",
                        help="a store on disk (WAL fsync on every append) instead of in memory")
    args = parser.parse_args()

    now_ms = 1_800_000_000_000
    data_dir = Path(tempfile.mkdtemp(prefix="wk-rules-bench-")) if args.persistent else None
    storage = Storage.open(data_dir=data_dir, retention_ms=2**62)
    started = time.perf_counter()
    samples = load(storage, args.series, now_ms)
    elapsed = time.perf_counter() - started
    print(f"loaded {storage.num_series:,} series, {samples:,} samples in {elapsed:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.yml"
        path.write_text(rules_yaml(args.rules, args.groups, quiet=args.quiet, tiers=args.tiers))
        sink = ListSink()
        manager = RuleManager(storage=storage, engine=Engine(storage), sink=sink,
                              config=RulesConfig(rule_files=[str(path)]), clock=lambda: now_ms / 1000)
        manager.start()
    groups = manager.groups
    print(f"{sum(len(g.rules) for g in groups):,} alerting rules in {len(groups)} groups, 15 s interval")
    totals: list[float] = []
    for rnd in range(args.rounds):
        ts = now_ms + rnd * SCRAPE_MS
        per_group: list[tuple[str, float, float, int]] = []
        for g in groups:
            wall, cpu = time.perf_counter(), time.process_time()
            manager.evaluate(g.key, ts)
            active = sum(len(v) for v in manager.runtime(g.key).alerts.values())
            per_group.append((g.name, time.perf_counter() - wall, time.process_time() - cpu, active))
        total = sum(w for _, w, _, _ in per_group)
        totals.append(total)
        print(f"round {rnd + 1}: " + ", ".join(f"{n} {w * 1000:.0f} ms" for n, w, _, _ in per_group))
        print(f"  all groups: wall {total:.2f} s, cpu {sum(c for _, _, c, _ in per_group):.2f} s, "
              f"active alerts {sum(a for *_, a in per_group):,}, "
              f"{total / 15 * 100:.0f}% of the 15 s interval")
    median = statistics.median(totals)
    print(f"median per round: {median:.2f} s for {args.rules} rules "
          f"({median / len(groups) * 1000:.0f} ms per group of {args.rules // len(groups)}); "
          f"fits in 15 s: {'yes' if median < 15 else 'NO'}")
    storage.close()
    if data_dir is not None:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
