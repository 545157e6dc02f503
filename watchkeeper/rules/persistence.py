"""Alert state and alert history in SQL (SQLite or PostgreSQL, SQLAlchemy Core).

After every group evaluation the runner saves the group's alert instances (only the rows that
changed) and the transitions it took, in one transaction. At start-up :meth:`AlertStore.load`
gives back every instance as it was: a firing alert stays firing with its original ``active_at``,
whatever its ``for`` (Prometheus restores only rules with ``for`` >= 10m, and as pending).

>>> store = AlertStore(make_engine("sqlite:///data/watchkeeper.db"))   # doctest: +SKIP
>>> store.save_group("rules.yml;api", runtime.alerts, transitions)     # doctest: +SKIP
>>> store.load()["rules.yml;api"]                                      # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from watchkeeper.errors import StorageError
from watchkeeper.labels import Labels, get
from watchkeeper.rules.state import AlertState, State, Transition

metadata = sa.MetaData()

state_table = sa.Table(
    "rules_alert_state",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("group_key", sa.Text, nullable=False),
    sa.Column("rule_key", sa.Text, nullable=False),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("annotations", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("active_at_ms", sa.BigInteger, nullable=False),
    sa.Column("fired_at_ms", sa.BigInteger),
    sa.Column("resolved_at_ms", sa.BigInteger),
    sa.Column("keep_firing_since_ms", sa.BigInteger),
    sa.Column("last_sent_ms", sa.BigInteger),
    sa.Column("valid_until_ms", sa.BigInteger),
    sa.Column("value", sa.Float),
)

history_table = sa.Table(
    "rules_alert_history",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at_ms", sa.BigInteger, nullable=False),
    sa.Column("group_key", sa.Text, nullable=False),
    sa.Column("alertname", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.String(16), nullable=False),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("from_state", sa.String(16), nullable=False),
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("value", sa.Float),
)

#: rule_key -> labels -> state, for one group.
GroupAlerts = Mapping[str, Mapping[Labels, AlertState]]
_IN_CHUNK = 500


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One transition as stored: what ``GET /api/v1/alerts/history`` lists."""

    at_ms: int
    group_key: str
    alertname: str
    fingerprint: str
    labels: Labels
    from_state: str
    to_state: str
    value: float


def _labels_json(labels: Labels) -> str:
    return json.dumps([list(p) for p in labels], separators=(",", ":"))


def _labels_from_json(text: str) -> Labels:
    return tuple((str(k), str(v)) for k, v in json.loads(text))


def _row_id(group_key: str, rule_key: str, labels: Labels) -> str:
    return hashlib.sha256(f"{group_key}\0{rule_key}\0{_labels_json(labels)}".encode()).hexdigest()


def _db_float(v: float) -> float | None:
    return None if math.isnan(v) else v  # SQLite stores NaN as NULL anyway; make it explicit


def _fingerprint(labels: Labels) -> str:
    from watchkeeper.alerting.model import fingerprint

    return fingerprint(labels)


def _row(group_key: str, rule_key: str, a: AlertState) -> dict[str, Any]:
    return {
        "id": _row_id(group_key, rule_key, a.labels), "group_key": group_key, "rule_key": rule_key,
        "labels": _labels_json(a.labels), "annotations": _labels_json(a.annotations), "state": a.state.value,
        "active_at_ms": a.active_at_ms, "fired_at_ms": a.fired_at_ms, "resolved_at_ms": a.resolved_at_ms,
        "keep_firing_since_ms": a.keep_firing_since_ms, "last_sent_ms": a.last_sent_ms,
        "valid_until_ms": a.valid_until_ms, "value": _db_float(a.value),
    }


def _state(row: Mapping[str, Any]) -> AlertState:
    return AlertState(
        labels=_labels_from_json(row["labels"]), annotations=_labels_from_json(row["annotations"]),
        state=State(row["state"]), active_at_ms=int(row["active_at_ms"]),
        value=math.nan if row["value"] is None else float(row["value"]),
        fired_at_ms=row["fired_at_ms"], resolved_at_ms=row["resolved_at_ms"],
        keep_firing_since_ms=row["keep_firing_since_ms"], last_sent_ms=row["last_sent_ms"],
        valid_until_ms=row["valid_until_ms"],
    )


class AlertStore:
    """Alert state and history tables; call :func:`watchkeeper.tsdb.schema.migrate` first.

    Thread-safe: groups are saved from scheduler threads.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._saved: dict[str, dict[str, dict[str, Any]]] = {}  # group -> id -> row last written
        self._lock = threading.Lock()

    def load(self) -> dict[str, dict[str, dict[Labels, AlertState]]]:
        """Every persisted instance: group_key -> rule_key -> labels -> state."""
        out: dict[str, dict[str, dict[Labels, AlertState]]] = {}
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(state_table)).mappings().all()
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"cannot load alert state: {exc}") from exc
        with self._lock:
            self._saved.clear()
            for row in rows:
                state = _state(dict(row))
                out.setdefault(row["group_key"], {}).setdefault(row["rule_key"], {})[state.labels] = state
                self._saved.setdefault(row["group_key"], {})[row["id"]] = dict(row)
        return out

    def load_group(self, group_key: str) -> dict[str, dict[Labels, AlertState]]:
        """The persisted instances of one group (rule_key -> labels -> state), as another replica
        (the leader) last saved them; later saves of this group write only what differs from them."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(state_table).where(state_table.c.group_key == group_key)).mappings().all()
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"cannot load alert state of {group_key}: {exc}") from exc
        out: dict[str, dict[Labels, AlertState]] = {}
        with self._lock:
            self._saved[group_key] = {row["id"]: dict(row) for row in rows}
        for row in rows:
            state = _state(dict(row))
            out.setdefault(row["rule_key"], {})[state.labels] = state
        return out

    def group_keys(self) -> set[str]:
        """The groups that have persisted instances."""
        try:
            with self.engine.connect() as conn:
                return set(conn.execute(sa.select(state_table.c.group_key).distinct()).scalars())
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"cannot list alert state groups: {exc}") from exc

    def save_group(
        self,
        group_key: str,
        alerts: GroupAlerts,
        transitions: Sequence[tuple[str, Transition]] = (),
    ) -> int:
        """Write the rows of ``group_key`` that changed (and delete the gone ones) plus the
        transitions ``(alertname, transition)``; returns the number of rows written."""
        rows = {r["id"]: r for rk, by_labels in alerts.items() for a in by_labels.values()
                for r in (_row(group_key, rk, a),)}
        with self._lock:
            before = self._saved.get(group_key, {})
            changed = [r for i, r in rows.items() if before.get(i) != r]
            gone = [i for i in before if i not in rows]
            if not changed and not gone and not transitions:
                return 0
            history = [
                {"at_ms": t.at_ms, "group_key": group_key, "alertname": name,
                 "fingerprint": _fingerprint(t.labels), "labels": _labels_json(t.labels),
                 "from_state": t.from_state.value, "to_state": t.to_state.value,
                 "value": _db_float(t.value)}
                for name, t in transitions
            ]
            try:
                with self.engine.begin() as conn:
                    for ids in _chunks([r["id"] for r in changed] + gone):
                        conn.execute(state_table.delete().where(state_table.c.id.in_(ids)))
                    if changed:
                        conn.execute(state_table.insert(), changed)
                    if history:
                        conn.execute(history_table.insert(), history)
            except sa.exc.SQLAlchemyError as exc:
                raise StorageError(f"cannot save alert state of {group_key}: {exc}") from exc
            self._saved[group_key] = rows
        return len(changed) + len(gone) + len(history)

    def delete_group(self, group_key: str) -> None:
        """Forget a group's instances (the group was removed from the rule files)."""
        with self._lock:
            try:
                with self.engine.begin() as conn:
                    conn.execute(state_table.delete().where(state_table.c.group_key == group_key))
            except sa.exc.SQLAlchemyError as exc:
                raise StorageError(f"cannot delete alert state of {group_key}: {exc}") from exc
            self._saved.pop(group_key, None)

    def prune_history(self, *, before_ms: int) -> int:
        """Delete transitions older than ``before_ms``; the number deleted."""
        try:
            with self.engine.begin() as conn:
                result = conn.execute(history_table.delete().where(history_table.c.at_ms < before_ms))
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"cannot prune alert history: {exc}") from exc
        return int(result.rowcount or 0)

    def history(
        self,
        *,
        alertname: str | None = None,
        fingerprint: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 1000,
    ) -> list[HistoryEntry]:
        """Transitions, newest first."""
        q = sa.select(history_table).order_by(history_table.c.at_ms.desc(), history_table.c.id.desc())
        if alertname:
            q = q.where(history_table.c.alertname == alertname)
        if fingerprint:
            q = q.where(history_table.c.fingerprint == fingerprint)
        if start_ms is not None:
            q = q.where(history_table.c.at_ms >= start_ms)
        if end_ms is not None:
            q = q.where(history_table.c.at_ms <= end_ms)
        with self.engine.connect() as conn:
            rows = conn.execute(q.limit(limit)).mappings().all()
        return [
            HistoryEntry(
                at_ms=int(r["at_ms"]), group_key=r["group_key"], alertname=r["alertname"],
                fingerprint=r["fingerprint"], labels=_labels_from_json(r["labels"]),
                from_state=r["from_state"],
                to_state=r["to_state"], value=math.nan if r["value"] is None else float(r["value"]),
            )
            for r in rows
        ]


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), _IN_CHUNK):
        yield items[i : i + _IN_CHUNK]


def alertname_of(labels: Labels) -> str:
    return get(labels, "alertname")
