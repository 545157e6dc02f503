"""Reports (HTML, CSV, scheduled digest to a local chat receiver), pages and the CLI."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from fastapi import FastAPI
from fastapi.testclient import TestClient

from watchkeeper.slo.cli import slo_generate_main
from watchkeeper.slo.reports import build_report, digest_text, run_report_job, schedule_reports, to_csv
from watchkeeper.slo.router import SloState, slo_router, write_rule_files

from .conftest import NOW, REPO, SPEC, Chat


def test_slo_report_digest_and_csv(state: SloState) -> None:
    report = build_report(
        state.config.reports[0],
        store=state.store,
        engine=state.engine,
        specs=state.specs,
        slo=state.config,
        now_ms=NOW,
    )
    text = digest_text(report)
    # 0.005 / 10 = 0.05% errors: 99.95% against 99.9%, half of the budget left
    assert "Checkout availability met 99.95% against 99.9%; 50% of budget left." in text
    # burning at 2x all the time: one incident, as long as the window, that took twice the budget
    assert (
        "Checkout latency missed 98.00% against 99%; 0% of budget left (overspent by 100%); "
        "1 incident used 200% of it." in text
    )
    assert text.index("latency") < text.index("availability")  # riskiest first
    assert text.endswith("Details: http://wk.example/slo")
    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert rows[1]["slo"] == "checkout-availability" and float(rows[1]["budget_left_percent"]) == 50.0


def test_uptime_and_business_reports(state: SloState) -> None:
    up = build_report(
        state.config.reports[1],
        store=state.store,
        engine=state.engine,
        specs=state.specs,
        slo=state.config,
        now_ms=NOW,
    )
    observed = 2 * 1440  # minutes with results (the last result covers 5 more minutes, past now: clipped)
    counted = observed - 30  # the 04:00-04:30 maintenance is left out
    assert up.rows[0][1] == pytest.approx(round((counted - 10) / counted * 100, 4))
    assert "30m maintenance excluded" in up.sentences[0]
    assert up.rows[0][6] == 1 and "1 outage, 10m down" in up.sentences[0]
    assert "not observed" in up.sentences[0]  # the 28 days before the first probe are unknown, not up
    biz = build_report(
        state.config.reports[2],
        store=state.store,
        engine=state.engine,
        specs=state.specs,
        slo=state.config,
        now_ms=NOW,
    )
    assert biz.rows[0][:5] == ["signups", "", 340.0, 300.0, 13.33]
    assert biz.notes[0] == "Top mover: signups region=eu +50.0%"


def test_scheduled_digest_reaches_local_chat_receiver(state: SloState, chat: tuple[str, Chat]) -> None:
    url, box = chat
    cfg = state.config.reports[0]
    assert cfg.chat is not None
    slack = cfg.chat.slack_configs[0].model_copy(update={"api_url": url})
    chat_cfg = cfg.chat.model_copy(update={"slack_configs": [slack]})
    config = state.config.model_copy(update={"reports": [cfg.model_copy(update={"chat": chat_cfg})]})
    scheduler = BackgroundScheduler(timezone="UTC")
    ids = schedule_reports(
        scheduler,
        config,
        store=state.store,
        engine=state.engine,
        specs=lambda: state.specs,
        clock=lambda: NOW / 1000,
    )
    assert ids == ["slo-report:weekly-slo"]
    job = scheduler.get_job(ids[0])
    assert str(job.trigger).startswith("cron[") and "day_of_week='mon'" in str(job.trigger)
    scheduler.start()
    try:
        import datetime as dt

        job.modify(next_run_time=dt.datetime.now(dt.UTC))  # run the scheduled job now
        assert box.event.wait(10)
    finally:
        scheduler.shutdown()
    payload = box.received[0]
    assert "Checkout availability met 99.95% against 99.9%; 50% of budget left." in payload["text"]
    assert payload["blocks"][0]["type"] == "header"


def test_follower_replica_posts_no_digest(state: SloState, chat: tuple[str, Chat]) -> None:
    url, box = chat
    cfg = state.config.reports[0]
    assert cfg.chat is not None
    slack = cfg.chat.slack_configs[0].model_copy(update={"api_url": url})
    cfg = cfg.model_copy(update={"chat": cfg.chat.model_copy(update={"slack_configs": [slack]})})
    kw = {
        "store": state.store,
        "engine": state.engine,
        "specs": lambda: state.specs,
        "slo": state.config,
        "receivers": {},
        "clock": lambda: NOW / 1000,
    }
    assert run_report_job(cfg, is_leader=lambda: False, **kw) == []
    assert not box.received
    assert [r.ok for r in run_report_job(cfg, is_leader=lambda: True, **kw)] == [True]
    assert len(box.received) == 1


def test_pages(state: SloState) -> None:
    app = FastAPI()
    app.include_router(slo_router(lambda: state))
    client = TestClient(app)
    page = client.get("/slo").text
    assert page.index("checkout-latency") < page.index("checkout-availability")
    assert "99.950%" in page and "50.0%" in page
    detail = client.get("/slo/checkout-availability?window=month")
    assert detail.status_code == 200 and "14.4x the budget" in detail.text and "calendar month" in detail.text
    up = client.get("/uptime").text
    assert "status 503" in up and "db upgrade" in up
    public = client.get("/status/public").text
    assert "Checkout API" in public and "10.1.2.3" not in public and "status 503" not in public
    assert "outage on" in public
    assert client.get("/status/nope").status_code == 404
    csv_resp = client.get("/reports/uptime.csv")
    assert csv_resp.headers["content-type"].startswith("text/csv") and csv_resp.text.startswith("monitor,")
    assert "How this is counted" in client.get("/reports/business").text


def test_cli_generate_and_reject(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert slo_generate_main([str(REPO / "rules/slo/checkout.yml")]) == 0
    assert "sloth-slo-alerts-checkout-requests-availability" in capsys.readouterr().out
    bad = tmp_path / "bad.yml"
    bad.write_text(SPEC.replace("objective: 99\n", "objective: 10\n"))
    assert slo_generate_main([str(bad)]) == 1
    assert "can never fire" in capsys.readouterr().err
    out = tmp_path / "rules.yml"
    assert slo_generate_main(["--period", "28d", str(REPO / "rules/slo/checkout.yml"), "-o", str(out)]) == 0
    assert "vector(28)" in out.read_text()


def test_write_rule_files(state: SloState, tmp_path: Path) -> None:
    paths = write_rule_files(state.specs, tmp_path / "gen")
    assert sorted(p.name for p in paths) == ["checkout-availability.yml", "checkout-latency.yml"]
    (tmp_path / "gen" / "stale.yml").write_text("groups: []")
    write_rule_files(state.specs[:1], tmp_path / "gen")
    assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == ["checkout-availability.yml"]
    assert time.time() > 0


def test_previous_calendar_month_report(state: SloState) -> None:
    from watchkeeper.slo.config import ReportConfig

    cfg = ReportConfig(name="monthly", kind="uptime", window="month", period="previous", timezone="UTC")
    report = build_report(
        cfg, store=state.store, engine=state.engine, specs=state.specs, slo=state.config, now_ms=NOW
    )
    # NOW is 2027-01-15: the previous month is December 2026, before any probe result
    assert (report.start_ms, report.end_ms + 1) == (1796083200000, 1798761600000)
    assert report.sentences == ["Checkout API: no probe results in the period."]
