"""Fixtures: a real local HTTP server standing in for chat services, and a migrated database."""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from watchkeeper.tsdb.schema import make_engine, migrate


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeService:
    """Answers each POST with the next scripted ``(status, headers, body)``, then 200 ``ok``.

    Records only the requests it acknowledged with 2xx in ``delivered`` and every request in ``seen``.
    """

    url: str
    script: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    seen: list[Received] = field(default_factory=list)
    delivered: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    event: threading.Event = field(default_factory=threading.Event)

    def fail(
        self, times: int, status: int = 503, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> None:
        self.script.extend([(status, headers or {}, body)] * times)


@pytest.fixture
def service() -> Iterator[FakeService]:
    svc = FakeService(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            rec = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            with svc.lock:
                svc.seen.append(rec)
                status, headers, answer = svc.script.pop(0) if svc.script else (200, {}, b"ok")
                if 200 <= status < 300:
                    svc.delivered.append(rec)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
            svc.event.set()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    svc.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield svc
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def _postgres_template() -> Iterator[str]:
    """A migrated PostgreSQL database used as the template of each test's (copying beats migrating)."""
    from tests.conftest import POSTGRES_HOST, POSTGRES_PORT, require_server

    require_server("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
    base = f"postgresql+psycopg://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}"
    name = f"wk_alerting_tmpl_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{base}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    eng = make_engine(f"{base}/{name}")
    migrate(eng)
    eng.dispose()
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_engine(_postgres_template: str) -> Iterator[sa.Engine]:
    """A fresh migrated PostgreSQL database (a copy of the session's template), dropped afterwards."""
    from tests.conftest import POSTGRES_HOST, POSTGRES_PORT

    base = f"postgresql+psycopg://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}"
    name = f"wk_alerting_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(f"{base}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{_postgres_template}"'))
    eng = make_engine(f"{base}/{name}")
    try:
        yield eng
    finally:
        eng.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest) -> sa.Engine:
    """A migrated database: SQLite, then PostgreSQL."""
    name = "sqlite_engine" if request.param == "sqlite" else "postgres_engine"
    result: sa.Engine = request.getfixturevalue(name)
    return result


@pytest.fixture(scope="session")
def _migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "alerting.db"
    eng = make_engine(f"sqlite:///{path}")
    migrate(eng)
    with eng.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    eng.dispose()
    return path


@pytest.fixture
def sqlite_engine(tmp_path: Path, _migrated_sqlite: Path) -> Iterator[sa.Engine]:
    """A migrated SQLite file (a copy of one migrated once per session: migrations take ~0.3 s)."""
    target = tmp_path / "alerting.db"
    shutil.copyfile(_migrated_sqlite, target)
    eng = make_engine(f"sqlite:///{target}")
    try:
        yield eng
    finally:
        eng.dispose()
