"""Two `watchkeeper serve` replicas on one PostgreSQL and one Redis: one leader evaluates the rules
and sends the notifications; when it is killed the other takes over, and no notification is lost
or sent twice.

Both replicas get the same samples (the supported topology: each replica is fed the whole stream,
as a Prometheus HA pair is). The alert fires; the leader is killed while the notification is still
held back by ``group_wait`` (only the rule state in the database knows about it): the new leader
must send it. Then the first replica comes back as a follower, the second (now the leader, the
notification delivered) is killed: the first takes over and must not send it again, and sends the
resolution once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.alerting.conftest import FakeService, Received, service  # noqa: F401  (the webhook receiver)
from tests.integration.conftest import Server
from watchkeeper.alerting.store import outbox_table
from watchkeeper.rules.persistence import state_table
from watchkeeper.tsdb.schema import make_engine, migrate

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

LEASE = "2s"
RULES = """
groups:
  - name: ha
    interval: 1s
    rules:
      - alert: AppDown
        expr: up{job="app"} == 0
        for: 0s
      - record: job:up:min
        expr: min by (job) (up)
"""
TIMEOUT_S = 20.0


def _config(tmp_path: Path, receiver_url: str) -> Path:
    (tmp_path / "rules.yml").write_text(RULES)
    config = tmp_path / "watchkeeper.yml"
    config.write_text(f"""
log_format: text
scrape_configs: []
rule_files: [rules.yml]
alerting:
  route:
    receiver: hook
    group_wait: 3s
    group_interval: 1s
    repeat_interval: 1h
  receivers:
    - name: hook
      webhook_configs: [{{url: "{receiver_url}/hook"}}]
  outbox: {{poll_interval: 200ms}}
""")
    return config


def _wait(what: str, check: Callable[[], bool], *, servers: list[Server]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not check():
        if time.monotonic() > deadline:
            logs = "\n".join(s.log()[-3000:] for s in servers)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.05)


def _is_leader(server: Server) -> bool:
    text = server.client.get("/metrics").text
    return any(line.startswith("watchkeeper_leader 1") for line in text.splitlines())


def _notifications(svc: FakeService) -> list[tuple[str, str, str]]:
    """(group key, status, idempotency key) of every acknowledged POST, in order."""
    with svc.lock:
        got: list[Received] = list(svc.delivered)
    return [(r.json()["groupKey"], r.json()["status"], r.headers.get("idempotency-key", "")) for r in got]


@pytest.fixture
def servers(
    tmp_path: Path, postgres_url: str, redis_url: str, service: FakeService  # noqa: F811
) -> Iterator[list[Server]]:
    config = _config(tmp_path, service.url)
    env = {
        "WATCHKEEPER_DATABASE_URL": postgres_url,
        "WATCHKEEPER_REDIS_URL": redis_url,
        "WATCHKEEPER_LEADER_LEASE": LEASE,
    }
    made = [Server(tmp_path / f"replica-{name}", env, ["--config", str(config)]) for name in "ab"]
    try:
        yield made
    finally:
        for s in made:
            s.close()


def test_leader_killed_follower_takes_over_without_lost_or_duplicate_notification(
    servers: list[Server], postgres_url: str, service: FakeService  # noqa: F811
) -> None:
    db = make_engine(postgres_url)
    migrate(db)  # once, so that the replicas can start at the same time
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(Server.start, servers))
    leaders = [s for s in servers if _is_leader(s)]
    assert len(leaders) == 1
    a, b = leaders[0], next(s for s in servers if s is not leaders[0])  # a leads, b follows

    def feed(value: float, *replicas: Server) -> None:
        now_ms = int(time.time() * 1000)
        for r in replicas:  # the same sample to every live replica
            assert r.write([([("__name__", "up"), ("job", "app")], [(now_ms, value)])]).is_success

    def firing_in_db() -> bool:
        q = sa.select(sa.func.count()).where(state_table.c.state == "firing")
        with db.connect() as conn:
            return conn.execute(q).scalar() == 1

    def outbox(state: str | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(outbox_table)
        if state is not None:
            q = q.where(outbox_table.c.state == state)
        with db.connect() as conn:
            return int(conn.execute(q).scalar() or 0)

    try:
        # 1. a evaluates, the alert fires; a dies while group_wait still holds the notification back
        feed(0.0, a, b)
        _wait("the alert to fire on the leader", firing_in_db, servers=servers)
        a.kill()
        a_killed_at = time.time()
        assert outbox() == 0, "the leader wrote the notification before it was killed: nothing to lose"
        killed = time.monotonic()
        _wait("replica b to take over", lambda: _is_leader(b), servers=servers)
        took_over_s = time.monotonic() - killed
        _wait("the firing notification (from b)", lambda: len(_notifications(service)) >= 1, servers=servers)
        _wait("its delivery to be recorded", lambda: outbox("sent") == 1, servers=servers)

        # 2. a comes back as a follower; b, the leader now, dies; a must not notify again
        a.start()
        feed(0.0, a, b)
        assert not _is_leader(a)

        def shown_by_a() -> list[str]:
            return [x["state"] for x in a.client.get("/api/v1/alerts").json()["data"]["alerts"]]

        _wait("the follower to show the leader's alert", lambda: shown_by_a() == ["firing"], servers=servers)
        time.sleep(1.5)  # ... but after a rule group interval, still without evaluating it: no ALERTS
        # sample since it was killed as the leader, nothing handed to its dispatcher
        def written_at(query: str) -> list[float]:
            result = a.client.get("/api/v1/query", params={"query": f"timestamp({query})"}).json()
            return [float(r["value"][1]) for r in result["data"]["result"]]

        assert written_at("ALERTS") and max(written_at("ALERTS")) <= a_killed_at
        assert max(written_at("job:up:min")) > a_killed_at  # recording rules run on every replica
        assert a.client.get("/api/v2/alerts").json() == []
        b.kill()
        _wait("replica a to take over", lambda: _is_leader(a), servers=servers)
        feed(0.0, a)
        _wait("a's dispatcher to hold the alert",
              lambda: len(a.client.get("/api/v2/alerts").json()) == 1, servers=servers)
        time.sleep(1.5)  # past one group_interval (group_wait is over for an alert this old)
        assert len(_notifications(service)) == 1

        # 3. the alert resolves: one resolved notification, from a
        feed(1.0, a)
        _wait("the resolved notification", lambda: len(_notifications(service)) >= 2, servers=servers)
        time.sleep(1.5)  # room for a duplicate to show up

        got = _notifications(service)
        assert [status for _, status, _ in got] == ["firing", "resolved"]
        assert len({key for _, _, key in got}) == 2  # two notifications, no idempotency key twice
        assert got[0][0] == got[1][0]  # one alert group
        assert outbox("sent") == 2 and outbox() == 2
    finally:
        db.dispose()
    print(f"\nfailover: lease {LEASE}, the follower led {took_over_s:.1f} s after the leader was killed")
