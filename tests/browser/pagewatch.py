"""What one browser page did: console errors, page errors, every request; its screenshots; and
whether every panel of a dashboard drew."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SCREENSHOTS = Path(__file__).parent / "screenshots"


class PageWatch:
    """Console errors, page errors and every request URL of one page."""

    def __init__(self, page: Any, base: str) -> None:
        self.page, self.base = page, base
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on(
            "console",
            lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("request", lambda r: self.requests.append(r.url))

    def outside_requests(self) -> list[str]:
        return [
            u
            for u in self.requests
            if not (
                u.startswith(("http://127.0.0.1:", "http://localhost:")) or u.startswith(("data:", "blob:"))
            )
        ]

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


# panels are fetched when they come near the screen: bring each undrawn one into view in turn
ALL_RENDERED = """() => {
  const panels = Array.from(document.querySelectorAll('.panel[data-panel]'))
    .filter(p => !p.closest('details.row') || p.closest('details.row').open);
  const next = panels.find(p => !p.dataset.rendered);
  if (next) next.scrollIntoView({block: 'center'}); else window.scrollTo(0, 0);
  return panels.length > 0 && !next;
}"""

PANEL_STATE = """() => Array.from(document.querySelectorAll('.panel[data-panel]'))
  .filter(p => !p.closest('details.row') || p.closest('details.row').open)
  .map(p => ({id: p.dataset.panel, type: p.dataset.type, svg: p.querySelectorAll('.main-svg').length,
              rows: p.querySelectorAll('tbody tr').length,
              value: (p.querySelector('.stat .value') || {}).textContent || '',
              text: p.querySelector('.body').innerText.length,
              status: (p.querySelector('.status') || {}).textContent || '',
              title: (p.querySelector('.status') || {}).title || ''}))"""


def assert_all_panels_drawn(page: Any, *, allow_empty: bool = False) -> list[dict[str, Any]]:
    try:
        page.wait_for_function(ALL_RENDERED, polling=100)
    except Exception as exc:
        state = page.evaluate(PANEL_STATE.replace("svg:", "rendered: p.dataset.rendered || '', svg:"))
        raise AssertionError(f"not every panel rendered: {state}") from exc
    panels: list[dict[str, Any]] = page.evaluate(PANEL_STATE)
    for p in panels:
        assert "error" not in p["status"] and "⚠" not in p["status"], p
        assert allow_empty or p["status"] != "No data", p
        if p["type"] in ("timeseries", "heatmap", "gauge", "bargauge"):
            assert p["svg"] > 0, p
        elif p["type"] == "stat":
            assert p["value"] not in ("", "No data", "–"), p
        elif p["type"] == "table":
            assert p["rows"] > 0, p
        else:
            assert p["text"] > 0, p
    return panels
