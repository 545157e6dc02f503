"""``replication:`` settings: replicas share their accepted writes through a Redis stream.

>>> ReplicationConfig().enabled
False
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from watchkeeper.durations import parse_duration


class ReplicationConfig(BaseModel):
    """Used only with ``redis_url``; off by default (a single node has nobody to replicate to)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    stream: str = "watchkeeper:replication"
    """The Redis stream key; every replica of one deployment uses the same."""
    max_len: int = Field(default=10_000, gt=0)
    """Entries the stream keeps (approximately, ``XADD MAXLEN ~``): how far behind a replica that
    was down can be and still catch up. An entry holds up to ``entry_samples`` samples."""
    entry_samples: int = Field(default=10_000, gt=0)
    """Samples per stream entry at most (appends published together share an entry)."""
    queue_samples: int = Field(default=1_000_000, gt=0)
    """Samples waiting to be published at most (Redis slow or down); more are dropped, counted."""
    read_count: int = Field(default=64, gt=0)
    """Entries a replica reads from the stream per call."""
    block: str = "1s"
    """How long one read waits for new entries."""
    catch_up_timeout: str = "1m"
    """At start, the replica is not ready until it has applied the stream up to its newest entry
    of that moment, or this long has passed (``0s``: ready at once)."""

    @field_validator("block", "catch_up_timeout")
    @classmethod
    def _duration(cls, value: str, info: ValidationInfo) -> str:
        if parse_duration(value) <= 0 and info.field_name == "block":
            raise ValueError("must be a positive duration")
        return value

    @property
    def block_ms(self) -> int:
        return parse_duration(self.block)

    @property
    def catch_up_timeout_seconds(self) -> float:
        return parse_duration(self.catch_up_timeout) / 1000
