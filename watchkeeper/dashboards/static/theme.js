/* The theme before the first paint (?theme= or the stored choice); loaded in <head>, not deferred. */
(function () {
  "use strict";
  var t = new URLSearchParams(location.search).get("theme") || localStorage.getItem("wk-theme");
  if (t === "dark" || t === "light") document.documentElement.setAttribute("data-theme", t);
})();
