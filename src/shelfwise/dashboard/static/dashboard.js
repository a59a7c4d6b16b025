// shelfwise dashboard: draws the plots and re-ranks the shopper's feed live. No framework.
(function () {
  "use strict";
  function drawPlots(root) {
    if (!window.Plotly) return;
    root.querySelectorAll(".plot[data-figure]").forEach(function (el) {
      var fig = JSON.parse(el.getAttribute("data-figure"));
      window.Plotly.newPlot(el, fig.data, fig.layout, {displaylogo: false, responsive: true});
    });
  }
  function slider() {
    var input = document.getElementById("diversity");
    if (!input) return;
    var out = document.getElementById("diversity-value");
    var feed = document.getElementById("feed");
    var pending = null;
    input.addEventListener("input", function () {
      out.textContent = input.value;
      if (pending) pending.abort();
      pending = new AbortController();
      var url = "/dashboard/shopper/feed?user=" + encodeURIComponent(input.dataset.user) +
        "&diversity=" + input.value;
      fetch(url, {signal: pending.signal, credentials: "same-origin"})
        .then(function (r) { return r.text(); })
        .then(function (html) {
          feed.innerHTML = html;
          var u = new URL(window.location.href);
          u.searchParams.set("diversity", input.value);
          window.history.replaceState(null, "", u);
        })
        .catch(function (e) { if (e.name !== "AbortError") feed.textContent = String(e); });
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    drawPlots(document);
    slider();
  });
})();
