/* watchkeeper: helpers shared by every page (theme toggle, list filter, silence form, CSRF header).
   No page has inline script (the Content-Security-Policy forbids it): elements say what they need
   with data-* attributes, wired below. */
(function () {
  "use strict";
  var wk = (window.wk = window.wk || {});
  var root = document.documentElement;

  wk.theme = function () {
    var t = root.getAttribute("data-theme");
    if (t) return t;
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: light)").matches ? "light" : "dark";
  };

  var toggle = document.getElementById("theme-toggle");
  if (toggle) {
    toggle.addEventListener("click", function () {
      var next = wk.theme() === "dark" ? "light" : "dark";
      root.setAttribute("data-theme", next);
      localStorage.setItem("wk-theme", next);
      var params = new URLSearchParams(location.search);
      if (params.has("theme")) { params.set("theme", next); history.replaceState(null, "", "?" + params.toString()); }
      document.dispatchEvent(new CustomEvent("wk:theme"));
    });
  }

  wk.filterList = function (inputId, listId) {
    var input = document.getElementById(inputId), list = document.getElementById(listId);
    if (!input || !list) return;
    input.addEventListener("input", function () {
      var needle = input.value.trim().toLowerCase();
      list.querySelectorAll("li").forEach(function (li) {
        li.hidden = needle !== "" && li.getAttribute("data-search").indexOf(needle) < 0;
      });
    });
  };

  /* A logged-in session must echo its CSRF token (cookie wk_csrf) on state-changing requests. */
  wk.csrfHeaders = function (headers) {
    var m = document.cookie.match(/(?:^|;\s*)wk_csrf=([^;]+)/);
    if (m) headers["X-CSRF-Token"] = decodeURIComponent(m[1]);
    return headers;
  };

  /* Matchers text like {a="b", c=~"d"} -> Alertmanager v2 matchers. */
  function parseMatchers(text) {
    var out = [], re = /([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g, m;
    while ((m = re.exec(text)) !== null) {
      out.push({ name: m[1], value: m[3].replace(/\\(.)/g, "$1"), isRegex: m[2].indexOf("~") >= 0, isEqual: m[2][0] !== "!" });
    }
    return out;
  }

  function durationMs(text) {
    var re = /(\d+)(ms|s|m|h|d|w)/g, m, total = 0, units = { ms: 1, s: 1e3, m: 6e4, h: 36e5, d: 864e5, w: 6048e5 };
    while ((m = re.exec(text)) !== null) total += parseInt(m[1], 10) * units[m[2]];
    return total;
  }

  wk.silenceForm = function (formId, statusId) {
    var form = document.getElementById(formId), status = document.getElementById(statusId);
    if (!form) return;
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var data = new FormData(form), now = Date.now();
      var body = {
        matchers: parseMatchers(String(data.get("matchers"))),
        startsAt: new Date(now).toISOString(),
        endsAt: new Date(now + (durationMs(String(data.get("duration"))) || 7200000)).toISOString(),
        createdBy: data.get("createdBy"), comment: data.get("comment"),
      };
      if (!body.matchers.length) { status.textContent = "Enter at least one matcher: name=\"value\""; return; }
      fetch("/api/v2/silences", { method: "POST", headers: wk.csrfHeaders({ "Content-Type": "application/json" }), body: JSON.stringify(body) })
        .then(function (r) { return r.ok ? r.json() : r.text().then(function (t) { throw new Error(r.status + " " + t); }); })
        .then(function (j) { status.textContent = "Created " + (j.silenceID || ""); setTimeout(function () { location.href = "/silences"; }, 400); })
        .catch(function (e) { status.textContent = "Failed: " + e.message; });
    });
  };

  function wire() {
    document.querySelectorAll("input[data-filter-list]").forEach(function (input) {
      wk.filterList(input.id, input.getAttribute("data-filter-list"));
    });
    document.querySelectorAll("form[data-silence-status]").forEach(function (form) {
      wk.silenceForm(form.id, form.getAttribute("data-silence-status"));
    });
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { if (select.form) select.form.submit(); });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", wire); else wire();
})();
