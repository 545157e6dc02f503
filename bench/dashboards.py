"""Server time of dashboard pages and panel data over 6 h of the benchmark workload.

Targets (issue 7): a dashboard page's HTML in < 100 ms server time; each panel's data in < 300 ms;
navigation under 300 ms (the seed target) -- measured in Debian's Chromium (``/usr/bin/chromium``,
through Playwright) when it is installed: from the start of the navigation to DOMContentLoaded and
to the last panel of the first screen (1400 x 1000) drawn, static files (Plotly) in the browser's
cache as after a first visit. Panels further down are fetched when scrolled to.

The workload (watchkeeper/dashboards/sample.py): every metric the built-in dashboards query, 3 app
instances x 10 routes x 4 statuses, histograms with 12 buckets, caches, database, host, Redis,
PostgreSQL, business and self-metrics: ~1,240 series, 15 s samples over 6 h (~1.8 M samples), in
an in-memory Storage. The app (dashboards router + Prometheus API) runs on a real uvicorn on
127.0.0.1; times are the server's own (``Server-Timing: app;dur=``), requests one at a time, each
panel at a width of 700 px (a half-width panel on a 1400 px screen), ``from=now-6h``.

    python bench/dashboards.py [--repeat 5] [--width 700] [--hours 6] [--no-browser]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from collections.abc import Sequence
from urllib.parse import urlencode

import httpx

from watchkeeper.dashboards.loader import BUILTIN_DIR, load_dirs
from watchkeeper.dashboards.model import Dashboard
from watchkeeper.dashboards.sample import make_app, seed, serve
from watchkeeper.tsdb.storage import Storage

PAGE_TARGET_MS, PANEL_TARGET_MS, NAVIGATION_TARGET_MS = 100.0, 300.0, 300.0
CHROMIUM = "/usr/bin/chromium"
FIRST_SCREEN_DRAWN = """() => {
  const panels = Array.from(document.querySelectorAll('.panel[data-panel]')).filter(p => {
    const row = p.closest('details.row');
    return (!row || row.open) && p.getBoundingClientRect().top < window.innerHeight; });
  return panels.length > 0 && panels.every(p => p.dataset.rendered);
}"""
TIMES = "() => [performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd, wkStats.lastRenderMs]"


def server_ms(response: httpx.Response) -> float:
    return float(response.headers["server-timing"].split("dur=")[1])


def browser_navigation(
    base: str, dashboards: Sequence[Dashboard], params: dict[str, str], repeat: int
) -> None:
    """Navigation times in Chromium, printed per dashboard (median of ``repeat`` visits)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("\nnavigation: not measured (the playwright package is not installed)")
        return
    if shutil.which(CHROMIUM) is None:
        print(f"\nnavigation: not measured ({CHROMIUM} is not installed)")
        return
    query = urlencode({k: v for k, v in params.items() if k != "width"})
    print(f"\n{'dashboard':18} {'DOMContentLoaded ms':>20} {'first screen drawn ms':>28}")
    drawn_medians, first = [], None
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for d in dashboards:
            loaded, drawn = [], []
            for _ in range(repeat):
                page.goto(f"{base}/d/{d.uid}/{d.slug}?{query}")
                page.wait_for_function(FIRST_SCREEN_DRAWN, timeout=60_000)
                dcl, last = page.evaluate(TIMES)
                first = first if first is not None else last
                loaded.append(dcl)
                drawn.append(last)
            drawn_medians.append(statistics.median(drawn))
            print(f"{d.uid:18} {statistics.median(loaded):20.0f} {statistics.median(drawn):28.0f}")
        browser.close()
    print(
        f"navigation to the first screen drawn: median {statistics.median(drawn_medians):.0f} ms, worst "
        f"{max(drawn_medians):.0f} ms (target < {NAVIGATION_TARGET_MS:.0f} ms); the very first visit, "
        f"Plotly not yet cached: {first:.0f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--width", type=int, default=700)
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--no-browser", action="store_true", help="skip the navigation times in Chromium")
    args = parser.parse_args()

    storage = Storage.open(data_dir=None)
    started = time.perf_counter()
    samples = seed(storage, int(time.time() * 1000), hours=args.hours)
    print(
        f"workload: {storage.num_series} series, {samples:,} samples over {args.hours:g} h "
        f"(seeded in {time.perf_counter() - started:.1f} s)"
    )
    dashboards = sorted(load_dirs([BUILTIN_DIR]).dashboards.values(), key=lambda d: d.uid)
    params = {"from": f"now-{args.hours:g}h", "to": "now", "width": str(args.width)}
    slow_panels, page_medians, panel_medians, panel_cpu = [], [], [], []
    with serve(make_app(storage)) as base, httpx.Client(base_url=base, timeout=60) as client:
        client.get("/dashboards")
        print(f"\n{'dashboard':18} {'page ms (median/max)':>22}   panels, id:median server ms/query CPU ms")
        for d in dashboards:
            page_times = [
                server_ms(client.get(f"/d/{d.uid}/{d.slug}", params=params)) for _ in range(args.repeat)
            ]
            page_medians.append(statistics.median(page_times))
            cells = []
            for p in d.panels():
                if p.type == "text":
                    continue
                times, cpu = [], []
                for _ in range(args.repeat):
                    r = client.get(f"/d/{d.uid}/panels/{p.id}.json", params=params)
                    r.raise_for_status()
                    times.append(server_ms(r))
                    cpu.append(sum(q["cpu_ms"] for q in r.json()["queries"]))
                median = statistics.median(times)
                panel_medians.append(median)
                panel_cpu.append(statistics.median(cpu))
                cells.append(f"{p.id}:{median:.0f}/{statistics.median(cpu):.0f}")
                if median > PANEL_TARGET_MS:
                    slow_panels.append((d.uid, p.id, p.title, median))
            print(
                f"{d.uid:18} {statistics.median(page_times):10.1f} / {max(page_times):7.1f}",
                "  ",
                " ".join(cells),
            )
        if not args.no_browser:
            browser_navigation(base, dashboards, params, args.repeat)
    print(
        f"\npages:  median {statistics.median(page_medians):.1f} ms, worst {max(page_medians):.1f} ms "
        f"(target < {PAGE_TARGET_MS:.0f} ms)"
    )
    print(
        f"panels: median {statistics.median(panel_medians):.1f} ms, p90 "
        f"{statistics.quantiles(panel_medians, n=10)[-1]:.1f} ms, worst {max(panel_medians):.1f} ms "
        f"(target < {PANEL_TARGET_MS:.0f} ms); {len(slow_panels)} of {len(panel_medians)} over target"
    )
    print(
        f"panel query CPU: median {statistics.median(panel_cpu):.1f} ms, worst {max(panel_cpu):.1f} ms "
        f"(the machine's load inflates wall time: {os.getloadavg()[0]:.1f} load on {os.cpu_count()} CPUs)"
    )
    for uid, pid, title, ms in slow_panels:
        print(f"  over target: {uid} panel {pid} {title!r}: {ms:.0f} ms")
    storage.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
