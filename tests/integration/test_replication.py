"""Two `watchkeeper serve` replicas on one PostgreSQL and one Redis with ``replication`` on: a
write to either is answered by both; a replica killed and started again catches up with what it
missed; after both stop, a third replica without replication reads everything once from the
database (the chunks both persisted of the same series neither lost nor doubled)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.integration.conftest import Server
from tests.replication.conftest import RedisProcess, now_ms, recent, redis_process  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TIMEOUT_S = 20.0
Samples = list[tuple[int, float]]


def _wait_samples(server: Server, selector: str, want: Samples, *, servers: list[Server]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    got: Samples = []
    while time.monotonic() < deadline:
        found = server.raw_samples(selector, now_ms() + 1000)
        got = next(iter(found.values()), [])
        if got == want:
            return
        time.sleep(0.05)
    logs = "\n".join(s.log()[-3000:] for s in servers)
    raise AssertionError(f"{selector} on {server.url}: {got} != {want}\n{logs}")


def _metric(server: Server, name: str) -> float:
    for line in server.client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exposed")


def test_replicas_answer_each_others_writes(
    make_server: Callable[..., Server], postgres_url: str, redis_process: RedisProcess  # noqa: F811
) -> None:
    env = {
        "WATCHKEEPER_DATABASE_URL": postgres_url,
        "WATCHKEEPER_REDIS_URL": redis_process.url,
        "WATCHKEEPER_REPLICATION__ENABLED": "true",
        "WATCHKEEPER_REPLICATION__BLOCK": "200ms",
        "WATCHKEEPER_SCRAPE_CONFIGS": "[]",
        "WATCHKEEPER_LOG_FORMAT": "text",
    }
    a, b = make_server(env=env), make_server(env=env)
    servers = [a, b]
    ts = recent(6)
    to_a: Samples = [(t, float(i)) for i, t in enumerate(ts[:3])]
    assert a.write([([("__name__", "written_to_a"), ("job", "x")], to_a)]).status_code == 204
    assert b.write([([("__name__", "written_to_b")], [(ts[0], 9.0)])]).status_code == 204
    _wait_samples(b, "written_to_a", to_a, servers=servers)
    _wait_samples(a, "written_to_b", [(ts[0], 9.0)], servers=servers)
    assert _metric(b, "watchkeeper_replication_applied_samples_total") == 3

    b.kill()  # its position file may be a second behind: entries are applied again, nothing doubles
    published = _metric(a, "watchkeeper_replication_published_samples_total")
    later: Samples = [(t, float(i + 3)) for i, t in enumerate(ts[3:])]
    for sample in later:
        assert a.write([([("__name__", "written_to_a"), ("job", "x")], [sample])]).status_code == 204
    published += len(later)
    deadline = time.monotonic() + TIMEOUT_S
    while _metric(a, "watchkeeper_replication_published_samples_total") < published:
        assert time.monotonic() < deadline, "a did not publish"
        time.sleep(0.05)
    b.start()  # ready only once caught up with the stream as it was at its start
    got = next(iter(b.raw_samples("written_to_a", now_ms() + 1000).values()))
    assert got == to_a + later
    assert _metric(b, "watchkeeper_replication_gaps_total") == 0

    a.stop()
    b.stop()  # both persist their heads: chunks of the same series from two replicas
    c = make_server(env={**env, "WATCHKEEPER_REPLICATION__ENABLED": "false"})  # the database only
    servers.append(c)
    _wait_samples(c, "written_to_a", to_a + later, servers=servers)
    _wait_samples(c, "written_to_b", [(ts[0], 9.0)], servers=servers)
