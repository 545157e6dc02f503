"""Background jobs on APScheduler: one job per rule group, at the group's interval.

Each group's job fires at the group's aligned evaluation times (the per-group offset of
:func:`watchkeeper.rules.manager.eval_timestamp_ms`), with ``max_instances=1`` and ``coalesce``:
an evaluation that overruns makes the next run be skipped, and the manager counts it as missed
from the timestamp gap. Reloads re-plan the jobs (added, removed, interval changed).

>>> scheduler = RuleScheduler(manager)     # doctest: +SKIP
>>> scheduler.start()                      # manager.start() first: files loaded, state restored
>>> scheduler.shutdown()
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from watchkeeper.rules.manager import RuleManager, eval_timestamp_ms
from watchkeeper.rules.model import RuleGroup

log = logging.getLogger("watchkeeper.scheduler")


class RuleScheduler:
    """Runs :meth:`RuleManager.tick` for every group; follows the manager's reloads."""

    def __init__(self, manager: RuleManager, *, max_workers: int = 4) -> None:
        self.manager = manager
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=max_workers)},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
            timezone=dt.UTC,
        )
        self._intervals: dict[str, int] = {}
        manager.on_change = self.plan

    def start(self) -> None:
        self.plan(self.manager.groups)
        self.scheduler.start()

    def shutdown(self, wait: bool = True) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)

    def plan(self, groups: Sequence[RuleGroup]) -> None:
        """Add, re-time or remove jobs so that there is exactly one per group."""
        wanted = {g.key: g.interval_ms for g in groups}
        for key in [k for k in self._intervals if k not in wanted]:
            self._remove(key)
        now_ms = int(self.manager.clock() * 1000)
        for key, interval_ms in wanted.items():
            if self._intervals.get(key) == interval_ms:
                continue
            self._remove(key)
            first_ms = eval_timestamp_ms(key, interval_ms, now_ms) + interval_ms
            self.scheduler.add_job(
                self._run, IntervalTrigger(seconds=interval_ms / 1000,
                                           start_date=dt.datetime.fromtimestamp(first_ms / 1000, tz=dt.UTC)),
                args=[key], id=_job_id(key), name=f"rule group {key}", replace_existing=True,
            )
            self._intervals[key] = interval_ms

    def _remove(self, key: str) -> None:
        self._intervals.pop(key, None)
        job = self.scheduler.get_job(_job_id(key))
        if job is not None:
            job.remove()

    def _run(self, key: str) -> None:
        try:
            self.manager.tick(key)
        except Exception:  # a job must never die: log and wait for the next tick
            log.exception("evaluation of rule group %s failed", key)


def _job_id(key: str) -> str:
    return f"rules:{key}"
