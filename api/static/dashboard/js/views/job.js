// One job: its state and controls, live charts over SSE, the tokens PAEC selected, the
// events log, checkpoints with downloads, and the hyperparameters.
import { call, download, follow, listAll } from "../api.js";
import { Chart, ChartGroup } from "../chart.js";
import { el, flatten, hyperOf, methodOf, show, statusEl, TERMINAL, toast, when } from "../format.js";
import { PANELS, panelNames, SeriesStore } from "./panels.js";
import { tokensView } from "./tokens.js";

const MAX_LOG = 500;
const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

export function jobView(root, jobId, params) {
  document.title = `${jobId} · paec`;
  const ctl = new AbortController();
  const enc = encodeURIComponent(jobId);
  const head = el("section", { "aria-labelledby": "job-title" });
  const grid = el("div", { class: "grid", id: "charts" });
  const zoomNote = el("span", { class: "muted", id: "zoom-note" });
  const tokens = el("section", { id: "tokens", "aria-labelledby": "tokens-title" });
  const log = el("ul", {});
  const ckpts = el("tbody");
  const hyper = el("tbody");
  root.append(head,
    el("h2", {}, "Training curves"),
    el("div", { class: "toolbar" }, el("span", { class: "muted" },
      "Drag across a chart to zoom, double-click or Escape to zoom out; hover or use the arrow keys on a focused chart for values."),
    zoomNote),
    grid, tokens,
    el("div", { class: "cols" },
      el("section", { "aria-labelledby": "events-title" }, el("h2", { id: "events-title" }, "Events"),
        el("div", { class: "events card", id: "events", tabindex: "0", "aria-label": "Events, newest first" }, log)),
      el("section", {},
        el("h2", { id: "ckpt-title" }, "Checkpoints"),
        el("table", { id: "checkpoints", "aria-labelledby": "ckpt-title" }, el("thead", {}, el("tr", {},
          ["Step", "Checkpoint", "Size", ""].map((h) => el("th", { scope: "col" }, h)))), ckpts),
        el("h2", { id: "hyper-title" }, "Hyperparameters"),
        el("table", { class: "kv", id: "hyperparameters", "aria-labelledby": "hyper-title" }, hyper))));

  let job = null;
  let overview = new SeriesStore();
  let detail = null; // the zoomed range at full resolution
  const group = new ChartGroup(async (range) => {
    detail = null;
    zoomNote.textContent = range ? `steps ${range[0]}–${range[1]}` : "";
    if (range) {
      try {
        detail = SeriesStore.fromApi(await call(`/api/jobs/${enc}/metrics?start=${Math.max(0, range[0])}&end=${range[1]}&max_points=2000`, { signal: ctl.signal }));
      } catch { /* the overview stays */ }
    }
    drawCharts();
  });
  const charts = PANELS.map((p) => ({ panel: p, chart: group.add(new Chart(grid, { title: p.title })) }));

  function drawCharts() {
    const store = detail || overview;
    const logged = store.names();
    for (const { panel, chart } of charts) {
      const names = panelNames(panel, logged);
      // A panel of optional metrics (evaluation) is shown once the job logs one.
      chart.el.hidden = Boolean(panel.prefix) && names.length === 0;
      chart.setSeries(names.map((name) => {
        const line = panel.lines ? panel.lines.find(([n]) => n === name) : null;
        const opts = (line && line[2]) || {};
        const s = store.get(name);
        return { label: line ? line[1] : name.slice(panel.prefix.length), steps: s.steps, values: s.values,
          dashed: opts.dashed, color: opts.color ? css(opts.color) : undefined };
      }));
    }
  }

  function renderHead() {
    const h = hyperOf(job);
    const act = async (verb) => {
      try {
        job = await call(`/v1/fine_tuning/jobs/${enc}/${verb}`, { method: "POST" });
        toast(`Job ${verb === "cancel" ? "cancelled" : verb === "pause" ? "paused" : "resumed"}.`);
        renderHead();
      } catch (err) { toast(`Could not ${verb}: ${err.message}`, true); }
    };
    const terminal = TERMINAL.has(job.status);
    head.replaceChildren(...[
      el("h1", { id: "job-title" }, el("span", { class: "mono" }, job.id), " ", statusEl(job.status)),
      el("div", { class: "toolbar" },
        el("span", {}, "Model ", el("code", {}, job.model)),
        el("span", {}, "Method ", el("strong", { class: "method" }, methodOf(job))),
        el("span", {}, "Step ", el("strong", { id: "job-step" }, `${job.step || 0}/${job.total_steps || 0}`)),
        el("span", { class: "muted" }, `created ${when(job.created_at)}`),
        job.finished_at ? el("span", { class: "muted" }, `finished ${when(job.finished_at)}`) : null,
        job.fine_tuned_model ? el("code", {}, job.fine_tuned_model) : null),
      el("div", { class: "toolbar" },
        el("button", { type: "button", class: "danger", id: "cancel", disabled: terminal,
          onclick: () => { if (confirm(`Cancel ${job.id}?`)) act("cancel"); } }, "Cancel"),
        el("button", { type: "button", id: "pause", disabled: !["queued", "running"].includes(job.status),
          onclick: () => act("pause") }, "Pause"),
        el("button", { type: "button", id: "resume", disabled: job.status !== "paused",
          onclick: () => act("resume") }, "Resume"),
        el("a", { href: `#/compare?ids=${enc}`, class: "button" }, "Compare with…")),
      job.error ? el("p", { class: "error", role: "alert" },
        `${job.error.code}: ${job.error.message}${job.error.param ? ` (${job.error.param})` : ""}`) : null,
    ].filter(Boolean));
    hyper.replaceChildren(...flatten(h).map(([k, v]) => el("tr", {}, el("td", { class: "mono" }, k), el("td", { class: "mono" }, show(v)))),
      el("tr", {}, el("td", { class: "mono" }, "grader"), el("td", {}, el("details", {}, el("summary", {}, job.method?.reinforcement?.grader?.type || "—"),
        el("pre", { class: "mono" }, JSON.stringify(job.method?.reinforcement?.grader, null, 2))))));
  }

  function addEvent(ev, atTop = true) {
    const li = el("li", { "data-type": ev.type }, el("span", { class: "muted" }, `${when(ev.created_at)} `),
      ev.level && ev.level !== "info" ? el("strong", {}, `${ev.level} `) : null, ev.message);
    if (atTop) log.prepend(li); else log.append(li);
    while (log.children.length > MAX_LOG) log.lastChild.remove();
  }

  async function loadCheckpoints() {
    const list = await listAll(`/v1/fine_tuning/jobs/${enc}/checkpoints`, { signal: ctl.signal });
    ckpts.replaceChildren(...list.map((c) => el("tr", { "data-checkpoint": c.id },
      el("td", { class: "num" }, String(c.step_number)),
      el("td", {}, el("code", {}, c.id), el("div", { class: "muted mono" }, c.fine_tuned_model_checkpoint)),
      el("td", { class: "num" }, `${(c.bytes / 2 ** 20).toFixed(1)} MiB`),
      el("td", {}, el("button", { type: "button", "aria-label": `Download checkpoint of step ${c.step_number}`,
        onclick: async (e) => {
          e.target.disabled = true;
          try {
            await download(`/api/checkpoints/${encodeURIComponent(c.id)}/download`, `${jobId}-step-${c.step_number}.tar`);
          } catch (err) { toast(`Download failed: ${err.message}`, true); }
          e.target.disabled = false;
        } }, "Download")))));
    if (!list.length) ckpts.append(el("tr", {}, el("td", { colspan: "4", class: "muted" }, "No checkpoint yet.")));
  }

  let refreshing = null;
  let traces = null;
  function refreshJob() {
    if (refreshing) return;
    refreshing = setTimeout(async () => {
      refreshing = null;
      try { job = await call(`/v1/fine_tuning/jobs/${enc}`, { signal: ctl.signal }); renderHead(); } catch { /* next event */ }
    }, 500);
  }

  function onEvent(type, data) {
    if (type === "end") {
      refreshJob();
      loadCheckpoints().catch(() => {});
      toast(`Job ${data.status}.`);
      return;
    }
    if (type === "error") { toast(data?.error?.message || "The stream ended with an error.", true); return; }
    addEvent(data);
    const d = data.data || {};
    if (type === "metrics" && typeof d.step === "number") {
      const changed = overview.append(d.step, d.metrics || {}) | overview.append(d.step, d.eval || {});
      if (changed && !detail) drawCharts();
    }
    if (d.checkpoint) loadCheckpoints().catch(() => {});
    if (type === "metrics" && traces) traces.refresh();
    refreshJob();
  }

  async function load() {
    try {
      job = await call(`/v1/fine_tuning/jobs/${enc}`, { signal: ctl.signal });
    } catch (err) {
      head.replaceChildren(el("h1", {}, "Job not found"), el("p", { class: "error", role: "alert" }, err.message),
        el("a", { href: "#/jobs" }, "Back to the jobs"));
      grid.remove();
      return;
    }
    renderHead();
    // Events first, then metrics: a step's metrics commit with its event, so every step up
    // to the newest event listed is in the series, and the stream continues after it.
    const events = await call(`/v1/fine_tuning/jobs/${enc}/events?limit=100`, { signal: ctl.signal });
    for (const ev of events.data) addEvent(ev, false);
    overview = SeriesStore.fromApi(await call(`/api/jobs/${enc}/metrics?max_points=1000`, { signal: ctl.signal }));
    drawCharts();
    traces = tokensView(tokens, jobId, { signal: ctl.signal, step: params.get("step") });
    loadCheckpoints().catch((err) => toast(`Could not list checkpoints: ${err.message}`, true));
    if (!TERMINAL.has(job.status)) {
      follow(jobId, { after: events.data.length ? events.data[0].id : null, onEvent, signal: ctl.signal })
        .catch((err) => { if (!ctl.signal.aborted) toast(`Live updates stopped: ${err.message}`, true); });
    }
  }
  load().catch((err) => { if (!ctl.signal.aborted) toast(err.message, true); });
  return () => { ctl.abort(); clearTimeout(refreshing); };
}

