/* Charts of the SLO and uptime pages. Each <script type="application/json" data-wk-plot="ID">
   holds {traces, layout, xTime, yScale} for the element ID: data, not code, so the pages need no
   inline script under the Content-Security-Policy. */
(function () {
  "use strict";
  function plot(id, spec) {
    var el = document.getElementById(id); if (!el || !window.Plotly) return;
    var dark = document.documentElement.getAttribute("data-theme") === "dark";
    var traces = (spec.traces || []).map(function (t) {
      var out = Object.assign({}, spec.defaults || {}, t);
      if (spec.xTime) out.x = (t.x || []).map(function (v) { return new Date(v); });
      if (spec.yScale) out.y = (t.y || []).map(function (v) { return v === null ? null : v * spec.yScale; });
      return out;
    });
    Plotly.newPlot(el, traces, Object.assign({margin: {l: 50, r: 10, t: 10, b: 30}, paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)", font: {color: dark ? "#c9d1d9" : "#24292f"}, showlegend: traces.length > 1},
      spec.layout || {}), {displayModeBar: false, responsive: true});
  }
  function wire() {
    document.querySelectorAll("script[data-wk-plot]").forEach(function (block) {
      plot(block.getAttribute("data-wk-plot"), JSON.parse(block.textContent));
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", wire); else wire();
})();
