/* The sign widget's script, in two roles. No dependencies, no cookies, no storage, no requests
   to anyone but this site.

   On a partner's page, loaded by the snippet
     <a href=".../petitions/SLUG" data-campaign-petition="SLUG">Sign the petition</a>
     <script src=".../static/js/embed.js" data-petition="SLUG" data-source="CODE" async></script>
   it replaces the link with an iframe of /embed/SLUG (without JavaScript the link stays) and
   sizes the iframe to its content from the height messages the widget sends, accepting them only
   from this site's origin and from that iframe's window. It sets the iframe's size through the
   CSSOM (element.style), which a partner's CSP without 'unsafe-inline' still allows; the partner
   needs only script-src and frame-src for this site.

   Inside the widget (templates/embed/, the script tag has data-campaign-frame) it tells the
   partner's page its height, refreshes the count now and then, and makes one press of the
   button send the form once. */
(function () {
  "use strict";

  var MESSAGE = "campaign-embed:height";
  var script = document.currentScript;
  if (!script) {
    return;
  }

  function frameRole() {
    var lastHeight = 0;

    function reportHeight() {
      if (window.parent === window) {
        return;
      }
      var height = Math.ceil(document.documentElement.getBoundingClientRect().height);
      if (height !== lastHeight) {
        lastHeight = height;
        // Only a number leaves this page, so any parent may read it: the partner's script
        // checks that it came from this site's frame.
        window.parent.postMessage({ type: MESSAGE, height: height }, "*");
      }
    }

    function start() {
      reportHeight();
      if (window.ResizeObserver) {
        new window.ResizeObserver(reportHeight).observe(document.documentElement);
      } else {
        window.addEventListener("resize", reportHeight);
      }
      window.addEventListener("load", reportHeight);

      // One press, one submission.
      Array.prototype.forEach.call(document.querySelectorAll("form[data-once]"), function (form) {
        var button = form.querySelector("button[type=submit]");
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
      });

      // The sign form's bot check (issue 6): this site's signed note of when the widget opened.
      Array.prototype.forEach.call(document.querySelectorAll("input[data-form-started]"), function (input) {
        if (window.fetch) {
          window.fetch(input.getAttribute("data-form-started"), { credentials: "omit", cache: "no-store" })
            .then(function (response) { return response.ok ? response.text() : ""; })
            .then(function (text) { input.value = text.trim(); })
            .catch(function () { /* the form token's window is enough */ });
        }
      });

      // The live count: the cheap, cacheable count endpoint, once a minute while visible.
      var countUrl = script.getAttribute("data-count-url");
      var shown = document.querySelector("[data-count]");
      var bar = document.querySelector("[data-progress]");
      if (countUrl && shown && window.fetch) {
        window.setInterval(function () {
          if (document.visibilityState !== "visible") {
            return;
          }
          window.fetch(countUrl, { credentials: "omit" }).then(function (response) {
            return response.ok ? response.json() : null;
          }).then(function (data) {
            if (data && typeof data.signature_count === "number") {
              shown.textContent = data.signature_count.toLocaleString("en-US");
              if (bar) {
                bar.value = Math.min(data.signature_count, Number(bar.getAttribute("max")) || 0);
              }
            }
          }).catch(function () { /* keep the count shown */ });
        }, 60000);
      }
    }

    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", start);
    } else {
      start();
    }
  }

  function partnerRole() {
    if (script.getAttribute("data-campaign-done")) {
      return;
    }
    script.setAttribute("data-campaign-done", "1");
    var slug = script.getAttribute("data-petition");
    if (!slug) {
      return;
    }
    var origin = new URL(script.src, document.baseURI).origin;
    var src = origin + "/embed/" + encodeURIComponent(slug);
    var source = script.getAttribute("data-source");
    if (source) {
      src += "?source=" + encodeURIComponent(source);
    }

    var frame = document.createElement("iframe");
    frame.src = src;
    frame.title = script.getAttribute("data-title") || "Sign the petition";
    frame.setAttribute("data-campaign-widget", slug);
    frame.style.display = "block";
    frame.style.width = "100%";
    frame.style.maxWidth = "34rem";
    frame.style.border = "0";
    frame.style.height = (Number(script.getAttribute("data-height")) || 640) + "px";

    window.addEventListener("message", function (event) {
      // Only this site's widget, in this very iframe, may size it.
      if (event.origin !== origin || event.source !== frame.contentWindow) {
        return;
      }
      var data = event.data;
      if (!data || data.type !== MESSAGE) {
        return;
      }
      var height = Number(data.height);
      if (isFinite(height) && height >= 100 && height <= 5000) {
        frame.style.height = Math.ceil(height) + "px";
      }
    });

    // The fallback link just before the script (the snippet's <a data-campaign-petition>)
    // gives way to the frame; without it, the frame goes where the script is.
    var link = script.previousElementSibling;
    if (link && link.tagName === "A" && link.getAttribute("data-campaign-petition") === slug) {
      link.parentNode.replaceChild(frame, link);
    } else {
      script.parentNode.insertBefore(frame, script);
    }
  }

  if (script.hasAttribute("data-campaign-frame")) {
    frameRole();
  } else {
    partnerRole();
  }
})();
