"""API tokens: one concept for ingest (``write``), queries (``read``) and admin endpoints.

A token is stored only as its SHA-256: in the config (``token_sha256``, or a plain ``token`` that
is hashed when read) and in the ``api_tokens`` table, where ``watchkeeper tokens create`` puts
the tokens it prints once. `TokenRegistry` answers "whose token is this?" from both; it re-reads
the table every few seconds, so a token created or revoked by the CLI takes effect without a
restart.

>>> raw, digest = new_token()
>>> raw.startswith("wk_") and digest == hash_token(raw)
True
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from watchkeeper.errors import ConfigError
from watchkeeper.security.scopes import SCOPES, Principal

log = logging.getLogger("watchkeeper.security")

metadata = sa.MetaData()
tokens_table = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("scopes", sa.String(64), nullable=False),
    sa.Column("tenant", sa.String(200)),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("revoked_ms", sa.BigInteger),
)


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token, as ``token_sha256`` holds it (``printf %s TOKEN | sha256sum``).
    A plain hash suffices: tokens are 256 random bits, not guessable passwords."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh random token and its hash."""
    raw = "wk_" + secrets.token_urlsafe(32)
    return raw, hash_token(raw)


def parse_scopes(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"read,write"`` -> ``("read", "write")``; unknown scopes raise `ConfigError`."""
    items = text.split(",") if isinstance(text, str) else list(text)
    scopes = tuple(dict.fromkeys(s.strip() for s in items if s.strip()))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ConfigError(f"scopes must be some of {', '.join(SCOPES)}; got {','.join(items) or 'none'}")
    return scopes


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A token without its secret: what the registry and ``tokens list`` know."""

    name: str
    token_sha256: str
    scopes: tuple[str, ...]
    tenant: str | None = None
    created_ms: int | None = None
    revoked_ms: int | None = None

    def principal(self) -> Principal:
        return Principal(self.name, frozenset(self.scopes), kind="token", tenant=self.tenant or self.name)


class TokenStore:
    """The ``api_tokens`` table (created by the ``0002_security`` migration).

    >>> store = TokenStore(sa.create_engine("sqlite://"))  # doctest: +SKIP
    >>> raw, record = store.create("grafana", ("read",), now_ms=0)  # doctest: +SKIP
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def create(
        self, name: str, scopes: Sequence[str], *, now_ms: int, tenant: str | None = None
    ) -> tuple[str, TokenRecord]:
        """A new token named `name` (unique among tokens); returns the raw token, shown only now."""
        raw, digest = new_token()
        record = TokenRecord(name, digest, tuple(parse_scopes(scopes)), tenant, now_ms)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    tokens_table.insert().values(
                        name=name,
                        token_sha256=digest,
                        scopes=",".join(record.scopes),
                        tenant=tenant,
                        created_ms=now_ms,
                    )
                )
        except sa.exc.IntegrityError:
            raise ConfigError(f"a token named {name!r} exists already (revoke it first)") from None
        return raw, record

    def revoke(self, name: str, *, now_ms: int) -> bool:
        """Mark the token revoked; False when there is no active token of that name."""
        with self.engine.begin() as conn:
            result = conn.execute(
                tokens_table.update()
                .where(tokens_table.c.name == name, tokens_table.c.revoked_ms.is_(None))
                .values(revoked_ms=now_ms)
            )
        return bool(result.rowcount)

    def delete(self, name: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(tokens_table.delete().where(tokens_table.c.name == name))
        return bool(result.rowcount)

    def list(self, *, include_revoked: bool = False) -> list[TokenRecord]:
        """The tokens (none when the table was never migrated)."""
        query = sa.select(tokens_table).order_by(tokens_table.c.name)
        if not include_revoked:
            query = query.where(tokens_table.c.revoked_ms.is_(None))
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table(tokens_table.name):
                return []
            rows = conn.execute(query).all()
        return [
            TokenRecord(
                r.name, r.token_sha256, tuple(r.scopes.split(",")), r.tenant, r.created_ms, r.revoked_ms
            )
            for r in rows
        ]


class TokenRegistry:
    """Every valid token: the config's and the database's (re-read every `refresh_seconds`).

    `lookup` and `resolve` only read memory; when `is_stale`, call `refresh` (it queries the
    database) off the event loop before them.
    """

    def __init__(
        self,
        configured: Iterable[TokenRecord],
        store: TokenStore | None = None,
        *,
        refresh_seconds: float = 5.0,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self._configured: dict[str, TokenRecord] = {}
        self.configure(configured)
        self._stored: dict[str, TokenRecord] = {}
        self.store = store
        self.refresh_seconds = refresh_seconds
        self._refreshed_at: float | None = None
        self._miss_refreshed_at: float | None = None
        self.ready = ready
        self._loaded = store is None
        """Whether the database's tokens were read once: until then there may be some."""
        """False while the app's store opens (and migrates): the table is not read before."""
        self._lock = threading.Lock()

    def configure(self, configured: Iterable[TokenRecord]) -> None:
        """Replace the config's tokens (a reload); the database's stay as they are."""
        self._configured = {t.token_sha256.lower(): t for t in configured}

    def has_tokens(self) -> bool:
        """Whether any token is known, or may be (the database was not read yet: closed, not open)."""
        return bool(self._configured or self._stored) or not self._loaded

    def assume_empty(self) -> None:
        """The database does not exist yet, so it holds no tokens."""
        self._loaded = True

    def is_stale(self, now_seconds: float | None = None) -> bool:
        if self.store is None or not self.ready():
            return False
        now = time.monotonic() if now_seconds is None else now_seconds
        return self._refreshed_at is None or now - self._refreshed_at >= self.refresh_seconds

    def refresh(self) -> None:
        """Re-read the database's tokens; on a database error keep the previous set."""
        if self.store is None:
            return
        with self._lock:
            self._refreshed_at = time.monotonic()
            try:
                records = self.store.list()
            except sa.exc.SQLAlchemyError as exc:  # table not migrated yet, database away
                log.debug("api tokens not readable", extra={"error": type(exc).__name__})
                return
            self._stored = {r.token_sha256: r for r in records}
            self._loaded = True

    def may_refresh_on_miss(self, min_interval_seconds: float = 0.1) -> bool:
        """An unknown token may be one the CLI just made: re-read, at most ten times a second for
        unknown tokens (a flood of bad tokens costs the database little)."""
        if self.store is None or not self.ready():
            return False
        now = time.monotonic()
        if self._miss_refreshed_at is not None and now - self._miss_refreshed_at < min_interval_seconds:
            return False
        self._miss_refreshed_at = now
        return True

    def lookup(self, token: str) -> TokenRecord | None:
        # a dict lookup by hash leaks nothing useful: the key is the hash of a random secret
        digest = hash_token(token)
        return self._configured.get(digest) or self._stored.get(digest)

    def resolve(self, token: str) -> tuple[str, frozenset[str]] | None:
        """(tenant, scopes) of a token, for ingest auth (`watchkeeper.collector.auth.TokenResolver`)."""
        record = self.lookup(token)
        if record is None:
            return None
        return record.tenant or record.name, frozenset(record.scopes)
