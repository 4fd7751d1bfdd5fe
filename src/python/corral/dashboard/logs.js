// The log view: every service's lines combined, filtered by service, search and stream,
// and drawn as a window. Only the lines in view (plus a margin) are elements of the page;
// a sizer as tall as all the matching lines gives the scroll bar its length. Each line is
// one row of fixed height (long lines scroll sideways), which is what lets a scroll
// position name a line without measuring any. So 5,000 lines of 2,000 services cost what
// fifty do.
import { clock } from "/static/format.js";

const MAX_LINES = 5000;
const TRIM = 500;     // lines dropped at once past the cap, so a busy stream trims rarely
const MARGIN = 30;    // lines drawn above and below the visible ones

export class LogView {
  constructor(box, controls) {
    this.box = box;
    this.controls = controls;  // {service, search, stderr}: the filter inputs
    this.lines = [];           // {service, time, stream, text}, oldest first
    this.shown = [];           // the lines that match the filter
    this.follow = true;        // keep the newest line in view
    this.lineHeight = 0;       // measured from the first line drawn
    this.queued = false;
    this.sizer = document.createElement("div");
    this.sizer.className = "sizer";
    this.win = document.createElement("div");
    this.win.className = "window";
    this.sizer.appendChild(this.win);
    box.replaceChildren(this.sizer);
    box.addEventListener("scroll", () => this.schedule());
  }

  matches(line) {
    const c = this.controls;
    if (c.service.value && line.service !== c.service.value) return false;
    if (c.stderr.checked && line.stream !== "stderr") return false;
    const needle = c.search.value.toLowerCase();
    return !needle || line.text.toLowerCase().includes(needle) || line.service.toLowerCase().includes(needle);
  }

  add(line) {
    this.lines.push(line);
    if (this.lines.length > MAX_LINES + TRIM) {
      this.lines.splice(0, this.lines.length - MAX_LINES);
      this.refilter();
    } else if (this.matches(line)) {
      this.shown.push(line);
      this.schedule();
    }
  }

  // Replaces every line (the tails read at load), keeping the newest MAX_LINES.
  reset(lines) {
    this.lines = lines.slice(-MAX_LINES);
    this.refilter();
  }

  // A changed filter is drawn at once (the reader waits for it); streamed lines wait for
  // the next frame, so a burst of them is one drawing.
  refilter() {
    this.shown = this.lines.filter((l) => this.matches(l));
    this.draw();
  }

  // At most one drawing per frame, however many lines arrived.
  schedule() {
    if (this.queued) return;
    this.queued = true;
    requestAnimationFrame(() => {
      this.queued = false;
      this.draw();
    });
  }

  draw() {
    const h = this.lineHeight || 17;
    const n = this.shown.length;
    this.sizer.style.height = `${n * h}px`;
    if (this.follow) this.box.scrollTop = this.box.scrollHeight;
    const top = this.box.scrollTop;
    const first = Math.max(0, Math.floor(top / h) - MARGIN);
    const last = Math.min(n, Math.ceil((top + this.box.clientHeight) / h) + MARGIN);
    const frag = document.createDocumentFragment();
    for (let i = first; i < last; i++) frag.appendChild(lineElement(this.shown[i]));
    this.win.style.transform = `translateY(${first * h}px)`;
    this.win.replaceChildren(frag);
    if (!this.lineHeight && this.win.firstChild) {
      // The real height (fonts differ): measured once, then drawn again to the right size.
      this.lineHeight = this.win.firstChild.getBoundingClientRect().height || 17;
      if (this.lineHeight !== h) this.draw();
    }
  }

  // Whether the reader is at the bottom (auto-scroll resumes there).
  atBottom() {
    return this.box.scrollHeight - this.box.scrollTop - this.box.clientHeight < 8;
  }
}

function lineElement(line) {
  const corralNote = line.text.startsWith("corral: ");
  const div = document.createElement("div");
  div.className = `line ${line.stream}${corralNote ? " corral" : ""}`;
  div.dataset.service = line.service;
  div.title = clock(line.time);
  const svc = document.createElement("span");
  svc.className = "svc";
  svc.textContent = line.service;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = line.text;  // never HTML: a service's output is text
  div.append(svc, text);
  return div;
}
