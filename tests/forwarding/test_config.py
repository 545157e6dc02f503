"""The ``remote_write:`` section, the answer classification and the backoff."""

from __future__ import annotations

from pathlib import Path

import pytest

from watchkeeper.config import Settings
from watchkeeper.errors import ConfigError
from watchkeeper.forwarding.config import RemoteWriteConfig
from watchkeeper.forwarding.sender import Backoff, classify

PROMETHEUS_STYLE = """
remote_write:
  - url: http://mimir:9009/api/v1/push
    name: mimir
    remote_timeout: 10s
    headers: {X-Scope-OrgID: team-a}
    authorization: {credentials_file: SECRET}
    write_relabel_configs:
      - {source_labels: [__name__], regex: "go_.*", action: drop}
    queue_config:
      capacity: 500
      max_shards: 2
      min_shards: 1
      max_samples_per_send: 100
      batch_send_deadline: 1s
      min_backoff: 50ms
      max_backoff: 2s
      retry_on_http_429: true
  - url: https://vm:8428/api/v1/write
remote_write_flush_deadline: 15s
"""


def test_a_prometheus_remote_write_section_loads(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("t0k3n\n")
    path = tmp_path / "watchkeeper.yml"
    path.write_text(PROMETHEUS_STYLE.replace("SECRET", str(secret)))
    s = Settings.load(path)
    mimir, vm = s.remote_write
    assert mimir.remote_name == "mimir" and mimir.timeout_seconds == 10.0
    q = mimir.queue_config
    assert (q.capacity, q.max_shards, q.max_samples_per_send, q.retry_on_http_429) == (500, 2, 100, True)
    assert (q.batch_send_deadline_seconds, q.min_backoff_seconds, q.max_backoff_seconds) == (1.0, 0.05, 2.0)
    assert mimir.auth_header() == "Bearer t0k3n"
    secret.write_text("rotated")
    assert mimir.auth_header() == "Bearer rotated"  # files are read at each send
    assert vm.queue_config.retry_on_http_429 is False and vm.auth_header() is None
    assert len(vm.remote_name) == 6 and vm.remote_name == RemoteWriteConfig(url=vm.url).remote_name
    assert s.remote_write_flush_deadline_seconds == 15.0


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("{url: 'http://a/w', headers: {Content-Type: text/plain}}", "reserved header"),
        ("{url: 'http://a/w', bearer_token: x, basic_auth: {username: u}}", "at most one"),
        ("{url: 'ftp://a/w'}", "url"),
        ("{url: 'http://a/w', queue_config: {min_backoff: 10s, max_backoff: 1s}}", "min_backoff"),
        ("{url: 'http://a/w', queue_config: {max_shards: 0}}", "max_shards"),
        ("{url: 'http://a/w', queue_config: {batch_send_deadline: soon}}", "duration"),
        ("{url: 'http://a/w', queue_capacity: 5}", "unknown setting"),
        ("{url: 'http://a/w', name: x}, {url: 'http://b/w', name: x}", "used twice"),
    ],
)
def test_invalid_entries_are_refused_naming_the_problem(tmp_path: Path, entry: str, words: str) -> None:
    path = tmp_path / "watchkeeper.yml"
    path.write_text(f"remote_write: [{entry}]\n")
    with pytest.raises(ConfigError) as err:
        Settings.load(path)
    assert words in str(err.value) and "remote_write" in str(err.value)


@pytest.mark.parametrize(
    ("status", "headers", "retry_429", "ok", "retry", "after"),
    [
        (200, {}, False, True, False, None),
        (204, {}, False, True, False, None),
        (500, {}, False, False, True, None),
        (503, {"Retry-After": "3"}, False, False, True, 3.0),
        (408, {}, False, False, True, None),
        (429, {"Retry-After": "2"}, True, False, True, 2.0),
        (429, {"Retry-After": "2"}, False, False, False, None),
        (400, {}, True, False, False, None),
        (413, {}, True, False, False, None),
    ],
)
def test_answers_are_classified_as_prometheus_does(
    status: int, headers: dict[str, str], retry_429: bool, ok: bool, retry: bool, after: float | None
) -> None:
    outcome = classify(status, headers, now_ms=0, retry_on_429=retry_429)
    assert (outcome.ok, outcome.retry, outcome.retry_after_seconds) == (ok, retry, after)


def test_backoff_doubles_from_min_to_max_with_jitter() -> None:
    b = Backoff(0.03, 1.0)
    assert [b.delay(a, jitter=1.0) for a in range(7)] == [0.03, 0.06, 0.12, 0.24, 0.48, 0.96, 1.0]
    assert b.delay(500, jitter=1.0) == 1.0
    drawn = [b.delay(2) for _ in range(200)]
    assert all(0.06 <= d <= 0.12 for d in drawn) and len(set(drawn)) > 1
