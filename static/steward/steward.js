// Steward's page script (no dependencies beyond the vendored htmx): the viewer's time zone,
// ticking countdowns, and the one hook a live layer calls, Steward.reread(id).
(function () {
  "use strict";

  // The server renders times in the zone this cookie names (UTC without it).
  var COOKIE = "steward_tz";
  function cookie(name) {
    var found = document.cookie.split("; ").filter(function (c) { return c.indexOf(name + "=") === 0; })[0];
    return found ? decodeURIComponent(found.slice(name.length + 1)) : null;
  }
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone && cookie(COOKIE) !== zone) {
      var first = cookie(COOKIE) === null;
      // Zone names are [A-Za-z0-9/_+-]: stored as they are (the server reads them unquoted).
      document.cookie = COOKIE + "=" + zone + "; path=/; max-age=31536000; samesite=lax";
      // Only the first visit re-renders at once; a changed zone shows from the next page on.
      if (first && zone !== "UTC" && zone !== "Etc/UTC" && document.querySelector("time[datetime]")) {
        window.location.reload();
      }
    }
  } catch (e) { /* no Intl: times stay in UTC, which their labels say */ }

  function humanise(seconds) {
    seconds = Math.floor(Math.abs(seconds));
    var d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
    var m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
    if (d) return d + " d " + h + " h";
    if (h) return h + " h " + (m < 10 ? "0" : "") + m + " min";
    if (m) return m + " min";
    return s + " s";
  }
  function tick() {
    document.querySelectorAll("time[data-countdown]").forEach(function (el) {
      var left = (Date.parse(el.getAttribute("datetime")) - Date.now()) / 1000;
      el.textContent = left > 0 ? "in " + humanise(left) : humanise(left) + " overdue";
      el.classList.toggle("overdue", left <= 0);
    });
  }
  setInterval(tick, 15000);

  // Re-read one request: its row (or the list, when the request is new to this page), the open
  // request if it is this one, and the count. The live layer (live.js: a websocket carrying ids
  // only) calls this; the server answers through restrict() and the page's tab and filters.
  var listTimer = null;
  function refreshList() {
    var list = document.getElementById("inbox-list");
    if (!list || !window.htmx) return;
    clearTimeout(listTimer);  // a burst of new requests re-reads the list once
    listTimer = setTimeout(function () {
      htmx.ajax("GET", "/inbox/" + window.location.search, { target: "#inbox-list", swap: "innerHTML" });
    }, 100);
  }
  function rereadCount() {
    if (window.htmx) htmx.trigger(document.body, "steward:reread-count");
  }
  function reread(id) {
    if (!window.htmx) return;
    var row = document.getElementById("row-" + id);
    var query = window.location.search;
    if (row) {
      htmx.ajax("GET", "/inbox/" + id + "/row/" + query, { target: row, swap: "outerHTML" });
    } else {
      refreshList();
    }
    var open = document.querySelector("#detail [data-request='" + id + "']");
    if (open) {
      htmx.ajax("GET", open.getAttribute("data-detail-url"), { target: "#detail", swap: "innerHTML" });
    }
    rereadCount();
  }

  // Re-read one escalation: its row (or the list, when it is new to this page), the open
  // escalation if it is this one, and the count; as reread(id) does for requests.
  function rereadEscalation(id) {
    if (!window.htmx) return;
    var row = document.getElementById("esc-row-" + id);
    if (row) {
      htmx.ajax("GET", "/inbox/escalations/" + id + "/row/" + window.location.search, { target: row, swap: "outerHTML" });
    } else {
      refreshList();
    }
    var open = document.querySelector("#detail [data-escalation='" + id + "']");
    if (open) {
      htmx.ajax("GET", open.getAttribute("data-detail-url"), { target: "#detail", swap: "innerHTML" });
    }
    rereadCount();
  }

  // The browser's title carries the count of decisions owed: "(3) Inbox · Steward".
  var plainTitle = document.title.replace(/^\(\d+\) /, "");
  function showCount() {
    var count = document.getElementById("inbox-count");
    if (!count) return;
    var owed = parseInt(count.textContent, 10) || 0;
    document.title = (owed ? "(" + owed + ") " : "") + plainTitle;
  }
  showCount();
  document.addEventListener("htmx:afterSettle", showCount);


  // Re-read a run's parts: its header (status, waits, actions), its row in the runs list, and,
  // when a step is named, that step's row, node and open panel. A live layer carrying ids only
  // calls Steward.rereadRun(runId, stepId); the server answers through restrict().
  function rereadRun(runId, stepId) {
    if (!window.htmx) return;
    var header = document.getElementById("run-header");
    if (header && document.querySelector(".run[data-run='" + runId + "']")) {
      htmx.ajax("GET", header.getAttribute("data-url"), { target: header, swap: "innerHTML" });
    }
    var row = document.getElementById("run-" + runId);
    if (row) htmx.ajax("GET", "/runs/" + runId + "/row/", { target: row, swap: "outerHTML" });
    if (stepId) {
      var panel = document.querySelector("#step-panel [data-step='" + stepId + "']");
      if (panel) htmx.ajax("GET", panel.getAttribute("data-url"), { target: "#step-panel", swap: "innerHTML" });
      var steps = document.getElementById("run-steps");
      if (steps && document.getElementById("step-row-" + stepId)) {
        htmx.ajax("GET", "/runs/" + runId + "/steps/", { target: steps, swap: "innerHTML" });
      }
    }
  }
  window.Steward = {
    reread: reread, rereadEscalation: rereadEscalation, rereadCount: rereadCount, refreshList: refreshList, rereadRun: rereadRun, tick: tick,
  };
})();
