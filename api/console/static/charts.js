// Small hand-written SVG charts for the console: a live time series, an index series (loss curves),
// horizontal bars and diverging bars (SHAP). A charting library would be 50-200 KB for four shapes;
// these are drawn at the container's pixel width so text is never stretched.

const NS = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = String(text);
  return el;
}

const finite = (x) => typeof x === "number" && Number.isFinite(x);

export function fmtShort(x) {
  if (!finite(x)) return "–";
  const a = Math.abs(x);
  if (a >= 1e9) return `${(x / 1e9).toFixed(1)}G`;
  if (a >= 1e6) return `${(x / 1e6).toFixed(1)}M`;
  if (a >= 1e4) return `${(x / 1e3).toFixed(1)}k`;
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  if (a >= 0.01 || a === 0) return x.toFixed(2);
  return x.toExponential(1);
}

/** A "nice" upper bound for an axis (1, 2, 2.5, 5 × 10^k). */
function niceMax(v) {
  if (!(v > 0)) return 1; // nothing yet, or all zero: a 0..1 axis
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function widthOf(el, fallback = 320) {
  return Math.max(160, Math.floor(el.clientWidth || el.getBoundingClientRect().width || fallback));
}

/** Redraw on container resize (laptop window resizes, panels reflowing). */
function onResize(el, draw) {
  if (!("ResizeObserver" in window)) return;
  let last = widthOf(el);
  new ResizeObserver(() => {
    const w = widthOf(el);
    if (Math.abs(w - last) > 4) {
      last = w;
      draw();
    }
  }).observe(el);
}

/** A live time series: push(value) as updates arrive; keeps the last `windowSec` seconds. */
export class TimeChart {
  constructor(container, { title, name = "", unit = "", format = fmtShort, windowSec = 300, height = 110, cls = "series-a", min = 0 } = {}) {
    this.box = document.createElement("figure");
    this.box.className = "timechart";
    if (name) this.box.dataset.chart = name; // a stable handle (the title may change)
    container.append(this.box);
    Object.assign(this, { title, unit, format, windowSec, height, cls, min });
    this.points = [];
    this.draw();
    onResize(this.box, () => this.draw());
  }

  push(value, t = Date.now() / 1000) {
    if (!finite(value)) return;
    const last = this.points[this.points.length - 1];
    if (last && t <= last[0]) return; // same status row seen twice (stream + poll)
    this.points.push([t, value]);
    const cut = t - this.windowSec;
    while (this.points.length > 2 && this.points[0][0] < cut) this.points.shift();
    this.draw();
  }

  draw() {
    const W = widthOf(this.box);
    const H = this.height;
    const padL = 40;
    const padR = 8;
    const padT = 22;
    const padB = 16;
    const svg = s("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart-svg" });
    const last = this.points[this.points.length - 1];
    const label = `${this.title}: ${last ? this.format(last[1]) : "–"}${this.unit ? ` ${this.unit}` : ""}`;
    svg.append(s("title", {}, label));
    svg.append(s("text", { x: 0, y: 14, class: "chart-title" }, this.title));
    svg.append(s("text", { x: W, y: 14, class: "chart-value", "text-anchor": "end" }, last ? `${this.format(last[1])}${this.unit ? ` ${this.unit}` : ""}` : "–"));
    const vals = this.points.map((p) => p[1]);
    const top = niceMax(Math.max(...vals, this.min)) || 1;
    const now = last ? last[0] : Date.now() / 1000;
    const t0 = now - this.windowSec;
    const x = (t) => padL + ((t - t0) / this.windowSec) * (W - padL - padR);
    const y = (v) => padT + (1 - v / top) * (H - padT - padB);
    for (const f of [0, 0.5, 1]) {
      svg.append(s("line", { x1: padL, x2: W - padR, y1: y(top * f), y2: y(top * f), class: "grid" }));
      svg.append(s("text", { x: padL - 4, y: y(top * f) + 4, class: "axis", "text-anchor": "end" }, fmtShort(top * f)));
    }
    svg.append(s("text", { x: padL, y: H - 2, class: "axis" }, `−${Math.round(this.windowSec / 60)} min`));
    svg.append(s("text", { x: W - padR, y: H - 2, class: "axis", "text-anchor": "end" }, "now"));
    if (this.points.length) {
      const pts = this.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`);
      const first = this.points[0];
      svg.append(s("polygon", { points: `${x(first[0]).toFixed(1)},${y(0)} ${pts.join(" ")} ${x(last[0]).toFixed(1)},${y(0)}`, class: `area ${this.cls}` }));
      svg.append(s("polyline", { points: pts.join(" "), class: `line ${this.cls}` }));
      svg.append(s("circle", { cx: x(last[0]), cy: y(last[1]), r: 3, class: `dot ${this.cls}` }));
    }
    this.box.replaceChildren(svg);
    this.box.dataset.points = String(this.points.length);
    this.box.setAttribute("aria-label", label);
  }
}

/** A fixed series by index (e.g. a training loss history). */
export class SeriesChart {
  constructor(container, { title, values, height = 110, cls = "series-b" }) {
    Object.assign(this, { container, title, values: values.filter(finite), height, cls });
    this.draw();
    onResize(container, () => this.draw());
  }

  draw() {
    const W = widthOf(this.container);
    const H = this.height;
    const padL = 44;
    const padT = 28;
    const padB = 14;
    const v = this.values;
    const lo = Math.min(...v);
    const hi = Math.max(...v);
    const span = hi - lo || 1;
    const x = (i) => padL + (i / Math.max(1, v.length - 1)) * (W - padL - 6);
    const y = (val) => padT + (1 - (val - lo) / span) * (H - padT - padB);
    const svg = s("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart-svg" });
    svg.append(s("title", {}, `${this.title}: ${v.length} values from ${fmtShort(v[0])} to ${fmtShort(v[v.length - 1])}`));
    svg.append(s("text", { x: 0, y: 13, class: "chart-title" }, this.title));
    svg.append(s("text", { x: W, y: 13, class: "chart-value", "text-anchor": "end" }, `${fmtShort(v[0])} → ${fmtShort(v[v.length - 1])}`));
    svg.append(s("text", { x: padL - 4, y: y(hi) + 4, class: "axis", "text-anchor": "end" }, fmtShort(hi)));
    svg.append(s("text", { x: padL - 4, y: y(lo) + 4, class: "axis", "text-anchor": "end" }, fmtShort(lo)));
    svg.append(s("text", { x: W - 6, y: H - 2, class: "axis", "text-anchor": "end" }, `${v.length}`));
    svg.append(s("polyline", { points: v.map((val, i) => `${x(i).toFixed(1)},${y(val).toFixed(1)}`).join(" "), class: `line ${this.cls}` }));
    this.container.replaceChildren(svg);
  }
}

function labelWidth(items, W) {
  const longest = Math.max(4, ...items.map((d) => String(d.label).length));
  return Math.min(Math.round(W * 0.42), 16 + longest * 7.2);
}

function clip(text, max) {
  const t = String(text);
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
}

/** Horizontal bars for non-negative values (e.g. event counts). items: [{label, value}]. */
export function barChart(container, items, { format = fmtShort, row = 22 } = {}) {
  const W = widthOf(container);
  const lw = labelWidth(items, W);
  const vw = 56;
  const H = Math.max(row, items.length * row) + 4;
  const max = Math.max(...items.map((d) => d.value), 1e-9);
  const svg = s("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart-svg bars" });
  svg.append(s("title", {}, items.map((d) => `${d.label}: ${format(d.value)}`).join(", ")));
  items.forEach((d, i) => {
    const y = i * row + 2;
    const w = Math.max(1, (d.value / max) * (W - lw - vw));
    svg.append(s("text", { x: lw - 6, y: y + row / 2 + 4, class: "bar-label", "text-anchor": "end" }, clip(d.label, 40)));
    svg.append(s("rect", { x: lw, y: y + 3, width: w.toFixed(1), height: row - 6, rx: 2, class: "bar bar-neutral" }));
    svg.append(s("text", { x: lw + w + 4, y: y + row / 2 + 4, class: "bar-value" }, format(d.value)));
  });
  container.replaceChildren(svg);
  container.dataset.bars = String(items.length);
}

/** Contributions, signed, with the one rounding rule the API's sentences use: three decimals. */
function signed(v) {
  return `${v < 0 ? "−" : "+"}${Math.abs(v).toFixed(3)}`;
}

/**
 * Diverging horizontal bars around zero (SHAP contributions): positive to the right (raise the
 * score), negative to the left (lower it). items: [{label, value, feature?}], drawn in the given order
 * (``feature``, the API's name, goes to data-feature; the label is what a person reads).
 */
export function divergingChart(container, items, { format = signed, row = 24 } = {}) {
  const W = widthOf(container, 560);
  const lw = labelWidth(items, W);
  const vw = 52;
  const plotL = lw + vw;
  const plotR = W - vw;
  const mid = (plotL + plotR) / 2;
  const half = (plotR - plotL) / 2;
  const H = items.length * row + 24;
  const max = Math.max(...items.map((d) => Math.abs(d.value)), 1e-12);
  const svg = s("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart-svg diverging" });
  svg.append(s("title", {}, items.map((d) => `${d.label}: ${format(d.value)}`).join(", ")));
  svg.append(s("text", { x: mid - 6, y: 12, class: "axis", "text-anchor": "end" }, "← lowers score"));
  svg.append(s("text", { x: mid + 6, y: 12, class: "axis" }, "raises score →"));
  items.forEach((d, i) => {
    const y = 18 + i * row;
    const w = Math.max(1, (Math.abs(d.value) / max) * half);
    const pos = d.value >= 0;
    const g = s("g", { class: `shap-row ${pos ? "pos" : "neg"}`, "data-feature": d.feature ?? d.label, "data-value": d.value });
    g.append(s("text", { x: lw - 6, y: y + row / 2 + 4, class: "bar-label", "text-anchor": "end" }, clip(d.label, 44)));
    g.append(s("rect", { x: (pos ? mid : mid - w).toFixed(1), y: y + 3, width: w.toFixed(1), height: row - 6, rx: 2, class: pos ? "bar bar-pos" : "bar bar-neg" }));
    g.append(s("text", { x: pos ? mid + w + 4 : mid - w - 4, y: y + row / 2 + 4, class: "bar-value", "text-anchor": pos ? "start" : "end" }, format(d.value)));
    svg.append(g);
  });
  svg.append(s("line", { x1: mid, x2: mid, y1: 16, y2: H, class: "zero" }));
  container.replaceChildren(svg);
  container.dataset.bars = String(items.length);
}
