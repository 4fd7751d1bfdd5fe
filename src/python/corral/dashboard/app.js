// corral's dashboard: one static page fed by the stack's control server. The services come
// from one GET /v1/services, then everything changes through the Server-Sent Events of
// /v1/events (a state event refreshes only that service's row); metrics samples come from
// GET /v1/samples, incrementally; the last runs' start-ups from one GET /v1/runs. Actions
// are POSTs with a JSON body; the session cookie (HttpOnly, SameSite=Strict) authenticates
// every request. Everything a service prints is put into the page as text (textContent),
// never as HTML. Past VIRTUAL_FROM services the table draws only the rows in view.
import { sparkline } from "/static/charts.js";
import { EventsPanel } from "/static/events.js";
import { $, bytes, duration, el, exitText } from "/static/format.js";
import { LogView } from "/static/logs.js";
import { TimelineView } from "/static/runs.js";

const VIRTUAL_FROM = 1000;  // services; below, every row is in the page
const ROW_MARGIN = 15;  // rows drawn above and below the visible ones
const SAMPLE_WINDOW = 300;  // seconds of CPU and memory in the sparklines
const SHAPES = {
  pending: "\u25CC", starting: "\u25D0", ready: "\u25CF", unhealthy: "\u25B2", backoff: "\u21BB",
  stopping: "\u25D1", stopped: "\u25A0", exited: "\u25CB", failed: "\u2716",
};
const RUNNING = new Set(["starting", "ready", "unhealthy", "stopping"]);
// The health score's state caps (docs/metrics.md).
const STATE_CAP = { failed: 0, backoff: 30, unhealthy: 40, starting: 80 };

const state = {
  services: new Map(),   // name -> row (from /v1/services, kept current)
  rows: new Map(),       // name -> {tr, cells}
  samples: new Map(),    // name -> {time, cpu_percent, rss_bytes, counters}
  stateTime: new Map(),  // name -> wall time of the latest state event (for countdowns)
  dependents: new Map(), // name -> names of the services that depend on it
  events: null,          // the events panel (events.js)
  dirty: new Set(),
  refreshQueued: false,
  lastSamples: 0,
  timeline: null,        // the start-up timeline (runs.js)
  table: { order: [], index: new Map(), virtual: false, rowHeight: 0, queued: false },
  logView: null,
  perf: { fetch: null, firstRender: null, lastUpdate: null, updates: 0 },
};
window.corral = state;  // for the browser tests and curious people
state.loadSamples = () => loadSamples();
state.onState = (e) => onState(e);
state.loadRuns = () => loadRuns();

// ---- requests -------------------------------------------------------------------------

async function getJSON(path) {
  const res = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (!res.ok) throw new Error(`${path}: ${res.status}`);
  return res.json();
}

async function post(path, body) {
  const res = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body || {}),
  });
  let answer = {};
  try { answer = await res.json(); } catch { /* an empty answer */ }
  if (!res.ok && res.status !== 202) state.events.add({ service: path.split("/")[3] || "", time: Date.now() / 1000,
    state: "error", reason: answer.error || `${res.status}` });
  return answer;
}

// ---- formatting -----------------------------------------------------------------------

function stateClass(row) {
  if (row.state === "exited") return row.exit_code === 0 ? "s-exited-ok" : "s-exited-bad";
  return `s-${row.state}`;
}

// Why a service is where it is: the engine's reason when it has one ("waiting for gpu",
// "backoff 3/5, next try in 1.6 s", a failure), else what the page can tell from the
// states of its dependencies, or how it ended.
function why(row) {
  const now = Date.now() / 1000;
  let text = row.reason || "";
  if ((row.state === "backoff" || row.state === "starting") && text) {
    // Count the engine's "next try in X s" and "deadline in X s" down from the moment it
    // was said (the state event's time).
    const m = /(next try|deadline) in ([\d.]+) s/.exec(text);
    // (A page opened later counts a readiness deadline from the spawn.)
    const since = state.stateTime.get(row.name) ?? (row.state === "starting" ? row.started_at : null);
    if (m && since) {
      const left = Math.max(0, m[2] - (now - since));
      text = text.replace(m[0], `${m[1]} in ${row.state === "backoff" ? left.toFixed(1) : Math.ceil(left)} s`);
    }
  }
  if (!text && row.state === "pending") {
    const waiting = (row.depends_on || []).filter((d) => !satisfied(d));
    if (waiting.length) text = "waiting for " + waiting.map((d) => `${d.service}: ${d.condition}`).join(", ");
  }
  if (!text && row.state === "exited" && row.exit_code !== null) text = exitText(row.exit_code);
  if (!text && row.state === "failed" && row.exit_code !== null) text = exitText(row.exit_code);
  if (!text && row.state === "stopping") text = "stopping: waiting for the process to exit";
  return text;
}

function satisfied(dep) {
  const d = state.services.get(dep.service);
  if (!d) return false;
  if (dep.condition === "started") return d.pid !== null || ["ready", "exited", "unhealthy"].includes(d.state);
  if (dep.condition === "completed") return d.state === "exited" && d.exit_code === 0;
  return d.state === "ready" || d.state === "unhealthy" || (d.state === "exited" && d.exit_code === 0);
}

function health(row) {
  const s = state.samples.get(row.name);
  const c = (s && s.counters) || {};
  const now = Date.now() / 1000;
  let score = 100;
  if (c.recent_checks) score -= (40 * c.recent_check_failures) / c.recent_checks;
  const recent = (c.restart_times || []).filter((t) => now - t <= 600).length;
  score -= Math.min(40, 10 * recent);
  const cpu = s && s.cpu_percent.length ? s.cpu_percent[s.cpu_percent.length - 1] : 0;
  if (row.pid !== null && cpu > 90) score -= 10;
  let cap = STATE_CAP[row.state] ?? 100;
  if (row.state === "exited" && row.exit_code) cap = 0;
  return Math.floor(Math.max(0, Math.min(score, cap)));
}

// ---- the services table ---------------------------------------------------------------

// Every row is a clone of one template (much cheaper than building 30 nodes by hand for
// each of 500 services); the buttons act through one listener on the table.
const COLUMNS = ["name", "state", "why", "pid", "ports", "uptime", "restarts", "health", "cpu", "mem", "actions"];
let rowTemplate = null;

function makeTemplate() {
  const tr = el("tr");
  for (const key of COLUMNS) tr.appendChild(el("td", `col-${key}`));
  for (const k of ["pid", "restarts", "health"]) tr.querySelector(`.col-${k}`).classList.add("num");
  const badge = el("span", "badge");
  badge.append(el("span", "shape"), el("span", "label"));
  tr.querySelector(".col-state").appendChild(badge);
  const actions = tr.querySelector(".col-actions");
  for (const [label, title] of [["start", "start it (and what it depends on)"], ["stop", "stop it"],
    ["restart", "restart it"]]) {
    const b = el("button", "", label);
    b.type = "button";
    b.title = title;
    b.dataset.action = label;
    actions.appendChild(b);
  }
  // One menu of signals for the whole table, opened under the row's button: a <select>
  // in each of 500 rows would triple the page's layout time.
  const sig = el("button", "", "signal\u2026");
  sig.type = "button";
  sig.title = "send a signal";
  sig.dataset.action = "signal";
  actions.appendChild(sig);
  const kill = el("button", "kill", "kill now");
  kill.type = "button";
  kill.title = "SIGKILL its process group now instead of waiting for it to stop";
  kill.dataset.action = "kill";
  kill.hidden = true;
  actions.appendChild(kill);
  return tr;
}

function buildRow(name) {
  rowTemplate ??= makeTemplate();
  const tr = rowTemplate.cloneNode(true);
  tr.dataset.service = name;
  const cells = {};
  tr.childNodes.forEach((td, i) => { cells[COLUMNS[i]] = td; });
  cells.name.textContent = name;
  cells.badge = cells.state.firstChild;
  cells.shape = cells.badge.firstChild;
  cells.label = cells.badge.lastChild;
  cells.kill = cells.actions.lastChild;
  cells.cpuLabel = el("span", "spark-label");
  cells.memLabel = el("span", "spark-label");
  cells.cpuSvg = null;
  cells.memSvg = null;
  return { tr, cells };
}

function wireActions(tbody) {
  const target = (e) => {
    const tr = e.target.closest("tr[data-service]");
    return tr ? `/v1/services/${encodeURIComponent(tr.dataset.service)}` : null;
  };
  const menu = $("#signal-menu");
  tbody.addEventListener("click", (e) => {
    const action = e.target.dataset && e.target.dataset.action;
    const base = target(e);
    if (!base || e.target.tagName !== "BUTTON") return;
    if (action === "kill") post(`${base}/signal`, { signal: "KILL" });
    else if (action === "signal") openSignalMenu(menu, e.target, base);
    else post(`${base}/${action}`, { wait: false });
  });
  menu.addEventListener("click", (e) => {
    const sig = e.target.dataset && e.target.dataset.signal;
    if (sig && menu.dataset.base) post(`${menu.dataset.base}/signal`, { signal: sig });
    menu.hidden = true;
  });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") menu.hidden = true; });
}

function openSignalMenu(menu, button, base) {
  if (!menu.hidden && menu.dataset.base === base) {
    menu.hidden = true;
    return;
  }
  menu.dataset.base = base;
  menu.dataset.service = button.closest("tr").dataset.service;
  const box = button.getBoundingClientRect();
  menu.style.left = `${box.left + window.scrollX}px`;
  menu.style.top = `${box.bottom + window.scrollY}px`;
  menu.hidden = false;
}

function renderRow(name) {
  const row = state.services.get(name);
  const r = state.rows.get(name);
  if (!row || !r) return;
  const c = r.cells;
  const cls = stateClass(row);
  if (c.badge.dataset.cls !== cls) {
    c.badge.className = `badge ${cls}`;
    c.badge.dataset.cls = cls;
  }
  r.tr.dataset.state = row.state;
  c.shape.textContent = SHAPES[row.state] || "?";
  c.label.textContent = row.state;
  c.why.textContent = why(row);
  c.pid.textContent = row.pid ?? "";
  renderPorts(c.ports, row.ports || {});
  c.restarts.textContent = row.restarts;
  c.health.textContent = health(row);
  c.kill.hidden = row.state !== "stopping";
  renderUptime(row, c);
}

function renderPorts(td, ports) {
  const key = JSON.stringify(ports);
  if (td.dataset.key === key) return;
  td.dataset.key = key;
  td.replaceChildren();
  for (const [label, port] of Object.entries(ports)) {
    const a = el("a", "", `${label}:${port}`);
    a.href = `http://127.0.0.1:${port}/`;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    td.appendChild(a);
  }
}

function renderUptime(row, c) {
  const up = row.pid !== null && row.started_at ? Date.now() / 1000 - row.started_at : -1;
  c.uptime.textContent = up >= 0 ? duration(up) : "";
}

function renderTable(rows) {
  const tbody = $("#services tbody");
  const t = state.table;
  t.order = rows.map((r) => r.name);
  t.index = new Map(t.order.map((n, i) => [n, i]));
  t.virtual = rows.length >= VIRTUAL_FROM;
  $("#services-scroll").classList.toggle("virtual", t.virtual);
  state.rows.clear();
  if (t.virtual) {
    tbody.replaceChildren();
    paintWindow();
  } else {
    const frag = document.createDocumentFragment();
    for (const row of rows) {
      const r = buildRow(row.name);
      state.rows.set(row.name, r);
      frag.appendChild(r.tr);
    }
    tbody.replaceChildren(frag);
    for (const row of rows) renderRow(row.name);
  }
  const select = $("#log-service");
  const keep = select.value;
  select.replaceChildren(el("option", "", "all services"));
  select.firstChild.value = "";
  for (const row of rows) select.appendChild(el("option", "", row.name));
  select.value = keep;
}

// A spacer row standing for `n` rows that are not drawn.
function spacer(n, height) {
  const tr = el("tr", "spacer");
  const td = el("td");
  td.colSpan = COLUMNS.length;
  td.style.height = `${n * height}px`;
  tr.appendChild(td);
  return tr;
}

// The virtual table: the rows in view of #services-scroll plus a margin, between two
// spacers as tall as the rows they stand for. Rows still in view are kept (with their
// sparklines); rows that come into view are built and filled from the current data.
function paintWindow() {
  const t = state.table;
  const box = $("#services-scroll");
  const h = t.rowHeight || 30;
  const n = t.order.length;
  const head = $("#services thead").offsetHeight;
  const top = Math.max(0, box.scrollTop - head);
  const first = Math.max(0, Math.floor(top / h) - ROW_MARGIN);
  // The box grows to its full height only once rows are in it: the window's height is a
  // safe bound for the first drawing.
  const seen = Math.max(box.clientHeight, window.innerHeight);
  const last = Math.min(n, Math.ceil((top + seen) / h) + ROW_MARGIN);
  const rows = new Map();
  const fresh = [];
  const frag = document.createDocumentFragment();
  frag.appendChild(spacer(first, h));
  for (let i = first; i < last; i++) {
    const name = t.order[i];
    let r = state.rows.get(name);
    if (!r) {
      r = buildRow(name);
      fresh.push(name);
    }
    rows.set(name, r);
    frag.appendChild(r.tr);
  }
  frag.appendChild(spacer(n - last, h));
  state.rows = rows;
  $("#services tbody").replaceChildren(frag);
  for (const name of fresh) {
    renderRow(name);
    renderSparks(name, state.lastSamples);
  }
  if (!t.rowHeight && rows.size) {
    // Measured once from a real row (fonts differ), then drawn again at that height.
    t.rowHeight = rows.values().next().value.tr.getBoundingClientRect().height || 30;
    if (Math.abs(t.rowHeight - h) > 0.5) paintWindow();
  }
}

function scheduleWindow() {
  const t = state.table;
  if (!t.virtual || t.queued) return;
  t.queued = true;
  requestAnimationFrame(() => {
    t.queued = false;
    paintWindow();
  });
}

// The counts by state: once a frame at most (a whole stack starting is thousands of events).
let summaryQueued = false;
function scheduleSummary() {
  if (summaryQueued) return;
  summaryQueued = true;
  requestAnimationFrame(() => {
    summaryQueued = false;
    renderSummary();
  });
}

function renderSummary() {
  const counts = {};
  for (const row of state.services.values()) counts[row.state] = (counts[row.state] || 0) + 1;
  $("#summary").textContent = Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(" \u00B7 ");
}

// ---- live updates ---------------------------------------------------------------------

// A state event changes the row at once (state, reason, exit code), then the row is
// re-read for pid, ports and times; many at once (a whole stack starting) are one GET.
function onState(e) {
  const t0 = performance.now();
  const row = state.services.get(e.service);
  if (!row) return;
  const before = row.state;
  row.state = e.state;
  // A failure's reason (and a liveness failure's) comes with the event; other reasons are
  // re-read with the row.
  row.reason = e.state === "failed" || e.state === "unhealthy" ? e.reason : "";
  if (e.exit_code !== null && e.exit_code !== undefined) row.exit_code = e.exit_code;
  if (!RUNNING.has(e.state)) row.pid = null;
  state.stateTime.set(e.service, e.time);
  renderRow(e.service);
  // Dependents may be waiting on this one: their "why" changes with it.
  for (const name of state.dependents.get(e.service) || [])
    if (state.services.get(name)?.state === "pending") renderRow(name);
  state.events.add(e, before);
  state.dirty.add(e.service);
  scheduleRefresh();
  // The timeline draws spawn, readiness and failure: other changes leave it as it is.
  if (e.state === "starting" || e.state === "ready" || e.state === "failed") scheduleTimeline();
  scheduleSummary();
  state.perf.lastUpdate = performance.now() - t0;
  state.perf.updates += 1;
}

function scheduleRefresh() {
  if (state.refreshQueued) return;
  state.refreshQueued = true;
  setTimeout(refreshDirty, 50);
}

async function refreshDirty() {
  state.refreshQueued = false;
  const names = [...state.dirty];
  state.dirty.clear();
  try {
    let rows;
    if (names.length > 20) rows = (await getJSON("/v1/services")).services;
    else rows = await Promise.all(names.map((n) => getJSON(`/v1/services/${encodeURIComponent(n)}`)));
    let moved = false;
    let claims = false;
    for (const row of rows) {
      const before = state.services.get(row.name);
      moved ||= !before || before.started_at !== row.started_at || before.ready_at !== row.ready_at;
      claims ||= !before || JSON.stringify([before.ports, before.resources]) !== JSON.stringify([row.ports, row.resources]);
      state.services.set(row.name, row);
      renderRow(row.name);
    }
    // Rebuilt only when a claim changed: it lists every service's claims.
    if (claims) renderResources();
    if (moved) scheduleTimeline();
  } catch (err) {
    for (const n of names) state.dirty.add(n);
  }
}

let timelineQueued = false;
function scheduleTimeline() {
  if (timelineQueued) return;
  timelineQueued = true;
  requestAnimationFrame(() => {
    timelineQueued = false;
    state.timeline.draw(state.services);
  });
}

// GET /v1/runs: the earlier runs' start-ups (read once: they do not change during a run).
async function loadRuns() {
  let doc = null;
  try {
    doc = await getJSON("/v1/runs");
  } catch { /* the page shows this run only */ }
  state.timeline.setRuns(doc, state.services);
  scheduleTimeline();
}

function onLog(e) {
  state.logView.add({ service: e.service, time: e.time, stream: e.stream, text: e.text });
}

function renderResources() {
  const tbody = $("#resources tbody");
  const frag = document.createDocumentFragment();
  for (const row of state.services.values()) {
    const claims = Object.entries(row.resources || {}).map(([k, v]) => [k, v.join(", ")]);
    for (const [k, port] of Object.entries(row.ports || {})) claims.push([`port ${k}`, String(port)]);
    for (const [k, v] of claims) {
      const tr = el("tr");
      tr.append(el("td", "", row.name), el("td", "", k), el("td", "", v));
      frag.appendChild(tr);
    }
  }
  if (!frag.childElementCount) {
    const tr = el("tr");
    const td = el("td", "empty", "no claims");
    td.colSpan = 3;
    tr.appendChild(td);
    frag.appendChild(tr);
  }
  tbody.replaceChildren(frag);
}

// ---- metrics --------------------------------------------------------------------------

async function loadSamples() {
  if (document.hidden) return;
  const now = Date.now() / 1000;
  const since = state.lastSamples ? Math.min(SAMPLE_WINDOW, now - state.lastSamples + 2) : SAMPLE_WINDOW;
  let answer;
  try {
    answer = await getJSON(`/v1/samples?since=${since.toFixed(1)}`);
  } catch {
    return;
  }
  state.lastSamples = answer.now;
  const cutoff = answer.now - SAMPLE_WINDOW;
  for (const [name, s] of Object.entries(answer.services)) {
    const old = state.samples.get(name) || { time: [], cpu_percent: [], rss_bytes: [] };
    const last = old.time.length ? old.time[old.time.length - 1] : 0;
    for (let i = 0; i < s.time.length; i++) {
      if (s.time[i] <= last) continue;
      old.time.push(s.time[i]);
      old.cpu_percent.push(s.cpu_percent[i]);
      old.rss_bytes.push(s.rss_bytes[i]);
    }
    let drop = 0;
    while (drop < old.time.length && old.time[drop] < cutoff) drop++;
    for (const k of ["time", "cpu_percent", "rss_bytes"]) old[k].splice(0, drop);
    old.counters = s.counters;
    state.samples.set(name, old);
  }
  // Only the rows in the page (all of them below VIRTUAL_FROM); a row drawn later gets its
  // sparklines when it comes into view.
  for (const name of state.rows.keys()) renderSparks(name, answer.now);
}

function renderSparks(name, now) {
  const r = state.rows.get(name);
  const s = state.samples.get(name);
  const row = state.services.get(name);
  if (!r || !s || !row) return;
  r.cells.health.textContent = health(row);
  if (!s.time.length) return;
  const cpu = s.cpu_percent[s.cpu_percent.length - 1];
  const mem = s.rss_bytes[s.rss_bytes.length - 1];
  // From the oldest sample kept (at most the window) to now.
  const t0 = Math.max(now - SAMPLE_WINDOW, s.time[0]);
  r.cells.cpuSvg = sparkline(r.cells.cpuSvg, s.time, s.cpu_percent, t0, now, "cpu");
  r.cells.memSvg = sparkline(r.cells.memSvg, s.time, s.rss_bytes, t0, now, "mem");
  r.cells.cpuLabel.textContent = row.pid !== null ? `${cpu.toFixed(1)} %` : "";
  r.cells.memLabel.textContent = row.pid !== null ? bytes(mem) : "";
  if (!r.cells.cpu.firstChild) r.cells.cpu.append(r.cells.cpuSvg, r.cells.cpuLabel);
  if (!r.cells.mem.firstChild) r.cells.mem.append(r.cells.memSvg, r.cells.memLabel);
}

// ---- start-up -------------------------------------------------------------------------

async function loadTails(rows) {
  // The recent past of each service's output, merged by time; a big stack starts with an
  // empty view (the events bring every new line).
  if (rows.length > 40) return;
  const tails = await Promise.all(rows.map((r) =>
    getJSON(`/v1/services/${encodeURIComponent(r.name)}/logs?tail=200`).then((x) => x.lines).catch(() => [])));
  const lines = tails.flat().sort((a, b) => a.time - b.time || a.seq - b.seq)
    .map((l) => ({ service: l.service, time: l.time, stream: l.stream, text: l.text }));
  // Lines the stream delivered meanwhile, newer than the tails, are kept.
  const newest = lines.length ? lines[lines.length - 1].time : 0;
  for (const l of state.logView.lines) if (l.time > newest) lines.push(l);
  state.logView.reset(lines);
}

async function loadAll() {
  const t0 = performance.now();
  const [stack, services] = await Promise.all([getJSON("/v1/stack"), getJSON("/v1/services")]);
  state.perf.fetch = performance.now() - t0;
  $("#stack-name").textContent = stack.name;
  document.title = `corral: ${stack.name}`;
  state.services = new Map(services.services.map((r) => [r.name, r]));
  state.dependents = new Map();
  for (const r of services.services)
    for (const d of r.depends_on || []) {
      if (!state.dependents.has(d.service)) state.dependents.set(d.service, []);
      state.dependents.get(d.service).push(r.name);
    }
  const t1 = performance.now();
  renderTable(services.services);
  renderSummary();
  renderResources();
  const t2 = performance.now();
  state.timeline.draw(state.services);
  const t3 = performance.now();
  void document.body.offsetHeight;  // the layout is part of the cost
  state.perf.parts = { table: t2 - t1, timeline: t3 - t2, layout: performance.now() - t3 };
  state.perf.firstRender = performance.now() - t0;
  return services.services;
}

function connect() {
  const source = new EventSource("/v1/events");
  const conn = $("#conn");
  let opened = false;
  source.addEventListener("open", () => {
    conn.dataset.state = "live";
    conn.textContent = "live";
    // After a reconnection the states may have moved on meanwhile: read them again.
    if (opened) loadAll().then(loadRuns).catch(() => {});
    opened = true;
  });
  source.addEventListener("error", () => {
    conn.dataset.state = "lost";
    conn.textContent = "reconnecting";
  });
  source.addEventListener("state", (m) => onState(JSON.parse(m.data)));
  source.addEventListener("log", (m) => onLog(JSON.parse(m.data)));
  source.addEventListener("dropped", () => state.events.add({ service: "", time: Date.now() / 1000, state: "dropped",
    reason: "the page fell behind: some log lines were skipped" }));
}

function wireControls() {
  wireActions($("#services tbody"));
  $("#services-scroll").addEventListener("scroll", scheduleWindow);
  window.addEventListener("resize", scheduleWindow);
  const box = $("#logs");
  const view = new LogView(box, { service: $("#log-service"), search: $("#log-search"), stderr: $("#log-stderr") });
  state.logView = view;
  for (const id of ["#log-service", "#log-search", "#log-stderr"]) $(id).addEventListener("input", () => view.refilter());
  const follow = $("#log-follow");
  // Auto-scroll pauses while the reader is looking further up, and resumes at the bottom.
  box.addEventListener("scroll", () => {
    view.follow = view.atBottom();
    follow.hidden = view.follow;
  });
  follow.addEventListener("click", () => {
    view.follow = true;
    follow.hidden = true;
    view.draw();
  });
  state.events = new EventsPanel($("#events"), $("#event-kind"));
  state.timeline = new TimelineView({ box: $("#timeline"), pick: $("#timeline-run"), note: $("#timeline-note"),
    legend: $("#timeline-legend") });
  $("#timeline-run").addEventListener("input", scheduleTimeline);
  // Uptimes and backoff countdowns tick here; nothing is asked of the server.
  setInterval(() => {
    for (const [name, r] of state.rows) {
      const row = state.services.get(name);
      if (!row) continue;
      if (row.pid !== null) renderUptime(row, r.cells);
      if (row.state === "backoff" || row.state === "starting") r.cells.why.textContent = why(row);
    }
  }, 1000);
  setInterval(loadSamples, 5000);
}

async function main() {
  wireControls();
  connect();  // first, so that nothing between the GET and the stream is missed
  const rows = await loadAll();
  await loadRuns();
  loadTails(rows).catch(() => {});
  loadSamples();
  document.body.dataset.ready = "1";
}

main().catch((err) => {
  $("#conn").textContent = `cannot load the stack: ${err.message}`;
  $("#conn").dataset.state = "lost";
});
