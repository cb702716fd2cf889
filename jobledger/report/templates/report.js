(function () {
  "use strict";
  // Completion map: sort rows by a header button; binned cells get their hover text when first hovered.
  var map = document.getElementById("map");
  if (map) {
    var body = map.tBodies[0];
    var headers = map.tHead.rows[0].cells;
    var compare = function (x, y) {
      var nx = x !== "" && isFinite(x), ny = y !== "" && isFinite(y);
      if (nx && ny) { return Number(x) - Number(y); }
      if (nx !== ny) { return nx ? -1 : 1; }
      return x < y ? -1 : (x > y ? 1 : 0);
    };
    map.tHead.addEventListener("click", function (event) {
      var button = event.target.closest("button[data-sort]");
      if (!button) { return; }
      var key = "data-" + button.getAttribute("data-sort");
      var descending = button.getAttribute("aria-sort") === "ascending";
      Array.prototype.forEach.call(map.tHead.querySelectorAll("button[aria-sort]"), function (b) {
        b.removeAttribute("aria-sort");
      });
      button.setAttribute("aria-sort", descending ? "descending" : "ascending");
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var c = compare(a.getAttribute(key), b.getAttribute(key));
        if (descending) { c = -c; }
        return c || (a.getAttribute("data-i") - b.getAttribute("data-i"));
      });
      var fragment = document.createDocumentFragment();
      rows.forEach(function (row) { fragment.appendChild(row); });
      body.appendChild(fragment);
    });
    map.addEventListener("mouseover", function (event) {
      var cell = event.target.closest("td[data-n]");
      if (!cell || cell.title) { return; }
      var counts = cell.getAttribute("data-counts") || cell.getAttribute("data-state") + ":" + cell.getAttribute("data-n");
      cell.title = "param sets " + cell.parentNode.cells[0].textContent + ", " + headers[cell.cellIndex].title + "\n" +
        counts.split(" ").join("\n").replace(/:/g, ": ");
    });
  }
  // The full not-verified list: gzipped CSV in the page, turned into a plain CSV file on first click.
  var link = document.getElementById("csv-link");
  if (link) {
    link.addEventListener("click", function (event) {
      if (link.getAttribute("href") !== "#") { return; }
      event.preventDefault();
      var text = atob(document.getElementById("csv-data").textContent.trim());
      var bytes = new Uint8Array(text.length);
      for (var i = 0; i < text.length; i++) { bytes[i] = text.charCodeAt(i); }
      var csv = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
      new Response(csv).blob().then(function (blob) {
        link.href = URL.createObjectURL(new Blob([blob], { type: "text/csv" }));
        link.click();
      });
    });
  }
}());
