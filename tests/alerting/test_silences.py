from __future__ import annotations

import pytest

from watchkeeper.alerting.silences import Silence, silenced_by
from watchkeeper.labels import from_dict


def make(matchers: list[dict[str, object]], start: int = 1000, end: int = 5000, now: int = 0) -> Silence:
    return Silence.create(
        matchers, starts_at_ms=start, ends_at_ms=end, created_by="t", comment="c", now_ms=now
    )


@pytest.mark.parametrize(
    ("matcher", "labels", "hit"),
    [
        ({"name": "job", "value": "api"}, {"job": "api"}, True),
        ({"name": "job", "value": "api", "isEqual": False}, {"job": "web", "env": "prod"}, True),
        ({"name": "job", "value": "a.*", "isRegex": True}, {"job": "api"}, True),
        ({"name": "job", "value": "a.*", "isRegex": True}, {"job": "xapi"}, False),  # anchored
        (
            {"name": "job", "value": "a.*", "isRegex": True, "isEqual": False},
            {"job": "web", "env": "prod"},
            True,
        ),
    ],
)
def test_silence_matchers(matcher: dict[str, object], labels: dict[str, str], hit: bool) -> None:
    # a silence needs one matcher that does not match "" (Alertmanager's rule), hence env="prod"
    env: dict[str, object] = {"name": "env", "value": "prod"}
    matchers = [matcher] if matcher.get("isEqual", True) else [matcher, env]
    assert make(matchers).matches(from_dict(labels)) is hit


def test_states_and_expiry() -> None:
    s = make([{"name": "job", "value": "api"}])
    labels = from_dict({"job": "api"})
    assert [s.state(now_ms=t) for t in (999, 1000, 4999, 5000)] == ["pending", "active", "active", "expired"]
    assert silenced_by(labels, [s], now_ms=999) == []
    assert silenced_by(labels, [s], now_ms=2000) == [s.id]
    assert silenced_by(labels, [s], now_ms=5000) == []
    ended = s.expired(now_ms=2000)
    assert ended.state(now_ms=2000) == "expired" and ended.ends_at_ms == 2000
    never = make([{"name": "job", "value": "api"}]).expired(now_ms=500)  # expiring a pending silence
    assert never.state(now_ms=1500) == "expired"


@pytest.mark.parametrize(
    ("matchers", "start", "end", "message"),
    [
        ([], 0, 10, "at least one matcher"),
        ([{"name": "job", "value": ".*", "isRegex": True}], 0, 10, "empty string"),
        ([{"name": "job", "value": "x"}], 10, 10, "after startsAt"),
        ([{"name": "job", "value": "[", "isRegex": True}], 0, 10, "regular expression"),
    ],
)
def test_invalid_silences(matchers: list[dict[str, object]], start: int, end: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(matchers, start, end, now=0)
