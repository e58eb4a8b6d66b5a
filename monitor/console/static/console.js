/* csp-monitor console: the only script of the console (the CSP allows no inline one).
   Progressive enhancement only; every page works without it.
   1. <button data-copy="ID"> copies the text of element ID (the 21Vianet ticket draft).
   2. <div data-refresh-url="URL" data-refresh-seconds="N"> replaces its content with the
      HTML fragment at URL every N seconds (the board), rendered and escaped by the server. */
(function () {
  "use strict";

  function flash(button, text) {
    var original = button.getAttribute("data-label") || button.textContent;
    button.setAttribute("data-label", original);
    button.textContent = text;
    window.setTimeout(function () { button.textContent = original; }, 2000);
  }

  function selectText(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function copy(button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) { return; }
    var text = source.textContent;
    var done = function () {
      button.setAttribute("data-copied-ok", "1");
      flash(button, button.getAttribute("data-copied"));
    };
    var fallback = function () {
      selectText(source);
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      if (ok) { done(); } else { flash(button, button.getAttribute("data-failed")); }
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, fallback);
    } else {
      fallback();
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button[data-copy]") : null;
    if (button) { copy(button); }
  });

  function keepFresh(region) {
    var url = region.getAttribute("data-refresh-url");
    var seconds = parseInt(region.getAttribute("data-refresh-seconds"), 10) || 10;
    var schedule = function () { window.setTimeout(refresh, seconds * 1000); };
    var stale = function () {
      region.classList.add("stale");
      region.setAttribute("data-stale", region.getAttribute("data-stale-text") || "stale");
    };
    var refresh = function () {
      fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "console" } })
        .then(function (response) {
          if (!response.ok) { throw new Error(String(response.status)); }
          return response.text();
        })
        .then(function (html) {
          region.innerHTML = html;
          region.classList.remove("stale");
          region.removeAttribute("data-stale");
          region.setAttribute("data-refreshed", String(Date.now()));
        })
        .catch(stale)
        .then(schedule);
    };
    schedule();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var regions = document.querySelectorAll("[data-refresh-url]");
    for (var i = 0; i < regions.length; i++) { keepFresh(regions[i]); }
  });
}());
