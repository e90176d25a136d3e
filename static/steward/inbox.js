// The inbox's keys: j/k move between requests, a approves, r rejects (after a reason), ? helps.
(function () {
  "use strict";
  function rows() { return Array.prototype.slice.call(document.querySelectorAll("#inbox-list .row")); }
  function current() { return document.querySelector("#inbox-list .row.current"); }
  function mark(id) {
    rows().forEach(function (row) { row.classList.toggle("current", row.getAttribute("data-request") === String(id)); });
  }
  function move(step) {
    var list = rows();
    if (!list.length) return;
    var at = list.indexOf(current());
    var next = list[Math.max(0, Math.min(list.length - 1, at < 0 ? 0 : at + step))];
    var link = next.querySelector("a.row-link");
    next.scrollIntoView({ block: "nearest" });
    link.focus();
    link.click();
  }
  function typing(target) {
    return target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    var help = document.getElementById("keys");
    var form = document.querySelector("#detail form.decide-form");
    if (event.key === "j") { event.preventDefault(); move(1); }
    else if (event.key === "k") { event.preventDefault(); move(-1); }
    else if (event.key === "?") {
      event.preventDefault();
      if (help.open) help.close(); else help.showModal();
    } else if (event.key === "a" && form) {
      event.preventDefault();
      form.querySelector("button.approve").click();
    } else if (event.key === "r" && form) {
      // A rejection needs its reason: the first r focuses the field, Reject then submits.
      event.preventDefault();
      var reason = form.querySelector("textarea");
      reason.focus();
      reason.setAttribute("data-intent", "reject");
    }
  });
  // Enter in the reason field after r rejects (Shift+Enter keeps a new line).
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.key === "Enter" && !event.shiftKey && target.tagName === "TEXTAREA" && target.getAttribute("data-intent") === "reject") {
      event.preventDefault();
      target.form.querySelector("button.reject").click();
    }
  });
  document.body.addEventListener("htmx:afterSwap", function (event) {
    if (event.detail.target.id === "detail") {
      var open = event.detail.target.querySelector("[data-request]");
      if (open) mark(open.getAttribute("data-request"));
      if (window.Steward) window.Steward.tick();
    }
  });
})();
