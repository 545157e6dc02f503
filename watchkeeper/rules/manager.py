"""The rule manager: loaded groups, their runtime state, one evaluation per tick, reloads.

The scheduler calls :meth:`RuleManager.tick` for a group at its interval. ``tick`` reads the clock,
aligns the evaluation timestamp as Prometheus does (``Group.EvalTimestamp``: a per-group offset
so that groups do not all run at once), counts missed iterations, then :meth:`evaluate`: the
rules run (:func:`~watchkeeper.rules.evaluation.evaluate_group`), output goes to the store,
alert state and history to the database, due alerts to the sink.

>>> manager = RuleManager(storage=storage, engine=engine, config=RulesConfig(rule_files=["rules/*.yml"]),
...                       alert_store=AlertStore(db), sink=DispatcherSink(dispatcher))   # doctest: +SKIP
>>> manager.start()            # load files, restore alert state               # doctest: +SKIP
>>> manager.reload()           # SIGHUP / POST /-/reload: state kept             # doctest: +SKIP

**Several replicas.** ``is_leader`` (the alerting leader lease) says whether this replica evaluates
the alerting rules. A follower's ticks evaluate only the recording rules, into its own store (each
replica's store holds what it ingested and recorded: a query on any replica sees recorded series),
and re-read the group's alert state from the database, so its API shows what the leader decided;
they write no ``ALERTS``, no alert state, and send nothing. The first tick of a group after this
replica became the leader (or started as the leader) re-reads that state once more (active
alerts, pending since, firing since, keep-firing since) and evaluates on from it: a firing alert
stays firing, a pending one keeps its ``for`` clock. Every restored instance is handed to the
dispatcher again at that first evaluation (``last_sent`` cleared); the shared notification log
decides whether a receiver hears about it, so a takeover neither repeats a notification nor loses
one the old leader had not flushed yet.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from watchkeeper.errors import StorageError
from watchkeeper.labels import Labels
from watchkeeper.rules.evaluation import (
    EvalOptions,
    GroupResult,
    GroupRuntime,
    QueryFunc,
    alerts_for_state_series,
    alerts_series,
    engine_query,
    evaluate_group,
)
from watchkeeper.rules.model import (
    AlertingRule,
    RecordingRule,
    RuleGroup,
    RulesConfig,
    load_rule_files,
    rule_key,
)
from watchkeeper.rules.notify import AlertSink, due_alerts
from watchkeeper.rules.persistence import AlertStore
from watchkeeper.rules.state import AlertState
from watchkeeper.tsdb.reader import STALE_NAN

log = logging.getLogger("watchkeeper.rules")


class StoreWriter:
    """:class:`~watchkeeper.rules.evaluation.SampleWriter` over ``tsdb.Storage``.

    Series refs are cached by labels (rules write the same series every evaluation); when the
    store no longer knows a ref (retention removed the series) the cache is dropped and the
    write retried once.
    """

    def __init__(self, storage: Any, *, max_cached: int = 1_000_000) -> None:
        self.storage = storage
        self.max_cached = max_cached
        self._refs: dict[Labels, int] = {}
        self._lock = threading.Lock()

    def _lookup(self, labels: list[Labels]) -> np.ndarray[Any, np.dtype[np.int64]]:
        with self._lock:
            cached = self._refs
            missing = [lb for lb in labels if lb not in cached]
        if missing:
            refs = self.storage.series_refs(missing)
            with self._lock:
                if len(self._refs) + len(missing) > self.max_cached:
                    self._refs = {}
                self._refs.update(zip(missing, (int(r) for r in refs), strict=True))
                cached = self._refs
            fresh = dict(zip(missing, (int(r) for r in refs), strict=True))
            return np.fromiter((fresh[lb] if lb in fresh else cached[lb] for lb in labels), dtype=np.int64,
                               count=len(labels))
        return np.fromiter((cached[lb] for lb in labels), dtype=np.int64, count=len(labels))

    def write(self, samples: Sequence[tuple[Labels, float]], ts_ms: int) -> None:
        if not samples:
            return
        labels = [lb for lb, _ in samples]
        ts = np.full(len(samples), ts_ms, dtype=np.int64)
        values = np.fromiter((v for _, v in samples), dtype=np.float64, count=len(samples))
        result = self.storage.append(self._lookup(labels), ts, values)
        if getattr(result, "rejected", {}).get("unknown_series"):
            with self._lock:
                self._refs = {}
            self.storage.append(self._lookup(labels), ts, values)


def _set_alerts(group: RuleGroup, runtime: GroupRuntime,
                saved: Mapping[str, Mapping[Labels, AlertState]], *, series: bool) -> None:
    """Put persisted instances of the group's alerting rules into ``runtime``; with ``series``, add
    the ALERTS series they imply to the written ones (whoever evaluated before wrote them: they get
    staleness markers when the alert goes away)."""
    for rule in group.rules:
        if isinstance(rule, AlertingRule) and rule_key(rule) in saved:
            instances = dict(saved[rule_key(rule)])
            runtime.alerts[rule_key(rule)] = instances
            if series:
                runtime.series[rule_key(rule)] = runtime.series.get(rule_key(rule), set()) | {
                    s for a in instances.values() if a.is_active
                    for s in (alerts_series(a), alerts_for_state_series(a))
                }


def eval_timestamp_ms(group_key: str, interval_ms: int, now_ms: int) -> int:
    """The latest aligned evaluation time <= ``now_ms`` (stable per-group offset in the interval)."""
    offset = zlib.crc32(group_key.encode()) % interval_ms
    adjusted = now_ms - offset
    return adjusted - adjusted % interval_ms + offset


@dataclass(slots=True)
class _Group:
    group: RuleGroup
    runtime: GroupRuntime
    lock: threading.Lock
    following: bool = False
    """Not evaluated by this replica since its state was last read: re-read before evaluating."""
    recording: RuleGroup | None = None
    """The group's recording rules alone (what a follower evaluates), None if it has none."""


class RuleManager:
    """Owns the groups and their state. Thread-safe: each group evaluates under its own lock."""

    def __init__(
        self,
        *,
        storage: Any,
        engine: Any,
        config: RulesConfig | None = None,
        alert_store: AlertStore | None = None,
        sink: AlertSink | None = None,
        base_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
        query: QueryFunc | None = None,
        is_leader: Callable[[], bool] | None = None,
    ) -> None:
        self.config = config or RulesConfig()
        self.is_leader: Callable[[], bool] = is_leader or (lambda: True)
        self.writer = StoreWriter(storage)
        self.query = query or engine_query(engine)
        self.alert_store = alert_store
        self.sink = sink
        self.base_dir = base_dir
        self.clock = clock
        self._groups: dict[str, _Group] = {}
        self._lock = threading.Lock()
        self._restored: dict[str, dict[str, dict[Labels, Any]]] = {}
        self.on_change: Callable[[list[RuleGroup]], None] | None = None  # the scheduler re-plans jobs
        self.last_reload_ok = True
        self.last_reload_error = ""
        self._next_prune_ms = 0

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def options(self) -> EvalOptions:
        return EvalOptions(external_labels=dict(self.config.external_labels),
                           external_url=self.config.external_url,
                           default_query_offset_ms=self.config.query_offset_ms())

    def start(self) -> None:
        """Restore persisted alert state, then load the rule files."""
        if self.alert_store is not None:
            self._restored = self.alert_store.load()
        if self.reload() and self.alert_store is not None and self.is_leader():
            # persisted groups that no longer exist in the rule files: forget them (the leader's
            # job: a follower may run older or newer rule files)
            for key in list(self._restored):
                self.alert_store.delete_group(key)
                del self._restored[key]

    def reload(self) -> bool:
        """Re-read the rule files; on error keep the current groups. State of kept rules survives."""
        try:
            groups = load_rule_files(self.config.rule_files, base_dir=self.base_dir,
                                     default_interval_ms=self.config.evaluation_interval_ms())
        except Exception as exc:
            self.last_reload_ok, self.last_reload_error = False, str(exc)
            log.error("rule files not reloaded: %s", exc)
            return False
        self.update(groups)
        self.last_reload_ok, self.last_reload_error = True, ""
        return True

    def update(self, groups: Sequence[RuleGroup]) -> None:
        """Replace the groups. Alert instances and written series of rules that stay are kept;
        series of rules that went away get staleness markers; their alert state is deleted."""
        now_ms = round(self.clock() * 1000)  # round: 12.345 s is 12344.999… ms as a float
        leading = self.is_leader()
        with self._lock:
            old = self._groups
            new: dict[str, _Group] = {}
            for g in groups:
                prev = old.get(g.key)
                # a group new to this replica (also at start) re-reads its persisted state before its
                # first evaluation, as after a takeover: the dispatcher is handed its alerts at once
                following = prev.following if prev is not None else True
                recording = tuple(r for r in g.rules if isinstance(r, RecordingRule))
                lock = prev.lock if prev is not None else threading.Lock()
                with lock:  # a running evaluation of this group finishes first
                    runtime = prev.runtime if prev is not None else self._restore(g, leading=leading)
                    keys = {rule_key(r) for r in g.rules}
                    stale: list[Labels] = []
                    for k in [k for k in runtime.series if k not in keys]:
                        stale += runtime.series.pop(k)
                    for k in [k for k in runtime.alerts if k not in keys]:
                        runtime.alerts.pop(k)
                    runtime.health = {k: v for k, v in runtime.health.items() if k in keys}
                    self._write_stale(stale, now_ms)
                new[g.key] = _Group(g, runtime, lock, following,
                                    replace(g, rules=recording) if recording else None)
            for key, gone in old.items():
                if key not in new:
                    with gone.lock:
                        self._write_stale([s for ss in gone.runtime.series.values() for s in ss], now_ms)
                    if self.alert_store is not None and leading:
                        self.alert_store.delete_group(key)
            self._groups = new
        if self.on_change is not None:
            self.on_change(list(groups))

    def _restore(self, group: RuleGroup, *, leading: bool) -> GroupRuntime:
        runtime = GroupRuntime()
        saved = self._restored.pop(group.key, {})
        _set_alerts(group, runtime, saved, series=leading)  # a follower writes no ALERTS
        if saved:
            n = sum(len(v) for v in runtime.alerts.values())
            log.info("restored %d alert instances of group %s", n, group.name)
        return runtime

    def _write_stale(self, series: Sequence[Labels], ts_ms: int) -> None:
        if series:
            try:
                self.writer.write([(s, STALE_NAN) for s in sorted(series)], ts_ms)
            except Exception:
                log.exception("could not write staleness markers")

    # --- evaluation ------------------------------------------------------------------------------

    @property
    def groups(self) -> list[RuleGroup]:
        return [g.group for g in self._groups.values()]

    def runtime(self, key: str) -> GroupRuntime:
        return self._groups[key].runtime

    def tick(self, key: str) -> GroupResult | None:
        """One scheduled run of a group: aligned timestamp, missed-iteration count, evaluation.

        A follower evaluates the recording rules only and re-reads the alert state (see the module doc).
        """
        entry = self._groups.get(key)
        if entry is None:
            return None
        leading = self.is_leader()
        if leading and entry.following and not self._take_over(entry):
            return None
        now_ms = round(self.clock() * 1000)  # round: 12.345 s is 12344.999… ms as a float
        ts = eval_timestamp_ms(key, entry.group.interval_ms, now_ms)
        last = entry.runtime.last_evaluation_ms
        if last is not None:
            if ts <= last:
                return None  # already evaluated this slot (scheduler jitter)
            missed = (ts - last) // entry.group.interval_ms - 1
            if missed > 0:
                entry.runtime.iterations_missed += missed
                log.warning("group %s missed %d iterations", entry.group.name, missed)
        if not leading:
            return self._follow(entry, ts)
        self._maybe_prune(now_ms)
        return self.evaluate(key, ts, now_ms=now_ms)

    def _read_state(self, entry: _Group) -> dict[str, dict[Labels, AlertState]] | None:
        if self.alert_store is None:  # not shared with anyone: what is in memory is the state
            return None
        try:
            return self.alert_store.load_group(entry.group.key)
        except StorageError:
            log.exception("alert state of group %s not read", entry.group.name)
            return None

    def _follow(self, entry: _Group, ts_ms: int) -> GroupResult:
        """A follower's tick: its recording rules, and the leader's view of the group's alerts."""
        with entry.lock:
            entry.following = True
            saved = self._read_state(entry)
            if saved is not None:
                entry.runtime.alerts = {}
                _set_alerts(entry.group, entry.runtime, saved, series=False)
            if entry.recording is None:
                return GroupResult()
            return evaluate_group(entry.recording, entry.runtime, ts_ms=ts_ms, query=self.query,
                                  writer=self.writer, options=self.options)

    def _take_over(self, entry: _Group) -> bool:
        """This replica became the leader: continue from the persisted alert state. False (and no
        evaluation this tick) when the database cannot be read: starting from a blank state would
        notify again what is already firing and lose what is pending."""
        with entry.lock:
            saved = self._read_state(entry)
            if saved is None:
                entry.following = self.alert_store is not None
                return not entry.following
            runtime = entry.runtime
            runtime.alerts = {}
            # handed to the dispatcher again at the next evaluation: the notification log decides
            _set_alerts(entry.group, runtime, {
                rk: {lb: replace(a, last_sent_ms=None) for lb, a in by_labels.items()}
                for rk, by_labels in saved.items()
            }, series=True)
            runtime.last_evaluation_ms = None  # the slots evaluated by the old leader are not missed
            entry.following = False
        n = sum(len(v) for v in runtime.alerts.values())
        if n:
            log.info("group %s continues from %d persisted alert instances", entry.group.name, n)
        self._forget_removed_groups()
        return True

    def _forget_removed_groups(self) -> None:
        if self.alert_store is None:
            return
        try:
            for key in self.alert_store.group_keys() - self._groups.keys():
                self.alert_store.delete_group(key)
        except StorageError:
            log.exception("alert state of removed groups not deleted")

    def _maybe_prune(self, now_ms: int) -> None:
        if self.alert_store is None or now_ms < self._next_prune_ms:
            return
        self._next_prune_ms = now_ms + 3_600_000
        try:
            deleted = self.alert_store.prune_history(before_ms=now_ms - self.config.history_retention_ms())
        except StorageError:
            log.exception("alert history not pruned")
            return
        if deleted:
            log.info("pruned %d alert history entries", deleted)

    def evaluate(self, key: str, ts_ms: int, *, now_ms: int | None = None) -> GroupResult:
        """Evaluate a group at ``ts_ms`` and persist/send the outcome (tests call this directly)."""
        entry = self._groups.get(key)
        if entry is None:  # removed by a reload since the job fired
            return GroupResult()
        now = ts_ms if now_ms is None else now_ms
        with entry.lock:
            result = evaluate_group(entry.group, entry.runtime, ts_ms=ts_ms, query=self.query,
                                    writer=self.writer, options=self.options)
            alerts = due_alerts(entry.group, entry.runtime, now_ms=ts_ms,
                                resend_delay_ms=self.config.resend_delay_ms(),
                                external_labels=self.config.external_labels,
                                external_url=self.config.external_url)
            if self.alert_store is not None:
                try:
                    self.alert_store.save_group(
                        key, entry.runtime.alerts, [(r.name, t) for r, t in result.transitions])
                except StorageError:
                    log.exception("alert state of group %s not saved", entry.group.name)
        if self.sink is not None and alerts:
            try:
                self.sink.send(alerts, now)
            except Exception:
                log.exception("sending %d alerts failed", len(alerts))
        return result
