"""What of the database a backup holds, and how rows travel between backends.

The tables are those the migrations create (`our_tables`: anything else in a shared PostgreSQL
database is not ours to copy or drop). A row is a JSON array; each column has a *kind* recorded in
the manifest, so a value dumped from SQLite loads into PostgreSQL and back:

>>> encode_row((1, b"\\x00\\x01", None, float("nan")), ["int", "bytes", "str", "float"])
'[1,"AAE=",null,NaN]\\n'
>>> decode_row([1, "AAE=", None], ["int", "bytes", "str"])
[1, b'\\x00\\x01', None]
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic.script import ScriptDirectory

from watchkeeper.tsdb.schema import alembic_config, make_engine, migrate

ALEMBIC_TABLE = "alembic_version"


@functools.cache
def our_tables() -> frozenset[str]:
    """Tables created by the migrations of this watchkeeper (found by migrating a scratch database)."""
    engine = make_engine("sqlite://")
    try:
        migrate(engine)
        return frozenset(sa.inspect(engine).get_table_names()) - {ALEMBIC_TABLE}
    finally:
        engine.dispose()


def known_revisions() -> frozenset[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return frozenset(r.revision for r in script.walk_revisions())


def current_revisions(conn: sa.Connection) -> list[str]:
    """The Alembic revisions a database is at (empty if it was never migrated)."""
    if not sa.inspect(conn).has_table(ALEMBIC_TABLE):
        return []
    return sorted(r[0] for r in conn.execute(sa.text(f"SELECT version_num FROM {ALEMBIC_TABLE}")))  # nosec B608


def column_kind(type_: sa.types.TypeEngine[Any]) -> str:
    """How a column's values are written to JSON: bytes, bool, int, float, datetime or str."""
    if isinstance(type_, sa.LargeBinary | sa.types._Binary):
        return "bytes"
    if isinstance(type_, sa.Boolean):
        return "bool"
    if isinstance(type_, sa.Integer):
        return "int"
    if isinstance(type_, sa.Float | sa.Numeric):
        return "float"
    if isinstance(type_, sa.DateTime | sa.Date):
        return "datetime"
    return "str"


def _encode(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "bytes":
        return base64.b64encode(bytes(value)).decode()
    if kind == "datetime":
        return value.isoformat()
    if kind == "float":
        return float(value)
    return value


def encode_row(row: Sequence[Any], kinds: Sequence[str]) -> str:
    """One JSON line (NaN and infinities as JavaScript's literals, which `json` reads back)."""
    values = [_encode(v, k) for v, k in zip(row, kinds, strict=True)]
    return json.dumps(values, separators=(",", ":"), ensure_ascii=False) + "\n"


def _decode(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "bytes":
        return base64.b64decode(value, validate=True)
    if kind == "datetime":
        return dt.datetime.fromisoformat(value)
    if kind == "bool":
        return bool(value)
    return value


def decode_row(values: Sequence[Any], kinds: Sequence[str]) -> list[Any]:
    return [_decode(v, k) for v, k in zip(values, kinds, strict=True)]
