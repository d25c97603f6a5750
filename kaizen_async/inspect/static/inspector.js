// kaizen inspect: collapse/expand, deep links, deferred counts and the live tail.
// Every piece of HTML inserted here was rendered and escaped by the server; this file
// writes only text (textContent) of its own.
(function () {
  "use strict";

  function fragment(html) {
    const template = document.createElement("template");
    template.innerHTML = html;
    return template.content;
  }

  function typing(target) {
    return target && (target.isContentEditable || /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName));
  }

  // "/" focuses the page's text filter
  document.addEventListener("keydown", function (event) {
    if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) {
      return;
    }
    const field = document.querySelector('[data-shortcut="/"]');
    if (field) {
      event.preventDefault();
      field.focus();
    }
  });

  // counts of a long session, rendered by the server after the page
  document.querySelectorAll("[data-fetch]").forEach(function (box) {
    fetch(box.dataset.fetch, { credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) { throw new Error(String(response.status)); }
        return response.text();
      })
      .then(function (html) { box.replaceChildren(fragment(html)); })
      .catch(function () { box.textContent = "Could not count the entries."; });
  });

  const timeline = document.getElementById("timeline");
  if (!timeline) { return; }
  const status = document.getElementById("live-status");

  function setStatus(text) {
    if (status && status.textContent !== text) { status.textContent = text; }
  }

  function rowsDetails() { return timeline.querySelectorAll("details"); }

  document.querySelectorAll('[data-action="expand-all"]').forEach(function (button) {
    button.addEventListener("click", function () { rowsDetails().forEach(function (d) { d.open = true; }); });
  });
  document.querySelectorAll('[data-action="collapse-all"]').forEach(function (button) {
    button.addEventListener("click", function () { rowsDetails().forEach(function (d) { d.open = false; }); });
  });

  // deep links: #seq-N opens that row (and the step it sits under) and scrolls to it
  function reveal(element) {
    let node = element;
    while (node && node !== timeline) {
      if (node.tagName === "DETAILS") { node.open = true; }
      node = node.parentElement;
    }
    const own = element.querySelector(":scope > details");
    if (own) { own.open = true; }
    timeline.querySelectorAll(".flash").forEach(function (e) { e.classList.remove("flash"); });
    element.classList.add("flash");
    element.scrollIntoView({ block: "center" });
    const summary = element.querySelector(":scope > details > summary");
    if (summary) { summary.focus({ preventScroll: true }); }
  }

  function followHash() {
    const match = /^#seq-(\d+)$/.exec(window.location.hash);
    if (!match) { return; }
    const element = document.getElementById("seq-" + match[1]);
    if (element) {
      reveal(element);
      return;
    }
    const seq = Number(match[1]);
    const here = new URLSearchParams(window.location.search);
    if (here.get("around") === String(seq)) { return; }  // asked already: no such entry
    const base = timeline.dataset.aroundUrl;
    if (base && seq >= 1 && seq <= Number(timeline.dataset.head || seq)) {
      window.location.assign(base + "&around=" + seq + "#seq-" + seq);
    }
  }
  window.addEventListener("hashchange", followHash);
  // after the browser's own jump to the fragment (which would take the focus back)
  window.addEventListener("load", function () { window.setTimeout(followHash, 0); });

  // the live tail
  const events = timeline.dataset.events;
  if (!events) { return; }
  let last = Number(timeline.dataset.lastSeq || "0");
  let paused = false;
  let finished = false;
  const waiting = [];
  let fresh = 0;
  const pause = document.querySelector('[data-action="pause"]');

  function nearBottom() {
    return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 48;
  }

  function insert(html) {
    const content = fragment(html);
    const row = content.firstElementChild;
    if (!row) { return; }
    const follow = nearBottom();
    const existing = row.id ? document.getElementById(row.id) : null;
    if (row.dataset.update && existing) {
      const oldSummary = existing.querySelector(":scope > details > summary");
      const newSummary = row.querySelector(":scope > details > summary");
      if (oldSummary && newSummary) { oldSummary.replaceWith(newSummary); }
      const oldInfo = existing.querySelector(":scope > details > .body > .step-info");
      const newInfo = row.querySelector(":scope > details > .body > .step-info");
      if (oldInfo && newInfo) { oldInfo.replaceWith(newInfo); }
      existing.className = row.className;
      existing.dataset.last = row.dataset.last || existing.dataset.last;
    } else if (existing) {
      return;  // already shown
    } else if (row.dataset.parent) {
      const parent = document.getElementById(row.dataset.parent);
      const nested = parent ? parent.querySelector(":scope > details > .body > ol.nested") : null;
      (nested || timeline).appendChild(row);
    } else {
      timeline.appendChild(row);
    }
    if (follow && !paused) { window.scrollTo(0, document.documentElement.scrollHeight); }
  }

  function plural(n) { return n === 1 ? "1 new entry" : n + " new entries"; }

  function announce() {
    if (paused) {
      setStatus("Paused: " + plural(waiting.length) + " arrived (last seq " + last + ")." +
        (finished ? " The session is closed." : ""));
    } else if (fresh && !finished) {
      setStatus("Live: " + plural(fresh) + " (last seq " + last + ").");
    }
    fresh = 0;
  }
  window.setInterval(announce, 1000);

  if (pause) {
    pause.addEventListener("click", function () {
      paused = !paused;
      pause.setAttribute("aria-pressed", paused ? "true" : "false");
      pause.textContent = paused ? "Resume live updates" : "Pause live updates";
      if (!paused) {
        const count = waiting.length;
        while (waiting.length) { insert(waiting.shift()); }
        setStatus(finished
          ? "Finished: the session is closed; " + plural(count) + " added."
          : "Live: resumed, " + plural(count) + " added (last seq " + last + ").");
      } else {
        setStatus("Paused: " + plural(waiting.length) + " arrived (last seq " + last + ").");
      }
    });
  }

  const params = new URLSearchParams({
    since_seq: String(last),
    axis_start: timeline.dataset.axisStart || "0",
    axis_end: timeline.dataset.axisEnd || "0",
    origin: timeline.dataset.origin || "0"
  });
  const source = new EventSource(events + "&" + params.toString());
  timeline.dataset.stream = "connecting";
  source.addEventListener("open", function () {
    timeline.dataset.stream = "open";
    if (!paused) { setStatus("Live: following new entries (last seq " + last + ")."); }
  });
  source.addEventListener("entry", function (event) {
    const seq = Number(event.lastEventId);
    if (!(seq > last)) { return; }  // seen already (a resumed stream never repeats, but be sure)
    last = seq;
    timeline.dataset.lastSeq = String(seq);
    if (paused) {
      waiting.push(event.data);
    } else {
      insert(event.data);
      fresh += 1;
    }
  });
  source.addEventListener("end", function () {
    finished = true;
    source.close();
    timeline.dataset.stream = "finished";
    if (paused) {
      setStatus("Paused: " + plural(waiting.length) + " arrived; the session is closed.");
    } else {
      setStatus("Finished: the session is closed, no more entries will come.");
    }
  });
  source.addEventListener("error", function () {
    if (timeline.dataset.stream === "finished") { return; }
    timeline.dataset.stream = source.readyState === EventSource.CLOSED ? "closed" : "reconnecting";
    setStatus(source.readyState === EventSource.CLOSED ? "Live updates stopped: the server is unreachable." : "Reconnecting…");
  });
})();
