"""The SQL tables of alerting (SQLAlchemy Core) and the queries on them; migration ``0002_alerting``.

::

    alerting_silences(id PK, matchers JSON text, starts_at_ms, ends_at_ms, created_by, comment, updated_at_ms)
    alerting_nflog(id PK = sha256(group_key, integration), group_key, integration,
                   firing, resolved JSON, notified_at_ms, seq)        -- last notification per integration
    alerting_outbox(id PK, idempotency_key UNIQUE, receiver, integration, group_key, notification JSON,
                    state pending|sent|dead, attempts, next_attempt_ms, lease_until_ms, created_at_ms,
                    first_active_at_ms, sent_at_ms, last_status, last_error)

The nflog row and the outbox row of a notification are written in one transaction, so a restart
either has both (the worker sends it) or neither (the dispatcher decides again).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from watchkeeper.alerting.grouping import LogEntry
from watchkeeper.alerting.silences import Silence, matcher_from_api, matcher_to_api

metadata = sa.MetaData()

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

silences_table = sa.Table(
    "alerting_silences",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("matchers", sa.Text, nullable=False),
    sa.Column("starts_at_ms", sa.BigInteger, nullable=False),
    sa.Column("ends_at_ms", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
)

nflog_table = sa.Table(
    "alerting_nflog",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("group_key", sa.Text, nullable=False),
    sa.Column("integration", sa.String(255), nullable=False),
    sa.Column("firing", sa.Text, nullable=False),
    sa.Column("resolved", sa.Text, nullable=False),
    sa.Column("notified_at_ms", sa.BigInteger, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
)

outbox_table = sa.Table(
    "alerting_outbox",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("idempotency_key", sa.String(64), nullable=False, unique=True),
    sa.Column("receiver", sa.String(255), nullable=False),
    sa.Column("integration", sa.String(255), nullable=False),
    sa.Column("group_key", sa.Text, nullable=False),
    sa.Column("notification", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_ms", sa.BigInteger, nullable=False),
    sa.Column("lease_until_ms", sa.BigInteger, nullable=True),
    sa.Column("created_at_ms", sa.BigInteger, nullable=False),
    sa.Column("first_active_at_ms", sa.BigInteger, nullable=True),
    sa.Column("sent_at_ms", sa.BigInteger, nullable=True),
    sa.Column("last_status", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Index("alerting_outbox_due", "state", "next_attempt_ms"),
)


def nflog_id(group_key: str, integration: str) -> str:
    return hashlib.sha256(f"{group_key}\x00{integration}".encode()).hexdigest()


def idempotency_key(group_key: str, integration: str, seq: int) -> str:
    """The same for every replica that decides the same notification (same nflog sequence)."""
    return hashlib.sha256(f"{group_key}\x00{integration}\x00{seq}".encode()).hexdigest()


# --- silences -----------------------------------------------------------------------------------


def save_silence(conn: sa.Connection, s: Silence) -> None:
    row = {
        "matchers": json.dumps([matcher_to_api(m) for m in s.matchers]),
        "starts_at_ms": s.starts_at_ms,
        "ends_at_ms": s.ends_at_ms,
        "created_by": s.created_by,
        "comment": s.comment,
        "updated_at_ms": s.updated_at_ms,
    }
    updated = conn.execute(sa.update(silences_table).where(silences_table.c.id == s.id).values(**row))
    if updated.rowcount == 0:
        conn.execute(sa.insert(silences_table).values(id=s.id, **row))


def load_silences(conn: sa.Connection) -> list[Silence]:
    out = []
    for r in conn.execute(sa.select(silences_table)).mappings():
        out.append(
            Silence(
                id=r["id"],
                matchers=tuple(matcher_from_api(m) for m in json.loads(r["matchers"])),
                starts_at_ms=r["starts_at_ms"],
                ends_at_ms=r["ends_at_ms"],
                created_by=r["created_by"],
                comment=r["comment"],
                updated_at_ms=r["updated_at_ms"],
            )
        )
    return out


def delete_silences_ended_before(conn: sa.Connection, cutoff_ms: int) -> int:
    return conn.execute(sa.delete(silences_table).where(silences_table.c.ends_at_ms < cutoff_ms)).rowcount


# --- notification log -----------------------------------------------------------------------------


def _entry(row: sa.RowMapping) -> LogEntry:
    return LogEntry(
        firing=frozenset(json.loads(row["firing"])),
        resolved=frozenset(json.loads(row["resolved"])),
        notified_at_ms=row["notified_at_ms"],
        seq=row["seq"],
    )


def load_log_entry(conn: sa.Connection, group_key: str, integration: str) -> LogEntry | None:
    return load_log_entries(conn, [(group_key, integration)]).get((group_key, integration))


def load_log_entries(conn: sa.Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], LogEntry]:
    """The log entries of many (group key, integration) pairs, in batches of 500."""
    by_id = {nflog_id(g, i): (g, i) for g, i in keys}
    ids = list(by_id)
    out: dict[tuple[str, str], LogEntry] = {}
    for start in range(0, len(ids), 500):
        rows = conn.execute(sa.select(nflog_table).where(nflog_table.c.id.in_(ids[start : start + 500])))
        for row in rows.mappings():
            out[by_id[row["id"]]] = _entry(row)
    return out


def _log_values(entry: LogEntry) -> dict[str, object]:
    return {
        "firing": json.dumps(sorted(entry.firing)),
        "resolved": json.dumps(sorted(entry.resolved)),
        "notified_at_ms": entry.notified_at_ms,
        "seq": entry.seq,
    }


def save_log_entry(conn: sa.Connection, group_key: str, integration: str, entry: LogEntry) -> None:
    exists = load_log_entry(conn, group_key, integration) is not None
    save_log_entries(conn, [(group_key, integration, entry, not exists)])


def save_log_entries(conn: sa.Connection, rows: Sequence[tuple[str, str, LogEntry, bool]]) -> None:
    """Write ``(group_key, integration, entry, is_new)`` rows: inserts and updates, each batched.

    An update is conditional on the previous ``seq`` so two writers deciding from the same entry
    cannot both succeed (the loser's outbox insert then collides on the idempotency key).
    """
    inserts = [
        {"id": nflog_id(g, i), "group_key": g, "integration": i, **_log_values(e)}
        for g, i, e, new in rows
        if new
    ]
    updates = [
        {"b_id": nflog_id(g, i), "b_prev": e.seq - 1, **_log_values(e)} for g, i, e, new in rows if not new
    ]
    if inserts:
        conn.execute(sa.insert(nflog_table), inserts)
    if updates:
        t = nflog_table
        conn.execute(
            sa.update(t)
            .where(t.c.id == sa.bindparam("b_id"), t.c.seq == sa.bindparam("b_prev"))
            .values(
                firing=sa.bindparam("firing"),
                resolved=sa.bindparam("resolved"),
                notified_at_ms=sa.bindparam("notified_at_ms"),
                seq=sa.bindparam("seq"),
            ),
            updates,
        )


# --- outbox ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    idempotency_key: str
    receiver: str
    integration: str
    group_key: str
    notification: str
    state: str
    attempts: int
    next_attempt_ms: int
    created_at_ms: int
    first_active_at_ms: int | None
    sent_at_ms: int | None
    last_status: int | None
    last_error: str | None


def _item(r: sa.RowMapping) -> OutboxItem:
    return OutboxItem(**{f: r[f] for f in OutboxItem.__dataclass_fields__})


def outbox_row(
    *,
    key: str,
    receiver: str,
    integration: str,
    group_key: str,
    notification: str,
    now_ms: int,
    first_active_at_ms: int | None,
) -> dict[str, object]:
    return {
        "idempotency_key": key,
        "receiver": receiver,
        "integration": integration,
        "group_key": group_key,
        "notification": notification,
        "state": "pending",
        "attempts": 0,
        "next_attempt_ms": now_ms,
        "created_at_ms": now_ms,
        "first_active_at_ms": first_active_at_ms,
    }


def enqueue_many(conn: sa.Connection, rows: Sequence[dict[str, object]]) -> None:
    """Insert outbox rows; a duplicate idempotency key raises ``IntegrityError``."""
    if rows:
        conn.execute(sa.insert(outbox_table), list(rows))


def claim_due(conn: sa.Connection, *, now_ms: int, lease_ms: int, limit: int = 100) -> list[OutboxItem]:
    """Pending items due now, leased to the caller (another worker skips them until the lease ends)."""
    t = outbox_table
    free = sa.or_(t.c.lease_until_ms.is_(None), t.c.lease_until_ms < now_ms)
    rows = (
        conn.execute(
            sa.select(t)
            .where(t.c.state == "pending", t.c.next_attempt_ms <= now_ms, free)
            .order_by(t.c.next_attempt_ms, t.c.id)
            .limit(limit)
        )
        .mappings()
        .all()
    )
    claimed = []
    for r in rows:
        got = conn.execute(
            sa.update(t).where(t.c.id == r["id"], free).values(lease_until_ms=now_ms + lease_ms)
        ).rowcount
        if got == 1:
            claimed.append(_item(r))
    return claimed


def mark_sent(conn: sa.Connection, item_id: int, *, now_ms: int, status: int | None) -> None:
    t = outbox_table
    conn.execute(
        sa.update(t)
        .where(t.c.id == item_id)
        .values(
            state="sent",
            sent_at_ms=now_ms,
            attempts=t.c.attempts + 1,
            last_status=status,
            lease_until_ms=None,
            last_error=None,
        )
    )


def mark_failed(
    conn: sa.Connection, item_id: int, *, next_attempt_ms: int, dead: bool, status: int | None, error: str
) -> None:
    t = outbox_table
    conn.execute(
        sa.update(t)
        .where(t.c.id == item_id)
        .values(
            state="dead" if dead else "pending",
            attempts=t.c.attempts + 1,
            next_attempt_ms=next_attempt_ms,
            last_status=status,
            last_error=error[:2000],
            lease_until_ms=None,
        )
    )


def release(conn: sa.Connection, item_ids: Sequence[int], *, next_attempt_ms: int) -> None:
    """Give back leased items unattempted, to be tried at ``next_attempt_ms``."""
    t = outbox_table
    conn.execute(
        sa.update(t)
        .where(t.c.id.in_(list(item_ids)))
        .values(lease_until_ms=None, next_attempt_ms=next_attempt_ms)
    )


def list_items(
    conn: sa.Connection,
    *,
    states: Iterable[str] | None = None,
    receiver: str | None = None,
    limit: int | None = None,
    newest_first: bool = False,
) -> list[OutboxItem]:
    t = outbox_table
    q = sa.select(t).order_by(t.c.id.desc() if newest_first else t.c.id)
    if states is not None:
        q = q.where(t.c.state.in_(list(states)))
    if receiver is not None:
        q = q.where(t.c.receiver == receiver)
    if limit is not None:
        q = q.limit(limit)
    return [_item(r) for r in conn.execute(q).mappings()]


def requeue_dead(conn: sa.Connection, *, now_ms: int, receiver: str | None = None) -> int:
    """Give dead-lettered notifications another round of attempts (after fixing the receiver)."""
    t = outbox_table
    q = sa.update(t).where(t.c.state == "dead")
    if receiver is not None:
        q = q.where(t.c.receiver == receiver)
    return conn.execute(q.values(state="pending", attempts=0, next_attempt_ms=now_ms)).rowcount


def delete_finished_before(conn: sa.Connection, cutoff_ms: int) -> int:
    t = outbox_table
    return conn.execute(sa.delete(t).where(t.c.state == "sent", t.c.sent_at_ms < cutoff_ms)).rowcount


def delete_log_entries_before(conn: sa.Connection, cutoff_ms: int) -> int:
    """Forget notification-log entries of groups with nothing firing, last notified before the cutoff."""
    t = nflog_table
    return conn.execute(sa.delete(t).where(t.c.notified_at_ms < cutoff_ms, t.c.firing == "[]")).rowcount
