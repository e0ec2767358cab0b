// Draws every figure placeholder on the page with the site's one copy of plotly.js (loaded just before this file).
// A placeholder is a div.finescope-figure followed by a script.finescope-figure-spec holding {data, layout}.
(function () {
  function draw() {
    document.querySelectorAll("div.finescope-figure:not(.js-plotly-plot)").forEach(function (div) {
      var spec = JSON.parse(div.nextElementSibling.textContent);
      Plotly.newPlot(div, spec.data, spec.layout, {responsive: true, displaylogo: false});
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
