"""Request bodies of the core API, validated by pydantic (unknown fields are refused)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from watchkeeper.demo.settings import Region, Sport


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlayerIn(_Body):
    name: str = Field(min_length=1, max_length=80)
    region: Region
    skill: int = Field(1000, ge=0, le=5000)


class PlayerPatch(_Body):
    name: str | None = Field(None, min_length=1, max_length=80)
    region: Region | None = None
    skill: int | None = Field(None, ge=0, le=5000)


class SessionIn(_Body):
    title: str = Field(min_length=1, max_length=120)
    sport: Sport
    region: Region
    host_id: int = Field(gt=0)
    starts_at_ms: int = Field(gt=0)
    duration_minutes: int = Field(90, gt=0, le=24 * 60)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    max_players: int = Field(10, ge=2, le=100)


class SessionPatch(_Body):
    title: str | None = Field(None, min_length=1, max_length=120)
    sport: Sport | None = None
    region: Region | None = None
    starts_at_ms: int | None = Field(None, gt=0)
    duration_minutes: int | None = Field(None, gt=0, le=24 * 60)
    max_players: int | None = Field(None, ge=2, le=100)
    status: str | None = Field(None, pattern="^(open|closed|cancelled)$")


class Membership(_Body):
    player_id: int = Field(gt=0)
