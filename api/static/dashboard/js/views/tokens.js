// The tokens PAEC selects: a step's sampled completions (the trainer's `trace_samples`),
// each token shaded by its entropy and outlined by PAEC's mask weight, with the token's
// details on hover (or with the arrow keys inside a focused completion).
import { call } from "../api.js";
import { fmt } from "../chart.js";
import { el } from "../format.js";

const SELECTED = 0.5; // a solid outline: the mask weight at or above this
const PARTIAL = 0.1;  // a dashed outline: at least this

function describe(t, i) {
  const nan = (v) => v === null || v === undefined ? "—" : fmt(v);
  return `“${t.tokens[i]}”  entropy ${nan(t.entropy[i])}  top-p entropy ${nan(t.top_p_entropy?.[i])}  ` +
    `nucleus ${nan(t.nucleus_size?.[i])}  top-two gap ${nan(t.top_two_gap?.[i])}  mask weight ${nan(t.mask?.[i])}`;
}

function sampleEl(t, hmax, info) {
  const spans = t.tokens.map((tok, i) => {
    const h = t.entropy[i];
    const w = t.mask?.[i];
    const alpha = h === null || h === undefined || !(hmax > 0) ? 0 : Math.min(1, h / hmax) * 0.85;
    const cls = ["tok"];
    if (typeof w === "number" && w >= SELECTED) cls.push("sel");
    else if (typeof w === "number" && w >= PARTIAL) cls.push("part");
    const text = tok.replace(/\n/g, "↵\n") || "∅";
    return el("span", { class: cls.join(" "), "data-i": String(i), title: describe(t, i),
      style: `background: hsla(var(--tok-hue), 95%, 55%, ${alpha.toFixed(3)})` }, text);
  });
  let cursor = -1;
  const show = (i) => {
    spans.forEach((s, j) => s.classList.toggle("cur", j === i));
    cursor = i;
    info.textContent = `Completion ${t.index + 1}, token ${i + 1}: ${describe(t, i)}`;
  };
  const box = el("p", { class: "sample", tabindex: "0", "data-sample": String(t.index),
    "aria-label": `Completion ${t.index + 1}, ${t.tokens.length} tokens: ${t.tokens.join("")}. Arrow keys read its tokens.`,
    onmouseover: (e) => { const i = e.target.dataset?.i; if (i !== undefined) show(Number(i)); },
    onkeydown: (e) => {
      if (e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
      e.preventDefault();
      const next = cursor < 0 ? 0 : cursor + (e.key === "ArrowRight" ? 1 : -1);
      show(Math.max(0, Math.min(spans.length - 1, next)));
    } }, spans);
  return box;
}

/** Render into `root`; returns {refresh} to pick up new steps while the job runs. */
export function tokensView(root, jobId, { signal, step = null }) {
  const enc = encodeURIComponent(jobId);
  const select = el("select", { id: "trace-step", onchange: () => show(Number(select.value)) });
  const info = el("p", { class: "tokinfo mono", "aria-live": "polite" });
  const samples = el("div", { id: "samples" });
  const note = el("p", { class: "muted" });
  root.replaceChildren(
    el("h2", { id: "tokens-title" }, "Tokens PAEC selects"),
    el("div", { class: "toolbar" }, el("label", { for: "trace-step" }, "Step"), select,
      el("span", { class: "legend" }, "entropy 0 ", el("span", { class: "scale", "aria-hidden": "true" }), el("span", { id: "hmax" }, ""),
        el("span", { class: "tok sel" }, "mask ≥ 0.5"), el("span", { class: "tok part" }, "mask ≥ 0.1"))),
    note, info, samples);
  let steps = [];
  let shown = null;
  let latest = true;

  async function show(s) {
    shown = s;
    latest = s === steps[steps.length - 1];
    try {
      const tr = await call(`/api/jobs/${enc}/traces?step=${s}`, { signal });
      const hmax = Math.max(0, ...tr.samples.flatMap((t) => t.entropy.filter((v) => typeof v === "number")));
      root.querySelector("#hmax").textContent = ` ${fmt(hmax)} nats `;
      const off = tr.samples.every((t) => (t.mask || []).every((w) => w === null));
      note.textContent = off ? "PAEC was off at this step (a baseline, or the anchor's warm-up): no mask weights." : "";
      samples.replaceChildren(...tr.samples.map((t) => el("div", { class: "trace" },
        el("div", { class: "muted" }, `Completion ${t.index + 1}`,
          typeof t.advantage === "number" ? ` · advantage ${t.advantage >= 0 ? "+" : ""}${fmt(t.advantage)}` : "",
          t.prompt ? el("details", {}, el("summary", {}, "prompt"), el("pre", { class: "mono prompt" }, t.prompt)) : null),
        sampleEl(t, hmax, info))));
    } catch (err) {
      if (!signal.aborted) note.textContent = `Could not load the traces of step ${s}: ${err.message}`;
    }
  }

  async function refresh() {
    try {
      steps = (await call(`/api/jobs/${enc}/traces/steps`, { signal })).data;
    } catch { return; }
    if (!steps.length) {
      note.textContent = "No token traces for this job: they are sampled when the job's hyperparameters set trace_samples > 0.";
      return;
    }
    const before = select.value;
    select.replaceChildren(...steps.map((s) => el("option", { value: String(s) }, `step ${s}`)));
    const want = shown === null ? (step !== null && steps.includes(Number(step)) ? Number(step) : steps[steps.length - 1])
      : latest ? steps[steps.length - 1] : shown;
    select.value = String(want);
    if (want !== shown || String(want) !== before) show(want);
  }
  let timer = null;
  refresh();
  return { refresh: () => { clearTimeout(timer); timer = setTimeout(refresh, 1000); } };
}
