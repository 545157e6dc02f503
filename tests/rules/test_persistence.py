"""Alert state survives a restart exactly (firing stays firing), on SQLite and PostgreSQL; history."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.rules.support import Env
from watchkeeper.rules.persistence import AlertStore
from watchkeeper.rules.state import AlertState, State, Transition
from watchkeeper.tsdb.schema import make_engine, migrate, sqlite_url

RULES = """
groups:
  - name: g
    interval: 15s
    rules:
      - alert: Down
        expr: up == 0
        for: 5m                 # Prometheus would restore this as pending (for < 10m grace)
        keep_firing_for: 10m
        annotations: {summary: "{{ $labels.instance }} down"}
"""


def _db(url: str) -> sa.Engine:
    engine = make_engine(url)
    migrate(engine)
    return engine


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    return str(request.getfixturevalue("postgres_url"))


def test_firing_alert_restored_as_firing_after_restart(env: Env, db_url: str) -> None:
    env.add({"__name__": "up", "instance": "a"}, [(t, 0.0) for t in range(0, 330_001, 15_000)])
    db = _db(db_url)
    m = env.manager(RULES, store=AlertStore(db))
    key = m.groups[0].key
    for t in range(0, 315_001, 15_000):
        m.evaluate(key, t)
    before = m.runtime(key).alerts
    (alert,) = next(iter(before.values())).values()
    assert alert.state is State.FIRING and alert.active_at_ms == 0 and alert.fired_at_ms == 300_000
    db.dispose()

    # "restart": a new database engine, a new manager over the same tables
    db2 = _db(db_url)
    m2 = env.manager(RULES, store=AlertStore(db2))
    assert m2.runtime(key).alerts == before  # every field, incl. last_sent/valid_until
    result = m2.evaluate(key, 330_000)
    (after,) = next(iter(m2.runtime(key).alerts.values())).values()
    assert after.state is State.FIRING and after.active_at_ms == 0
    assert result.transitions == []  # no pending -> firing again: no duplicate notification either
    # sent at 300s before the restart; within the resend delay, so not sent again at 330s
    assert [t for t, _ in env.sink.sent] == [300_000]
    db2.dispose()


def test_keep_firing_state_survives_restart(env: Env, db_url: str) -> None:
    env.add({"__name__": "up", "instance": "a"}, [(0, 0.0), (15_000, 1.0)])
    db = _db(db_url)
    rules = RULES.replace("for: 5m ", "for: 0s ")
    m = env.manager(rules, store=AlertStore(db))
    key = m.groups[0].key
    m.evaluate(key, 0)
    m.evaluate(key, 15_000)  # condition gone: keep firing since 15s
    m2 = env.manager(rules, store=AlertStore(db))
    (a,) = next(iter(m2.runtime(key).alerts.values())).values()
    assert (a.state, a.keep_firing_since_ms) == (State.FIRING, 15_000)
    db.dispose()


def test_history_keeps_every_transition(env: Env, db_url: str) -> None:
    env.add({"__name__": "up", "instance": "a"}, [(0, 0.0), (15_000, 0.0), (30_000, 1.0)])
    db = _db(db_url)
    store = AlertStore(db)
    m = env.manager(RULES.replace("for: 5m ", "for: 15s").replace("keep_firing_for: 10m", ""), store=store)
    key = m.groups[0].key
    for t in (0, 15_000, 30_000):
        m.evaluate(key, t)
    rows = [(h.at_ms, h.from_state, h.to_state) for h in store.history()]
    assert rows == [(30_000, "firing", "inactive"), (15_000, "pending", "firing"), (0, "inactive", "pending")]
    assert store.history(alertname="Down", start_ms=10_000, end_ms=20_000, limit=5)[0].to_state == "firing"
    assert store.history(alertname="Other") == []
    db.dispose()


def test_only_changed_rows_are_written_and_nan_round_trips(tmp_path: Path) -> None:
    db = _db(sqlite_url(tmp_path))
    store = AlertStore(db)
    labels = (("alertname", "A"),)
    a = AlertState(labels, (("s", "x"),), State.FIRING, 0, math.nan, fired_at_ms=0)
    t = Transition(labels, State.PENDING, State.FIRING, 0, math.nan)
    assert store.save_group("g", {"r": {labels: a}}, [("A", t)]) == 2
    assert store.save_group("g", {"r": {labels: a}}) == 0  # nothing changed: no write
    (restored,) = AlertStore(db).load()["g"]["r"].values()
    assert math.isnan(restored.value) and restored.annotations == (("s", "x"),)
    assert store.save_group("g", {}) == 1  # the instance went away: deleted
    assert AlertStore(db).load() == {}
    db.dispose()


def test_state_of_groups_gone_from_the_rule_files_is_deleted_at_start(env: Env, tmp_path: Path) -> None:
    db = _db(sqlite_url(tmp_path))
    store = AlertStore(db)
    labels = (("alertname", "Old"),)
    store.save_group("old.yml;gone", {"r": {labels: AlertState(labels, (), State.FIRING, 0, 1.0)}})
    env.manager(RULES, store=AlertStore(db))
    assert AlertStore(db).load() == {}
    db.dispose()


def test_history_pruned_by_retention(env: Env, tmp_path: Path) -> None:
    db = _db(sqlite_url(tmp_path))
    store = AlertStore(db)
    labels = (("alertname", "A"),)
    for at in (0, 86_400_000 * 100):
        store.save_group("g", {}, [("A", Transition(labels, State.PENDING, State.FIRING, at, 1.0))])
    m = env.manager(RULES, store=store)
    env.now_s = 86_400 * 100.0  # day 100: the day-0 entry is older than the 90d default
    m.tick(m.groups[0].key)
    assert [h.at_ms for h in store.history(alertname="A")] == [86_400_000 * 100]
    db.dispose()
