"""The server's side of backups: the scheduled job (with retention) and ``POST /api/v1/admin/backup``.

Both run `create_backup` in process on the server's own data dir and database (consistent while the
server writes; see `watchkeeper.backup.snapshot`). A scheduled backup that fails is logged and
counted in ``watchkeeper_backups_total{result="failure"}``; it never stops the server.

Replicas on one database: every replica schedules the job, but only the holder of the leader lease
(the one that evaluates rules) writes a backup; the others count the run as ``result="skipped"``.
So the replicas make one backup per interval between them, not one each, and after a failover the
new leader's next run continues the series.

>>> schedule_backups(rules_service.scheduler.scheduler, settings, registry=metrics.registry,
...                  is_leader=alerting.leadership.is_leader)                      # doctest: +SKIP
>>> app.include_router(backup_router(settings, ready=state.require_storage))                 # doctest: +SKIP
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.background import BackgroundTask

from watchkeeper.backup.snapshot import Source, create_backup
from watchkeeper.config import Settings

log = logging.getLogger("watchkeeper.backup")

PREFIX, SUFFIX = "watchkeeper-backup-", ".tar.gz"
JOB_ID = "backup"


class BackupMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter("watchkeeper_backups",
                            "Scheduled backup runs, by result (success, failure, skipped: not the leader).",
                            ["result"], registry=registry)
        self.last_success = Gauge("watchkeeper_backup_last_success_timestamp_seconds",
                                  "When the last scheduled backup succeeded.", registry=registry)
        self.duration = Gauge("watchkeeper_backup_duration_seconds",
                              "How long the last successful scheduled backup took.", registry=registry)
        self.size = Gauge("watchkeeper_backup_size_bytes", "Size of the last scheduled backup file.",
                          registry=registry)
        for result in ("success", "failure", "skipped"):
            self.runs.labels(result)


def backup_name(now: float) -> str:
    """``watchkeeper-backup-20261128T162500123Z.tar.gz``: names sort in time order."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{PREFIX}{stamp}{int(now * 1000) % 1000:03d}Z{SUFFIX}"


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest backups in `directory`; returns the deleted files."""
    backups = sorted(p for p in directory.glob(f"{PREFIX}*{SUFFIX}") if p.is_file())
    old = backups[: max(0, len(backups) - keep)]
    for p in old:
        p.unlink(missing_ok=True)
    return old


def run_scheduled_backup(source: Source, directory: Path, keep: int, metrics: BackupMetrics,
                         clock: Callable[[], float] = time.time,
                         is_leader: Callable[[], bool] = lambda: True) -> Path | None:
    """One run of the job: a new backup in `directory`, then the old ones pruned; nothing when this
    replica is not the leader. Never raises."""
    if not is_leader():
        metrics.runs.labels("skipped").inc()
        log.debug("scheduled backup skipped: another replica holds the leader lease")
        return None
    started = clock()
    try:
        target = directory / backup_name(started)
        create_backup(target, source, clock=clock)
        removed = prune(directory, keep)
    except Exception:
        metrics.runs.labels("failure").inc()
        log.exception("scheduled backup failed", extra={"dir": str(directory)})
        return None
    metrics.runs.labels("success").inc()
    metrics.last_success.set(clock())
    metrics.duration.set(clock() - started)
    metrics.size.set(target.stat().st_size)
    log.info("backup written", extra={"file": str(target), "pruned": len(removed)})
    return target


def schedule_backups(scheduler: Any, settings: Settings, *, registry: CollectorRegistry,
                     clock: Callable[[], float] = time.time,
                     is_leader: Callable[[], bool] = lambda: True) -> str | None:
    """Add the backup job to an APScheduler scheduler when ``backup.dir`` is set; its job id.
    `is_leader`: whether this replica holds the leader lease when a run starts."""
    cfg = settings.backup
    if cfg.dir is None:
        return None
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.triggers.interval import IntervalTrigger

    # its own thread: a backup of a large database takes minutes and must not hold up rule groups
    scheduler.add_executor(ThreadPoolExecutor(max_workers=1), alias=JOB_ID)
    scheduler.add_job(
        run_scheduled_backup,
        IntervalTrigger(seconds=cfg.interval_seconds),
        kwargs={"source": Source.from_settings(settings), "directory": cfg.dir, "keep": cfg.keep,
                "metrics": BackupMetrics(registry), "clock": clock, "is_leader": is_leader},
        id=JOB_ID, name="backup", executor=JOB_ID, replace_existing=True, max_instances=1, coalesce=True,
    )
    return JOB_ID


def backup_router(settings: Settings, *, ready: Callable[[], object]) -> APIRouter:
    """``POST /api/v1/admin/backup``: a fresh backup as the response body (``backup.admin_api``)."""
    router = APIRouter()

    @router.post("/api/v1/admin/backup")
    async def admin_backup() -> Response:
        if not settings.backup.admin_api:
            body = {"status": "error", "errorType": "unavailable",
                    "error": "admin APIs disabled (set backup.admin_api: true)"}
            return JSONResponse(body, status_code=403)
        ready()  # NotReady (503) while the store opens
        # beside the data, not in /tmp (often small, or RAM in containers)
        scratch = Path(tempfile.mkdtemp(prefix=".admin-backup-", dir=settings.data_dir))
        target = scratch / backup_name(time.time())
        try:
            await anyio.to_thread.run_sync(create_backup, target, Source.from_settings(settings))
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        return FileResponse(target, media_type="application/gzip", filename=target.name,
                            background=BackgroundTask(shutil.rmtree, scratch, ignore_errors=True))

    return router
