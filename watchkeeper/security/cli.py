"""``watchkeeper tokens create|list|revoke`` and ``watchkeeper users hash-password``.

    watchkeeper tokens create --name grafana --scopes read [--tenant T] [--config F] [--data-dir D]
    watchkeeper tokens list
    watchkeeper tokens revoke grafana
    watchkeeper users hash-password            reads the password from stdin (or asks for it)

Tokens go to the database of the configuration (``database_url``, or the SQLite file in
``data_dir``); ``create`` prints the token once: only its SHA-256 is stored.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from pathlib import Path

from watchkeeper.config import DEFAULT_CONFIG_FILE, Settings
from watchkeeper.errors import ConfigError
from watchkeeper.security.passwords import hash_password
from watchkeeper.security.tokens import TokenStore, parse_scopes
from watchkeeper.tsdb.schema import make_engine, migrate, sqlite_url


def _store(args: argparse.Namespace) -> TokenStore:
    settings = Settings.load(
        args.config if args.config is not None else DEFAULT_CONFIG_FILE, overrides={"data_dir": args.data_dir}
    )
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url or sqlite_url(settings.data_dir))
    migrate(engine)
    return TokenStore(engine)


def tokens_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="watchkeeper tokens", description="API tokens (stored hashed).")
    parser.add_argument("--config", type=Path, default=None, help="YAML config file")
    parser.add_argument("--data-dir", type=Path, default=None, help="data directory (SQLite)")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="make a token and print it once")
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", default="read", help="comma-separated: read,write,admin (default read)")
    create.add_argument("--tenant", default=None, help="ingest tenant (default: the name)")
    listing = sub.add_parser("list", help="list tokens (never their secrets)")
    listing.add_argument("--all", action="store_true", help="include revoked tokens")
    revoke = sub.add_parser("revoke", help="revoke a token by name")
    revoke.add_argument("name")
    args = parser.parse_args(argv)
    now_ms = int(time.time() * 1000)
    try:
        store = _store(args)
        if args.action == "create":
            raw, record = store.create(
                args.name, parse_scopes(args.scopes), now_ms=now_ms, tenant=args.tenant
            )
            print(raw)
            print(
                f"token {record.name!r} with scopes {','.join(record.scopes)} created; it is shown only "
                "now (send it as 'Authorization: Bearer <token>')",
                file=sys.stderr,
            )
            return 0
        if args.action == "list":
            for r in store.list(include_revoked=args.all):
                revoked = f"  revoked {_when(r.revoked_ms)}" if r.revoked_ms else ""
                scopes, tenant = ",".join(r.scopes), r.tenant or r.name
                print(f"{r.name}\t{scopes}\t{tenant}\tcreated {_when(r.created_ms)}{revoked}")
            return 0
        if not store.revoke(args.name, now_ms=now_ms):
            print(f"watchkeeper: no active token named {args.name!r}", file=sys.stderr)
            return 1
        print(f"token {args.name!r} revoked", file=sys.stderr)
        return 0
    except ConfigError as exc:
        print(f"watchkeeper: {exc}", file=sys.stderr)
        return 2


def users_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="watchkeeper users", description="UI users.")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("hash-password", help="print a password hash for security.users[].password_hash")
    parser.parse_args(argv)
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("watchkeeper: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        print("watchkeeper: use at least 8 characters", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000)) if ms else "-"
