"""The core API's queries: plain functions over a SQLAlchemy ``Engine`` (blocking; the API runs
them in worker threads). Rows come back as JSON-ready dicts.

```python
engine = make_engine("sqlite:///./data/coreapi.db"); create_schema(engine)
alice = create_player(engine, name="alice", region="eu-west", skill=1200, now_ms=0)
```
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import threading
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from watchkeeper.demo.models import metadata, players, session_players, sessions
from watchkeeper.demo.settings import REGIONS, SPORTS

Row = dict[str, Any]
EARTH_RADIUS_KM = 6371.0
# a rough centre per region; seeded sessions scatter around it
REGION_CENTRES = {
    "eu-west": (48.85, 2.35),
    "eu-central": (52.52, 13.40),
    "us-east": (40.71, -74.00),
    "us-west": (37.77, -122.42),
    "ap-south": (19.07, 72.88),
    "sa-east": (-23.55, -46.63),
}


class CoreApiError(Exception):
    """Base of the core API's domain errors (the API maps them to HTTP status)."""

    status = 400


class NotFound(CoreApiError):
    status = 404


class Conflict(CoreApiError):
    status = 409


def make_engine(url: str) -> sa.Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout so several workers can share it,
    and writes that take the write lock when they begin (`writing`)."""
    if not url.startswith("sqlite"):
        # 20 connections per worker at most: 2 workers stay well under PostgreSQL's default
        # max_connections (100), beside watchkeeper and other clients; more backends than that
        # only contend for the same CPUs. The ping (one round trip per checkout) is what lets the
        # API ride out a database failover without failing requests on dead connections.
        return sa.create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
    engine = sa.create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=20, max_overflow=20
    )

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()
        dbapi_conn.isolation_level = None  # the driver emits no BEGIN: `_begin` does

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")

    _write_locks[engine] = threading.Lock()
    return engine


_WRITE = "coreapi_write"
_write_locks: weakref.WeakKeyDictionary[sa.Engine, threading.Lock] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def writing(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A write transaction. On SQLite it takes the database's write lock as it begins (BEGIN
    IMMEDIATE: a deferred transaction that reads first fails when another writer got in between),
    and this process's writers queue on a lock of their own instead of SQLite's busy handler,
    which polls with sleeps of up to 100 ms (joins waited 0.3-1 s under load)."""
    lock = _write_locks.get(engine)
    if lock is None:
        with engine.begin() as conn:
            yield conn
        return
    with lock, engine.connect() as conn:
        conn.execution_options(**{_WRITE: True})
        with conn.begin():
            yield conn


@contextlib.contextmanager
def reading(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection for reads. On PostgreSQL it runs in autocommit: no ``BEGIN`` before the first
    query and no ``ROLLBACK`` when the connection goes back to the pool, two network round trips of
    the five a session read made (each costs a wake-up of the server's backend process, which on a
    busy machine is most of a read's time). Reads see the same data either way: under
    PostgreSQL's default READ COMMITTED, each query of a transaction takes its own snapshot too."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


def create_schema(engine: sa.Engine) -> None:
    metadata.create_all(engine)


# --- players ---------------------------------------------------------------------------------


def create_player(engine: sa.Engine, *, name: str, region: str, skill: int, now_ms: int) -> Row:
    with writing(engine) as conn:
        pid = conn.execute(
            players.insert().values(
                name=name, region=region, skill=skill, created_at_ms=now_ms, updated_at_ms=now_ms
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    return {
        "id": pid,
        "name": name,
        "region": region,
        "skill": skill,
        "created_at_ms": now_ms,
        "updated_at_ms": now_ms,
    }


def get_player(engine: sa.Engine, player_id: int) -> Row:
    with reading(engine) as conn:
        row = conn.execute(players.select().where(players.c.id == player_id)).mappings().first()
    if row is None:
        raise NotFound(f"player {player_id} not found")
    return dict(row)


def update_player(
    engine: sa.Engine, player_id: int, changes: Mapping[str, Any], *, now_ms: int
) -> tuple[Row, list[int]]:
    """The updated player and the ids of the sessions it is in (their cached copies show it)."""
    with writing(engine) as conn:
        done = conn.execute(
            players.update().where(players.c.id == player_id).values(**changes, updated_at_ms=now_ms)
        )
        if done.rowcount == 0:
            raise NotFound(f"player {player_id} not found")
        row = conn.execute(players.select().where(players.c.id == player_id)).mappings().one()
        ids = (
            conn.execute(
                sa.select(session_players.c.session_id).where(session_players.c.player_id == player_id)
            )
            .scalars()
            .all()
        )
        hosted = conn.execute(sa.select(sessions.c.id).where(sessions.c.host_id == player_id)).scalars().all()
    return dict(row), sorted(set(ids) | set(hosted))


def statistics(engine: sa.Engine, player_id: int, *, now_ms: int) -> Row:
    with reading(engine) as conn:
        if conn.execute(sa.select(players.c.id).where(players.c.id == player_id)).first() is None:
            raise NotFound(f"player {player_id} not found")
        return _statistics(conn, [player_id], now_ms=now_ms)[player_id]


def _statistics(conn: sa.Connection, player_ids: list[int], *, now_ms: int) -> dict[int, Row]:
    """Statistics of several players in three grouped queries (the API's and the warming's)."""
    joined = session_players.join(sessions, sessions.c.id == session_players.c.session_id)
    member = session_players.c.player_id
    by_sport: dict[int, dict[str, int]] = {pid: {} for pid in player_ids}
    for pid, sport, n in conn.execute(
        sa.select(member, sessions.c.sport, sa.func.count())
        .select_from(joined)
        .where(member.in_(player_ids))
        .group_by(member, sessions.c.sport)
    ):
        by_sport[pid][sport] = n
    timing = {
        pid: (upcoming, last)
        for pid, upcoming, last in conn.execute(
            sa.select(
                member,
                sa.func.count().filter(sessions.c.starts_at_ms > now_ms),
                sa.func.max(session_players.c.joined_at_ms),
            )
            .select_from(joined)
            .where(member.in_(player_ids))
            .group_by(member)
        )
    }
    hosted: dict[int, int] = dict(
        conn.execute(
            sa.select(sessions.c.host_id, sa.func.count())
            .where(sessions.c.host_id.in_(player_ids))
            .group_by(sessions.c.host_id)
        ).all()
    )
    out = {}
    for pid in player_ids:
        upcoming, last_joined = timing.get(pid, (0, None))
        out[pid] = {
            "player_id": pid,
            "sessions_joined": sum(by_sport[pid].values()),
            "sessions_hosted": hosted.get(pid, 0),
            "upcoming_sessions": upcoming or 0,
            "by_sport": by_sport[pid],
            "last_joined_at_ms": last_joined,
        }
    return out


# --- sessions --------------------------------------------------------------------------------


def create_session(engine: sa.Engine, fields: Mapping[str, Any], *, now_ms: int) -> Row:
    with writing(engine) as conn:
        if conn.execute(sa.select(players.c.id).where(players.c.id == fields["host_id"])).first() is None:
            raise NotFound(f"host player {fields['host_id']} not found")
        sid = conn.execute(
            sessions.insert().values(**fields, player_count=1, status="open", updated_at_ms=now_ms)
        ).inserted_primary_key[0]  # type: ignore[index]
        conn.execute(
            session_players.insert().values(session_id=sid, player_id=fields["host_id"], joined_at_ms=now_ms)
        )
        return _session(conn, sid)


def _next_version(now_ms: int) -> sa.ColumnElement[int]:
    """A session's ``updated_at_ms`` after a write: now, or one more than before if that is not
    earlier, so it orders the session's states (the cache keeps the newest, `ApiCache`)."""
    return sa.case((sessions.c.updated_at_ms >= now_ms, sessions.c.updated_at_ms + 1), else_=now_ms)


def get_session(engine: sa.Engine, session_id: int) -> Row:
    with reading(engine) as conn:
        return _session(conn, session_id)


def _session(conn: sa.Connection, session_id: int) -> Row:
    row = conn.execute(sessions.select().where(sessions.c.id == session_id)).mappings().first()
    if row is None:
        raise NotFound(f"session {session_id} not found")
    roster = conn.execute(
        sa.select(players.c.id, players.c.name)
        .select_from(session_players.join(players, players.c.id == session_players.c.player_id))
        .where(session_players.c.session_id == session_id)
        .order_by(session_players.c.joined_at_ms, players.c.id)
    ).all()
    out = dict(row)
    out["players"] = [{"id": pid, "name": name} for pid, name in roster]
    return out


def update_session(
    engine: sa.Engine, session_id: int, changes: Mapping[str, Any], *, now_ms: int
) -> tuple[Row, Row]:
    """(before, after) — both, because a move to another sport or region changes two discoveries."""
    with writing(engine) as conn:
        before = _session(conn, session_id)
        if changes:
            conn.execute(
                sessions.update()
                .where(sessions.c.id == session_id)
                .values(**changes, updated_at_ms=_next_version(now_ms))
            )
        return before, _session(conn, session_id)


def join_session(engine: sa.Engine, session_id: int, player_id: int, *, now_ms: int) -> Row:
    with writing(engine) as conn:
        if conn.execute(sa.select(players.c.id).where(players.c.id == player_id)).first() is None:
            raise NotFound(f"player {player_id} not found")
        # the guarded UPDATE claims a seat atomically (no read-then-write race between workers)
        claimed = conn.execute(
            sessions.update()
            .where(
                sessions.c.id == session_id,
                sessions.c.status == "open",
                sessions.c.player_count < sessions.c.max_players,
            )
            .values(player_count=sessions.c.player_count + 1, updated_at_ms=_next_version(now_ms))
        ).rowcount
        if claimed == 0:
            _session(conn, session_id)  # raises NotFound for an unknown session
            raise Conflict(f"session {session_id} is full or not open")
        exists = conn.execute(
            sa.select(session_players.c.player_id).where(
                session_players.c.session_id == session_id, session_players.c.player_id == player_id
            )
        ).first()
        if exists is not None:
            raise Conflict(f"player {player_id} already joined session {session_id}")
        conn.execute(
            session_players.insert().values(session_id=session_id, player_id=player_id, joined_at_ms=now_ms)
        )
        return _session(conn, session_id)


def leave_session(engine: sa.Engine, session_id: int, player_id: int, *, now_ms: int) -> Row:
    with writing(engine) as conn:
        gone = conn.execute(
            session_players.delete().where(
                session_players.c.session_id == session_id, session_players.c.player_id == player_id
            )
        ).rowcount
        if gone == 0:
            _session(conn, session_id)
            raise NotFound(f"player {player_id} is not in session {session_id}")
        conn.execute(
            sessions.update()
            .where(sessions.c.id == session_id)
            .values(player_count=sessions.c.player_count - 1, updated_at_ms=_next_version(now_ms))
        )
        return _session(conn, session_id)


# --- discovery -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiscoveryQuery:
    """Normalised search parameters; `cache_key` is the same for equivalent searches."""

    sport: str | None = None
    region: str | None = None
    starts_after_ms: int | None = None
    starts_before_ms: int | None = None
    lat: float | None = None
    lon: float | None = None
    radius_km: float | None = None
    limit: int = 20

    @classmethod
    def normalised(cls, **params: Any) -> DiscoveryQuery:
        """Round coordinates to ~1 km, radius to whole km and times down to the minute."""
        p = dict(params)
        for name in ("starts_after_ms", "starts_before_ms"):
            if p.get(name) is not None:
                p[name] = int(p[name]) // 60_000 * 60_000
        for name in ("lat", "lon"):
            if p.get(name) is not None:
                p[name] = round(float(p[name]), 2)
        if p.get("radius_km") is not None:
            p["radius_km"] = float(max(1, math.ceil(float(p["radius_km"]))))
        if p.get("lat") is None or p.get("lon") is None or p.get("radius_km") is None:
            p["lat"] = p["lon"] = p["radius_km"] = None
        return cls(**p)

    @property
    def cache_key(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(dataclasses.asdict(self).items()) if v is not None]
        return "discovery:" + "&".join(parts)


def discover(engine: sa.Engine, q: DiscoveryQuery, *, now_ms: int) -> list[Row]:
    cols = [c for c in sessions.c if c.name != "updated_at_ms"]
    stmt = sa.select(*cols).where(sessions.c.status == "open")
    if q.sport is not None:
        stmt = stmt.where(sessions.c.sport == q.sport)
    if q.region is not None:
        stmt = stmt.where(sessions.c.region == q.region)
    stmt = stmt.where(
        sessions.c.starts_at_ms >= (q.starts_after_ms if q.starts_after_ms is not None else now_ms)
    )
    if q.starts_before_ms is not None:
        stmt = stmt.where(sessions.c.starts_at_ms < q.starts_before_ms)
    near = q.lat is not None and q.lon is not None and q.radius_km is not None
    if near:
        assert q.lat is not None and q.lon is not None and q.radius_km is not None  # for mypy
        dlat = math.degrees(q.radius_km / EARTH_RADIUS_KM)
        stmt = stmt.where(sessions.c.lat.between(q.lat - dlat, q.lat + dlat))
    stmt = stmt.order_by(sessions.c.starts_at_ms, sessions.c.id)
    if not near:
        stmt = stmt.limit(q.limit)
    with reading(engine) as conn:
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
    if not near:
        return rows
    out = []
    for r in rows:
        d = haversine_km(q.lat, q.lon, r["lat"], r["lon"])  # type: ignore[arg-type]
        if d <= q.radius_km:  # type: ignore[operator]
            r["distance_km"] = round(d, 2)
            out.append(r)
            if len(out) == q.limit:
                break
    return out


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(a))


# --- start-up --------------------------------------------------------------------------------


def active_sessions_by_region(engine: sa.Engine) -> dict[str, int]:
    with reading(engine) as conn:
        rows = conn.execute(
            sa.select(sessions.c.region, sa.func.count())
            .where(sessions.c.status == "open")
            .group_by(sessions.c.region)
        ).all()
    counts = dict.fromkeys(REGIONS, 0)
    counts.update({region: n for region, n in rows})
    return counts


def warm_rows(engine: sa.Engine, *, limit: int, now_ms: int) -> tuple[list[Row], list[Row], list[Row]]:
    """The hot set: the `limit` soonest open sessions (with their rosters), the first `limit`
    players, and the statistics of the players in those sessions (whose profiles users open
    from a session), at most `limit` of them."""
    with reading(engine) as conn:
        rows = [
            dict(r)
            for r in conn.execute(
                sessions.select()
                .where(sessions.c.status == "open")
                .order_by(sessions.c.starts_at_ms)
                .limit(limit)
            ).mappings()
        ]
        by_id = {r["id"]: r for r in rows}
        for r in rows:
            r["players"] = []
        if by_id:
            roster = conn.execute(
                sa.select(session_players.c.session_id, players.c.id, players.c.name)
                .select_from(session_players.join(players, players.c.id == session_players.c.player_id))
                .where(session_players.c.session_id.in_(list(by_id)))
                .order_by(session_players.c.joined_at_ms, players.c.id)
            ).all()
            for sid, pid, name in roster:
                by_id[sid]["players"].append({"id": pid, "name": name})
        people = [
            dict(r) for r in conn.execute(players.select().order_by(players.c.id).limit(limit)).mappings()
        ]
        seen = list(dict.fromkeys(p["id"] for r in rows for p in r["players"]))[:limit]
        stats = list(_statistics(conn, seen, now_ms=now_ms).values()) if seen else []
    return rows, people, stats


def seed(engine: sa.Engine, *, num_players: int, now_ms: int, rng: random.Random | None = None) -> bool:
    """Fill an empty database with players and two open sessions per player; False if not empty."""
    rng = rng or random.Random(42)
    with writing(engine) as conn:
        if conn.execute(sa.select(players.c.id).limit(1)).first() is not None:
            return False
        conn.execute(
            players.insert(),
            [
                {
                    "id": i,
                    "name": f"player-{i}",
                    "region": REGIONS[i % len(REGIONS)],
                    "skill": rng.randint(800, 2000),
                    "created_at_ms": now_ms,
                    "updated_at_ms": now_ms,
                }
                for i in range(1, num_players + 1)
            ],
        )
        rows, members = [], []
        week_ms = 7 * 86_400_000
        for sid in range(1, 2 * num_players + 1):
            host = rng.randint(1, num_players)
            region = REGIONS[sid % len(REGIONS)]
            clat, clon = REGION_CENTRES[region]
            rows.append(
                {
                    "id": sid,
                    "title": f"game {sid}",
                    "sport": SPORTS[(sid // len(REGIONS)) % len(SPORTS)],
                    "region": region,
                    "host_id": host,
                    # in start order, so the lowest ids are the sessions starting soonest
                    "starts_at_ms": now_ms + sid * week_ms // (2 * num_players) + rng.randint(0, 59) * 1000,
                    "duration_minutes": 90,
                    "lat": clat + rng.uniform(-0.3, 0.3),
                    "lon": clon + rng.uniform(-0.3, 0.3),
                    "max_players": rng.choice((10, 12, 22)),
                    "player_count": 1,
                    "status": "open",
                    "updated_at_ms": now_ms,
                }
            )
            members.append({"session_id": sid, "player_id": host, "joined_at_ms": now_ms})
        conn.execute(sessions.insert(), rows)
        conn.execute(session_players.insert(), members)
        if conn.dialect.name == "postgresql":  # explicit ids leave the id sequences behind
            for table in (players, sessions):
                sequence = f"pg_get_serial_sequence('{table.name}', 'id')"
                conn.execute(sa.text(f"SELECT setval({sequence}, (SELECT max(id) FROM {table.name}))"))  # nosec B608
    return True
