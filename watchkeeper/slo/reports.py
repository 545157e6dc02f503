"""Reports for people who do not write PromQL: SLO, uptime and business-metric reports.

Each report is built once (:func:`build_report`: a :class:`Report` of rows and plain sentences)
and rendered three ways: HTML (the router's template), CSV (:func:`to_csv`) and a chat digest
(:func:`digest_text`, posted by :func:`post_digest`). Every report says how it counts.

>>> report = build_report(cfg, store=storage, engine=engine, specs=specs, slo=slo_config,
...                       now_ms=now)                                            # doctest: +SKIP
>>> print(digest_text(report))                                                   # doctest: +SKIP
SLO report (rolling 30d):
Checkout availability met 99.95% against 99.9%; 48% of budget left.

:func:`schedule_reports` adds one APScheduler cron job per report with a ``schedule``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from watchkeeper.alerting.config import ReceiverConfig
from watchkeeper.alerting.delivery import DeliveryResult, send_http
from watchkeeper.alerting.receivers.base import HttpRequest, truncate
from watchkeeper.slo.budget import DAY_MS, Window
from watchkeeper.slo.config import ReportConfig, SloConfig
from watchkeeper.slo.spec import SloSpec
from watchkeeper.slo.uptime import incidents as incidents_of
from watchkeeper.slo.uptime import summarize
from watchkeeper.slo.views import monitor_view, objective_text, slo_view

log = logging.getLogger("watchkeeper.slo.reports")

SLO_METHOD = (
    "Counting: an event is bad when the SLO's error query counts it; the SLI is good events / all "
    "events over the window (a ratio of sums, so busy hours weigh more than quiet ones). The budget "
    "is (100% - objective) of the events; 'budget left' is the share not yet spent."
)
UPTIME_METHOD = (
    "Counting: uptime is time-weighted: each probe result stands for one interval. Up and degraded "
    "(answered, but slower than the threshold) count as up, failed probes as down. Time when "
    "watchkeeper was not probing is unknown and left out, as is planned maintenance; both are "
    "listed."
)
BUSINESS_METHOD = (
    "Each KPI is its PromQL query evaluated at the end of this period and of the previous one; "
    "change = (this - previous) / previous."
)


@dataclass(frozen=True, slots=True)
class Report:
    name: str
    kind: str
    title: str
    period: str
    start_ms: int
    end_ms: int
    columns: list[str]
    rows: list[list[Any]]
    sentences: list[str]
    method: str
    notes: list[str] = field(default_factory=list)
    link: str = ""


def _pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}%"


def _when(ms: int | None, tz: str) -> str:
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z")


def _dur(ms: int) -> str:
    minutes = ms // 60_000
    h, m = divmod(minutes, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m"


def slo_report(
    cfg: ReportConfig, *, store: Any, specs: Sequence[SloSpec], now_ms: int, base_url: str
) -> Report:
    window = cfg.window_()
    chosen = [s for s in specs if not cfg.slos or s.slo_id in cfg.slos or s.name in cfg.slos]
    views = sorted((slo_view(store, s, window, now_ms=now_ms) for s in chosen), key=lambda v: v.risk)
    start, end = window.bounds(now_ms)
    rows, sentences = [], []
    for v in views:
        b = v.budget
        name = (
            f"{v.spec.service.capitalize()} {v.spec.name}"
            if v.spec.name not in v.spec.service
            else v.spec.service
        )
        exhaust = _when(b.exhaustion_ms, cfg.timezone)
        rows.append(
            [
                v.spec.slo_id,
                float(v.spec.objective),
                round(b.sli_percent, 4),
                "yes" if b.met else "no",
                round(b.remaining * 100, 1),
                round(b.burn_rate_window, 3),
                None if b.burn_rate_now is None else round(b.burn_rate_now, 3),
                exhaust,
                round(b.total) if v.spec.has_events else None,  # a raw ratio SLI has no events
                round(b.errors) if v.spec.has_events else None,
            ]
        )
        verb = "met" if b.met else "missed"
        if b.total <= 0:
            sentences.append(f"{name}: no traffic in the period.")
            continue
        text = (
            f"{name} {verb} {b.sli_percent:.2f}% against {objective_text(v.spec.objective)}; "
            f"{max(b.remaining, 0) * 100:.0f}% of budget left"
        )
        if b.remaining < 0:
            text += f" (overspent by {-b.remaining * 100:.0f}%)"
        elif exhaust:
            text += f", exhausted by {exhaust} at the current burn rate"
        if v.incidents:
            n, used = len(v.incidents), sum(i.budget_share for i in v.incidents)
            text += f"; {n} incident{'s' if n > 1 else ''} used {used * 100:.0f}% of it"
        sentences.append(text + ".")
    return Report(
        cfg.name,
        "slo",
        cfg.title or "SLO report",
        window.label,
        start,
        min(end, now_ms),
        [
            "slo",
            "objective_percent",
            "sli_percent",
            "met",
            "budget_left_percent",
            "burn_rate_period",
            "burn_rate_1h",
            "budget_exhausted_at",
            "events",
            "bad_events",
        ],
        rows,
        sentences,
        SLO_METHOD,
        link=f"{base_url}/slo",
    )


def uptime_report(cfg: ReportConfig, *, store: Any, slo: SloConfig, now_ms: int, base_url: str) -> Report:
    window = cfg.window_()
    start, end = window.bounds(now_ms)
    end = min(end, now_ms)
    days = max(1, -(-(end - start) // DAY_MS))
    rows, sentences, notes = [], [], []
    for probe in slo.probes:
        if cfg.monitors and probe.name not in cfg.monitors:
            continue
        view = monitor_view(store, probe, maintenance=slo.maintenance, now_ms=end, days=days)
        segs = [s for s in view.timeline if s.end_ms > start]
        summary = summarize(segs)
        d = summary.durations_ms
        incs = incidents_of(segs, end_ms=end)
        rows.append(
            [
                probe.name,
                None if summary.uptime is None else round(summary.uptime * 100, 4),
                _dur(d["down"]),
                _dur(d["degraded"]),
                _dur(d["unknown"]),
                _dur(d["maintenance"]),
                len(incs),
            ]
        )
        if summary.uptime is None:
            sentences.append(f"{probe.display_name}: no probe results in the period.")
            continue
        text = f"{probe.display_name} was up {_pct(summary.uptime * 100, 3)} of the observed time"
        extra = []
        if incs:
            extra.append(f"{len(incs)} outage{'s' if len(incs) > 1 else ''}, {_dur(d['down'])} down")
        if d["unknown"]:
            extra.append(f"{_dur(d['unknown'])} not observed")
        if d["maintenance"]:
            extra.append(f"{_dur(d['maintenance'])} maintenance excluded")
        sentences.append(text + (f" ({'; '.join(extra)})" if extra else "") + ".")
        for inc in incs:
            notes.append(
                f"{probe.display_name}: down from {_when(inc.start_ms, cfg.timezone)} "
                f"for {_dur(inc.duration_ms or end - inc.start_ms)}: {inc.cause}"
            )
    return Report(
        cfg.name,
        "uptime",
        cfg.title or "Uptime report",
        window.label,
        start,
        end,
        ["monitor", "uptime_percent", "down", "degraded", "unknown", "maintenance", "incidents"],
        rows,
        sentences,
        UPTIME_METHOD,
        notes,
        link=f"{base_url}/uptime",
    )


def _previous_bounds(window: Window, now_ms: int) -> tuple[int, int, int]:
    """(end of this period, end of the previous one, start of this one)."""
    start, end = window.bounds(now_ms)
    if window.kind == "rolling":
        return now_ms, now_ms - (end - start), start
    prev_start, _ = window.bounds(start - 1)
    return min(end, now_ms), prev_start + min(end, now_ms) - start, start


def business_report(cfg: ReportConfig, *, engine: Any, now_ms: int, base_url: str) -> Report:
    window = cfg.window_()
    this_end, prev_end, start = _previous_bounds(window, now_ms)
    rows: list[list[Any]] = []
    sentences: list[str] = []
    movers: list[tuple[float, str]] = []
    for kpi in cfg.kpis:
        now_v, prev_v = (
            _kpi_values(engine, kpi.query, this_end, kpi.breakdown_by),
            _kpi_values(engine, kpi.query, prev_end, kpi.breakdown_by),
        )
        total_now, total_prev = sum(now_v.values()), sum(prev_v.values())
        change = _change(total_now, total_prev)
        rows.append([kpi.name, "", round(total_now, 4), round(total_prev, 4), change])
        sentences.append(
            f"{kpi.name}: {total_now:,.4g}{kpi.unit} "
            + (f"({change:+.1f}% vs the previous period)." if change is not None else "(new).")
        )
        if kpi.breakdown_by:
            for key in sorted(set(now_v) | set(prev_v)):
                c = _change(now_v.get(key, 0.0), prev_v.get(key, 0.0))
                rows.append([kpi.name, key, round(now_v.get(key, 0.0), 4), round(prev_v.get(key, 0.0), 4), c])
                if c is not None:
                    movers.append((c, f"{kpi.name} {kpi.breakdown_by}={key}"))
    movers.sort(key=lambda m: -abs(m[0]))
    notes = [f"Top mover: {name} {c:+.1f}%" for c, name in movers[:3]]
    return Report(
        cfg.name,
        "business",
        cfg.title or "Business report",
        window.label,
        start,
        this_end,
        ["kpi", "breakdown", "this_period", "previous_period", "change_percent"],
        rows,
        sentences,
        BUSINESS_METHOD,
        notes,
        link=f"{base_url}/reports/{cfg.name}",
    )


def _kpi_values(engine: Any, query: str, at_ms: int, by: str | None) -> dict[str, float]:
    result = engine.instant(query, at_ms)
    out: dict[str, float] = {}
    for s in result.series:
        key = dict(s.labels).get(by, "") if by else ""
        v = float(s.values[-1]) if len(s.values) else 0.0
        if v == v:  # NaN out
            out[key] = out.get(key, 0.0) + v
    return out


def _change(now: float, prev: float) -> float | None:
    return None if prev == 0 else round((now - prev) / abs(prev) * 100, 2)


def build_report(
    cfg: ReportConfig, *, store: Any, engine: Any, specs: Sequence[SloSpec], slo: SloConfig, now_ms: int
) -> Report:
    base = slo.external_url.rstrip("/")
    window = cfg.window_()
    if cfg.period == "previous" and window.kind != "rolling":
        now_ms = window.bounds(now_ms)[0] - 1  # the last instant of the previous period
    if cfg.kind == "slo":
        return slo_report(cfg, store=store, specs=specs, now_ms=now_ms, base_url=base)
    if cfg.kind == "uptime":
        return uptime_report(cfg, store=store, slo=slo, now_ms=now_ms, base_url=base)
    return business_report(cfg, engine=engine, now_ms=now_ms, base_url=base)


def to_csv(report: Report) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(report.columns)
    for row in report.rows:
        writer.writerow(["" if v is None else v for v in row])
    return buf.getvalue()


def digest_text(report: Report) -> str:
    """A short plain-language summary (and the link) for chat."""
    lines = [f"{report.title} ({report.period}):", *report.sentences[:10]]
    if len(report.sentences) > 10:
        lines.append(f"…and {len(report.sentences) - 10} more")
    lines += report.notes[:3]
    if report.link:
        lines.append(f"Details: {report.link}")
    return "\n".join(lines)


def digest_requests(receiver: ReceiverConfig, report: Report, text: str) -> list[HttpRequest]:
    """The chat payload of ``text`` for every HTTP target of ``receiver`` (email is not supported)."""
    out: list[HttpRequest] = []
    for c in receiver.slack_configs:
        payload: dict[str, Any] = {
            "text": truncate(text, 4000),
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": truncate(report.title, 150)}},
                {"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, 3000)}},
            ],
        }
        if c.channel:
            payload["channel"] = c.channel
        out.append(HttpRequest.json(c.api_url, payload))
    for m in receiver.mattermost_configs:
        out.append(HttpRequest.json(m.webhook_url, {"text": truncate(text, 16000)}))
    for d in receiver.discord_configs:
        out.append(HttpRequest.json(d.webhook_url, {"content": truncate(text, 2000)}))
    for t in receiver.msteamsv2_configs:
        card = {
            "type": "AdaptiveCard",
            "version": "1.2",
            "body": [{"type": "TextBlock", "text": line, "wrap": True} for line in text.split("\n")],
        }
        out.append(
            HttpRequest.json(
                t.webhook_url,
                {
                    "type": "message",
                    "attachments": [
                        {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
                    ],
                },
            )
        )
    for g in receiver.telegram_configs:
        out.append(
            HttpRequest.json(
                f"{g.api_url}/bot{g.bot_token}/sendMessage",
                {"chat_id": g.chat_id, "text": truncate(text, 4096)},
            )
        )
    for w in receiver.webhook_configs:
        out.append(
            HttpRequest.json(
                w.url,
                {
                    "version": "watchkeeper-report/1",
                    "report": report.name,
                    "kind": report.kind,
                    "title": report.title,
                    "period": report.period,
                    "text": text,
                    "url": report.link,
                    "columns": report.columns,
                    "rows": report.rows,
                },
            )
        )
    return out


def post_digest(
    receiver: ReceiverConfig,
    report: Report,
    *,
    client: httpx.Client | None = None,
    timeout_seconds: float = 10.0,
    now_ms: int | None = None,
) -> list[DeliveryResult]:
    text = digest_text(report)
    own = client is None
    http = client or httpx.Client(follow_redirects=False)
    try:
        stamp = now_ms if now_ms is not None else int(time.time() * 1000)
        return [
            send_http(
                http,
                req,
                timeout_seconds=timeout_seconds,
                now_ms=stamp,
                idempotency_key=f"report:{report.name}:{report.end_ms}",
            )
            for req in digest_requests(receiver, report, text)
        ]
    finally:
        if own:
            http.close()


def _receiver_for(cfg: ReportConfig, receivers: Mapping[str, ReceiverConfig]) -> ReceiverConfig | None:
    if cfg.chat is not None:
        return cfg.chat
    if cfg.receiver is not None:
        return receivers.get(cfg.receiver)
    return None


def run_report_job(
    cfg: ReportConfig,
    *,
    store: Any,
    engine: Any,
    specs: Callable[[], Sequence[SloSpec]],
    slo: SloConfig,
    receivers: Mapping[str, ReceiverConfig],
    clock: Callable[[], float] = time.time,
    is_leader: Callable[[], bool] = lambda: True,
) -> list[DeliveryResult]:
    """Build the report now and post its digest (the scheduled job's body). Only the replica that
    holds the leader lease posts, so several replicas send one digest, not one each."""
    if not is_leader():
        return []
    receiver = _receiver_for(cfg, receivers)
    if receiver is None:
        log.warning("report %s: receiver %r not found; digest not sent", cfg.name, cfg.receiver)
        return []
    report = build_report(cfg, store=store, engine=engine, specs=specs(), slo=slo, now_ms=int(clock() * 1000))
    results = post_digest(receiver, report)
    for r in results:
        if not r.ok:
            log.warning("report %s: digest delivery failed: %s %s", cfg.name, r.status, r.body[:200])
    return results


def schedule_reports(
    scheduler: Any,
    slo: SloConfig,
    *,
    store: Any,
    engine: Any,
    specs: Callable[[], Sequence[SloSpec]],
    receivers: Mapping[str, ReceiverConfig] | None = None,
    clock: Callable[[], float] = time.time,
    is_leader: Callable[[], bool] = lambda: True,
) -> list[str]:
    """Make the scheduler's report jobs match ``slo.reports`` (start-up and reload): one cron job
    per scheduled report, added or replaced; jobs of reports no longer scheduled are removed.
    Returns the job ids.

    >>> schedule_reports(rules_service.scheduler.scheduler, settings.slo, store=storage, engine=engine,
    ...                  specs=lambda: slo_state.specs, receivers={r.name: r for r in alerting.receivers})
    ...                                                                     # doctest: +SKIP
    """
    from apscheduler.triggers.cron import CronTrigger

    ids = []
    for cfg in slo.reports:
        if cfg.schedule is None:
            continue
        job_id = f"slo-report:{cfg.name}"
        scheduler.add_job(
            run_report_job,
            CronTrigger.from_crontab(cfg.schedule, timezone=ZoneInfo(cfg.timezone)),
            kwargs={
                "cfg": cfg,
                "store": store,
                "engine": engine,
                "specs": specs,
                "slo": slo,
                "receivers": dict(receivers or {}),
                "clock": clock,
                "is_leader": is_leader,
            },
            id=job_id,
            name=f"report {cfg.name}",
            replace_existing=True,
            max_instances=1,
            coalesce=True,
        )
        ids.append(job_id)
    for job in scheduler.get_jobs():
        if job.id.startswith("slo-report:") and job.id not in ids:
            scheduler.remove_job(job.id)
    return ids
