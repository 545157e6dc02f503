"""``GET /api/v1/status/tsdb``: Prometheus' cardinality and head statistics, plus watchkeeper's own
storage figures under ``data.watchkeeper`` (samples appended, bytes on disk, bytes per sample, the
select cache's size and hits).

>>> app.include_router(status_router(lambda: storage))  # doctest: +SKIP
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import anyio.to_thread
from fastapi import APIRouter, Query

from watchkeeper.labels import METRIC_NAME, Labels, Matcher, MatchOp

_ALL_SERIES = (Matcher(MatchOp.REGEX, METRIC_NAME, ".+"),)
_ALL_TIME = (-(2**62), 2**62)
_MAX_INT64 = 2**63 - 1


class StatsStore(Protocol):
    def stats(self) -> Any: ...

    def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> Iterable[Labels]: ...


def _top(counter: Counter[str], limit: int) -> list[dict[str, Any]]:
    return [
        {"name": k, "value": v}
        for k, v in heapq.nlargest(limit, counter.items(), key=lambda kv: (kv[1], kv[0]))
    ]


def tsdb_status(store: StatsStore, limit: int = 10) -> dict[str, Any]:
    """The ``data`` object of the answer, computed from the store's series and stats."""
    stats = store.stats()
    by_metric: Counter[str] = Counter()
    by_pair: Counter[tuple[str, str]] = Counter()
    for labels in store.series(list(_ALL_SERIES), *_ALL_TIME):
        by_pair.update(labels)
        for name, value in labels:
            if name == METRIC_NAME:
                by_metric[value] += 1
                break
    values_by_name: Counter[str] = Counter()
    bytes_by_name: Counter[str] = Counter()
    for name, value in by_pair:
        values_by_name[name] += 1
        bytes_by_name[name] += len(value.encode())
    pairs: Counter[str] = Counter({f"{n}={v}": c for (n, v), c in by_pair.items()})
    return {
        "headStats": {
            "numSeries": int(stats.num_series),
            "numLabelPairs": len(by_pair),
            "chunkCount": int(stats.head_chunks),
            # Prometheus' values for an empty head
            "minTime": _MAX_INT64 if stats.min_time is None else int(stats.min_time),
            "maxTime": -_MAX_INT64 - 1 if stats.max_time is None else int(stats.max_time),
        },
        "seriesCountByMetricName": _top(by_metric, limit),
        "labelValueCountByLabelName": _top(values_by_name, limit),
        "memoryInBytesByLabelName": _top(bytes_by_name, limit),
        "seriesCountByLabelValuePair": _top(pairs, limit),
        "watchkeeper": {
            "headSamples": int(stats.head_samples),
            "samplesAppended": int(stats.samples_appended_total),
            "chunksWritten": int(stats.chunks_written_total),
            "bytesOnDisk": int(stats.bytes_on_disk),
            "bytesPerSample": float(stats.bytes_per_sample),
            "selectCache": {  # decoded persisted samples kept between selects (tsdb.selectcache)
                "bytes": int(stats.select_cache.size_bytes),
                "maxBytes": int(stats.select_cache.max_bytes),
                "series": int(stats.select_cache.entries),
                "hits": int(stats.select_cache.hits_total),
                "misses": int(stats.select_cache.misses_total),
            },
        },
    }


def status_router(get_storage: Callable[[], StatsStore]) -> APIRouter:
    router = APIRouter()

    @router.get("/api/v1/status/tsdb")
    async def status_tsdb(limit: int = Query(10, ge=1, le=10_000)) -> dict[str, Any]:
        store = get_storage()
        data = await anyio.to_thread.run_sync(tsdb_status, store, limit)
        return {"status": "success", "data": data}

    return router
