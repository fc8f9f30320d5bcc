/* Petition page, with JavaScript (issue 5): the count updates live from the JSON API, and the
   sign form checks its fields as people leave them. Without JavaScript the page works the same;
   the server checks everything again. No framework, nothing from other hosts. */
(function () {
  "use strict";

  // --- live count: poll /api/v1/petitions/<slug> every 15 s while the page is visible ---------
  var progress = document.querySelector("[data-live-count]");
  if (progress && window.fetch && progress.getAttribute("data-live-count")) {
    var url = progress.getAttribute("data-live-count");
    var strong = progress.querySelector("[data-count] strong");
    var bar = progress.querySelector("[data-bar]");
    var meter = progress.querySelector("[role=progressbar]");
    var goal = parseInt(progress.getAttribute("data-goal"), 10) || 0;
    var format = window.Intl ? new Intl.NumberFormat(document.documentElement.lang || undefined) : null;
    var refresh = function () {
      if (document.hidden) { return; }
      fetch(url, { credentials: "omit", headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (data) {
          if (!data || typeof data.signature_count !== "number" || !strong) { return; }
          var count = data.signature_count;
          strong.textContent = format ? format.format(count) : String(count);
          if (goal && bar && meter) {
            var pct = Math.min(100, Math.floor(count * 100 / goal));
            bar.className = "bar-fill w" + (pct - pct % 2);
            meter.setAttribute("aria-valuenow", String(Math.min(count, goal)));
          }
        })
        .catch(function () { /* offline for a moment: the next poll tries again */ });
    };
    window.setInterval(refresh, 15000);
  }

  // --- inline validation as people leave a field; sending is still checked by the server -----
  var form = document.querySelector("form[data-validate]");
  if (!form) { return; }
  var messages = {
    name: form.getAttribute("data-msg-name"),
    email: form.getAttribute("data-msg-email"),
    country: form.getAttribute("data-msg-country")
  };
  var prefix = form.getAttribute("data-msg-prefix") || "Error:";
  function check(input) {
    var id = input.id;
    var errorId = id + "-error";
    var existing = document.getElementById(errorId);
    var value = (input.value || "").trim();
    var wrong = "";
    if (input.hasAttribute("required") && !value) { wrong = messages[id] || ""; }
    else if (input.type === "email" && value && !/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(value)) { wrong = messages.email || ""; }
    var field = input.closest(".field");
    var described = (input.getAttribute("aria-describedby") || "").split(" ").filter(function (x) { return x && x !== errorId; });
    if (wrong) {
      if (!existing) {
        existing = document.createElement("p");
        existing.className = "error";
        existing.id = errorId;
        input.insertAdjacentElement("afterend", existing);
      }
      existing.textContent = prefix + " " + wrong;
      described.push(errorId);
      input.setAttribute("aria-invalid", "true");
      if (field) { field.classList.add("has-error"); }
    } else {
      if (existing) { existing.parentNode.removeChild(existing); }
      input.removeAttribute("aria-invalid");
      if (field) { field.classList.remove("has-error"); }
    }
    if (described.length) { input.setAttribute("aria-describedby", described.join(" ")); }
    else { input.removeAttribute("aria-describedby"); }
    return !wrong;
  }
  ["name", "email", "country"].forEach(function (id) {
    var input = document.getElementById(id);
    if (!input) { return; }
    input.addEventListener("blur", function () { if (input.value) { check(input); } });
    input.addEventListener("change", function () { check(input); });
  });
})();
