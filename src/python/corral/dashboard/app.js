// corral's dashboard: one static page fed by the stack's control server. The services come
// from one GET /v1/services, then everything changes through the Server-Sent Events of
// /v1/events (a state event refreshes only that service's row); metrics samples come from
// GET /v1/samples, incrementally. Actions are POSTs with a JSON body; the session cookie
// (HttpOnly, SameSite=Strict) authenticates every request. Everything a service prints is
// put into the page as text (textContent), never as HTML.
import { sparkline, timeline } from "/static/charts.js";

const $ = (sel) => document.querySelector(sel);
const MAX_LOG_LINES = 5000;
const MAX_EVENTS = 300;
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
  logs: [],              // {service, time, stream, text}
  events: [],
  dirty: new Set(),
  refreshQueued: false,
  followLogs: true,
  lastSamples: 0,
  perf: { fetch: null, firstRender: null, lastUpdate: null, updates: 0 },
};
window.corral = state;  // for the browser tests and curious people
state.loadSamples = () => loadSamples();
state.onState = (e) => onState(e);

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
  if (!res.ok && res.status !== 202) addEvent({ service: path.split("/")[3] || "", time: Date.now() / 1000,
    state: "error", reason: answer.error || `${res.status}` });
  return answer;
}

// ---- formatting -----------------------------------------------------------------------

function duration(s) {
  if (s < 0 || !isFinite(s)) return "";
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} m ${Math.floor(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} m`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function bytes(n) {
  if (!n) return "0";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n < 10 ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

function clock(t) {
  const d = new Date(t * 1000);
  return d.toTimeString().slice(0, 8) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

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

function exitText(code) {
  if (code < 0) return `killed by signal ${-code}${code === -9 ? " (SIGKILL: out of memory?)" : ""}`;
  return `exit code ${code}${code === 137 ? " (killed: out of memory?)" : ""}`;
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
  const frag = document.createDocumentFragment();
  state.rows.clear();
  for (const row of rows) {
    const r = buildRow(row.name);
    state.rows.set(row.name, r);
    frag.appendChild(r.tr);
  }
  tbody.replaceChildren(frag);
  for (const row of rows) renderRow(row.name);
  const select = $("#log-service");
  const keep = select.value;
  select.replaceChildren(el("option", "", "all services"));
  select.firstChild.value = "";
  for (const row of rows) select.appendChild(el("option", "", row.name));
  select.value = keep;
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
  row.state = e.state;
  // A failure's reason comes with the event; other reasons are re-read with the row.
  row.reason = e.state === "failed" ? e.reason : "";
  if (e.exit_code !== null && e.exit_code !== undefined) row.exit_code = e.exit_code;
  if (!RUNNING.has(e.state)) row.pid = null;
  state.stateTime.set(e.service, e.time);
  renderRow(e.service);
  // Dependents may be waiting on this one: their "why" changes with it.
  for (const other of state.services.values())
    if (other.state === "pending" && (other.depends_on || []).some((d) => d.service === e.service)) renderRow(other.name);
  addEvent(e);
  state.dirty.add(e.service);
  scheduleRefresh();
  // The timeline draws spawn, readiness and failure: other changes leave it as it is.
  if (e.state === "starting" || e.state === "ready" || e.state === "failed") scheduleTimeline();
  renderSummary();
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
    for (const row of rows) {
      const before = state.services.get(row.name);
      moved ||= !before || before.started_at !== row.started_at || before.ready_at !== row.ready_at;
      state.services.set(row.name, row);
      renderRow(row.name);
    }
    renderResources();
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
    timeline($("#timeline"), [...state.services.values()]);
  });
}

function onLog(e) {
  const line = { service: e.service, time: e.time, stream: e.stream, text: e.text };
  state.logs.push(line);
  let trimmed = false;
  if (state.logs.length > MAX_LOG_LINES) {
    state.logs.splice(0, state.logs.length - MAX_LOG_LINES);
    trimmed = true;
  }
  const box = $("#logs");
  if (matches(line)) box.appendChild(logLine(line));
  if (trimmed) while (box.childElementCount > MAX_LOG_LINES) box.firstChild.remove();
  if (state.followLogs) box.scrollTop = box.scrollHeight;
}

function matches(line) {
  const only = $("#log-service").value;
  const needle = $("#log-search").value.toLowerCase();
  if (only && line.service !== only) return false;
  if ($("#log-stderr").checked && line.stream !== "stderr") return false;
  return !needle || line.text.toLowerCase().includes(needle) || line.service.toLowerCase().includes(needle);
}

function logLine(line) {
  const corralNote = line.text.startsWith("corral: ");
  const div = el("div", `line ${line.stream}${corralNote ? " corral" : ""}`);
  div.dataset.service = line.service;
  div.title = clock(line.time);
  div.append(el("span", "svc", line.service), el("span", "text", line.text));
  return div;
}

function renderLogs() {
  const box = $("#logs");
  const frag = document.createDocumentFragment();
  for (const line of state.logs) if (matches(line)) frag.appendChild(logLine(line));
  box.replaceChildren(frag);
  if (state.followLogs) box.scrollTop = box.scrollHeight;
}

function addEvent(e) {
  state.events.push(e);
  if (state.events.length > MAX_EVENTS) state.events.shift();
  const li = el("li");
  li.dataset.service = e.service;
  li.dataset.state = e.state;
  li.append(el("time", "", clock(e.time)), el("b", "", e.service), document.createTextNode(` ${e.state}`));
  let detail = e.state === "failed" || e.state === "error" || e.state === "dropped" ? e.reason || "" : "";
  if (!detail && e.exit_code !== null && e.exit_code !== undefined && (e.state === "exited" || e.state === "backoff"))
    detail = exitText(e.exit_code);
  if (detail) li.append(el("span", "why", ` \u2014 ${detail}`));
  const list = $("#events");
  list.prepend(li);
  while (list.childElementCount > MAX_EVENTS) list.lastChild.remove();
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
  for (const [name, r] of state.rows) {
    const s = state.samples.get(name);
    const row = state.services.get(name);
    if (!s || !row) continue;
    r.cells.health.textContent = health(row);
    if (!s.time.length) continue;
    const cpu = s.cpu_percent[s.cpu_percent.length - 1];
    const mem = s.rss_bytes[s.rss_bytes.length - 1];
    // From the oldest sample kept (at most the window) to now.
    const t0 = Math.max(answer.now - SAMPLE_WINDOW, s.time[0]);
    r.cells.cpuSvg = sparkline(r.cells.cpuSvg, s.time, s.cpu_percent, t0, answer.now, "cpu");
    r.cells.memSvg = sparkline(r.cells.memSvg, s.time, s.rss_bytes, t0, answer.now, "mem");
    r.cells.cpuLabel.textContent = row.pid !== null ? `${cpu.toFixed(1)} %` : "";
    r.cells.memLabel.textContent = row.pid !== null ? bytes(mem) : "";
    if (!r.cells.cpu.firstChild) r.cells.cpu.append(r.cells.cpuSvg, r.cells.cpuLabel);
    if (!r.cells.mem.firstChild) r.cells.mem.append(r.cells.memSvg, r.cells.memLabel);
  }
}

// ---- start-up -------------------------------------------------------------------------

async function loadTails(rows) {
  // The recent past of each service's output, merged by time; a big stack starts with an
  // empty view (the events bring every new line).
  if (rows.length > 40) return;
  const tails = await Promise.all(rows.map((r) =>
    getJSON(`/v1/services/${encodeURIComponent(r.name)}/logs?tail=200`).then((x) => x.lines).catch(() => [])));
  const lines = tails.flat().sort((a, b) => a.time - b.time || a.seq - b.seq);
  const known = state.logs;
  state.logs = lines.map((l) => ({ service: l.service, time: l.time, stream: l.stream, text: l.text }));
  // Lines the stream delivered meanwhile, newer than the tails, are kept.
  const newest = state.logs.length ? state.logs[state.logs.length - 1].time : 0;
  for (const l of known) if (l.time > newest) state.logs.push(l);
  renderLogs();
}

async function loadAll() {
  const t0 = performance.now();
  const [stack, services] = await Promise.all([getJSON("/v1/stack"), getJSON("/v1/services")]);
  state.perf.fetch = performance.now() - t0;
  $("#stack-name").textContent = stack.name;
  document.title = `corral: ${stack.name}`;
  state.services = new Map(services.services.map((r) => [r.name, r]));
  const t1 = performance.now();
  renderTable(services.services);
  renderSummary();
  renderResources();
  const t2 = performance.now();
  timeline($("#timeline"), services.services);
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
    if (opened) loadAll().catch(() => {});
    opened = true;
  });
  source.addEventListener("error", () => {
    conn.dataset.state = "lost";
    conn.textContent = "reconnecting";
  });
  source.addEventListener("state", (m) => onState(JSON.parse(m.data)));
  source.addEventListener("log", (m) => onLog(JSON.parse(m.data)));
  source.addEventListener("dropped", () => addEvent({ service: "", time: Date.now() / 1000, state: "dropped",
    reason: "the page fell behind: some log lines were skipped" }));
}

function wireControls() {
  wireActions($("#services tbody"));
  for (const id of ["#log-service", "#log-search", "#log-stderr"]) $(id).addEventListener("input", renderLogs);
  const box = $("#logs");
  const follow = $("#log-follow");
  // Auto-scroll pauses while the reader is looking further up, and resumes at the bottom.
  box.addEventListener("scroll", () => {
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 8;
    state.followLogs = atBottom;
    follow.hidden = atBottom;
  });
  follow.addEventListener("click", () => {
    state.followLogs = true;
    follow.hidden = true;
    box.scrollTop = box.scrollHeight;
  });
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
  loadTails(rows).catch(() => {});
  loadSamples();
  document.body.dataset.ready = "1";
}

main().catch((err) => {
  $("#conn").textContent = `cannot load the stack: ${err.message}`;
  $("#conn").dataset.state = "lost";
});
