"""The ``backup:`` section of ``watchkeeper.yml``: scheduled backups (off unless `dir` is set).

>>> cfg = BackupConfig.model_validate({"dir": "/var/backups/watchkeeper", "interval": "24h", "keep": 7})
>>> cfg.enabled, cfg.interval_seconds
(True, 86400.0)
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from watchkeeper.durations import parse_duration


class BackupConfig(BaseModel):
    """Where and how often the server backs itself up, and how many archives it keeps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: Path | None = None
    """Directory of the scheduled archives (relative to the working directory); None: no schedule."""
    interval: str = "24h"
    keep: int = Field(default=7, gt=0)
    """Newest archives kept in `dir`; older ``watchkeeper-backup-*.tar.gz`` files are deleted."""
    admin_api: bool = False
    """Serve ``POST /api/v1/admin/backup`` (``watchkeeper backup --server URL``). Off by default, as
    Prometheus' admin API is: a backup holds the whole database and the config, secrets included."""

    @field_validator("interval")
    @classmethod
    def _check_interval(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("interval must be positive")
        return value

    @property
    def enabled(self) -> bool:
        return self.dir is not None

    @property
    def interval_seconds(self) -> float:
        return parse_duration(self.interval) / 1000
