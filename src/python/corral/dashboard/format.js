// Small formatting helpers shared by the dashboard's modules.

export const $ = (sel) => document.querySelector(sel);

export function duration(s) {
  if (s < 0 || !isFinite(s)) return "";
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} m ${Math.floor(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} m`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function bytes(n) {
  if (!n) return "0";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n < 10 ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

// Wall time as HH:MM:SS.mmm in the browser's zone.
export function clock(t) {
  const d = new Date(t * 1000);
  return d.toTimeString().slice(0, 8) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

// An element with a class and text (textContent: never HTML).
export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

export function exitText(code) {
  if (code < 0) return `killed by signal ${-code}${code === -9 ? " (SIGKILL: out of memory?)" : ""}`;
  return `exit code ${code}${code === 137 ? " (killed: out of memory?)" : ""}`;
}
