"""API tokens at rest: only hashes are stored; the registry sees CLI changes; scopes are checked."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import sqlalchemy as sa

from watchkeeper.cli import main as cli_main
from watchkeeper.errors import ConfigError
from watchkeeper.security.tokens import TokenRecord, TokenRegistry, TokenStore, hash_token, parse_scopes
from watchkeeper.tsdb.schema import make_engine, migrate, sqlite_url


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    engine = make_engine(sqlite_url(tmp_path))
    migrate(engine)
    return TokenStore(engine)


def test_only_the_hash_is_stored(store: TokenStore, tmp_path: Path) -> None:
    raw, record = store.create("grafana", ("read",), now_ms=1000)
    assert record.token_sha256 == hash_token(raw)
    with store.engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text("select * from api_tokens"))]
    assert rows == [("grafana", hash_token(raw), "read", None, 1000, None)]
    store.engine.dispose()
    assert raw.encode() not in b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())


def test_names_are_unique_and_scopes_known(store: TokenStore) -> None:
    store.create("ci", ("write",), now_ms=0)
    with pytest.raises(ConfigError, match="exists already"):
        store.create("ci", ("read",), now_ms=0)
    with pytest.raises(ConfigError, match="scopes must be some of read, write, admin"):
        parse_scopes("read,root")
    assert parse_scopes(" write, read,write ") == ("write", "read")


def test_the_registry_sees_created_and_revoked_tokens(store: TokenStore) -> None:
    configured = TokenRecord("cfg", hash_token("config-token-123456"), ("read",))
    registry = TokenRegistry([configured], store, refresh_seconds=0)
    assert registry.lookup("config-token-123456") == configured
    raw, _ = store.create("ci", ("write",), now_ms=0, tenant="payments")
    assert registry.lookup(raw) is None  # not re-read yet
    assert registry.is_stale()
    registry.refresh()
    found = registry.lookup(raw)
    assert found is not None and found.principal().scopes == {"write"}
    assert registry.resolve(raw) == ("payments", frozenset({"write"}))
    assert store.revoke("ci", now_ms=5) and not store.revoke("ci", now_ms=6)
    registry.refresh()
    assert registry.lookup(raw) is None
    assert [r.name for r in store.list(include_revoked=True)] == ["ci"] and store.list() == []


def test_an_unreadable_database_keeps_the_tokens_known(tmp_path: Path) -> None:
    registry = TokenRegistry([], TokenStore(make_engine(sqlite_url(tmp_path))), refresh_seconds=0)
    registry.refresh()  # no table yet: no tokens, no exception
    assert not registry.has_tokens()


def test_the_cli_prints_a_token_once_lists_and_revokes(tmp_path: Path) -> None:
    def run(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = cli_main(["tokens", "--data-dir", str(tmp_path), *args])
        return code, out.getvalue(), err.getvalue()

    code, raw, err = run("create", "--name", "ingest", "--scopes", "write,read", "--tenant", "shop")
    assert code == 0 and raw.strip().startswith("wk_") and "shown only now" in err
    code, listing, _ = run("list")
    assert listing.startswith("ingest\twrite,read\tshop\tcreated ") and raw.strip() not in listing
    assert run("create", "--name", "ingest")[0] == 2
    assert run("create", "--name", "x", "--scopes", "sudo")[0] == 2
    assert run("revoke", "ingest")[0] == 0
    assert run("revoke", "ingest")[0] == 1
    assert run("list")[1] == ""
