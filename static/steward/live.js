// The live channel (docs/web.md): a websocket that says which object changed, by id, never its
// data. The page re-reads what changed through Steward.reread(id) (an approval) or
// Steward.rereadRun(id) (a run), which ask the server, so the person sees only what restrict()
// lets them see. The page names what it follows: data-live-topics ("approval escalation run")
// and data-live-ids ("run:42", a run's page follows its run alone). The cursor of the last
// event is kept in sessionStorage, per what the page follows; after a drop the socket
// reconnects with backoff and the server replays every event after the cursor: nothing is
// missed.
(function () {
  "use strict";
  var body = document.body;
  if (!body || !body.hasAttribute("data-live") || !window.WebSocket) return;
  var TOPICS = (body.getAttribute("data-live-topics") || "approval escalation").split(/\s+/).filter(Boolean);
  var IDS = null;  // {topic: [id, ...]}
  (body.getAttribute("data-live-ids") || "").split(/\s+/).forEach(function (part) {
    var match = /^([a-z]+):([\d,]+)$/.exec(part);
    if (!match) return;
    IDS = IDS || {};
    IDS[match[1]] = match[2].split(",").filter(Boolean).map(Number);
  });
  // A cursor means "seen all up to here" for what the page follows only.
  var KEY = "steward.live.cursor:" + TOPICS.join(",") + (IDS ? ":" + JSON.stringify(IDS) : "");
  var FIRST_DELAY = 500, MAX_DELAY = 15000;

  function parts(cursor) {
    var match = /^(\d+)\.(\d+)$/.exec(cursor || "");
    return match ? [BigInt(match[1]), BigInt(match[2])] : null;
  }
  function later(a, b) {  // the later of two cursors (either may be missing)
    var x = parts(a), y = parts(b);
    if (!x) return y ? b : null;
    if (!y) return a;
    return (x[0] > y[0] || (x[0] === y[0] && x[1] >= y[1])) ? a : b;
  }
  function stored() {
    try { return sessionStorage.getItem(KEY); } catch (e) { return null; }
  }
  var cursor = later(body.getAttribute("data-live-cursor"), stored());
  // Without a cursor the page may predate events the socket will not replay: re-read the count
  // once the channel is ready.
  var unanchored = !cursor;
  function keep(next) {
    cursor = later(cursor, next);
    try { sessionStorage.setItem(KEY, cursor); } catch (e) { /* private mode: memory only */ }
  }

  var socket = null, delay = FIRST_DELAY, timer = null, state = "connecting";
  function setState(next) {
    state = next;
    body.setAttribute("data-live-state", next);
  }

  var noticeIds = [];
  function notice(id) {
    var box = document.getElementById("live-notice");
    if (!box || noticeIds.indexOf(id) >= 0) return;
    noticeIds.push(id);
    box.textContent = "";
    var text = document.createElement("span");
    text.textContent = noticeIds.length === 1
      ? "New request #" + id + " waits for your decision. "
      : noticeIds.length + " new requests wait for your decision. ";
    var link = document.createElement("a");
    link.href = noticeIds.length === 1 ? "/inbox/" + id + "/" : "/inbox/";
    link.textContent = "Open";
    var close = document.createElement("button");
    close.type = "button";
    close.className = "link";
    close.textContent = "Dismiss";
    close.addEventListener("click", function () { box.hidden = true; noticeIds = []; });
    box.appendChild(text);
    box.appendChild(link);
    box.appendChild(document.createTextNode(" "));
    box.appendChild(close);
    box.hidden = false;
  }

  function handle(message) {
    if (message.cursor) keep(message.cursor);
    if (message.type === "ready") {
      delay = FIRST_DELAY;
      setState("open");
      if (unanchored) window.Steward.rereadCount();
      unanchored = false;
    } else if (message.type === "resync") {
      // Away longer than events are kept: re-read all this page shows.
      window.Steward.refreshList();
      window.Steward.rereadCount();
      window.Steward.rereadRuns();
    } else if (message.type === "event") {
      if (message.kind === "run") {
        window.Steward.rereadRun(message.id, null, message.event);
      } else if (message.kind === "approval") {
        window.Steward.reread(message.id);
        if (message.event === "approval.requested" && message.decidable) notice(message.id);
      } else if (message.kind === "escalation") {
        window.Steward.rereadEscalation(message.id);
      } else {
        window.Steward.rereadCount();
      }
    }
  }

  function connect() {
    clearTimeout(timer);
    if (socket) return;
    setState("connecting");
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var opened = new WebSocket(scheme + window.location.host + "/ws/live/");
    socket = opened;
    opened.onopen = function () {
      var hello = { type: "hello", cursor: cursor, topics: TOPICS };
      if (IDS) hello.ids = IDS;
      opened.send(JSON.stringify(hello));
    };
    opened.onmessage = function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      if (message && typeof message === "object") handle(message);
    };
    opened.onclose = function (event) {
      if (socket === opened) socket = null;
      if (event.code === 4401) { setState("signed-out"); return; }  // the next page asks to sign in
      setState("closed");
      var wait = delay * (0.5 + Math.random());  // jitter: many pages do not return at once
      delay = Math.min(delay * 2, MAX_DELAY);
      timer = setTimeout(connect, wait);
    };
  }
  window.addEventListener("online", function () { delay = FIRST_DELAY; connect(); });
  window.addEventListener("pageshow", function () { if (!socket && state !== "signed-out") connect(); });

  window.Steward = window.Steward || {};
  window.Steward.live = {
    state: function () { return state; },
    cursor: function () { return cursor; },
  };
  connect();
})();
