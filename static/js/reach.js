/* Supporter update page: refresh the progress figures from the small JSON endpoint every two
   seconds while the update is moving. Without JavaScript the "Refresh" link does the same.
   No inline script (the CSP is script-src 'self'). */
(function () {
  "use strict";
  var section = document.querySelector("[data-progress-url]");
  if (!section || !window.fetch) {
    return;
  }
  var url = section.getAttribute("data-progress-url");
  var moving = {scheduled: true, sending: true, paused: true};
  function show(name, value) {
    var cell = section.querySelector("[data-progress=" + name + "]");
    if (cell) {
      cell.textContent = typeof value === "number" ? value.toLocaleString("en") : value;
    }
  }
  function poll() {
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) { return response.json(); })
      .then(function (data) {
        show("status", data.status);
        show("queued", (data.queued || 0) + (data.sending || 0));
        ["sent", "failed", "suppressed", "cancelled"].forEach(function (name) { show(name, data[name] || 0); });
        if (moving[data.status]) {
          window.setTimeout(poll, 2000);
        }
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  }
  window.setTimeout(poll, 1000);
})();
