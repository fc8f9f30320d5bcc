/* Small progressive enhancements. Every page works without this file (and the CSP allows no
   inline script, so everything lives here). No third-party code, no requests to other hosts. */
(function () {
  "use strict";

  function each(selector, fn) {
    Array.prototype.forEach.call(document.querySelectorAll(selector), fn);
  }

  // After a failed submit, bring the list of errors into view and focus, so it is read out.
  // (After load: scrolling to the form's #sign fragment clears the focus in Chromium.)
  var summary = document.querySelector("[data-error-summary]");
  if (summary) {
    window.addEventListener("load", function () {
      window.setTimeout(function () { summary.focus(); }, 0);
    });
  }
  // Links in the error list put the caret into the field itself, not just scroll to it.
  each("[data-error-summary] a[href^='#']", function (link) {
    link.addEventListener("click", function (event) {
      var target = document.getElementById(link.getAttribute("href").slice(1));
      if (target) {
        event.preventDefault();
        target.focus();
      }
    });
  });

  // The sign form's bot check: the server's signed note of when this page was opened (the
  // cached page's own token only knows the minute). Without it the form works the same.
  each("input[data-form-started]", function (input) {
    if (!window.fetch) {
      return;
    }
    window.fetch(input.getAttribute("data-form-started"), { credentials: "omit", cache: "no-store" })
      .then(function (response) { return response.ok ? response.text() : ""; })
      .then(function (text) { input.value = text.trim(); })
      .catch(function () { /* offline: the form token's window is enough */ });
  });

  // One press, one submission: the button says it is working and further presses do nothing.
  each("form[data-once]", function (form) {
    var button = form.querySelector("button[type=submit]");
    var label = button ? button.textContent : "";
    form.addEventListener("submit", function (event) {
      if (form.getAttribute("data-sent")) {
        event.preventDefault();
        return;
      }
      form.setAttribute("data-sent", "1");
      if (button && button.getAttribute("data-busy")) {
        button.setAttribute("aria-disabled", "true");
        button.textContent = button.getAttribute("data-busy");
      }
    });
    // Coming back with the Back button restores the page from cache: make it usable again.
    window.addEventListener("pageshow", function (event) {
      if (event.persisted) {
        form.removeAttribute("data-sent");
        if (button) {
          button.removeAttribute("aria-disabled");
          button.textContent = label;
        }
      }
    });
  });

  // Share: the phone's own share sheet where there is one, and a copy button.
  if (navigator.share) {
    each("[data-share-url]", function (button) {
      button.closest(".js-only").hidden = false;
      button.addEventListener("click", function () {
        navigator.share({
          title: button.getAttribute("data-share-title"),
          url: button.getAttribute("data-share-url")
        }).catch(function () { /* the person closed the sheet */ });
      });
    });
  }
  each("[data-select-on-focus]", function (input) {
    input.addEventListener("focus", function () { input.select(); });
  });
  if (navigator.clipboard && window.isSecureContext) {
    each("[data-copy]", function (button) {
      var input = document.getElementById(button.getAttribute("data-copy"));
      var status = button.closest(".share-copy").querySelector("[data-copy-status]");
      button.hidden = false;
      button.addEventListener("click", function () {
        navigator.clipboard.writeText(input.value).then(function () {
          status.textContent = button.getAttribute("data-copied") || "Link copied.";
        }, function () {
          input.focus();
          status.textContent = "Select the link and copy it.";
        });
      });
    });
  }
})();
