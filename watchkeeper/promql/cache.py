"""The range-query results cache (Redis): finished time buckets of a query are kept, so a dashboard
that loads again re-evaluates only what is new.

>>> cache = QueryCache(redis.Redis.from_url(url), QueryCacheConfig(), namespace="prod")  # doctest: +SKIP
>>> cache.range(engine, 'sum(rate(errors_total[5m]))', start_ms, end_ms, 15_000, now_ms=now)  # doctest: +SKIP
QueryResult(result_type='matrix', series=[...])

How it works (the design of Cortex' and Thanos' query-frontend results cache, bucketed):

- Every step of a range query is evaluated on its own (its value depends on the data and the step
  time only), so a query's steps can be split at any step and merged again. The steps are cut
  into **buckets** of a fixed span: ``bucket`` rounded up to a whole number of steps (at least
  ``MIN_BUCKET_STEPS``), starting at multiples of the span, so bucket boundaries are step times.
- A bucket is stored only once it is **finished**: its last step, plus how far past its step time
  the query reads (a negative ``offset``), plus any ``@`` time it reads, is older than
  ``now - freshness`` (``freshness`` is at least the store's out-of-order window: a sample may
  still arrive that far back). The fresh tail is always evaluated.
- On a request the finished buckets are fetched with one ``MGET``; a hit is cut to the request's
  range (a bucket serves any request whose steps are a subset of its steps). Each run of steps
  not covered is evaluated with one ``Engine.range`` call, widened to whole buckets where a
  finished bucket is missing, and the finished buckets in it are stored (``SET PX ttl``).
- The key is the query as printed from its AST (whitespace and redundant syntax do not matter),
  the step, the bucket span, the engine's lookback delta and default subquery step, the cache
  format and watchkeeper version, and the store's ``namespace``; the bucket start ends it.

The cache is bypassed (the query is evaluated as without it) when the start is not a multiple of
the step (Grafana and watchkeeper's dashboards align it; an unaligned start shares no steps with
the buckets, and re-aligning would change the answer), for single-step queries, and for queries
whose steps depend on the query's range: ``@ start()``, ``@ end()``, ``start()``, ``end()``,
``range()``. Redis errors never fail a query: they are counted, logged once per outage, and the
cache is skipped for ``RETRY_AFTER_SECONDS``.

The merged answer equals the uncached one (same series, order, labels, bit-identical values);
tests/promql/test_cache.py checks this for a broad set of queries. Warnings and infos are the
union of the pieces' (their order may differ), never fewer than uncached but possibly more: an
evaluation widened to whole buckets may raise one in steps outside the request, and a stored
bucket keeps the annotations of the evaluation that produced it (as Thanos' query-frontend keeps
an extent's warnings).
"""

from __future__ import annotations

import hashlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from watchkeeper import __version__
from watchkeeper.durations import parse_duration
from watchkeeper.errors import QueryError, QueryTimeout
from watchkeeper.labels import Labels
from watchkeeper.promql import ast
from watchkeeper.promql.values import QueryResult, ResultSeries

log = logging.getLogger("watchkeeper.promql.cache")

FORMAT_VERSION = 1
#: A bucket holds at least this many steps (long steps would otherwise make one key per step).
MIN_BUCKET_STEPS = 10
#: After a Redis error the cache is skipped this long (a down Redis costs no time per query).
RETRY_AFTER_SECONDS = 30.0
_RANGE_FUNCTIONS = frozenset({"start", "end", "range"})
_HEADER = struct.Struct("<BI")  # format version, header length


class QueryCacheConfig(BaseModel):
    """``query_cache:`` settings; the cache is used only when ``redis_url`` is set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    bucket: str = "15m"
    """Span of a cached piece, rounded up to whole steps (at least ``MIN_BUCKET_STEPS`` steps)."""
    freshness: str = "10m"
    """Steps newer than this (or than the out-of-order window, if longer) are never cached."""
    ttl: str = "24h"
    max_item_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    """A bucket larger than this once encoded is not stored."""
    key_prefix: str = "watchkeeper:qc:"

    @field_validator("bucket", "freshness", "ttl")
    @classmethod
    def _duration(cls, value: str, info: ValidationInfo) -> str:
        if parse_duration(value) <= 0 and info.field_name != "freshness":
            raise ValueError("must be a positive duration")
        return value


class CacheClient(Protocol):
    """The part of ``redis.Redis`` the cache uses."""

    def mget(self, keys: Sequence[str]) -> Sequence[bytes | str | None]: ...

    def pipeline(self, transaction: bool = True) -> Any: ...


class RangeEngine(Protocol):
    def range(self, query: str | ast.Expr, start_ms: int, end_ms: int, step_ms: int) -> QueryResult: ...


class QueryCacheMetrics:
    """Counters of the cache, registered on the app's registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self.hits = Counter(
            "watchkeeper_query_cache_hits", "Range-query buckets answered from the cache.", registry=r
        )
        self.misses = Counter(
            "watchkeeper_query_cache_misses", "Finished range-query buckets not in the cache.", registry=r
        )
        self.stored_bytes = Counter(
            "watchkeeper_query_cache_stored_bytes", "Bytes of buckets written to the cache.", registry=r
        )
        self.oversized = Counter(
            "watchkeeper_query_cache_oversized_buckets",
            "Finished buckets not stored: larger than max_item_bytes once encoded.",
            registry=r,
        )
        self.bypassed = Counter(
            "watchkeeper_query_cache_bypassed_queries",
            "Range queries evaluated without the cache, by reason.",
            ["reason"],
            registry=r,
        )
        self.errors = Counter(
            "watchkeeper_query_cache_errors",
            "Failed cache operations (the query was answered by evaluation), by operation.",
            ["operation"],
            registry=r,
        )


# --- pure planning ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reach:
    """How far a query reads data relative to a step time ``t``: up to ``t + forward_ms`` (a
    negative offset reads the future) and up to ``pinned_ms`` (``@`` times); ``range_dependent``
    when its steps depend on the query's start or end."""

    forward_ms: int
    pinned_ms: int | None
    range_dependent: bool


def data_reach(expr: ast.Expr) -> Reach:
    """The newest data a query's step ``t`` may read (iterative: parsed trees can be deep)."""
    forward: int | None = None
    pinned: int | None = None
    dependent = False
    # (node, evaluation time relative to the step, or None when pinned at the absolute time)
    todo: list[tuple[ast.Expr, int | None, int]] = [(expr, 0, 0)]
    while todo:
        node, rel, absolute = todo.pop()
        match node:
            case ast.MatrixSelector(selector=selector):
                todo.append((selector, rel, absolute))
            case ast.VectorSelector(at=at, offset_ms=offset) | ast.SubqueryExpr(at=at, offset_ms=offset):
                if at is not None and at.kind != "time":
                    dependent = True
                    continue
                if at is not None:
                    rel, absolute = None, at.timestamp_ms
                rel, absolute = (None, absolute - offset) if rel is None else (rel - offset, 0)
                if isinstance(node, ast.SubqueryExpr):
                    todo.append((node.expr, rel, absolute))  # its steps end at its window's end
                elif rel is None:
                    pinned = absolute if pinned is None else max(pinned, absolute)
                else:
                    forward = rel if forward is None else max(forward, rel)
            case ast.Call(func=func, args=args):
                dependent |= func in _RANGE_FUNCTIONS
                todo.extend((a, rel, absolute) for a in args)
            case ast.AggregateExpr(expr=inner, param=param):
                todo.append((inner, rel, absolute))
                if param is not None:
                    todo.append((param, rel, absolute))
            case ast.BinaryExpr(lhs=lhs, rhs=rhs):
                todo.extend([(lhs, rel, absolute), (rhs, rel, absolute)])
            case ast.UnaryExpr(expr=inner) | ast.ParenExpr(expr=inner):
                todo.append((inner, rel, absolute))
    return Reach(max(0, forward or 0), pinned, dependent)


def bucket_span_ms(bucket_ms: int, step_ms: int) -> int:
    """The bucket span for a step: ``bucket_ms`` rounded up to whole steps, at least
    ``MIN_BUCKET_STEPS`` of them."""
    return max(-(-bucket_ms // step_ms), MIN_BUCKET_STEPS) * step_ms


def last_finished_bucket(reach: Reach, span_ms: int, step_ms: int, cutoff_ms: int) -> int | None:
    """Index of the newest bucket (start ``k * span_ms``) all of whose steps read only data at or
    before ``cutoff_ms``; None when none does (an ``@`` time after the cutoff)."""
    if reach.pinned_ms is not None and reach.pinned_ms > cutoff_ms:
        return None
    # last step of bucket k: k * span + span - step; it reads up to that + forward
    return (cutoff_ms - reach.forward_ms - span_ms + step_ms) // span_ms


# --- pieces of results ----------------------------------------------------------------------------


@dataclass(slots=True)
class Piece:
    """The result of a query's steps ``first_ms..last_ms`` (inclusive)."""

    first_ms: int
    last_ms: int
    series: list[ResultSeries]
    warnings: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)

    def sliced(self, first_ms: int, last_ms: int) -> Piece:
        if first_ms <= self.first_ms and last_ms >= self.last_ms:
            return self
        out = []
        for s in self.series:
            lo, hi = np.searchsorted(s.timestamps_ms, [first_ms, last_ms + 1])
            if hi > lo:
                out.append(ResultSeries(s.labels, s.timestamps_ms[lo:hi], s.values[lo:hi]))
        return Piece(first_ms, last_ms, out, self.warnings, self.infos)


def piece_of(result: QueryResult, first_ms: int, last_ms: int) -> Piece:
    """The steps ``first_ms..last_ms`` of an evaluation that covered at least those."""
    whole = Piece(-(2**62), 2**62, result.series, result.warnings, result.infos)
    return whole.sliced(first_ms, last_ms)


def merge(pieces: Sequence[Piece]) -> QueryResult:
    """Pieces of consecutive steps, in time order, as one matrix ordered by labels (as the engine
    orders a range result)."""
    if len(pieces) == 1:
        p = pieces[0]
        return QueryResult("matrix", list(p.series), warnings=list(p.warnings), infos=list(p.infos))
    parts: dict[Labels, list[ResultSeries]] = {}
    for p in pieces:
        for s in p.series:
            parts.setdefault(s.labels, []).append(s)
    series = []
    for labels in sorted(parts):
        chunks = parts[labels]
        if len(chunks) == 1:
            series.append(chunks[0])
        else:
            ts = np.concatenate([c.timestamps_ms for c in chunks])
            series.append(ResultSeries(labels, ts, np.concatenate([c.values for c in chunks])))
    warnings = list(dict.fromkeys(w for p in pieces for w in p.warnings))
    infos = list(dict.fromkeys(i for p in pieces for i in p.infos))
    return QueryResult("matrix", series, warnings=warnings, infos=infos)


def encode(piece: Piece, step_ms: int) -> bytes:
    """A bucket as bytes: a JSON header (labels, annotations), the presence bits of every
    (series, step) and the present values as little-endian float64 (bit-exact, NaNs included)."""
    steps = (piece.last_ms - piece.first_ms) // step_ms + 1
    present = np.zeros((len(piece.series), steps), dtype=bool)
    for i, s in enumerate(piece.series):
        present[i, (s.timestamps_ms - piece.first_ms) // step_ms] = True
    values = np.concatenate([s.values for s in piece.series]) if piece.series else np.empty(0)
    header = orjson.dumps({
        "steps": steps,
        "labels": [[x for pair in s.labels for x in pair] for s in piece.series],
        "warnings": piece.warnings,
        "infos": piece.infos,
    })
    return b"".join([
        _HEADER.pack(FORMAT_VERSION, len(header)),
        header,
        np.packbits(present).tobytes(),
        values.astype("<f8", copy=False).tobytes(),
    ])


def decode(blob: bytes, first_ms: int, step_ms: int) -> Piece:
    """The inverse of :func:`encode`; ValueError on anything malformed."""
    version, size = _HEADER.unpack_from(blob)
    if version != FORMAT_VERSION:
        raise ValueError(f"cache format {version}, expected {FORMAT_VERSION}")
    pos = _HEADER.size + size
    header = orjson.loads(blob[_HEADER.size : pos])
    steps, flat_labels = int(header["steps"]), header["labels"]
    cells = len(flat_labels) * steps
    bits = np.frombuffer(blob, dtype=np.uint8, count=(cells + 7) // 8, offset=pos)
    present = np.unpackbits(bits, count=cells).astype(bool).reshape(len(flat_labels), steps)
    pos += bits.size
    values = np.frombuffer(blob, dtype="<f8", offset=pos).astype(np.float64)
    if values.size != int(present.sum()):
        raise ValueError("cache item truncated")
    times = first_ms + np.arange(steps, dtype=np.int64) * step_ms
    counts = present.sum(axis=1)
    ends = np.cumsum(counts)
    series = []
    for i, flat in enumerate(flat_labels):
        labels = tuple(zip(flat[0::2], flat[1::2], strict=True))
        series.append(ResultSeries(labels, times[present[i]], values[ends[i] - counts[i] : ends[i]]))
    last_ms = first_ms + (steps - 1) * step_ms
    return Piece(first_ms, last_ms, series, list(header["warnings"]), list(header["infos"]))


# --- the cache ------------------------------------------------------------------------------------


class QueryCache:
    """Range-query results cache over a Redis client; thread-safe (queries run in worker threads).

    ``namespace`` names the store the answers come from (replicas sharing one database share it).
    ``out_of_order_window_ms``: samples that late are still accepted, so freshness is never less.
    """

    def __init__(
        self,
        client: CacheClient,
        config: QueryCacheConfig,
        *,
        namespace: str,
        out_of_order_window_ms: int = 0,
        metrics: QueryCacheMetrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.config = config
        self.namespace = namespace
        self.bucket_ms = parse_duration(config.bucket)
        self.freshness_ms = max(parse_duration(config.freshness), out_of_order_window_ms)
        self.ttl_ms = parse_duration(config.ttl)
        self.metrics = metrics if metrics is not None else QueryCacheMetrics()
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._skip_until = 0.0

    def range(
        self,
        engine: RangeEngine,
        query: str | ast.Expr,
        start_ms: int,
        end_ms: int,
        step_ms: int,
        *,
        now_ms: int,
    ) -> QueryResult:
        """``engine.range(query, start_ms, end_ms, step_ms)``, with the finished buckets from the
        cache; ``now_ms`` is the wall clock (what is finished depends on it)."""
        try:
            expr = _parse(query)
        except QueryError:
            return engine.range(query, start_ms, end_ms, step_ms)  # raises the parse error
        reason, span, last_k = self._plan(expr, start_ms, end_ms, step_ms, now_ms)
        if reason is not None:
            self.metrics.bypassed.labels(reason).inc()
            return engine.range(query, start_ms, end_ms, step_ms)
        last_step = start_ms + (end_ms - start_ms) // step_ms * step_ms
        finished = list(range(start_ms // span, min(last_step // span, last_k) + 1))
        keys = [self._key_prefix(engine, expr, step_ms, span) + str(k * span) for k in finished]
        try:
            blobs = self.client.mget(keys)
        except Exception as exc:  # whatever the client raises: answer without the cache
            self._failed("get", exc)
            return engine.range(query, start_ms, end_ms, step_ms)
        pieces, missing = self._decode_all(blobs, finished, span, step_ms)
        try:
            pieces += self._evaluate_gaps(
                engine, query, pieces, missing, keys, finished, span, start_ms, last_step, step_ms
            )
        except QueryTimeout:
            raise
        except QueryError:
            # an error in steps outside the request (widened to whole buckets): answer as uncached
            return engine.range(query, start_ms, end_ms, step_ms)
        pieces.sort(key=lambda p: p.first_ms)
        return merge([p.sliced(max(start_ms, p.first_ms), min(last_step, p.last_ms)) for p in pieces])

    def _plan(
        self, expr: ast.Expr, start_ms: int, end_ms: int, step_ms: int, now_ms: int
    ) -> tuple[str | None, int, int]:
        """(bypass reason or None, bucket span, index of the newest finished bucket)."""
        if end_ms - start_ms < step_ms:
            return "single_step", 0, 0
        if start_ms % step_ms:
            return "unaligned", 0, 0
        reach = data_reach(expr)
        if reach.range_dependent:
            return "range_dependent", 0, 0
        span = bucket_span_ms(self.bucket_ms, step_ms)
        last_k = last_finished_bucket(reach, span, step_ms, now_ms - self.freshness_ms)
        if last_k is None or last_k < start_ms // span:
            return "fresh", 0, 0
        if self._monotonic() < self._skip_until:
            return "redis_unavailable", 0, 0
        return None, span, last_k

    def _key_prefix(self, engine: RangeEngine, expr: ast.Expr, step_ms: int, span_ms: int) -> str:
        from watchkeeper.promql.printer import to_promql

        identity = "\x00".join([
            str(FORMAT_VERSION), __version__, to_promql(expr), str(step_ms), str(span_ms),
            str(getattr(engine, "lookback_ms", "")), str(getattr(engine, "default_subquery_step_ms", "")),
        ])
        digest = hashlib.blake2b(identity.encode(), digest_size=16).hexdigest()
        return f"{self.config.key_prefix}{self.namespace}:{digest}:"

    def _decode_all(
        self, blobs: Sequence[bytes | str | None], finished: list[int], span: int, step_ms: int
    ) -> tuple[list[Piece], set[int]]:
        pieces, missing = [], set()
        for k, blob in zip(finished, blobs, strict=True):
            piece = None
            if blob is not None:
                try:
                    piece = decode(blob if isinstance(blob, bytes) else blob.encode(), k * span, step_ms)
                except Exception:  # anything malformed (another writer, another format): a miss
                    self.metrics.errors.labels("decode").inc()
            if piece is None:
                missing.add(k)
            else:
                pieces.append(piece)
        self.metrics.hits.inc(len(pieces))
        self.metrics.misses.inc(len(missing))
        return pieces, missing

    def _evaluate_gaps(
        self, engine: RangeEngine, query: str | ast.Expr, hits: list[Piece], missing: set[int],
        keys: list[str], finished: list[int], span: int, start_ms: int, last_step: int, step_ms: int,
    ) -> list[Piece]:
        """Evaluate every run of steps no hit covers; store the finished buckets evaluated."""
        runs, cursor = [], start_ms
        for p in sorted(hits, key=lambda p: p.first_ms):
            if cursor < max(start_ms, p.first_ms):
                runs.append((cursor, p.first_ms - step_ms))
            cursor = p.last_ms + step_ms
        if cursor <= last_step:
            runs.append((cursor, last_step))
        max_points = int(getattr(engine, "max_points_per_series", 11_000))
        key_of = dict(zip(finished, keys, strict=True))
        out, writes = [], []
        for a, b in runs:
            lo, hi = a, b
            if a // span in missing:
                lo = a // span * span  # widen to whole buckets, so they can be stored
            if b // span in missing:
                hi = b // span * span + span - step_ms
            if (hi - lo) // step_ms + 1 > max_points:
                lo, hi = a, b
            if hi == lo:
                lo -= step_ms  # one step would be evaluated as an instant query (``step()`` is 0)
            result = engine.range(query, lo, hi, step_ms)
            out.append(piece_of(result, a, b))
            for k in sorted(missing):
                first, last = k * span, k * span + span - step_ms
                if lo <= first and last <= hi:
                    # with the whole evaluation's annotations (which step raised one is not known)
                    writes.append((key_of[k], encode(piece_of(result, first, last), step_ms)))
        self._store(writes)
        return out

    def _store(self, writes: list[tuple[str, bytes]]) -> None:
        fitting = [(k, v) for k, v in writes if len(v) <= self.config.max_item_bytes]
        self.metrics.oversized.inc(len(writes) - len(fitting))
        writes = fitting
        if not writes:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for key, blob in writes:
                pipe.set(key, blob, px=self.ttl_ms)
            pipe.execute()
        except Exception as exc:
            self._failed("set", exc)
            return
        self.metrics.stored_bytes.inc(sum(len(v) for _, v in writes))

    def _failed(self, operation: str, exc: Exception) -> None:
        self.metrics.errors.labels(operation).inc()
        with self._lock:
            first = self._skip_until <= self._monotonic() - RETRY_AFTER_SECONDS
            self._skip_until = self._monotonic() + RETRY_AFTER_SECONDS
        if first:
            log.warning(
                "query cache unavailable; evaluating without it for %.0f s", RETRY_AFTER_SECONDS,
                extra={"operation": operation, "error": repr(exc)},
            )


def _parse(query: str | ast.Expr) -> ast.Expr:
    if isinstance(query, str):
        from watchkeeper.promql.parser import parse

        return parse(query)
    return query


class CachedEngine:
    """An engine whose range queries go through a ``QueryCache`` (for callers that take any
    engine, like the dashboards); ``instant`` is passed through.

    >>> CachedEngine(engine, cache).range("up", 0, 3_600_000, 15_000)  # doctest: +SKIP
    """

    def __init__(
        self, engine: Any, cache: QueryCache, *, clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)
    ) -> None:
        self.engine = engine
        self.cache = cache
        self.clock_ms = clock_ms

    def instant(self, query: str | ast.Expr, time_ms: int) -> QueryResult:
        result: QueryResult = self.engine.instant(query, time_ms)
        return result

    def range(self, query: str | ast.Expr, start_ms: int, end_ms: int, step_ms: int) -> QueryResult:
        return self.cache.range(self.engine, query, start_ms, end_ms, step_ms, now_ms=self.clock_ms())


def connect(
    redis_url: str,
    config: QueryCacheConfig,
    *,
    namespace: str,
    out_of_order_window_ms: int = 0,
    registry: CollectorRegistry | None = None,
) -> QueryCache:
    """A cache on ``redis_url`` (short socket timeouts: a slow Redis must not slow queries)."""
    import redis  # optional dependency: only with a redis_url

    client = redis.Redis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    return QueryCache(
        client, config, namespace=namespace, out_of_order_window_ms=out_of_order_window_ms,
        metrics=QueryCacheMetrics(registry),
    )


def store_namespace(database_url: str | None, data_dir: Path) -> str:
    """A short stable name of the store (the cache namespace): replicas sharing a database share
    it; an embedded SQLite store is named by host and directory."""
    name = database_url or f"sqlite:{socket.gethostname()}:{data_dir.resolve()}"
    return hashlib.blake2b(name.encode(), digest_size=6).hexdigest()
