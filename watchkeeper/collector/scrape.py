"""The scrape manager: one asyncio loop per target, spread over the interval.

    ScrapeManager --(every few s)--> discover targets (static, file_sd) --> start/stop ScrapeLoops
    ScrapeLoop --(every interval, at its own offset)--> GET /metrics --> parse (exposition.py)
        --> target labels, metric_relabel_configs, sample_limit --> staleness --> append_samples

Each scrape writes ``up``, ``scrape_duration_seconds``, ``scrape_samples_scraped`` and
``scrape_samples_post_metric_relabeling``; a series that was in the previous scrape and is not in
this one gets a staleness marker, and a target that goes away (or fails) marks all its series
stale. The offset of a target within the interval comes from a hash of its labels and URL, so
scrapes of many targets are spread evenly, and stay at the same phase across restarts.

>>> manager = ScrapeManager(configs, state.require_ingester)   # doctest: +SKIP
>>> await manager.start(); ...; await manager.stop()           # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from watchkeeper.collector.exposition import Pairs, parse_exposition
from watchkeeper.collector.push import Ingester, SampleBatch, append_samples, encode_label_pairs
from watchkeeper.collector.relabel import Rule, compile_rules, relabel
from watchkeeper.collector.targets import FileDiscovery, ScrapeConfig, Target, build_targets, static_groups
from watchkeeper.errors import DecodeError, IngestError, WatchkeeperError
from watchkeeper.labels import Labels
from watchkeeper.tsdb.reader import STALE_NAN

log = logging.getLogger(__name__)

ACCEPT = ("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1")
_NOT_SCRAPED = "unknown"


def target_offset_seconds(target: Target, interval_seconds: float) -> float:
    """Where in the interval this target is scraped (stable for the same labels and URL)."""
    digest = hashlib.sha256(repr(target.key).encode()).digest()
    return (int.from_bytes(digest[:8], "big") / 2**64) * interval_seconds


@dataclass(slots=True)
class ScrapeResult:
    batch: SampleBatch
    scraped: int
    post_relabel: int


class SampleLimitExceeded(IngestError):
    pass


@dataclass(slots=True)
class TargetState:
    """Per-target memory across scrapes: series text -> final label bytes (None: dropped by
    relabelling), and the series of the last scrape. Only str and bytes: nothing for the garbage
    collector to traverse."""

    series: dict[str, bytes | None] = field(default_factory=dict)  # series text -> final label bytes
    previous: set[bytes] = field(default_factory=set)


def merge_target_labels(scraped: Pairs, target: Labels, honor_labels: bool) -> dict[str, str]:
    """Scraped labels with the target's: the target wins unless `honor_labels`; a scraped label it
    overrides is kept as ``exported_<name>``, as Prometheus does."""
    out = dict(scraped)
    for name, value in target:
        if name in out:
            if honor_labels:
                continue
            exported = "exported_" + name
            while exported in out:
                exported = "exported_" + exported
            out[exported] = out[name]
        out[name] = value
    return out


def process_scrape(
    text: str, *, openmetrics: bool, target: Target, cfg: ScrapeConfig, rules: tuple[Rule, ...],
    state: TargetState, timestamp_ms: int,
) -> ScrapeResult:
    """The samples of one scrape body (pure apart from `state`). Raises `DecodeError` or
    `SampleLimitExceeded`; `state.previous` is updated only on success."""
    if len(state.series) > 4 * max(len(state.previous), 1000):
        state.series.clear()
    exposition = parse_exposition(text, openmetrics=openmetrics, cache={}, known=state.series)
    batch = SampleBatch()
    current: set[bytes] = set()
    series = state.series
    honor_ts = cfg.honor_timestamps
    for s in exposition.samples:
        if s.key in series:
            key = series[s.key]
        else:
            merged = merge_target_labels(s.labels, target.labels, cfg.honor_labels)
            final = relabel(merged, rules) if rules else merged
            key = encode_label_pairs(final.items()) if final is not None and final.get("__name__") else None
            series[s.key] = key
        if key is None:
            continue
        if s.timestamp_ms is not None and honor_ts:
            batch.add_key(key, s.timestamp_ms, s.value)
        else:
            batch.add_key(key, timestamp_ms, s.value)
            current.add(key)
    if cfg.sample_limit and len(batch) > cfg.sample_limit:
        raise SampleLimitExceeded(f"sample limit exceeded: {len(batch)} samples, limit {cfg.sample_limit}")
    kept = len(batch)
    for gone in state.previous - current:
        batch.add_key(gone, timestamp_ms, STALE_NAN)
    state.previous = current
    return ScrapeResult(batch, len(exposition.samples), kept)


class ScrapeLoop:
    """Scrapes one target every interval until stopped."""

    def __init__(self, target: Target, cfg: ScrapeConfig, client: httpx.AsyncClient,
                 append: Callable[[SampleBatch], Any], *, max_body_bytes: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.target = target
        self.cfg = cfg
        self.client = client
        self.append = append
        self.max_body_bytes = max_body_bytes
        self.clock = clock
        self.rules = compile_rules(cfg.metric_relabel_configs)
        self.state = TargetState()
        self.health = _NOT_SCRAPED
        self.last_error = ""
        self.last_scrape: float | None = None
        self.last_duration = 0.0
        self.last_lag = 0.0
        self.scrapes = 0
        self.skipped_slots = 0  # slots passed over because the loop fell more than an interval behind
        self.task: asyncio.Task[None] | None = None
        self._meta_keys = {
            name: encode_label_pairs((*target.labels, ("__name__", name)))
            for name in ("up", "scrape_duration_seconds", "scrape_samples_scraped",
                         "scrape_samples_post_metric_relabeling")
        }

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"scrape {self.target.url}")

    async def _run(self) -> None:
        interval = self.cfg.interval_seconds
        loop = asyncio.get_running_loop()
        offset = target_offset_seconds(self.target, interval)
        # the next slot of this target's phase (aligned to the wall clock, like Prometheus)
        now = self.clock()
        wait = (offset - now % interval) % interval
        next_at = loop.time() + wait
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            self.last_lag = max(0.0, loop.time() - next_at)
            try:
                await self.scrape_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a scrape must never kill the loop
                log.exception("scrape failed unexpectedly", extra={"target": self.target.url})
            next_at += interval
            if next_at < loop.time():  # fell behind by more than an interval: skip, do not burst
                missed = int((loop.time() - next_at) // interval) + 1
                next_at += missed * interval
                self.skipped_slots += missed

    async def scrape_once(self) -> None:
        started = self.clock()
        ts_ms = int(started * 1000)
        perf = time.perf_counter()
        result: ScrapeResult | None = None
        error = ""
        try:
            text, openmetrics = await self._fetch()
            result = process_scrape(text, openmetrics=openmetrics, target=self.target, cfg=self.cfg,
                                    rules=self.rules, state=self.state, timestamp_ms=ts_ms)
        except (httpx.HTTPError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except (WatchkeeperError, UnicodeDecodeError) as exc:
            error = str(exc)
        duration = time.perf_counter() - perf
        batch = result.batch if result is not None else SampleBatch()
        if result is None:
            for gone in self.state.previous:
                batch.add_key(gone, ts_ms, STALE_NAN)
            self.state.previous = set()
        meta = self._meta_keys
        batch.add_key(meta["up"], ts_ms, 1.0 if result is not None else 0.0)
        batch.add_key(meta["scrape_duration_seconds"], ts_ms, duration)
        batch.add_key(meta["scrape_samples_scraped"], ts_ms, float(result.scraped if result else 0))
        batch.add_key(meta["scrape_samples_post_metric_relabeling"], ts_ms,
                      float(result.post_relabel if result else 0))
        try:
            await self.append(batch)
        except WatchkeeperError as exc:
            error = error or f"append failed: {exc}"
        self.health = "down" if error else "up"
        self.last_error = error
        self.last_scrape = started
        self.last_duration = duration
        self.scrapes += 1

    async def _fetch(self) -> tuple[str, bool]:
        headers = {"Accept": ACCEPT,
                   "X-Prometheus-Scrape-Timeout-Seconds": f"{self.cfg.timeout_seconds:g}"}
        auth = self.cfg.auth_header()
        if auth is not None:
            headers["Authorization"] = auth
        async with asyncio.timeout(self.cfg.timeout_seconds):
            async with self.client.stream("GET", self.target.url, headers=headers) as response:
                if response.status_code != 200:
                    raise DecodeError(f"server returned HTTP status {response.status_code}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        raise DecodeError(f"body size limit exceeded ({self.max_body_bytes} bytes)")
                    chunks.append(chunk)
                content_type = response.headers.get("content-type", "")
        return b"".join(chunks).decode("utf-8"), content_type.startswith("application/openmetrics-text")

    async def stop(self, *, mark_stale: bool) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if mark_stale:
            ts_ms = int(self.clock() * 1000)
            batch = SampleBatch()
            for key in (*self.state.previous, *self._meta_keys.values()):
                batch.add_key(key, ts_ms, STALE_NAN)
            self.state.previous = set()
            try:
                await self.append(batch)
            except WatchkeeperError as exc:
                log.warning("could not write staleness markers", extra={"target": self.target.url,
                                                                        "error": str(exc)})

    def api(self, pool: str) -> dict[str, Any]:
        return {
            "discoveredLabels": dict(self.target.discovered),
            "labels": dict(self.target.labels),
            "scrapePool": pool,
            "scrapeUrl": self.target.url,
            "globalUrl": self.target.url,
            "lastError": self.last_error,
            "lastScrape": _rfc3339(self.last_scrape),
            "lastScrapeDuration": round(self.last_duration, 6),
            "health": self.health,
            "scrapeInterval": self.cfg.scrape_interval,
            "scrapeTimeout": self.cfg.scrape_timeout or f"{self.cfg.timeout_seconds:g}s",
        }


def _rfc3339(t: float | None) -> str:
    if t is None:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class ScrapePool:
    cfg: ScrapeConfig
    files: FileDiscovery
    client: httpx.AsyncClient
    loops: dict[tuple[Any, ...], ScrapeLoop] = field(default_factory=dict)
    dropped: list[dict[str, str]] = field(default_factory=list)


class ScrapeManager:
    """All scrape pools. `start()` in the app's lifespan, `stop()` at shutdown; `targets_api`
    answers ``/api/v1/targets``. Discovery runs every `discovery_interval_seconds` (file_sd
    changes are picked up within that time)."""

    def __init__(self, configs: list[ScrapeConfig], get_ingest: Callable[[], Ingester], *,
                 discovery_interval_seconds: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        names = [c.job_name for c in configs]
        if len(set(names)) != len(names):
            raise ValueError(f"scrape_configs: job_name must be unique, got {names}")
        self.configs = configs
        self.get_ingest = get_ingest
        self.discovery_interval_seconds = discovery_interval_seconds
        self.clock = clock
        self.pools: dict[str, ScrapePool] = {}
        self._task: asyncio.Task[None] | None = None

    async def _append(self, batch: SampleBatch) -> None:
        ingester = self.get_ingest()
        report = await asyncio.to_thread(lambda: append_samples(ingester, batch))
        if report.rejected:
            log.debug("scrape samples rejected", extra={"reasons": report.rejected})

    async def start(self) -> None:
        for cfg in self.configs:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=1000)
            client = httpx.AsyncClient(verify=not cfg.tls_insecure_skip_verify, follow_redirects=True,
                                       limits=limits, timeout=cfg.timeout_seconds)
            self.pools[cfg.job_name] = ScrapePool(cfg, FileDiscovery(cfg.file_sd_configs), client)
        await self.sync()
        self._task = asyncio.create_task(self._discover_forever(), name="scrape discovery")

    async def _discover_forever(self) -> None:
        while True:
            await asyncio.sleep(self.discovery_interval_seconds)
            try:
                await self.sync()
            except Exception:
                log.exception("target discovery failed")

    async def sync(self) -> None:
        """Discover targets now: start loops for new targets, stop (and mark stale) removed ones."""
        for pool in self.pools.values():
            try:
                max_body = self.get_ingest().limits.max_body_bytes
            except WatchkeeperError:
                max_body = 32 << 20
            groups = static_groups(pool.cfg) + pool.files.groups()
            active, pool.dropped = build_targets(pool.cfg, groups)
            wanted = {t.key: t for t in active}
            for key in [k for k in pool.loops if k not in wanted]:
                await pool.loops.pop(key).stop(mark_stale=True)
            for key, target in wanted.items():
                if key not in pool.loops:
                    loop = ScrapeLoop(target, pool.cfg, pool.client, self._append, max_body_bytes=max_body,
                                      clock=self.clock)
                    pool.loops[key] = loop
                    loop.start()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for pool in self.pools.values():
            for loop in pool.loops.values():
                await loop.stop(mark_stale=False)
            pool.loops.clear()
            await pool.client.aclose()

    def targets_api(self, *, state: str = "any", scrape_pool: str | None = None) -> dict[str, Any]:
        """``/api/v1/targets`` data in Prometheus' shape."""
        active: list[dict[str, Any]] = []
        dropped: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        for name, pool in self.pools.items():
            if scrape_pool is not None and name != scrape_pool:
                continue
            counts[name] = len(pool.dropped)
            if state in ("any", "active"):
                active.extend(loop.api(name) for loop in pool.loops.values())
            if state in ("any", "dropped"):
                dropped.extend({"discoveredLabels": d, "scrapePool": name} for d in pool.dropped)
        return {"activeTargets": active, "droppedTargets": dropped, "droppedTargetCounts": counts}

    def loops(self) -> list[ScrapeLoop]:
        """Every running scrape loop (their `scrapes`, `skipped_slots` and `last_lag`: the bench)."""
        return [loop for pool in self.pools.values() for loop in pool.loops.values()]
