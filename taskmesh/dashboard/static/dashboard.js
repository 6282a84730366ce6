// taskmesh dashboard: live updates for the server-rendered pages.
// Pages are rendered by the server; this script refreshes them by asking the
// same address for its <main> fragment (X-Taskmesh-Fragment), patches the
// progress bar from server-sent events, sends Cancel/Retry to the API, and
// keeps the live feed. No dependencies; nothing is loaded from elsewhere.
"use strict";

(function () {
  const body = document.body;
  const page = body.dataset.page;
  const EVENT_TYPES = ["TASK_CREATED", "TASK_QUEUED", "TASK_STARTED", "TASK_PROGRESS",
    "TASK_RETRYING", "TASK_COMPLETED", "TASK_FAILED", "TASK_CANCELLED"];
  const FEED_MAX_ROWS = 500;
  let refreshing = false;
  let refreshAgain = false;

  function banner(text) {
    const el = document.getElementById("banner");
    if (!el) return;
    el.textContent = text || "";
    el.hidden = !text;
  }

  // Re-renders <main> from the server. A 503 keeps the old content under the
  // Redis banner; the next refresh brings it back.
  async function refresh() {
    if (refreshing) { refreshAgain = true; return; }
    refreshing = true;
    try {
      const resp = await fetch(location.href, {
        headers: { "X-Taskmesh-Fragment": "1" }, cache: "no-store", credentials: "same-origin",
      });
      if (resp.status === 401) { location.reload(); return; }
      const html = await resp.text();
      if (resp.status === 503) {
        banner(resp.headers.get("X-Taskmesh-Banner") || "Redis is unavailable.");
        body.dataset.down = "1";
        if (!document.querySelector("#content table")) {
          document.getElementById("content").innerHTML = html;
        }
        return;
      }
      if (body.dataset.down === "1" && page !== "overview") {
        location.reload();  // the page's live parts start from a full render
        return;
      }
      banner("");
      body.dataset.down = "0";
      document.getElementById("content").innerHTML = html;
      body.dataset.refreshes = String(Number(body.dataset.refreshes || 0) + 1);
    } catch (err) {
      banner("The dashboard server is unreachable; retrying.");
    } finally {
      refreshing = false;
      if (refreshAgain) { refreshAgain = false; setTimeout(refresh, 50); }
    }
  }

  // An EventSource that resumes after the last id it saw, also when the
  // browser gave up on its own reconnects (e.g. a 503 while Redis was down).
  function liveEvents(onEvent, onState, startAfter) {
    let lastId = startAfter || "";
    let source = null;
    function open() {
      const url = "/api/events" + (lastId ? "?last_event_id=" + encodeURIComponent(lastId) : "");
      source = new EventSource(url, { withCredentials: true });
      source.onopen = function () { onState(true); };
      source.onerror = function () {
        onState(false);
        if (source.readyState === EventSource.CLOSED) { setTimeout(open, 2000); }
      };
      EVENT_TYPES.forEach(function (type) {
        source.addEventListener(type, function (msg) {
          if (msg.lastEventId) lastId = msg.lastEventId;
          let event;
          try { event = JSON.parse(msg.data); } catch (e) { return; }
          onEvent(event);
        });
      });
    }
    open();
  }

  function pad(n, width) { return String(n).padStart(width || 2, "0"); }

  function fmtTime(ts) {
    const d = new Date(ts * 1000);
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()) + "." +
      pad(d.getUTCMilliseconds(), 3);
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    if (cls) {
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = text;
      td.appendChild(span);
    } else {
      td.textContent = text;
    }
    row.appendChild(td);
    return td;
  }

  function detail(event) {
    const d = event.data || {};
    const parts = [];
    if (event.type === "TASK_PROGRESS" && d.progress !== undefined) {
      parts.push(Math.round(d.progress * 100) + "%");
      if (d.message) parts.push(d.message);
    }
    ["worker", "attempt"].forEach(function (k) {
      if (d[k] !== undefined && d[k] !== null && d[k] !== "") parts.push(k + " " + d[k]);
    });
    if (event.type === "TASK_CREATED" && d.status) parts.push("status " + d.status);
    if (d.error && typeof d.error === "object") parts.push(d.error.type + ": " + d.error.message);
    return parts.join(" · ");
  }

  // ---- pages -------------------------------------------------------------------
  function overviewPage() {
    setInterval(refresh, 2000);
  }

  function taskPage() {
    const taskId = body.dataset.taskId;
    liveEvents(function (event) {
      if (event.task_id !== taskId) return;
      if (event.type === "TASK_PROGRESS" && event.data && event.data.progress !== undefined) {
        const bar = document.getElementById("task-progress");
        if (bar) {
          bar.value = event.data.progress;
          bar.setAttribute("aria-valuenow", String(event.data.progress));
          bar.setAttribute("aria-valuetext", Math.round(event.data.progress * 100) + "%");
        }
        document.querySelectorAll(".progress-pct").forEach(function (el) {
          el.textContent = Math.round(event.data.progress * 100) + "%";
        });
        const message = document.getElementById("progress-message");
        if (message) message.textContent = event.data.message || "";
        return;
      }
      refresh();
    }, function () {});

    document.addEventListener("click", async function (e) {
      const button = e.target.closest("button[data-action]");
      if (!button) return;
      const action = button.dataset.action;
      const note = document.getElementById("action-message");
      button.disabled = true;
      try {
        const resp = await fetch("/api/tasks/" + encodeURIComponent(taskId) + "/" + action, {
          method: "POST", credentials: "same-origin",
        });
        const data = await resp.json().catch(function () { return {}; });
        if (!resp.ok) {
          if (note) note.textContent = action + " refused: " + (data.error || resp.status);
          button.disabled = false;
          return;
        }
        if (action === "retry" && data.task_id) {
          location.href = "/tasks/" + encodeURIComponent(data.task_id);
          return;
        }
        if (note) note.textContent = data.cancelled ? "Cancellation requested." : "Already finished.";
        refresh();
      } catch (err) {
        if (note) note.textContent = action + " failed: " + err;
        button.disabled = false;
      }
    });
  }

  function eventsPage() {
    const feed = document.getElementById("events-feed");
    const state = document.getElementById("feed-state");
    if (!feed) return;
    const tbody = feed.tBodies[0];
    liveEvents(function (event) {
      const empty = tbody.querySelector("tr.empty");
      if (empty) empty.remove();
      const row = document.createElement("tr");
      row.className = "fresh";
      cell(row, fmtTime(event.timestamp));
      cell(row, event.type, "etype");
      const link = document.createElement("a");
      link.className = "mono";
      link.href = "/tasks/" + encodeURIComponent(event.task_id);
      link.textContent = event.task_id;
      cell(row, "").appendChild(link);
      cell(row, (event.data && event.data.name) || "");
      cell(row, (event.data && event.data.queue) || "");
      cell(row, detail(event));
      tbody.insertBefore(row, tbody.firstChild);
      while (tbody.rows.length > FEED_MAX_ROWS) tbody.deleteRow(tbody.rows.length - 1);
    }, function (live) {
      if (state) state.textContent = live ? "Live." : "Reconnecting…";
    }, feed.dataset.lastId);
  }

  if (page === "overview") overviewPage();
  else if (page === "task") taskPage();
  else if (page === "events") eventsPage();
  if (body.dataset.down === "1" && page !== "overview") {
    const timer = setInterval(function () {
      if (body.dataset.down !== "1") { clearInterval(timer); return; }
      refresh();
    }, 2000);
  }
})();
