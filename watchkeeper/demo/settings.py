"""Settings of the reference core API (``watchkeeper.demo``).

Every optimisation is a switch, so a deployment can roll them out one at a time:

>>> s = CoreApiSettings(cache_enabled=False, rate_limit_enabled=True, gzip_enabled=True)
>>> s.cache_enabled, s.session_ttl_seconds
(False, 300)

Built from ``COREAPI_*`` environment variables when the app is started by uvicorn's factory
(``uvicorn --factory watchkeeper.demo.api:app_from_env``), otherwise passed in directly.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SPORTS = ("football", "basketball", "tennis", "padel", "volleyball", "running")
REGIONS = ("eu-west", "eu-central", "us-east", "us-west", "ap-south", "sa-east")
Sport = Literal["football", "basketball", "tennis", "padel", "volleyball", "running"]
Region = Literal["eu-west", "eu-central", "us-east", "us-west", "ap-south", "sa-east"]


class CoreApiSettings(BaseSettings):
    """All settings of the core API; defaults run on a laptop with no other server."""

    model_config = SettingsConfigDict(env_prefix="COREAPI_", extra="forbid", frozen=True)

    database_url: str = "sqlite:///./data/coreapi.db"
    """SQLAlchemy URL: SQLite (default) or ``postgresql+psycopg://...``."""
    redis_url: str | None = None
    """None: cache and rate-limit windows live in this process's memory."""

    cache_enabled: bool = True
    cache_warming: bool = True
    session_ttl_seconds: int = Field(default=300, gt=0)
    player_ttl_seconds: int = Field(default=600, gt=0)
    discovery_ttl_seconds: int = Field(default=120, gt=0)
    statistics_ttl_seconds: int = Field(default=60, gt=0)
    cache_prefetch: bool = True
    """With Redis and the rate limiter on: read a GET's cache key in the limiter's round trip."""

    rate_limit_enabled: bool = True
    rate_limit_requests: int = Field(default=600, gt=0)
    rate_limit_window_seconds: int = Field(default=60, gt=0)

    gzip_enabled: bool = True
    gzip_minimum_size_bytes: int = Field(default=1000, ge=0)
    cache_gzip: bool = True
    """With gzip on: cache large answers compressed and send them as they are to clients that
    accept gzip (compressed once per fill instead of once per hit)."""

    instrument: bool = True
    """Measure with the watchkeeper SDK and serve ``/metrics``."""
    metrics_multiprocess_dir: str | None = None
    """Set when several workers serve the app, so one scrape sees them all."""
    slow_query_seconds: float = Field(default=0.25, gt=0)

    seed_players: int = Field(default=0, ge=0)
    """Create this many players (and 2x sessions) at start when the database is empty."""
    fault_injection: bool = False
    """Honour the ``X-Demo-Fault: error`` and ``X-Demo-Latency-Ms: N`` request headers (the traffic
    generator's ``--error-rate`` / ``--latency-ms``) to show alerts firing; off in production."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
