"""Silences: one-shot, matcher-based mutes with a start and an end (Alertmanager API v2 shape).

>>> from watchkeeper.labels import from_dict
>>> s = Silence.create([{"name": "job", "value": "api", "isRegex": False}], starts_at_ms=0,
...                    ends_at_ms=60_000, created_by="me", comment="deploy", now_ms=0)
>>> s.state(now_ms=30_000), s.matches(from_dict({"job": "api"})), s.state(now_ms=60_000)
('active', True, 'expired')
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from watchkeeper.labels import Labels, Matcher, MatchOp, get


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at_ms: int
    ends_at_ms: int
    created_by: str
    comment: str
    updated_at_ms: int

    @classmethod
    def create(
        cls,
        matchers: Sequence[Mapping[str, Any]],
        *,
        starts_at_ms: int,
        ends_at_ms: int,
        created_by: str,
        comment: str,
        now_ms: int,
        id: str | None = None,
    ) -> Silence:
        """A silence from API-style matchers (``{name, value, isRegex, isEqual}``); ValueError if invalid."""
        parsed = tuple(matcher_from_api(m) for m in matchers)
        if not parsed:
            raise ValueError("a silence needs at least one matcher")
        if all(m.matches_empty() for m in parsed):
            raise ValueError(
                "at least one matcher must not match the empty string (it would silence everything)"
            )
        if ends_at_ms <= starts_at_ms:
            raise ValueError("endsAt must be after startsAt")
        if ends_at_ms <= now_ms:
            raise ValueError("endsAt is in the past")
        return cls(
            id=id or str(uuid.uuid4()),
            matchers=parsed,
            starts_at_ms=max(starts_at_ms, now_ms),
            ends_at_ms=ends_at_ms,
            created_by=created_by,
            comment=comment,
            updated_at_ms=now_ms,
        )

    def state(self, *, now_ms: int) -> str:
        """``pending``, ``active`` or ``expired``."""
        if now_ms >= self.ends_at_ms:
            return "expired"
        if now_ms < self.starts_at_ms:
            return "pending"
        return "active"

    def matches(self, labels: Labels) -> bool:
        return all(m.matches(get(labels, m.name)) for m in self.matchers)

    def expired(self, *, now_ms: int) -> Silence:
        """This silence ended now (a pending one never starts)."""
        if self.state(now_ms=now_ms) == "expired":
            return self
        start = min(self.starts_at_ms, now_ms)
        return replace(self, starts_at_ms=start, ends_at_ms=now_ms, updated_at_ms=now_ms)


def matcher_from_api(m: Mapping[str, Any]) -> Matcher:
    regex, equal = bool(m.get("isRegex", False)), bool(m.get("isEqual", True))
    op = {
        (False, True): MatchOp.EQUAL,
        (False, False): MatchOp.NOT_EQUAL,
        (True, True): MatchOp.REGEX,
        (True, False): MatchOp.NOT_REGEX,
    }[(regex, equal)]
    name, value = m.get("name"), m.get("value")
    if not isinstance(name, str) or not name or not isinstance(value, str):
        raise ValueError(f"bad matcher {dict(m)!r}: name and value must be strings")
    return Matcher(op, name, value)


def matcher_to_api(m: Matcher) -> dict[str, Any]:
    return {
        "name": m.name,
        "value": m.value,
        "isRegex": m.op in (MatchOp.REGEX, MatchOp.NOT_REGEX),
        "isEqual": m.op in (MatchOp.EQUAL, MatchOp.REGEX),
    }


def silenced_by(labels: Labels, silences: Iterable[Silence], *, now_ms: int) -> list[str]:
    """Ids of the active silences that match ``labels``."""
    return sorted(s.id for s in silences if s.state(now_ms=now_ms) == "active" and s.matches(labels))
