// Line charts on a canvas, written for long runs: a series of any length is drawn through at
// most four points per pixel column (first, min, max, last of the points that fall in it), so
// a 10,000-step series costs one pass, and every point drawn is a logged value.
//
// Charts of one page share their x range through a ChartGroup: drag across any chart to zoom
// all of them to those steps, double-click (or press Escape on a focused chart) to zoom out.
// Hover, or focus a chart and use the arrow keys, to read the values at a step.

const PAD = { left: 46, right: 10, top: 8, bottom: 20 };
const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

/** The colour of the i-th series (CSS variables --s1..--s6, light and dark). */
export function seriesColor(i) { return css(`--s${(i % 6) + 1}`); }

/** First index whose step is >= x in the ascending array `steps`. */
export function lowerBound(steps, x) {
  let lo = 0, hi = steps.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (steps[mid] < x) lo = mid + 1; else hi = mid; }
  return lo;
}

function niceTicks(lo, hi, count) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

export function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  return (+v.toPrecision(4)).toString();
}

// Every live chart redraws when the system switches between light and dark (its colours are
// read from CSS variables at drawing time); charts no longer in the page are forgotten.
const live = new Set();
window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
  for (const chart of live) {
    if (chart.el.isConnected) chart.schedule(); else live.delete(chart);
  }
});

export class ChartGroup {
  constructor(onZoom) { this.charts = []; this.range = null; this.onZoom = onZoom || null; }
  add(chart) { this.charts.push(chart); chart.group = this; return chart; }
  zoom(range) {
    this.range = range;
    for (const c of this.charts) c.schedule();
    if (this.onZoom) this.onZoom(range);
  }
  drawAll() { for (const c of this.charts) c.schedule(); }
}

export class Chart {
  /** `series`: [{label, steps: number[], values: number[], color?, dashed?}] */
  constructor(parent, { title, series = [] }) {
    this.title = title;
    this.series = series;
    this.group = null;
    this.cursor = null; // a step, or null
    this.drag = null;
    this.el = document.createElement("figure");
    this.el.className = "chart";
    this.el.style.margin = "0";
    const h = document.createElement("h3");
    h.textContent = title;
    this.canvas = document.createElement("canvas");
    this.canvas.tabIndex = 0;
    this.canvas.setAttribute("role", "img");
    this.legend = document.createElement("figcaption");
    this.legend.className = "legend";
    this.tip = document.createElement("div");
    this.tip.className = "tip";
    this.tip.hidden = true;
    this.empty = document.createElement("div");
    this.empty.className = "empty";
    this.empty.textContent = "not logged (yet)";
    this.el.append(h, this.canvas, this.empty, this.legend, this.tip);
    parent.append(this.el);
    this.bind();
    this.pending = false;
    new ResizeObserver(() => this.schedule()).observe(this.canvas);
    live.add(this);
  }

  setSeries(series) { this.series = series; this.schedule(); }

  /** Redraw at the next animation frame (many updates in one frame draw once). */
  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.draw(); });
  }

  hasData() { return this.series.some((s) => s.steps.length > 0); }

  domain() {
    let x0 = Infinity, x1 = -Infinity;
    for (const s of this.series) {
      if (!s.steps.length) continue;
      x0 = Math.min(x0, s.steps[0]);
      x1 = Math.max(x1, s.steps[s.steps.length - 1]);
    }
    if (this.group && this.group.range) [x0, x1] = this.group.range;
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    let y0 = Infinity, y1 = -Infinity;
    for (const s of this.series) {
      const a = lowerBound(s.steps, x0), b = lowerBound(s.steps, x1 + 1e-9);
      for (let i = a; i < b; i++) {
        const v = s.values[i];
        if (v < y0) y0 = v;
        if (v > y1) y1 = v;
      }
    }
    if (!Number.isFinite(y0)) { y0 = 0; y1 = 1; }
    if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 || 0.5; y1 += Math.abs(y1) * 0.1 || 0.5; }
    const pad = (y1 - y0) * 0.06;
    return { x0, x1, y0: y0 - pad, y1: y1 + pad };
  }

  draw() {
    const has = this.hasData();
    this.canvas.hidden = !has;
    this.empty.hidden = has;
    this.renderLegend();
    if (!has) { this.canvas.setAttribute("aria-label", `${this.title}: no values logged yet`); return; }
    const dpr = window.devicePixelRatio || 1;
    const w = this.canvas.clientWidth, h = this.canvas.clientHeight;
    if (!w || !h) return;
    if (this.canvas.width !== Math.round(w * dpr) || this.canvas.height !== Math.round(h * dpr)) {
      this.canvas.width = Math.round(w * dpr);
      this.canvas.height = Math.round(h * dpr);
    }
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const d = this.domain();
    this.d = d;
    const pw = w - PAD.left - PAD.right, ph = h - PAD.top - PAD.bottom;
    const X = (x) => PAD.left + ((x - d.x0) / (d.x1 - d.x0)) * pw;
    const Y = (y) => PAD.top + (1 - (y - d.y0) / (d.y1 - d.y0)) * ph;
    this.X = X;
    this.axes(ctx, d, X, Y, w, h);
    ctx.save();
    ctx.beginPath();
    ctx.rect(PAD.left, PAD.top, pw, ph);
    ctx.clip();
    this.series.forEach((s, i) => this.line(ctx, s, s.color || seriesColor(i), d, X, Y, pw));
    this.overlay(ctx, X, h);
    ctx.restore();
    this.canvas.setAttribute("aria-label", this.summary());
  }

  axes(ctx, d, X, Y, w, h) {
    ctx.strokeStyle = css("--line");
    ctx.fillStyle = css("--muted");
    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const t of niceTicks(d.y0, d.y1, 4)) {
      const y = Math.round(Y(t)) + 0.5;
      ctx.beginPath(); ctx.moveTo(PAD.left, y); ctx.lineTo(w - PAD.right, y); ctx.stroke();
      ctx.fillText(fmt(t), PAD.left - 4, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const t of niceTicks(d.x0, d.x1, 6)) {
      if (t !== Math.round(t)) continue;
      ctx.fillText(String(t), X(t), h - PAD.bottom + 4);
    }
  }

  line(ctx, s, color, d, X, Y, pw) {
    const a = Math.max(0, lowerBound(s.steps, d.x0) - 1);
    const b = Math.min(s.steps.length, lowerBound(s.steps, d.x1 + 1e-9) + 1);
    if (b <= a) return;
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.lineWidth = s.dashed ? 1.5 : 1.6;
    ctx.setLineDash(s.dashed ? [5, 4] : []);
    ctx.beginPath();
    if (b - a === 1) {
      ctx.arc(X(s.steps[a]), Y(s.values[a]), 2.5, 0, 2 * Math.PI);
      ctx.fill();
      ctx.setLineDash([]);
      return;
    }
    if (b - a <= 2 * pw) {
      for (let i = a; i < b; i++) {
        const x = X(s.steps[i]), y = Y(s.values[i]);
        if (i === a) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      }
    } else {
      // One column per pixel: its first, min, max and last points, in that order.
      let col = null, first = 0, last = 0, lo = 0, hi = 0, started = false;
      const flush = () => {
        if (col === null) return;
        const x = col + 0.5;
        if (!started) { ctx.moveTo(x, Y(first)); started = true; } else ctx.lineTo(x, Y(first));
        ctx.lineTo(x, Y(lo)); ctx.lineTo(x, Y(hi)); ctx.lineTo(x, Y(last));
      };
      for (let i = a; i < b; i++) {
        const c = Math.floor(X(s.steps[i]));
        const v = s.values[i];
        if (c !== col) { flush(); col = c; first = lo = hi = last = v; }
        else { if (v < lo) lo = v; if (v > hi) hi = v; last = v; }
      }
      flush();
    }
    ctx.stroke();
    ctx.setLineDash([]);
  }

  overlay(ctx, X, h) {
    if (this.drag && Math.abs(this.drag.x1 - this.drag.x0) > 2) {
      ctx.fillStyle = "rgba(120,140,170,.18)";
      const x = Math.min(this.drag.x0, this.drag.x1);
      ctx.fillRect(x, PAD.top, Math.abs(this.drag.x1 - this.drag.x0), h - PAD.top - PAD.bottom);
    }
    if (this.cursor !== null) {
      ctx.strokeStyle = css("--muted");
      ctx.lineWidth = 1;
      ctx.beginPath();
      const x = Math.round(X(this.cursor)) + 0.5;
      ctx.moveTo(x, PAD.top); ctx.lineTo(x, h - PAD.bottom);
      ctx.stroke();
    }
  }

  renderLegend() {
    this.legend.replaceChildren(...this.series.map((s, i) => {
      const span = document.createElement("span");
      const sw = document.createElement("i");
      sw.style.background = s.color || seriesColor(i);
      sw.style.borderColor = s.color || seriesColor(i);
      if (s.dashed) sw.className = "dashed";
      const last = s.values.length ? fmt(s.values[s.values.length - 1]) : "—";
      span.append(sw, `${s.label} ${last}`);
      return span;
    }));
  }

  summary() {
    const parts = this.series.filter((s) => s.steps.length).map((s) =>
      `${s.label} ${fmt(s.values[s.values.length - 1])} at step ${s.steps[s.steps.length - 1]}`);
    return `${this.title}: ${parts.join("; ")}`;
  }

  /** Values of every series at the logged step nearest to `step`. */
  valuesAt(step) {
    return this.series.map((s, i) => {
      if (!s.steps.length) return null;
      let j = lowerBound(s.steps, step);
      if (j >= s.steps.length || (j > 0 && step - s.steps[j - 1] < s.steps[j] - step)) j -= 1;
      return { label: s.label, color: s.color || seriesColor(i), step: s.steps[j], value: s.values[j] };
    }).filter(Boolean);
  }

  showTip(step) {
    this.cursor = step;
    const rows = this.valuesAt(step);
    if (!rows.length || !this.X) { this.tip.hidden = true; return; }
    this.tip.replaceChildren();
    const head = document.createElement("div");
    head.textContent = `step ${rows[0].step}`;
    this.tip.append(head);
    for (const r of rows) {
      const div = document.createElement("div");
      const sw = document.createElement("i");
      sw.style.cssText = `display:inline-block;width:8px;height:8px;margin-right:4px;background:${r.color}`;
      div.append(sw, `${r.label}: ${fmt(r.value)}${r.step !== rows[0].step ? ` (step ${r.step})` : ""}`);
      this.tip.append(div);
    }
    this.tip.hidden = false;
    const x = this.X(step) + this.canvas.offsetLeft;
    const right = x > this.el.clientWidth / 2;
    this.tip.style.left = right ? "" : `${x + 12}px`;
    this.tip.style.right = right ? `${this.el.clientWidth - x + 12}px` : "";
    this.tip.style.top = `${this.canvas.offsetTop + 8}px`;
    this.schedule();
  }

  hideTip() { this.cursor = null; this.tip.hidden = true; this.schedule(); }

  stepAt(px) {
    const d = this.d;
    if (!d) return null;
    const pw = this.canvas.clientWidth - PAD.left - PAD.right;
    return d.x0 + ((px - PAD.left) / pw) * (d.x1 - d.x0);
  }

  bind() {
    const c = this.canvas;
    const px = (e) => e.clientX - c.getBoundingClientRect().left;
    c.addEventListener("mousemove", (e) => {
      if (this.drag) { this.drag.x1 = px(e); this.schedule(); }
      const step = this.stepAt(px(e));
      if (step !== null) this.showTip(step);
    });
    c.addEventListener("mouseleave", () => { this.drag = null; this.hideTip(); });
    c.addEventListener("mousedown", (e) => { this.drag = { x0: px(e), x1: px(e) }; });
    c.addEventListener("mouseup", (e) => {
      const drag = this.drag;
      this.drag = null;
      if (!drag || Math.abs(px(e) - drag.x0) < 5) { this.schedule(); return; }
      const a = this.stepAt(Math.min(drag.x0, px(e))), b = this.stepAt(Math.max(drag.x0, px(e)));
      this.zoom([Math.floor(a), Math.ceil(b)]);
    });
    c.addEventListener("dblclick", () => this.zoom(null));
    c.addEventListener("blur", () => this.hideTip());
    c.addEventListener("keydown", (e) => {
      const steps = this.series.flatMap((s) => s.steps.length ? [s.steps] : [])[0];
      if (e.key === "Escape") { this.zoom(null); return; }
      if (!steps || (e.key !== "ArrowLeft" && e.key !== "ArrowRight")) return;
      e.preventDefault();
      let j = this.cursor === null ? steps.length - 1 : lowerBound(steps, this.cursor);
      j = Math.max(0, Math.min(steps.length - 1, j + (this.cursor === null ? 0 : e.key === "ArrowLeft" ? -1 : 1)));
      this.showTip(steps[j]);
    });
  }

  zoom(range) {
    if (this.group) this.group.zoom(range);
    else this.schedule();
  }
}
