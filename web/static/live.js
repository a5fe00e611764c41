// imaged's dashboard: the page's live updates. The page works without this file; with it, the
// page opens its event stream (htmx's SSE extension swaps the fragments the server sends), shows
// whether it is live, lets the reader pause it, and keeps relative times current.
//
// A stream first sends the page's live parts whole, so that connecting again (after a drop, a
// pause, or a silence longer than the heartbeat allows) always brings the page to the truth.
(function () {
  "use strict";
  var HEARTBEAT = 15000;          // the server's heartbeat
  var SILENCE = 2 * HEARTBEAT + 5000; // no message for this long: reconnect

  var box = document.getElementById("live");
  if (!box || !window.htmx) {
    return;
  }
  var stream = box.getAttribute("data-stream");
  var stateEl = document.getElementById("live-state");
  var pauseBtn = document.getElementById("live-pause");
  var conn = null, source = null, paused = false, lastMessage = 0;
  box.hidden = false;

  var glyphs = { connecting: "◌", live: "●", reconnecting: "↻", paused: "⏸" };
  function setState(s) {
    stateEl.setAttribute("data-live", s);
    stateEl.querySelector(".glyph").textContent = glyphs[s] || "◌";
    stateEl.querySelector(".live-word").textContent = s;
    document.documentElement.setAttribute("data-live", s);
  }

  function connect() {
    conn = document.createElement("div");
    conn.id = "live-conn";
    conn.hidden = true;
    conn.setAttribute("hx-ext", "sse");
    conn.setAttribute("sse-connect", stream);
    var swap = document.createElement("div");
    swap.setAttribute("sse-swap", "update");
    swap.setAttribute("hx-swap", "none");
    conn.appendChild(swap);
    document.body.appendChild(conn);
    lastMessage = Date.now();
    htmx.process(conn);
  }

  function disconnect() {
    if (source) {
      source.close();
      source = null;
    }
    if (conn) {
      conn.remove();
      conn = null;
    }
  }

  document.body.addEventListener("htmx:sseOpen", function (e) {
    source = e.detail.source;
    lastMessage = Date.now();
    source.addEventListener("heartbeat", function () { lastMessage = Date.now(); });
    if (!paused) {
      setState("live");
    }
  });
  document.body.addEventListener("htmx:sseMessage", function () {
    lastMessage = Date.now();
    refreshTimes();
  });
  document.body.addEventListener("htmx:sseError", function () {
    if (!paused) {
      setState("reconnecting");
    }
  });

  pauseBtn.addEventListener("click", function () {
    paused = !paused;
    pauseBtn.setAttribute("aria-pressed", String(paused));
    pauseBtn.textContent = paused ? "Resume updates" : "Pause updates";
    if (paused) {
      disconnect();
      setState("paused");
    } else {
      setState("connecting");
      connect();
    }
  });

  // A stream that went silent (a proxy holding a dead connection): start again.
  setInterval(function () {
    if (!paused && conn && Date.now() - lastMessage > SILENCE) {
      setState("reconnecting");
      disconnect();
      connect();
    }
  }, 5000);

  // Relative times ("3 min 4 s ago"), as the server words them; the absolute UTC time stays in
  // each <time>'s datetime and title.
  function words(ms) {
    var s = Math.floor(ms / 1000);
    if (s < 60) { return s + " s"; }
    if (s < 3600) { return Math.floor(s / 60) + " min " + (s % 60) + " s"; }
    if (s < 172800) { return Math.floor(s / 3600) + " h " + Math.floor(s / 60) % 60 + " min"; }
    return Math.floor(s / 86400) + " days";
  }
  function refreshTimes() {
    var now = Date.now();
    document.querySelectorAll("time[data-rel]").forEach(function (t) {
      var at = Date.parse(t.getAttribute("datetime"));
      if (isNaN(at)) { return; }
      var d = now - at;
      t.textContent = d < 0 ? "in " + words(-d) : d < 5000 ? "just now" : words(d) + " ago";
    });
  }
  setInterval(refreshTimes, 10000);

  setState("connecting");
  connect();
})();
