// The dashboard's two charts, drawn as plain SVG (no chart library: the page ships inside
// the package and loads nothing from elsewhere): a sparkline per metric and service, and
// the start-up timeline.
const NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// Draws `values` over `times` between t0 and t1 into `svg` (made when null) and returns it.
// The vertical scale starts at 0 and ends at the largest value shown.
export function sparkline(svg, times, values, t0, t1, cls, width = 60, height = 20) {
  if (!svg) {
    svg = svgEl("svg", { class: `spark ${cls}`, width, height, viewBox: `0 0 ${width} ${height}` });
    svg.appendChild(svgEl("path", { d: "" }));
  }
  let max = 0;
  for (const v of values) if (v > max) max = v;
  if (max <= 0) max = 1;
  const span = Math.max(1e-9, t1 - t0);
  let d = "";
  for (let i = 0; i < times.length; i++) {
    const x = ((times[i] - t0) / span) * width;
    const y = height - 1 - (values[i] / max) * (height - 2);
    d += `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
  }
  svg.firstChild.setAttribute("d", d);
  return svg;
}

const ROW = 18;
const LABEL = 150;
const WIDTH = 900;

function ticks(span) {
  const steps = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600];
  for (const s of steps) if (span / s <= 8) return s;
  return 1200;
}

// Spawn -> ready as a bar per service of the current run, ordered by spawn time, and an
// edge from each dependency's readiness to the dependent's spawn; the edge from the
// dependency that became ready last before the spawn (the one that held it back) is drawn
// solid. A service still starting has an open bar up to now.
export function timeline(box, rows) {
  const now = Date.now() / 1000;
  const runs = rows.filter((r) => r.started_at).sort((a, b) => a.started_at - b.started_at || (a.name < b.name ? -1 : 1));
  if (!runs.length) {
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = "nothing has started yet";
    box.replaceChildren(p);
    return;
  }
  const t0 = runs[0].started_at;
  let t1 = t0;
  for (const r of runs) {
    const end = r.ready_at && r.ready_at >= r.started_at ? r.ready_at : r.state === "starting" ? now : r.started_at;
    if (end > t1) t1 = end;
  }
  const span = Math.max(0.05, t1 - t0);
  const plot = WIDTH - LABEL - 20;
  const x = (t) => LABEL + ((t - t0) / span) * plot;
  const height = (runs.length + 1) * ROW + 8;
  const svg = svgEl("svg", { width: WIDTH, height, viewBox: `0 0 ${WIDTH} ${height}`, role: "img",
    "aria-label": "start-up timeline" });
  const step = ticks(span);
  for (let t = 0; t <= span + 1e-9; t += step) {
    svg.appendChild(svgEl("line", { class: "axis", x1: x(t0 + t), x2: x(t0 + t), y1: ROW - 4, y2: height }));
    svg.appendChild(svgEl("text", { class: "tick", x: x(t0 + t) + 2, y: ROW - 6 },
      step < 1 ? `${t.toFixed(2)} s` : `${Math.round(t)} s`));
  }
  const y = new Map();
  const byName = new Map();  // not runs.find: with 2,000 services that is 4 million steps
  runs.forEach((r, i) => {
    y.set(r.name, ROW + i * ROW + 4);
    byName.set(r.name, r);
  });
  const ready = (r) => (r.ready_at && r.ready_at >= r.started_at ? r.ready_at : null);
  const edges = svgEl("g");
  for (const r of runs) {
    let held = null;
    let heldPath = null;
    for (const d of r.depends_on || []) {
      const dep = byName.get(d.service);
      if (!dep) continue;
      const at = d.condition === "started" ? dep.started_at : ready(dep);
      if (at === null || at > r.started_at + 0.001) continue;
      const path = svgEl("path", { class: "edge", d: `M${x(at)},${y.get(dep.name) + 6} L${x(r.started_at)},${y.get(r.name) + 6}` });
      path.dataset.from = dep.name;
      path.dataset.to = r.name;
      edges.appendChild(path);
      if (!held || at > held.at) {
        held = { dep, at };
        heldPath = path;
      }
    }
    if (heldPath) heldPath.setAttribute("class", "edge held");
  }
  for (const r of runs) {
    const top = y.get(r.name);
    const end = ready(r) ?? (r.state === "starting" ? now : r.started_at);
    svg.appendChild(svgEl("text", { x: 4, y: top + 10 }, r.name));
    const cls = ready(r) ? "bar ready" : r.state === "failed" ? "bar failed" : "bar";
    const bar = svgEl("rect", { class: cls, x: x(r.started_at), y: top + 1, height: ROW - 6,
      width: Math.max(2, x(end) - x(r.started_at)) });
    bar.dataset.service = r.name;
    const took = ready(r) ? `${(ready(r) - r.started_at).toFixed(3)} s to ready` : r.state;
    bar.appendChild(svgEl("title", {}, `${r.name}: ${took}`));
    svg.appendChild(bar);
  }
  svg.appendChild(edges);
  box.replaceChildren(svg);
}

// A past run from GET /v1/runs as rows that timeline() draws: each service's first process
// of that run, ready or not, with the dependencies of the current stack (a run's own are
// not in the history).
export function runRows(run, dependsOn) {
  return run.services.map((s) => ({
    name: s.service,
    started_at: s.started,
    ready_at: s.ready_seconds === null ? null : s.started + s.ready_seconds,
    // Never ready in that run (and that run is over): drawn as a failure, never as open.
    state: s.ready_seconds !== null ? "ready" : "failed",
    depends_on: dependsOn.get(s.service) || [],
  }));
}

// How long a run took to have every service ready (null when one never was), and how
// many services it started.
export function runTotal(rows) {
  let t0 = Infinity;
  let t1 = -Infinity;
  for (const r of rows) {
    if (!r.started_at) continue;
    t0 = Math.min(t0, r.started_at);
    if (!r.ready_at) return { seconds: null, services: rows.length };
    t1 = Math.max(t1, r.ready_at);
  }
  return { seconds: t1 >= t0 ? t1 - t0 : null, services: rows.length };
}

// Several runs side by side: per service one thin bar per run, each from its own run's
// first spawn, the first run given (the current one) on top and darkest. A service that
// became ready later than last time shows as a top bar longer than those under it.
// `runs`: [{label, rows}] with rows as timeline() takes them.
export function compareRuns(box, runs) {
  const names = [];
  const seen = new Set();
  const offsets = runs.map(({ rows }) => {
    const started = rows.filter((r) => r.started_at);
    const t0 = started.length ? Math.min(...started.map((r) => r.started_at)) : 0;
    const m = new Map();
    for (const r of started) {
      if (!seen.has(r.name)) {
        seen.add(r.name);
        names.push(r.name);
      }
      const ready = r.ready_at && r.ready_at >= r.started_at ? r.ready_at - t0 : null;
      m.set(r.name, { start: r.started_at - t0, ready, failed: r.state === "failed" });
    }
    return m;
  });
  let span = 0.05;
  for (const m of offsets) for (const b of m.values()) span = Math.max(span, b.ready ?? b.start);
  const sub = 6;
  const group = sub * runs.length + 4;
  const plot = WIDTH - LABEL - 20;
  const x = (t) => LABEL + (t / span) * plot;
  const height = ROW + names.length * group + 8;
  const svg = svgEl("svg", { width: WIDTH, height, viewBox: `0 0 ${WIDTH} ${height}`, role: "img",
    "aria-label": "start-up of the last runs" });
  const step = ticks(span);
  for (let t = 0; t <= span + 1e-9; t += step) {
    svg.appendChild(svgEl("line", { class: "axis", x1: x(t), x2: x(t), y1: ROW - 4, y2: height }));
    svg.appendChild(svgEl("text", { class: "tick", x: x(t) + 2, y: ROW - 6 }, step < 1 ? `${t.toFixed(2)} s` : `${Math.round(t)} s`));
  }
  names.forEach((name, i) => {
    const top = ROW + i * group + 2;
    svg.appendChild(svgEl("text", { x: 4, y: top + group / 2 + 2 }, name));
    runs.forEach((run, j) => {
      const b = offsets[j].get(name);
      if (!b) return;
      const end = b.ready ?? b.start;
      const bar = svgEl("rect", { class: b.ready !== null ? "bar ready" : b.failed ? "bar failed" : "bar",
        x: x(b.start), y: top + j * sub, height: sub - 1, width: Math.max(2, x(end) - x(b.start)),
        "fill-opacity": (1 - (0.7 * j) / runs.length).toFixed(2) });
      bar.dataset.service = name;
      bar.dataset.run = String(j);
      const took = b.ready !== null ? `${(b.ready - b.start).toFixed(3)} s to ready` : "not ready";
      bar.appendChild(svgEl("title", {}, `${name}, ${run.label}: ${took}`));
      svg.appendChild(bar);
    });
  });
  box.replaceChildren(svg);
}
