"""Several replicas on one database: only the leader evaluates; a new leader continues the alerts.

Two rule managers stand for two replicas: each has its own store (fed the same samples, as an HA
pair is) and both share the alert-state database. Which one leads is a flag here; in the server it
is the Redis lease (tests/integration/test_failover.py runs that end to end).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.rules.support import Env
from watchkeeper.alerting.model import Alert
from watchkeeper.rules.manager import RuleManager, eval_timestamp_ms
from watchkeeper.rules.model import RulesConfig
from watchkeeper.rules.persistence import AlertStore
from watchkeeper.rules.state import AlertState, State
from watchkeeper.tsdb.schema import make_engine, migrate, sqlite_url

INTERVAL_MS = 15_000
RULES = """
groups:
  - name: g
    interval: 15s
    rules:
      - alert: Down
        expr: up == 0
        for: 1m
        keep_firing_for: 2m
      - record: job:up:sum
        expr: sum(up)
"""


@dataclass
class Pair:
    """Replicas ``a`` and ``b``; ``leader`` names the one holding the lease."""

    tmp_path: Path
    db: sa.Engine
    leader: str = "a"
    envs: dict[str, Env] = field(default_factory=dict)
    managers: dict[str, RuleManager] = field(default_factory=dict)

    def start(self, name: str) -> RuleManager:
        env = Env(self.tmp_path / name)
        self.envs[name] = env
        m = RuleManager(storage=env.storage, engine=env.engine,
                        config=RulesConfig(rule_files=[str(self.tmp_path / "rules.yml")]),
                        alert_store=AlertStore(self.db), sink=env.sink, clock=lambda: env.now_s,
                        is_leader=lambda: self.leader == name)
        m.start()
        self.managers[name] = m
        return m

    def feed(self, samples: list[tuple[int, float]]) -> None:
        for env in self.envs.values():  # the same stream to every replica
            env.add({"__name__": "up", "instance": "x"}, samples)

    def tick_all(self, slot: int) -> dict[str, object]:
        """Both replicas run the group's job for evaluation slot ``slot`` (0, 1, 2, ...)."""
        out: dict[str, object] = {}
        for name, m in self.managers.items():
            key = m.groups[0].key
            offset = eval_timestamp_ms(key, INTERVAL_MS, 0) % INTERVAL_MS
            self.envs[name].now_s = (offset + slot * INTERVAL_MS) / 1000
            out[name] = m.tick(key)
        return out

    def sent(self, name: str) -> list[Alert]:
        return [a for _, alerts in self.envs[name].sink.sent for a in alerts]

    def state(self, name: str) -> tuple[State, int, int | None] | None:
        m = self.managers[name]
        alerts = m.runtime(m.groups[0].key).alerts
        instances = [a for by_labels in alerts.values() for a in by_labels.values()]
        if not instances:
            return None
        (a,) = instances
        return a.state, a.active_at_ms, a.keep_firing_since_ms

    def close(self) -> None:
        for env in self.envs.values():
            env.storage.close()
        self.db.dispose()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    (tmp_path / "rules.yml").write_text(RULES)
    db = make_engine(sqlite_url(tmp_path))
    migrate(db)
    p = Pair(tmp_path, db)
    p.start("a")
    p.start("b")
    yield p
    p.close()


def _ms(slot: int, pair: Pair) -> int:
    key = pair.managers["a"].groups[0].key
    return eval_timestamp_ms(key, INTERVAL_MS, 0) % INTERVAL_MS + slot * INTERVAL_MS


def test_a_follower_evaluates_no_alerting_rule_but_shows_the_leaders_alerts(pair: Pair) -> None:
    pair.feed([(_ms(s, pair), 0.0) for s in range(8)])
    store = AlertStore(pair.db)
    for slot in range(6):
        results = pair.tick_all(slot)
        assert getattr(results["b"], "transitions", None) == []
    assert pair.state("a") == (State.FIRING, _ms(0, pair), None)
    assert len(pair.sent("a")) == 1 and pair.sent("b") == []
    assert [h.to_state for h in store.history()] == ["firing", "pending"]  # a's transitions, once
    # the follower writes no ALERTS; it records into its own store, so queries on it see the series
    assert pair.envs["b"].query("ALERTS", _ms(5, pair)) == []
    assert pair.envs["a"].query("ALERTS", _ms(5, pair)) != []
    for name in "ab":
        assert pair.envs[name].query("job:up:sum", _ms(5, pair)) == [({"__name__": "job:up:sum"}, 0.0)]
    assert pair.state("b") == pair.state("a")  # read from the database: the API shows the leader's view


def test_a_new_leader_keeps_the_for_clock_of_a_pending_alert(pair: Pair) -> None:
    pair.feed([(_ms(s, pair), 0.0) for s in range(8)])
    for slot in range(3):  # pending since slot 0 on a
        pair.tick_all(slot)
    assert pair.state("a") == (State.PENDING, _ms(0, pair), None)
    pair.leader = "b"  # a loses the lease
    pair.tick_all(3)
    assert pair.state("b") == (State.PENDING, _ms(0, pair), None)  # not pending anew from slot 3
    pair.tick_all(4)  # for: 1m after slot 0
    assert pair.state("b") == (State.FIRING, _ms(0, pair), None)
    assert pair.sent("a") == [] and [a.starts_at_ms for a in pair.sent("b")] == [_ms(0, pair)]
    assert [h.to_state for h in AlertStore(pair.db).history()] == ["firing", "pending"]  # once each


def test_a_new_leader_keeps_firing_alerts_firing_and_hands_them_to_its_dispatcher(pair: Pair) -> None:
    pair.feed([(_ms(s, pair), 0.0) for s in range(6)] + [(_ms(6, pair), 1.0), (_ms(7, pair), 1.0)])
    for slot in range(7):  # firing from slot 4; the condition clears at slot 6: keep_firing_for runs
        pair.tick_all(slot)
    assert pair.state("a") == (State.FIRING, _ms(0, pair), _ms(6, pair))
    store = AlertStore(pair.db)
    transitions_before = len(store.history())
    pair.leader = "b"
    pair.tick_all(7)
    assert pair.state("b") == (State.FIRING, _ms(0, pair), _ms(6, pair))  # keep-firing clock kept
    assert len(store.history()) == transitions_before  # no new pending/firing transitions
    (handed,) = pair.sent("b")  # the restored alert goes to b's dispatcher (its log dedups)
    assert handed.starts_at_ms == _ms(0, pair) and not handed.is_resolved(now_ms=_ms(7, pair))
    pair.tick_all(8)
    assert len(pair.sent("b")) == 1  # then the resend delay applies as usual


def test_a_replica_that_leads_again_rereads_what_the_other_decided(pair: Pair) -> None:
    pair.feed([(_ms(s, pair), 0.0) for s in range(5)] + [(_ms(s, pair), 1.0) for s in range(5, 20)])
    for slot in range(5):
        pair.tick_all(slot)
    assert (pair.state("a") or (None,))[0] is State.FIRING
    pair.leader = "b"
    for slot in range(5, 15):  # b resolves it after keep_firing_for (2m)
        pair.tick_all(slot)
    assert (pair.state("b") or (None,))[0] is State.INACTIVE
    pair.leader = "a"
    pair.tick_all(15)
    assert (pair.state("a") or (None,))[0] is State.INACTIVE
    # a's store still had ALERTS firing from its own evaluations: it marks them stale now
    assert pair.envs["a"].query("ALERTS", _ms(15, pair)) == []


def test_only_the_leader_deletes_state_of_groups_it_does_not_know(pair: Pair, tmp_path: Path) -> None:
    store = AlertStore(pair.db)
    labels = (("alertname", "Old"),)
    store.save_group("other.yml;g", {"r": {labels: AlertState(labels, (), State.FIRING, 0, 1.0)}})
    pair.start("c")  # a follower with other rule files must not delete the leader's state
    assert "other.yml;g" in store.group_keys()
    pair.leader = "c"
    pair.tick_all(0)  # c takes over: now it is its job
    assert "other.yml;g" not in store.group_keys()


def test_a_restarted_leader_hands_the_restored_alerts_to_its_dispatcher_at_once(pair: Pair) -> None:
    pair.feed([(_ms(s, pair), 0.0) for s in range(8)])
    for slot in range(5):
        pair.tick_all(slot)
    assert len(pair.sent("a")) == 1
    pair.envs["a"].storage.close()
    pair.start("a")  # a new process, still the leader (a notification held by group_wait died with it)
    pair.feed([(_ms(s, pair), 0.0) for s in range(8)])
    result = pair.tick_all(5)["a"]
    assert getattr(result, "transitions", None) == []  # firing stays firing
    assert pair.state("a") == (State.FIRING, _ms(0, pair), None)
    (handed,) = pair.sent("a")  # the new process's sink (dispatcher): not only after the resend delay
    assert handed.starts_at_ms == _ms(0, pair)
