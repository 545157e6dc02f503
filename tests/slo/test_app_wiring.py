"""The SLO pieces inside the real app: specs from the config become rules and reload with them,
report schedules are on the app's scheduler, and with security configured the status page is the
only page anyone may open without logging in."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from tests.security.conftest import READ_TOKEN, running, tokens
from tests.test_app import wait_ready
from watchkeeper.app import create_app
from watchkeeper.config import Settings

from .conftest import SPEC, Chat


def _write_config(tmp_path: Path, **extra: Any) -> Path:
    (tmp_path / "slo").mkdir(exist_ok=True)
    (tmp_path / "slo" / "checkout.yml").write_text(SPEC)
    config = {
        "data_dir": str(tmp_path / "data"),
        "scrape_configs": [],
        "slo": {
            "spec_files": ["slo/*.yml"],  # relative to the config file, as rule files are
            "status_pages": [{"slug": "public", "title": "Shop status"}],
            "reports": [
                {
                    "name": "weekly",
                    "kind": "slo",
                    "schedule": "0 9 * * mon",
                    "timezone": "Europe/Paris",
                    "chat": {"name": "chat", "webhook_configs": [{"url": "http://127.0.0.1:9/hook"}]},
                }
            ],
        },
        **extra,
    }
    path = tmp_path / "watchkeeper.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _groups(c: TestClient) -> dict[str, list[dict[str, Any]]]:
    return {g["name"]: g["rules"] for g in c.get("/api/v1/rules").json()["data"]["groups"]}


def test_specs_load_like_rule_files_and_reload_with_them(tmp_path: Path) -> None:
    config = _write_config(tmp_path)
    app = create_app(Settings.load(config))
    with TestClient(app) as c:
        wait_ready(c)
        groups = _groups(c)
        assert sorted(n for n in groups if n.startswith("sloth-slo-alerts")) == [
            "sloth-slo-alerts-checkout-availability",
            "sloth-slo-alerts-checkout-latency",
        ]
        page = groups["sloth-slo-alerts-checkout-availability"][0]
        assert "> 0.0144)" in page["query"]
        scheduler = app.state.watchkeeper.rules.scheduler.scheduler
        job = scheduler.get_job("slo-report:weekly")
        assert "day_of_week='mon'" in str(job.trigger) and "Europe/Paris" in str(job.trigger.timezone)

        # the spec changes: a reload regenerates the rules and the pages follow
        (tmp_path / "slo" / "checkout.yml").write_text(SPEC.replace("objective: 99.9", "objective: 99.5"))
        assert c.post("/-/reload").status_code == 200
        page = _groups(c)["sloth-slo-alerts-checkout-availability"][0]
        assert "> 0.072)" in page["query"]  # 14.4 x 0.5%
        assert "99.5%" in c.get("/slo").text

        # an invalid spec: the reload fails with the reason and the rules stay as they were
        (tmp_path / "slo" / "checkout.yml").write_text(SPEC.replace("objective: 99.9", "objective: 10"))
        refused = c.post("/-/reload")
        assert refused.status_code >= 400 and "can never fire" in refused.text
        assert "> 0.072)" in _groups(c)["sloth-slo-alerts-checkout-availability"][0]["query"]


def test_reload_applies_report_schedules_and_probes(tmp_path: Path) -> None:
    config = _write_config(tmp_path)
    app = create_app(Settings.load(config))
    with TestClient(app) as c:
        wait_ready(c)
        state = app.state.watchkeeper
        scheduler = state.rules.scheduler.scheduler
        assert scheduler.get_job("slo-report:weekly") is not None and state.probes.probes == []

        # a new schedule for the report, another report, and a probe of a (closed) local port
        data = yaml.safe_load(config.read_text())
        weekly = data["slo"]["reports"][0]
        weekly["schedule"] = "30 8 * * fri"
        data["slo"]["reports"].append({**weekly, "name": "daily", "schedule": "0 7 * * *"})
        data["probes"] = [{"name": "local", "type": "tcp", "target": "127.0.0.1:9", "interval": "1s",
                           "timeout": "1s"}]
        config.write_text(yaml.safe_dump(data))
        assert c.post("/-/reload").status_code == 200
        assert "day_of_week='fri'" in str(scheduler.get_job("slo-report:weekly").trigger)
        assert scheduler.get_job("slo-report:daily") is not None
        assert [p.name for p in state.probes.probes] == ["local"]
        running = state.probes._tasks["local"][1]
        assert not running.done()
        deadline = time.monotonic() + 20
        while "local" not in state.probes.last and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state.probes.last["local"].success is False  # it ran: nothing listens on port 9

        # an unchanged probe keeps its task; removed reports and probes stop
        data["slo"]["reports"] = [weekly]
        config.write_text(yaml.safe_dump(data))
        assert c.post("/-/reload").status_code == 200
        assert state.probes._tasks["local"][1] is running
        del data["probes"]
        config.write_text(yaml.safe_dump(data))
        assert c.post("/-/reload").status_code == 200
        assert scheduler.get_job("slo-report:daily") is None and scheduler.get_job("slo-report:weekly")
        assert state.probes.probes == [] and running.cancelled() and "local" not in state.probes.last


def _get_paths(routes: Any, prefix: str = "") -> set[str]:
    """Every GET path of an app, into included routers (``original_router`` on FastAPI >= 0.165)."""
    out: set[str] = set()
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            out |= _get_paths(inner.routes, prefix + route.include_context.prefix)
        elif "GET" in (getattr(route, "methods", None) or ()):
            out.add(prefix + route.path)
        elif getattr(route, "path", None) is not None and getattr(route, "routes", None) is not None:
            out.add(prefix + route.path + "/{path}")  # a mount (static files)
    return out


def _anonymous_gets(base: str, routes: list[str]) -> dict[str, int]:
    values = {"slug": "public", "slo_id": "checkout-availability", "name": "weekly"}
    out = {}
    for path in routes:
        url = path
        for key, value in values.items():
            url = url.replace("{" + key + "}", value)
        url = url.split("{", 1)[0] + ("x" if "{" in url else "")
        out[path] = httpx.get(base + url, follow_redirects=False).status_code
    return out


def test_with_security_the_status_page_is_the_only_anonymous_page(tmp_path: Path) -> None:
    config = _write_config(tmp_path, security={"tokens": tokens(), "public_metrics": False})
    settings = Settings.load(config)
    paths = sorted(_get_paths(create_app(settings).routes))
    assert {"/slo", "/slo/{slo_id}", "/uptime", "/status/{slug}", "/reports/{name}"} <= set(paths)
    with running(settings) as base:
        codes = _anonymous_gets(base, paths)
        open_ = {p for p, code in codes.items() if code < 400}
        # what is left open: health checks for load balancers, the login form, static files
        assert open_ - {"/-/healthy", "/-/ready", "/login", "/logout"} - {
            p for p in open_ if p.startswith("/static/")
        } == {"/status/{slug}"}
        assert all(
            codes[p] == 401 for p in ("/slo", "/slo/{slo_id}", "/uptime", "/reports/{name}", "/metrics")
        )
        # and with a token the internal pages open
        auth = {"Authorization": f"Bearer {READ_TOKEN}"}
        assert httpx.get(base + "/slo", headers=auth).status_code == 200
        status = httpx.get(base + "/status/public")
        assert "Shop status" in status.text and "/slo" not in status.text and "<script" not in status.text


@pytest.mark.slow
def test_cron_digest_from_the_app_reaches_a_local_chat_receiver(
    tmp_path: Path, chat: tuple[str, Chat]
) -> None:
    """The whole way: config -> the app's scheduler -> cron (every minute: up to a minute's wait)
    -> the report built from the store -> a Slack-style post to a real HTTP server on 127.0.0.1."""
    url, box = chat
    config = _write_config(tmp_path)
    doc = yaml.safe_load(config.read_text())
    doc["slo"]["reports"] = [
        {"name": "minutely", "kind": "slo", "schedule": "* * * * *", "receiver": "team-chat"}
    ]
    doc["alerting"] = {
        "route": {"receiver": "team-chat"},
        "receivers": [{"name": "team-chat", "slack_configs": [{"api_url": url}]}],
    }
    config.write_text(yaml.safe_dump(doc))
    with TestClient(create_app(Settings.load(config))) as c:
        wait_ready(c)
        assert box.event.wait(90), "no digest within 90 s of a cron job due every minute"
    text = box.received[0]["text"]
    assert text.startswith("SLO report (rolling 30d):")
    assert "Checkout availability: no traffic in the period." in text  # nothing was ingested
    assert text.endswith("Details: http://127.0.0.1:9470/slo")


def test_generate_command(tmp_path: Path) -> None:
    spec = tmp_path / "checkout.yml"
    spec.write_text(SPEC)
    run = subprocess.run(
        [sys.executable, "-m", "watchkeeper.cli", "slo", "generate", str(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    groups = yaml.safe_load(run.stdout)["groups"]
    assert [g["name"] for g in groups][:3] == [
        "sloth-slo-sli-recordings-checkout-availability",
        "sloth-slo-meta-recordings-checkout-availability",
        "sloth-slo-alerts-checkout-availability",
    ]
    spec.write_text(SPEC.replace("objective: 99.9", "objective: 10"))
    bad = subprocess.run(
        [sys.executable, "-m", "watchkeeper.cli", "slo", "generate", str(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1 and "can never fire" in bad.stderr and bad.stdout == ""
