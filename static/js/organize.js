/* Organizer pages: the Markdown editor's live preview. The server renders and sanitizes the
   preview (the same function that renders the saved page), so this file only sends the text
   and shows what comes back. Without JavaScript, the "Preview" button does the same by
   submitting the form. No inline script (the CSP is script-src 'self'). */
(function () {
  "use strict";

  Array.prototype.forEach.call(document.querySelectorAll("[data-markdown-editor]"), function (editor) {
    var form = editor.closest("form");
    var textarea = editor.querySelector("textarea");
    var preview = editor.querySelector("[data-preview]");
    var button = form ? form.querySelector("[data-preview-button]") : null;
    var url = editor.getAttribute("data-preview-url");
    if (!form || !textarea || !preview || !url || !window.fetch) {
      return;
    }
    var token = form.querySelector("input[name=csrf_token]");
    var timer = null;
    var sent = 0;

    function refresh() {
      var body = new FormData();
      body.append("csrf_token", token ? token.value : "");
      body.append("body_markdown", textarea.value);
      var mine = ++sent;
      fetch(url, {method: "POST", body: body, credentials: "same-origin",
                  headers: {"Accept": "application/json"}})
        .then(function (response) { return response.json(); })
        .then(function (data) {
          if (mine !== sent) {
            return; // an older answer arriving late
          }
          if (typeof data.html === "string") {
            // Sanitized on the server by nh3: no script, no event handlers, no javascript: links.
            preview.innerHTML = data.html || "<p class=\"muted\">Nothing to preview yet.</p>";
          } else if (data.error) {
            preview.textContent = data.error;
          }
        })
        .catch(function () { preview.textContent = "The preview is not available right now."; });
    }

    textarea.addEventListener("input", function () {
      window.clearTimeout(timer);
      timer = window.setTimeout(refresh, 400);
    });
    if (button) {
      button.addEventListener("click", function (event) {
        event.preventDefault();
        refresh();
      });
    }
    editor.classList.add("live");
    refresh();
  });
})();
