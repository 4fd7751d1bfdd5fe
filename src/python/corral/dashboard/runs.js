// The start-up timeline: this run (live, from the service rows), one of the last runs
// (GET /v1/runs, read from the stack's history by its owner), or the runs side by side.
import { compareRuns, runRows, runTotal, timeline } from "/static/charts.js";
import { el } from "/static/format.js";

function totalText(rows) {
  const t = runTotal(rows);
  return t.seconds === null ? "not all ready" : `all ${t.services} ready after ${t.seconds.toFixed(3)} s`;
}

export class TimelineView {
  // box: where the chart goes; pick: the <select> of runs; note: why there are none;
  // legend: a line per run when they are side by side.
  constructor({ box, pick, note, legend }) {
    Object.assign(this, { box, pick, note, legend });
    this.doc = null;
  }

  // The runs of the document other than this one, newest first, as rows timeline() takes,
  // with the dependencies of the current stack (`services`: name -> row).
  past(services) {
    const doc = this.doc;
    if (!doc) return [];
    const deps = new Map([...services.values()].map((r) => [r.name, r.depends_on || []]));
    return doc.runs.filter((r) => r.run !== doc.current && r.services.length).map((r) => {
      const rows = runRows(r, deps);
      const t0 = Math.min(...rows.map((x) => x.started_at));
      return { id: r.run, label: `run ${r.run} (${new Date(t0 * 1000).toLocaleString()})`, rows };
    });
  }

  // A new document (or null when it could not be read): the choices, or why there are none.
  setRuns(doc, services) {
    this.doc = doc;
    const keep = this.pick.value;
    const past = this.past(services);
    const options = [el("option", "", "this run (live)")];
    options[0].value = "live";
    if (past.length) {
      const all = el("option", "", `the last ${past.length + 1} runs side by side`);
      all.value = "compare";
      options.push(all);
      for (const p of past) {
        const o = el("option", "", `${p.label}: ${totalText(p.rows)}`);
        o.value = `run-${p.id}`;
        options.push(o);
      }
    }
    this.pick.replaceChildren(...options);
    this.pick.value = options.some((o) => o.value === keep) ? keep : "live";
    this.pick.disabled = !past.length;
    this.note.textContent = past.length ? "" : (doc && doc.reason) || "";
  }

  draw(services) {
    const live = [...services.values()];
    const past = this.past(services);
    const view = this.pick.value;
    const chosen = past.find((p) => `run-${p.id}` === view);
    if (view === "compare" && past.length) {
      this.box.dataset.view = "compare";
      compareRuns(this.box, [{ label: "this run", rows: live }, ...past]);
      this.legend.replaceChildren(el("li", "", `this run (top bars): ${totalText(live)}`),
        ...past.map((p) => el("li", "", `${p.label}: ${totalText(p.rows)}`)));
      return;
    }
    this.legend.replaceChildren();
    this.box.dataset.view = chosen ? view : "live";
    timeline(this.box, chosen ? chosen.rows : live);
  }
}
