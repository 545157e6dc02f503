/* watchkeeper dashboards and explore: panels fetch JSON and draw with Plotly.react.
 * URL state (Grafana's): from, to, refresh, var-<name> (repeated), viewPanel, theme, kiosk.
 * window.wkStats counts fetches and renders and keeps the time of the last render in ms since the
 * navigation began (the browser tests and bench/dashboards.py read it). */
(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("wk-config").textContent);
  var explore = !cfg.uid;
  var stats = (window.wkStats = { fetches: 0, renders: 0, errors: 0, lastRenderMs: 0 });
  var last = {};          // panel id -> last JSON
  var controllers = {};   // panel id -> AbortController
  var annotations = [];
  var timer = null;
  var hovering = false;

  function params() { return new URLSearchParams(location.search); }

  function setParams(p, push) {
    var qs = p.toString();
    var url = location.pathname + (qs ? "?" + qs : "");
    if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
  }

  function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

  /* Plotly draws epoch-ms numbers as UTC; shift them so the axis shows browser-local time. */
  function shift(ms) {
    if (cfg.timezone === "utc") return ms;
    return ms - new Date(ms).getTimezoneOffset() * 60000;
  }
  function unshift(ms) {
    if (cfg.timezone === "utc") return ms;
    return ms + new Date(ms).getTimezoneOffset() * 60000;
  }

  function plotConfig() { return { displaylogo: false, responsive: true, displayModeBar: false }; }

  function baseLayout(data) {
    var fg = css("--fg"), grid = css("--grid");
    return {
      margin: { l: 56, r: 12, t: 6, b: 28 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
      font: { color: fg, size: 11 }, uirevision: "wk",
      xaxis: { type: "date", gridcolor: grid, linecolor: grid, zeroline: false,
               range: [shift(data.start_ms), shift(data.end_ms)] },
      yaxis: { gridcolor: grid, linecolor: grid, zerolinecolor: grid, automargin: true },
      showlegend: false, hoverlabel: { namelength: -1 },
    };
  }

  function panelBody(el) {
    var body = el.querySelector(".body");
    var area = body.querySelector(".plot-area");
    if (!area) { area = document.createElement("div"); area.className = "plot-area"; body.appendChild(area); }
    return area;
  }

  function setStatus(el, text, isError, title) {
    var s = el.querySelector(".status");
    if (!s) return;
    s.textContent = text || "";
    s.className = "status" + (isError ? " error" : "");
    s.title = title || "";
  }

  function annotationShapes() {
    return annotations.map(function (a) {
      var x0 = shift(a.start_ms), x1 = shift(a.end_ms);
      if (x1 <= x0) x1 = x0 + 1;
      return { type: "rect", xref: "x", yref: "paper", x0: x0, x1: x1, y0: 0, y1: 1, fillcolor: a.color,
               opacity: 0.15, line: { width: 1, color: a.color }, name: a.text };
    });
  }

  function renderTimeseries(el, data, type) {
    var area = panelBody(el);
    var style = data.style || "lines";
    var traces = data.series.map(function (s) {
      var t = { x: s.x.map(shift), y: s.y, name: s.name,
                hovertemplate: "%{y:" + (data.axis.tickformat === "~s" ? ".4~s" : ".4~r") + "}" + data.axis.suffix + "<extra>%{fullData.name}</extra>" };
      if (style === "bars") { t.type = "bar"; }
      else {
        t.type = "scatter"; t.mode = style === "points" ? "markers" : "lines"; t.line = { width: 1.5 };
        t.connectgaps = false;
        if (data.stack) { t.stackgroup = "a"; }
        else if (style === "area") { t.fill = "tozeroy"; }
      }
      return t;
    });
    var layout = baseLayout(data);
    layout.yaxis.ticksuffix = data.axis.suffix;
    layout.yaxis.tickformat = data.axis.tickformat;
    if (data.min !== undefined && data.min !== null && data.max !== undefined && data.max !== null) {
      layout.yaxis.range = [data.min * data.axis.factor, data.max * data.axis.factor];
    }
    if (style === "bars" && data.stack) layout.barmode = "stack";
    layout.showlegend = data.legend ? data.legend.show && traces.length > 1 : traces.length > 1;
    if (data.legend && data.legend.placement === "right") {
      layout.legend = { orientation: "v", x: 1.02, y: 1 };
    } else {
      layout.legend = { orientation: "h", x: 0, y: -0.22, yanchor: "top" };
    }
    // Fx.hover({xval}) from another panel only draws in an x hover mode
    layout.hovermode = { tooltip: "x unified", crosshair: "x", none: "closest" }[cfg.graph_tooltip] || "x";
    layout.shapes = annotationShapes().concat((data.threshold_lines || []).map(function (t) {
      return { type: "line", xref: "paper", x0: 0, x1: 1, y0: t.value, y1: t.value,
               line: { color: t.color, dash: "dash", width: 1 } };
    }));
    return Plotly.react(area, traces, layout, plotConfig()).then(function () { wireHover(area, el); });
  }

  function renderHeatmap(el, data) {
    var area = panelBody(el);
    var layout = baseLayout(data);
    layout.yaxis.type = "category";
    if (!data.heatmap) {
      return Plotly.react(area, [], layout, plotConfig());
    }
    var trace = { type: "heatmap", x: data.heatmap.x.map(shift), y: data.heatmap.y, z: data.heatmap.z,
                  colorscale: "YlOrRd", reversescale: true, showscale: false, hoverongaps: false,
                  hovertemplate: "le %{y}: %{z:.3~s}<extra></extra>" };
    layout.shapes = annotationShapes();
    return Plotly.react(area, [trace], layout, plotConfig());
  }

  function renderStat(el, data) {
    var body = el.querySelector(".body");
    var grid = body.querySelector(".stat-grid");
    if (!grid) { body.innerHTML = ""; grid = document.createElement("div"); grid.className = "stat-grid"; body.appendChild(grid); }
    var values = data.values.length ? data.values : [{ name: "", text: "No data", value: null, color: null }];
    while (grid.children.length > values.length) grid.removeChild(grid.lastChild);
    var pending = [];
    values.forEach(function (v, i) {
      var cell = grid.children[i];
      if (!cell) {
        cell = document.createElement("div"); cell.className = "stat";
        cell.innerHTML = '<div class="spark"></div><div class="value"></div><div class="name"></div>';
        grid.appendChild(cell);
      }
      var color = v.color || css("--fg");
      cell.querySelector(".value").textContent = v.text;
      cell.querySelector(".value").style.color = color;
      cell.querySelector(".name").textContent = values.length > 1 ? v.name : "";
      var spark = cell.querySelector(".spark");
      if (v.spark) {
        var layout = { margin: { l: 0, r: 0, t: 0, b: 0 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
                       xaxis: { visible: false, type: "date" }, yaxis: { visible: false }, showlegend: false, uirevision: "wk" };
        pending.push(Plotly.react(spark, [{ type: "scatter", mode: "lines", x: v.spark.x.map(shift), y: v.spark.y,
          fill: "tozeroy", line: { width: 1, color: color }, hoverinfo: "skip" }], layout, { displayModeBar: false, responsive: true, staticPlot: true }));
      } else if (spark.data) { Plotly.purge(spark); }
    });
    return Promise.all(pending);
  }

  function renderGauge(el, data) {
    var area = panelBody(el);
    var n = Math.max(data.values.length, 1);
    var traces = [], notes = [];
    var range = [data.min, data.max];
    var steps = [];
    for (var i = 0; i < data.steps.length; i++) {
      var lo = data.steps[i].value === null ? data.min : data.steps[i].value;
      var hi = i + 1 < data.steps.length ? data.steps[i + 1].value : data.max;
      steps.push({ range: [lo, hi], color: data.steps[i].color, thickness: 0.15 });
    }
    data.values.forEach(function (v, i) {
      var domain = { x: [i / n + 0.02, (i + 1) / n - 0.02], y: [0.15, 1] };
      traces.push({ type: "indicator", mode: "gauge", value: v.value === null ? data.min : v.value, domain: domain,
        gauge: { axis: { range: range, visible: true, showticklabels: false, ticks: "" }, bar: { color: v.color || css("--accent"), thickness: 0.6 },
                 bgcolor: "rgba(0,0,0,0)", borderwidth: 0, steps: steps } });
      notes.push({ text: "<b>" + v.text + "</b>" + (n > 1 ? "<br>" + v.name : ""), x: (i + 0.5) / n, y: 0.12, xref: "paper", yref: "paper",
                   showarrow: false, font: { size: 16, color: v.color || css("--fg") } });
    });
    var layout = { margin: { l: 16, r: 16, t: 8, b: 8 }, paper_bgcolor: "rgba(0,0,0,0)", font: { color: css("--fg"), size: 11 },
                   annotations: notes.length ? notes : [{ text: "No data", showarrow: false, x: 0.5, y: 0.5, xref: "paper", yref: "paper" }] };
    return Plotly.react(area, traces, layout, plotConfig());
  }

  function renderBarGauge(el, data) {
    var area = panelBody(el);
    var vals = data.values;
    var trace = { type: "bar", orientation: "h", y: vals.map(function (v) { return v.name; }),
                  x: vals.map(function (v) { return v.value; }), text: vals.map(function (v) { return v.text; }),
                  textposition: "auto", hoverinfo: "y+text",
                  marker: { color: vals.map(function (v) { return v.color || css("--accent"); }) } };
    var grid = css("--grid");
    var layout = { margin: { l: 10, r: 10, t: 4, b: 20 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
                   font: { color: css("--fg"), size: 11 }, xaxis: { range: [data.min, data.max], gridcolor: grid, showticklabels: false },
                   yaxis: { automargin: true, autorange: "reversed" }, showlegend: false, uirevision: "wk" };
    return Plotly.react(area, [trace], layout, plotConfig());
  }

  function renderTable(el, data) {
    var body = el.querySelector(".body");
    var wrap = document.createElement("div");
    wrap.className = "table-wrap";
    var table = document.createElement("table");
    table.className = "data";
    var thead = table.createTHead().insertRow();
    data.columns.forEach(function (c, i) {
      var th = document.createElement("th"); th.textContent = c; th.dataset.col = i; thead.appendChild(th);
    });
    var tbody = table.createTBody();
    data.rows.forEach(function (row) {
      var tr = tbody.insertRow();
      row.forEach(function (cell) {
        var td = tr.insertCell();
        if (cell !== null && typeof cell === "object") {
          td.textContent = cell.text; td.className = "num"; td.dataset.sort = cell.value === null ? "" : cell.value;
          if (cell.color) td.style.color = cell.color;
        } else { td.textContent = cell; td.dataset.sort = cell; }
      });
    });
    if (!data.rows.length) { var tr = tbody.insertRow(); var td = tr.insertCell(); td.colSpan = data.columns.length || 1; td.textContent = "No data"; }
    thead.addEventListener("click", function (ev) {
      var col = ev.target.dataset.col; if (col === undefined) return;
      var dir = ev.target.dataset.dir === "asc" ? "desc" : "asc"; ev.target.dataset.dir = dir;
      var rows = Array.prototype.slice.call(tbody.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.sort, y = b.cells[col].dataset.sort;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = !isNaN(nx) && !isNaN(ny) ? nx - ny : String(x).localeCompare(String(y));
        return dir === "asc" ? c : -c;
      });
      rows.forEach(function (r) { tbody.appendChild(r); });
    });
    wrap.appendChild(table);
    body.replaceChildren(wrap);
    return Promise.resolve();
  }

  /* Plotly is loaded after this script (both deferred), so the panels' data is already on its way
     while the browser parses Plotly; drawing waits for it. */
  var plotlyLoaded = new Promise(function (resolve) {
    if (window.Plotly) resolve(); else document.addEventListener("DOMContentLoaded", resolve);
  });

  function render(el, data) { return plotlyLoaded.then(function () { return draw(el, data); }); }

  function draw(el, data) {
    var type = el.dataset.type;
    var heading = el.querySelector("header h2");
    if (heading && data.title !== undefined && !explore) heading.textContent = data.title;  // $variables
    var p;
    if (type === "timeseries") p = renderTimeseries(el, data);
    else if (type === "heatmap") p = renderHeatmap(el, data);
    else if (type === "stat") p = renderStat(el, data);
    else if (type === "gauge") p = renderGauge(el, data);
    else if (type === "bargauge") p = renderBarGauge(el, data);
    else if (type === "table") p = renderTable(el, data);
    else p = Promise.resolve();
    return p.then(function () {
      stats.renders++;
      stats.lastRenderMs = performance.now();
      el.dataset.rendered = String(stats.renders);
      if (data.start_ms !== undefined) el.dataset.range = data.start_ms + "-" + data.end_ms;
      var errors = data.errors || [];
      var warnings = [];
      (data.queries || []).forEach(function (q) { warnings = warnings.concat(q.warnings || []); });
      var empty = (data.series && !data.series.length) || (data.values && !data.values.length) ||
        (data.rows && !data.rows.length) || data.heatmap === null;
      if (errors.length) setStatus(el, "⚠ error", true, errors.join("\n"));
      else if (empty) setStatus(el, "No data", false, "The queries returned no series for this range");
      else if (warnings.length) setStatus(el, "ⓘ", false, warnings.join("\n"));
      else setStatus(el, "");
    });
  }

  /* --- fetching ------------------------------------------------------------------------------ */
  function queryString(el, extra) {
    var p = params();
    ["refresh", "viewPanel", "kiosk", "theme"].forEach(function (k) { p.delete(k); });
    var width = Math.round((el && el.querySelector(".body") ? el.querySelector(".body").clientWidth : 1000) || 1000);
    p.set("width", String(Math.max(100, width)));
    if (!p.has("from")) p.set("from", cfg.time.from);
    if (!p.has("to")) p.set("to", cfg.time.to);
    // the server rounds now/d, now/w ... in this zone: the browser's own unless the dashboard or URL names one
    var tz = cfg.timezone === "browser" ? Intl.DateTimeFormat().resolvedOptions().timeZone : cfg.timezone;
    if (tz) p.set("tz", tz);
    for (var k in extra || {}) p.set(k, extra[k]);
    return p.toString();
  }

  function fetchPanel(el) {
    var id = el.dataset.panel;
    if (controllers[id]) controllers[id].abort();
    var controller = new AbortController();
    controllers[id] = controller;
    var url = "/d/" + cfg.uid + "/panels/" + id + ".json?" + queryString(el);
    stats.fetches++;
    setStatus(el, "…");
    return fetch(url, { signal: controller.signal })
      .then(function (r) {
        return r.json().then(function (j) {
          if (!r.ok) throw new Error(j.error || r.statusText);
          return j;
        });
      })
      .then(function (data) { last[id] = data; return render(el, data); })
      .catch(function (e) {
        if (e.name === "AbortError") return;
        stats.errors++;
        setStatus(el, "⚠ " + e.message, true, e.message);
      })
      .finally(function () { if (controllers[id] === controller) delete controllers[id]; });
  }

  /* A panel is fetched once it has come near the screen (as Grafana does), so the first screen of a
     long dashboard draws without waiting for the panels below it; later refreshes fetch every panel
     seen so far. */
  var seen = {};
  var MARGIN_PX = 200;

  function shown(el) {
    var row = el.closest("details.row");
    if (cfg.view_panel && String(cfg.view_panel) !== el.dataset.panel) return false;
    return !(row && !row.open);
  }

  function nearScreen(el) {
    var r = el.getBoundingClientRect();
    return r.width > 0 && r.bottom > -MARGIN_PX && r.top < window.innerHeight + MARGIN_PX;
  }

  function visiblePanels() {
    var out = [];
    document.querySelectorAll(".panel[data-panel]:not([data-type=text])").forEach(function (el) {
      if (!shown(el)) return;
      if (!seen[el.dataset.panel] && nearScreen(el)) seen[el.dataset.panel] = true;
      if (seen[el.dataset.panel]) out.push(el);
    });
    return out;
  }

  function watchScrolling() {
    var panels = document.querySelectorAll(".panel[data-panel]:not([data-type=text])");
    if (!("IntersectionObserver" in window)) {  // no lazy fetching: every panel now
      panels.forEach(function (el) { seen[el.dataset.panel] = true; });
      return;
    }
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) {
        var el = e.target;
        if (!e.isIntersecting || seen[el.dataset.panel] || !shown(el)) return;
        seen[el.dataset.panel] = true;
        fetchPanel(el);
      });
    }, { rootMargin: MARGIN_PX + "px 0px" });
    panels.forEach(function (el) { observer.observe(el); });
  }

  function fetchAnnotations() {
    if (!cfg.annotations) return Promise.resolve();
    return fetch("/d/" + cfg.uid + "/annotations.json?" + queryString(null))
      .then(function (r) { return r.ok ? r.json() : { regions: [] }; })
      .then(function (j) {
        annotations = j.regions || [];
        document.querySelectorAll(".panel[data-type=timeseries] .plot-area, .panel[data-type=heatmap] .plot-area").forEach(function (area) {
          if (area.layout) Plotly.relayout(area, { shapes: annotationShapes() });
        });
      })
      .catch(function () { /* annotations are optional */ });
  }

  function refreshAll() {
    if (explore) return runExplore();
    fetchAnnotations();
    return Promise.all(visiblePanels().map(fetchPanel));
  }

  /* --- time range ---------------------------------------------------------------------------- */
  function timeLabel() {
    var p = params();
    var from = p.get("from") || cfg.time.from, to = p.get("to") || cfg.time.to;
    function show(t) { return /^\d{10,}$/.test(t) ? new Date(parseInt(t, 10)).toLocaleString() : t; }
    var label = document.getElementById("time-label");
    if (label) label.textContent = show(from) + " → " + show(to);
    var f = document.getElementById("time-from"), t = document.getElementById("time-to");
    if (f) f.value = from; if (t) t.value = to;
  }

  function toParam(text) {
    text = text.trim();
    if (/^now/.test(text) || /^\d+$/.test(text)) return text;
    var d = new Date(text);
    return isNaN(d.getTime()) ? text : String(d.getTime());
  }

  function setTime(from, to) {
    var p = params();
    p.set("from", from); p.set("to", to);
    setParams(p, true);
    timeLabel();
    var picker = document.getElementById("time-picker");
    if (picker) picker.open = false;
    reloadAll();
  }

  function currentRangeMs() {
    var any = null;
    for (var id in last) { any = last[id]; break; }
    if (any) return [any.start_ms, any.end_ms];
    var now = Date.now();
    return [now - 3600000, now];
  }

  function wireTimePicker() {
    var form = document.getElementById("time-form");
    if (form) form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      setTime(toParam(document.getElementById("time-from").value), toParam(document.getElementById("time-to").value));
    });
    document.querySelectorAll(".quick button").forEach(function (b) {
      b.addEventListener("click", function () { setTime(b.dataset.from, b.dataset.to); });
    });
    var zoom = document.getElementById("zoom-out");
    if (zoom) zoom.addEventListener("click", function () {
      var r = currentRangeMs(), span = r[1] - r[0];
      var end = Math.min(Date.now(), r[1] + span / 2);
      setTime(String(Math.round(end - span * 2)), String(Math.round(end)));
    });
    timeLabel();
  }

  /* --- refresh ------------------------------------------------------------------------------- */
  function durationMs(text) {
    var re = /(\d+)(ms|s|m|h|d|w)/g, m, total = 0, units = { ms: 1, s: 1e3, m: 6e4, h: 36e5, d: 864e5, w: 6048e5 };
    while ((m = re.exec(text || "")) !== null) total += parseInt(m[1], 10) * units[m[2]];
    return total;
  }

  function startTimer(refresh) {
    if (timer) { clearInterval(timer); timer = null; }
    var ms = durationMs(refresh);
    if (!ms) return;
    ms = Math.max(ms, cfg.min_refresh_ms || 5000);
    timer = setInterval(function () { if (!document.hidden) refreshAll(); }, ms);
  }

  function wireRefresh() {
    var select = document.getElementById("refresh");
    if (select) select.addEventListener("change", function () {
      var p = params();
      if (select.value) p.set("refresh", select.value); else p.delete("refresh");
      setParams(p, false);
      startTimer(select.value);
    });
    var now = document.getElementById("refresh-now");
    if (now) now.addEventListener("click", refreshAll);
    startTimer(params().get("refresh") || cfg.refresh);
    document.addEventListener("visibilitychange", function () { if (!document.hidden && timer) refreshAll(); });
  }

  /* --- variables ----------------------------------------------------------------------------- */
  function wireVariables() {
    var form = document.getElementById("variables");
    if (!form) return;
    form.addEventListener("submit", function (ev) { ev.preventDefault(); });
    form.addEventListener("change", function (ev) {
      var field = ev.target;
      if (!field.name || field.name.indexOf("var-") !== 0) return;
      var p = params();
      p.delete(field.name);
      var values = field.tagName === "SELECT" ? Array.prototype.filter.call(field.options, function (o) { return o.selected; }).map(function (o) { return o.value; }) : [field.value];
      if (values.length > 1 && values.indexOf("$__all") >= 0) values = values.filter(function (v) { return v !== "$__all"; });
      values.forEach(function (v) { p.append(field.name, v); });
      setParams(p, true);
      reloadAll();
    });
  }

  /* After the user changes the time range or a variable, or goes back: a variable's options may
     depend on the range and on earlier variables, so they are re-read before the panels. */
  function reloadAll() { return explore ? refreshAll() : updateVariableOptions().then(refreshAll); }

  function updateVariableOptions() {
    return fetch("/d/" + cfg.uid + "/variables.json?" + queryString(null))
      .then(function (r) { return r.ok ? r.json() : { variables: [] }; })
      .then(function (j) {
        j.variables.forEach(function (v) {
          var select = document.querySelector('select[name="var-' + v.name + '"]');
          if (!select) return;
          var have = Array.prototype.map.call(select.options, function (o) { return o.value; }).filter(function (x) { return x !== "$__all"; });
          if (have.join("\n") !== v.options.join("\n")) {
            var hasAll = select.querySelector('option[value="$__all"]');
            select.replaceChildren();
            if (hasAll) select.appendChild(new Option("All", "$__all"));
            v.options.forEach(function (o) { select.appendChild(new Option(o, o)); });
          }
          Array.prototype.forEach.call(select.options, function (o) { o.selected = v.selected.indexOf(o.value) >= 0; });
        });
      })
      .catch(function () { /* keep the old options */ });
  }

  /* --- panel menu, crosshair, zoom ----------------------------------------------------------- */
  function setViewPanel(id) {
    var p = params();
    if (id) p.set("viewPanel", id); else p.delete("viewPanel");
    setParams(p, true);
    cfg.view_panel = id ? parseInt(id, 10) : null;
    document.querySelectorAll(".panel.fullscreen").forEach(function (el) { el.classList.remove("fullscreen"); });
    if (id) {
      var el = document.getElementById("panel-" + id);
      if (el) { el.classList.add("fullscreen"); fetchPanel(el); }
    } else { refreshAll(); }
    window.dispatchEvent(new Event("resize"));
  }

  function inspect(el) {
    var data = last[el.dataset.panel];
    var body = document.getElementById("inspector-body");
    body.replaceChildren();
    if (!data) { body.textContent = "No data loaded yet."; }
    else {
      var p = document.createElement("p");
      p.textContent = "Server time " + data.server_ms + " ms · step " + data.step_ms / 1000 + " s · range " +
        new Date(data.start_ms).toISOString() + " → " + new Date(data.end_ms).toISOString();
      body.appendChild(p);
      data.queries.forEach(function (q) {
        var h = document.createElement("h3"); h.textContent = "Query " + q.ref + (q.instant ? " (instant)" : "");
        var pre = document.createElement("pre"); pre.textContent = q.expr;
        var info = document.createElement("p");
        info.textContent = q.duration_ms + " ms · " + q.series + " series · " + q.points + " points" +
          (q.error ? " · error: " + q.error : "") + (q.warnings.length ? " · " + q.warnings.join("; ") : "");
        body.append(h, pre, info);
      });
    }
    document.getElementById("inspector").showModal();
  }

  function wireMenus() {
    document.querySelectorAll(".panel .menu-body").forEach(function (menu) {
      var el = menu.closest(".panel");
      menu.addEventListener("click", function (ev) {
        var action = ev.target.dataset.action;
        if (!action) return;
        menu.closest("details").open = false;
        if (action === "view") setViewPanel(cfg.view_panel === parseInt(el.dataset.panel, 10) ? null : el.dataset.panel);
        else if (action === "csv") location.href = "/d/" + cfg.uid + "/panels/" + el.dataset.panel + ".csv?" + queryString(el);
        else if (action === "inspect") inspect(el);
        else if (action === "explore") {
          ev.preventDefault();
          var data = last[el.dataset.panel];
          var p = params();
          var q = new URLSearchParams({ expr: data && data.queries.length ? data.queries[0].expr : "",
                                        from: p.get("from") || cfg.time.from, to: p.get("to") || cfg.time.to });
          location.href = "/explore?" + q.toString();
        }
      });
    });
    document.addEventListener("keydown", function (ev) { if (ev.key === "Escape" && cfg.view_panel) setViewPanel(null); });
    document.querySelectorAll("details.row").forEach(function (row) {
      row.addEventListener("toggle", function () {
        if (row.open) row.querySelectorAll(".panel[data-panel]:not([data-type=text])").forEach(function (el) {
          if (seen[el.dataset.panel]) fetchPanel(el);  // the others when they come near the screen
        });
      });
    });
  }

  function wireHover(area, el) {
    if (area.dataset.wired) return;
    area.dataset.wired = "1";
    area.on("plotly_relayout", function (ev) {
      if (ev["xaxis.range[0]"] === undefined || explore && !cfg.uid && false) return;
      var from = unshift(new Date(ev["xaxis.range[0]"].replace(" ", "T") + "Z").getTime());
      var to = unshift(new Date(ev["xaxis.range[1]"].replace(" ", "T") + "Z").getTime());
      if (!isNaN(from) && !isNaN(to) && to > from) setTime(String(Math.round(from)), String(Math.round(to)));
    });
    if (cfg.graph_tooltip === "none" || explore) return;
    area.on("plotly_hover", function (ev) {
      if (hovering || !ev.xvals) return;
      hovering = true;
      document.querySelectorAll(".panel[data-type=timeseries] .plot-area").forEach(function (other) {
        if (other !== area && other.data && other.data.length) {
          try { Plotly.Fx.hover(other, { xval: ev.xvals[0] }); } catch (e) { /* panel not drawn yet */ }
        }
      });
      hovering = false;
    });
    area.on("plotly_unhover", function () {
      document.querySelectorAll(".panel[data-type=timeseries] .plot-area").forEach(function (other) {
        if (other !== area && other.data) Plotly.Fx.unhover(other);
      });
    });
  }

  /* --- explore ------------------------------------------------------------------------------- */
  function runExplore() {
    var p = params();
    var expr = (p.get("expr") || "").trim();
    var status = document.getElementById("explore-status");
    if (!expr) { status.textContent = "Enter a PromQL expression."; return Promise.resolve(); }
    var graphEl = document.getElementById("panel-graph"), tableEl = document.getElementById("panel-table");
    var q = queryString(graphEl);
    stats.fetches++;
    status.textContent = "Running…";
    var started = performance.now();
    return fetch("/explore/query.json?" + q)
      .then(function (r) { return r.json().then(function (j) { if (!r.ok) throw new Error(j.error || r.statusText); return j; }); })
      .then(function (j) {
        last.graph = j.graph;
        status.textContent = (j.graph.errors.length ? j.graph.errors.join("; ") : j.graph.series.length + " series, step " + j.graph.step_ms / 1000 + " s") +
          " · " + Math.round(performance.now() - started) + " ms";
        return Promise.all([render(graphEl, j.graph), render(tableEl, j.table)]);
      })
      .catch(function (e) { stats.errors++; status.textContent = "Error: " + e.message; });
  }

  function wireExplore() {
    var form = document.getElementById("explore-form");
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var p = params();
      p.set("expr", document.getElementById("expr").value);
      var step = document.getElementById("step").value.trim();
      if (step) p.set("step", step); else p.delete("step");
      if (!p.has("from")) p.set("from", cfg.time.from);
      if (!p.has("to")) p.set("to", cfg.time.to);
      setParams(p, true);
      runExplore();
    });
    document.getElementById("expr").addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" && (ev.shiftKey || ev.ctrlKey)) { ev.preventDefault(); form.requestSubmit(); }
    });
    cfg.timezone = "browser";
  }

  function start() {
    wireTimePicker();
    window.addEventListener("popstate", function () { timeLabel(); reloadAll(); });
    document.addEventListener("wk:theme", function () { for (var id in last) { var el = document.getElementById("panel-" + id); if (el) render(el, last[id]); } });
    if (explore) { wireExplore(); runExplore(); return; }
    wireRefresh();
    wireVariables();
    wireMenus();
    if (cfg.view_panel) { var el = document.getElementById("panel-" + cfg.view_panel); if (el) el.classList.add("fullscreen"); }
    watchScrolling();
    refreshAll();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
