// The dashboard page: polls /api/overview once a second and draws it; actions send the token
// typed in the header (kept for this browser tab only) in the X-Khadem-Token header.
"use strict";

const STATUSES = ["waiting", "queued", "scheduled", "active", "completed", "failed", "cancelled"];
const tokenField = document.getElementById("token");
tokenField.value = sessionStorage.getItem("khadem-token") || "";
tokenField.addEventListener("change", () => sessionStorage.setItem("khadem-token", tokenField.value));

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function jobLink(row) {
  return el("a", { href: "/jobs/" + encodeURIComponent(row.id) }, row.id.slice(0, 4) + row.id.slice(-4));
}

// a count as the page shows it: exact, or marked "≈" (an estimate) or "≥" (at least), with a tip
function figure(n, marks, status) {
  const mark = (marks || {})[status];
  if (!mark) return String(n);
  const tip = mark === "≈" ? "estimated from the database's statistics" : "at least: counted no further";
  return el("span", { class: "estimate", title: tip }, mark + n.toLocaleString("en"));
}

function drawCounts(overview) {
  const table = document.getElementById("counts");
  table.tHead.replaceChildren(el("tr", {}, el("th", {}, "queue"), ...STATUSES.map(s => el("th", { class: "num" }, s)),
    el("th", {}, "")));
  const paused = new Set(overview.paused || []);
  const marks = overview.marks || {};
  const rows = Object.entries(overview.counts).map(([queue, counts]) => {
    const verb = paused.has(queue) ? "resume" : "pause";
    return el("tr", { "data-queue": queue, class: paused.has(queue) ? "queue-paused" : "" },
      el("td", {}, queue, paused.has(queue) ? el("span", { class: "paused-badge" }, " paused") : ""),
      ...STATUSES.map(s => el("td", { class: "num", "data-status": s }, figure(counts[s], marks[queue], s))),
      el("td", {}, el("button", { "data-action": `/api/queues/${encodeURIComponent(queue)}/${verb}`,
        title: verb === "pause" ? "every worker of this queue stops claiming (running jobs finish)"
          : "its workers claim again" }, verb === "pause" ? "Pause" : "Resume")));
  });
  rows.push(el("tr", { "data-queue": "*" }, el("th", {}, "all"),
    ...STATUSES.map(s => el("th", { class: "num", "data-status": s }, figure(overview.totals[s], marks["*"], s))),
    el("th", {}, "")));
  table.tBodies[0].replaceChildren(...rows);
}

function bars(values, cssClass, title) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const width = 600, height = 120, max = Math.max(1e-9, ...values);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const step = width / values.length;
  values.forEach((value, i) => {
    const rect = document.createElementNS(ns, "rect");
    const h = (value / max) * (height - 4);
    rect.setAttribute("x", i * step + 1);
    rect.setAttribute("y", height - h);
    rect.setAttribute("width", Math.max(1, step - 2));
    rect.setAttribute("height", h);
    rect.setAttribute("class", cssClass);
    const tip = document.createElementNS(ns, "title");
    tip.textContent = `${values.length - i} min ago: ${title(value, i)}`;
    rect.append(tip);
    svg.append(rect);
  });
  return svg;
}

// a chart with its axes: the highest value at the top of the y axis, 0 at its foot, the hour
// along the x axis from 60 min ago to now
function chart(svg, top, unit) {
  return el("div", { class: "plot" },
    el("div", { class: "y-axis" }, el("span", {}, top), el("span", {}, "0")),
    el("div", { class: "plot-area" }, svg,
      el("div", { class: "x-axis" }, el("span", {}, "60 min ago"), el("span", {}, unit), el("span", {}, "now"))));
}

function drawCharts(overview) {
  const { completed, failed } = overview.throughput;
  const finished = completed.map((c, i) => c + failed[i]);
  const most = Math.max(...finished);
  const chartBox = document.getElementById("throughput-chart");
  chartBox.dataset.finished = finished.reduce((a, b) => a + b, 0);
  chartBox.replaceChildren(
    chart(bars(finished, "bar-completed", (v, i) => `${v} finished, ${failed[i]} failed`), String(most), "jobs a minute"),
    el("div", { class: "caption" }, `${chartBox.dataset.finished} in the hour, at most ${most} a minute`));
  const rates = finished.map((n, i) => (n ? failed[i] / n : 0));
  const highest = Math.round(Math.max(...rates) * 100);
  const failureChart = document.getElementById("failure-chart");
  failureChart.dataset.failed = failed.reduce((a, b) => a + b, 0);
  failureChart.replaceChildren(
    chart(bars(rates, "bar-failed", v => `${Math.round(v * 100)} % failed`), `${highest} %`, "share of a minute's jobs failed"),
    el("div", { class: "caption" }, `${failureChart.dataset.failed} failed in the hour, ` +
       `at most ${highest} % of a minute's jobs`));
}

function drawRunning(overview) {
  document.querySelector("#running tbody").replaceChildren(...overview.running.map(row => el("tr", {},
    el("td", {}, row.name), el("td", {}, jobLink(row)), el("td", {}, row.queue),
    el("td", {}, row.progress == null ? "" : el("progress", { max: 1, value: row.progress })),
    el("td", {}, row.note || ""), el("td", { class: "num" }, row.running_s.toFixed(1) + " s"))));
}

function drawWorkers(overview) {
  document.querySelector("#workers tbody").replaceChildren(...overview.workers.map(row => el("tr",
    { "data-name": row.name, class: "worker-" + row.state },
    el("td", {}, row.name), el("td", {}, row.host || ""), el("td", {}, row.launcher || ""),
    el("td", { title: row.output || "" }, row.state), el("td", {}, (row.queues || []).join(", ")),
    el("td", { class: "num" }, row.concurrency == null ? "" : String(row.concurrency)),
    el("td", { class: "num" }, row.jobs_done == null ? "" : String(row.jobs_done)),
    el("td", {}, row.last_seen ? new Date(row.last_seen).toLocaleTimeString() : ""))));
}

function drawFailures(overview) {
  document.getElementById("failures").replaceChildren(...overview.failures.map(row => el("details",
    { "data-id": row.id },
    el("summary", {}, row.name, " ", jobLink(row), " ", el("span", { class: "failed" }, row.error || "")),
    el("button", { "data-action": `/api/jobs/${encodeURIComponent(row.id)}/retry` }, "Retry"),
    el("pre", { class: "traceback" }, row.traceback || "(no traceback)"))));
}

async function refresh() {
  try {
    const response = await fetch("/api/overview", { cache: "no-store" });
    if (!response.ok) return;
    const overview = await response.json();
    document.getElementById("queue-url").textContent = overview.queue_url;
    drawCounts(overview);
    drawCharts(overview);
    drawRunning(overview);
    drawWorkers(overview);
    drawFailures(overview);
    document.body.dataset.refreshedAt = overview.now_ms;
  } catch (error) {
    console.warn("refresh failed", error);
  }
}

function jobs(n) {
  return n === 1 ? "1 job" : `${n} jobs`;
}

// what an action did, in words: {"requeued": 1} is "1 job queued again"
function said(answer) {
  if ("requeued" in answer) return answer.requeued ? `${jobs(answer.requeued)} queued again` : "no failed job to retry";
  if ("cancelled" in answer) return answer.cancelled.length ? `${jobs(answer.cancelled.length)} cancelled`
    : "nothing to cancel: the job had ended";
  if ("deleted" in answer) return answer.deleted ? `${jobs(answer.deleted)} deleted` : "no failed job to delete";
  if ("paused" in answer) return `queue ${answer.paused} paused: its workers stop claiming, running jobs finish`;
  if ("resumed" in answer) return answer.resumed ? "queue resumed: its workers claim again" : "the queue was not paused";
  return "done";
}

async function act(path) {
  const shown = document.getElementById("action-result");
  const response = await fetch(path, { method: "POST", headers: { "X-Khadem-Token": tokenField.value } });
  const answer = await response.json().catch(() => ({}));
  shown.className = response.ok ? "done" : "refused";
  shown.textContent = response.ok ? said(answer)
    : `refused (${response.status}): ${answer.error || response.statusText}`;
  if (document.getElementById("overview")) refresh();
}

document.addEventListener("click", event => {
  const button = event.target.closest("button[data-action]");
  if (button) { event.preventDefault(); act(button.dataset.action); }
});

const search = document.getElementById("search");
if (search) {
  const select = search.elements.status;
  for (const s of STATUSES) select.append(el("option", { value: s }, s));
  const more = document.getElementById("more");
  let query = null;

  // a datetime-local field's value, read in this browser's time zone, as ISO 8601 with its offset
  function moment(value) {
    return value ? new Date(value).toISOString() : "";
  }

  async function show(before) {
    const params = new URLSearchParams(query);
    if (before) params.set("before", before);
    const response = await fetch("/api/jobs?" + params);
    const answer = await response.json();
    const note = document.getElementById("search-note");
    const rows = (answer.jobs || []).map(row => el("tr", {},
      el("td", {}, row.name), el("td", {}, jobLink(row)), el("td", {}, row.queue),
      el("td", { class: "status-" + row.status }, row.status), el("td", { class: "num" }, row.attempt),
      el("td", {}, row.error || "")));
    const body = document.querySelector("#results tbody");
    if (before) body.append(...rows); else body.replaceChildren(...rows);
    note.className = response.ok ? "caption" : "caption refused";
    note.textContent = !response.ok ? answer.error
      : answer.looked_through ? `looked through the newest ${answer.looked_through} records of this queue`
      : `${body.children.length} found`;
    more.hidden = !answer.next;
    more.dataset.next = answer.next || "";
  }

  search.addEventListener("submit", event => {
    event.preventDefault();
    const f = search.elements;
    query = { q: f.q.value, status: select.value, queue: f.queue.value, error: f.error.value,
      since: moment(f.since.value), until: moment(f.until.value) };
    for (const key of Object.keys(query)) if (!query[key]) delete query[key];
    query = new URLSearchParams(query);
    if (f.arg.value) query.append("arg", f.arg.value);
    show(null);
  });
  more.addEventListener("click", () => show(more.dataset.next));
}

if (document.getElementById("overview")) {
  refresh();
  setInterval(refresh, 1000);
}
