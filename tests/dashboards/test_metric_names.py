"""Every metric the built-in and reference dashboards query is one the real exporters expose.

The names are read from what the exporters actually export, not from a list: the reference core
API (``watchkeeper.demo``: the SDK's HTTP middleware, SQLAlchemy and cache instrumentation, its
business metrics) after some traffic, the host, Redis and PostgreSQL exporters against the real
servers, watchkeeper's own ``/metrics``, and the business metrics as docs/sdk.md defines them (the
built-in *business* dashboard reads those names). The dashboards' selectors are found by parsing
every panel query, variable query and annotation with the PromQL parser.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from watchkeeper.dashboards.loader import BUILTIN_DIR, load_dirs
from watchkeeper.dashboards.model import Dashboard, IntervalVariable
from watchkeeper.dashboards.panels import QueryContext
from watchkeeper.dashboards.templating import interpolate
from watchkeeper.dashboards.timerange import resolve_range
from watchkeeper.exporters import BusinessMetrics
from watchkeeper.exporters.cli import build_registry
from watchkeeper.promql.parser import VectorSelector, parse

REFERENCE_DIR = Path(__file__).parents[2] / "dashboards"
_LABEL_VALUES = re.compile(r"^\s*label_values\((.+),\s*\w+\s*\)\s*$")
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
}


def names_of(families: Iterator[object]) -> set[str]:
    """The sample names a registry's families are exposed under (also before any sample exists)."""
    out: set[str] = set()
    for family in families:
        name, kind = family.name, family.type  # type: ignore[attr-defined]
        out.update(name + s for s in _SUFFIXES.get(kind, ("",)))
        out.update(s.name for s in family.samples)  # type: ignore[attr-defined]
    return out


def selectors(node: object) -> Iterator[VectorSelector]:
    if isinstance(node, VectorSelector):
        yield node
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            for child in value if isinstance(value, list | tuple) else (value,):
                yield from selectors(child)


def queried_metrics(dashboard: Dashboard) -> dict[str, str]:
    """metric name -> where it is used, for every selector with a metric name."""
    rng = resolve_range("now-6h", "now", int(time.time() * 1000), None)
    builtins = QueryContext(rng, 700, 15_000, {}).builtins(60_000)
    values = {
        v.name: [v.options[0]] if isinstance(v, IntervalVariable) else ["x"] for v in dashboard.variables
    }
    exprs = [(f"panel {p.id}", q.expr) for p in dashboard.panels() for q in p.queries]
    exprs += [(f"annotation {a.name}", a.expr) for a in dashboard.annotations if a.expr]
    for v in dashboard.variables:
        m = _LABEL_VALUES.match(getattr(v, "query", ""))
        if m:
            exprs.append((f"variable {v.name}", m.group(1)))
    out: dict[str, str] = {}
    for where, expr in exprs:
        for selector in selectors(parse(interpolate(expr, values, builtins))):
            if selector.name:
                out.setdefault(selector.name, f"{dashboard.uid} {where}")
    return out


@pytest.fixture
def exposed(tmp_path: Path, redis_url: str, postgres_url: str) -> set[str]:
    from watchkeeper.app import create_app
    from watchkeeper.config import Settings
    from watchkeeper.demo import CoreApiSettings, coreapi_app

    names: set[str] = set()
    # the reference core API, instrumented with the SDK, after a little traffic
    registry = CollectorRegistry()
    core = coreapi_app(
        CoreApiSettings(database_url=f"sqlite:///{tmp_path / 'core.db'}", rate_limit_enabled=False),
        registry=registry,
    )
    with TestClient(core) as client:
        for path in ("/players", "/sessions", "/discovery?lat=48.8&lon=2.3&radius_km=5", "/no-such-route"):
            client.get(path)
    names |= names_of(registry.collect())
    # the business metrics of docs/sdk.md
    sdk_doc = CollectorRegistry()
    business = BusinessMetrics(sdk_doc)
    business.counter("sessions_created", "Sessions created", labels=("region",))
    business.gauge("active_sessions", "Open sessions", labels=("region",))
    business.event("feature_used", feature="dark_mode", region="eu-west")
    names |= names_of(sdk_doc.collect())
    # the infrastructure exporters against the real servers
    names |= names_of(build_registry("host").collect())
    names |= names_of(build_registry("redis", redis_url).collect())
    names |= names_of(build_registry("postgres", postgres_url.replace("+psycopg", "")).collect())
    # watchkeeper's own /metrics
    settings = Settings.load(None, overrides={"data_dir": tmp_path / "wk", "scrape_configs": []})
    with TestClient(create_app(settings)) as wk:
        deadline = time.monotonic() + 30
        while wk.get("/-/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        names |= names_of(text_string_to_metric_families(wk.get("/metrics").text))
    return names


@pytest.mark.redis
@pytest.mark.postgres
def test_every_dashboard_metric_is_exported(exposed: set[str]) -> None:
    loaded = load_dirs([BUILTIN_DIR, REFERENCE_DIR])
    assert loaded.errors == []
    used: dict[str, str] = {}
    for dashboard in loaded.dashboards.values():
        found = queried_metrics(dashboard)
        assert len(found) >= 2, (dashboard.uid, found)  # the parse found its queries
        used.update(found)
    missing = {name: where for name, where in used.items() if name not in exposed}
    assert missing == {}
