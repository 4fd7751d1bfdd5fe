// The recent events panel: state changes, check failures and restarts, newest first,
// filtered by kind (CSS on the list's data-show). Each kind keeps its own last MAX, so a
// burst of state changes never pushes a check failure out.
import { clock, el, exitText } from "/static/format.js";

const MAX = 300;

// A check failure (the server marks the reasons of a liveness check past its retries, a
// readiness deadline passed while the check failed, a log regex beyond its cost), a
// restart by the policy (the backoff and the new try after it), or another state change.
export function eventKind(e, before) {
  if (e.check_failed) return "check";
  if (e.state === "backoff" || (e.state === "starting" && before === "backoff")) return "restart";
  return "state";
}

export class EventsPanel {
  constructor(list, kinds) {
    this.list = list;
    this.kinds = kinds;  // the <select> of kinds; its options count what they show
    this.kept = { state: [], check: [], restart: [] };  // the <li> of each kind, oldest first
    kinds.addEventListener("input", () => { list.dataset.show = kinds.value; });
  }

  // `before`: the service's state before this event (tells a retry from a start).
  add(e, before) {
    const kind = eventKind(e, before);
    const li = el("li");
    li.dataset.service = e.service;
    li.dataset.state = e.state;
    li.dataset.kind = kind;
    li.append(el("time", "", clock(e.time)), el("b", "", e.service), document.createTextNode(` ${e.state}`));
    if (kind === "check") li.append(el("span", "tag", "check"));
    const says = ["failed", "error", "dropped", "unhealthy"].includes(e.state) || kind === "check";
    let detail = says ? e.reason || "" : "";
    if (!detail && e.exit_code !== null && e.exit_code !== undefined && (e.state === "exited" || e.state === "backoff"))
      detail = exitText(e.exit_code);
    if (detail) li.append(el("span", "why", ` \u2014 ${detail}`));
    this.list.prepend(li);
    const kept = this.kept[kind];
    kept.push(li);
    if (kept.length > MAX) kept.shift().remove();
    const option = this.kinds.querySelector(`option[value="${kind}"]`);
    if (option) option.textContent = `${option.dataset.label} (${kept.length})`;
  }
}
