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

  // Every re-read names its element as the source: htmx keeps one request in flight (and the
  // last one queued) per source, and the default source, the body, would drop all but one of
  // the re-reads issued together.

  // Re-read one request: its row (or the list, when the request is new to this page), the open
  // request if it is this one, and the count. The live layer (live.js: a websocket carrying ids
  // only) calls this; the server answers through restrict() and the page's tab and filters.
  var listTimer = null;
  function refreshList() {
    var list = document.getElementById("inbox-list");
    if (!list || !window.htmx) return;
    clearTimeout(listTimer);  // a burst of new requests re-reads the list once
    listTimer = setTimeout(function () {
      htmx.ajax("GET", "/inbox/" + window.location.search, { source: "#inbox-list", target: "#inbox-list", swap: "innerHTML" });
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
      htmx.ajax("GET", "/inbox/" + id + "/row/" + query, { source: row, target: row, swap: "outerHTML" });
    } else {
      refreshList();
    }
    var open = document.querySelector("#detail [data-request='" + id + "']");
    if (open) {
      htmx.ajax("GET", open.getAttribute("data-detail-url"), { source: "#detail", target: "#detail", swap: "innerHTML" });
    }
    rereadCount();
  }

  // Re-read one escalation: its row (or the list, when it is new to this page), the open
  // escalation if it is this one, and the count; as reread(id) does for requests.
  function rereadEscalation(id) {
    if (!window.htmx) return;
    var row = document.getElementById("esc-row-" + id);
    if (row) {
      htmx.ajax("GET", "/inbox/escalations/" + id + "/row/" + window.location.search, { source: row, target: row, swap: "outerHTML" });
    } else {
      refreshList();
    }
    var open = document.querySelector("#detail [data-escalation='" + id + "']");
    if (open) {
      htmx.ajax("GET", open.getAttribute("data-detail-url"), { source: "#detail", target: "#detail", swap: "innerHTML" });
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


  // Re-read a run's parts: its header (status, waits, actions), graph, page of steps, the open
  // step's panel, the events when their last page shows, and its row in the runs list. The live
  // layer (live.js, ids only) calls Steward.rereadRun(runId, stepId, event); the server answers
  // through restrict(). A burst of changes to one run re-reads it once (htmx also queues a
  // request behind one in flight on the same element).
  var runTimers = {};
  function ajaxFrom(container, selector) {
    var el = container && (selector ? container.querySelector(selector) : container);
    var url = el && el.getAttribute("data-url");
    if (url) htmx.ajax("GET", url, { source: container, target: container, swap: "innerHTML" });
  }
  function rereadRunNow(runId, stepId, event) {
    var row = document.getElementById("run-" + runId);
    if (row) {
      htmx.ajax("GET", "/runs/" + runId + "/row/", { source: row, target: row, swap: "outerHTML" });
    } else if (event === "run.started") {
      var fresh = document.getElementById("runs-new");
      if (fresh) fresh.hidden = false;  // a new run: the list offers to show it
    }
    if (!document.querySelector(".run[data-run='" + runId + "']")) return;
    ajaxFrom(document.getElementById("run-header"));
    ajaxFrom(document.getElementById("run-graph"));
    ajaxFrom(document.getElementById("run-steps"), "table[data-url]");
    var events = document.getElementById("run-events");
    if (events && events.querySelector("table[data-tail]")) ajaxFrom(events, "table[data-url]");
    var panel = document.querySelector("#step-panel [data-step]");
    if (panel && (!stepId || panel.getAttribute("data-step") === String(stepId))) {
      htmx.ajax("GET", panel.getAttribute("data-url"), { source: "#step-panel", target: "#step-panel", swap: "innerHTML" });
    }
  }
  function rereadRun(runId, stepId, event) {
    if (!window.htmx) return;
    var key = String(runId), pending = runTimers[key];
    if (pending) {  // one re-read for the burst, of every step it named
      if (pending.stepId !== stepId) pending.stepId = null;
      if (event === "run.started") pending.event = event;
      return;
    }
    pending = runTimers[key] = { stepId: stepId, event: event };
    setTimeout(function () {
      delete runTimers[key];
      rereadRunNow(runId, pending.stepId, pending.event);
    }, 50);
  }
  // Re-read every run the page shows (after a resync: events were missed).
  function rereadRuns() {
    document.querySelectorAll("[data-run]").forEach(function (el) {
      rereadRun(el.getAttribute("data-run"));
    });
  }
  window.Steward = {
    reread: reread, rereadEscalation: rereadEscalation, rereadCount: rereadCount,
    refreshList: refreshList, rereadRun: rereadRun, rereadRuns: rereadRuns, tick: tick,
  };
})();
