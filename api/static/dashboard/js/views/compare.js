// Compare jobs: their curves overlaid (one colour per job) and their evaluations side by
// side: the in-training evaluation (eval/* at the last step) and every evaluation run on the
// job's model or its checkpoints (POST /api/evaluations).
import { call, listAll } from "../api.js";
import { Chart, ChartGroup, fmt, seriesColor } from "../chart.js";
import { el, methodOf, statusEl, toast } from "../format.js";
import { SeriesStore } from "./panels.js";

const METRICS = [
  ["reward/mean", "Reward"], ["reward/accuracy", "Accuracy"], ["entropy", "Entropy (full)"],
  ["entropy/top_p", "Top-p entropy"], ["entropy/masked", "Masked entropy H̄"], ["paec/penalty", "PAEC penalty"],
  ["completion/length_mean", "Response length"], ["policy/kl", "KL to the reference"],
];

function picker(root, jobs, chosen) {
  const boxes = jobs.map((j) => el("label", {}, el("input", { type: "checkbox", value: j.id, checked: chosen.includes(j.id) }),
    " ", el("code", {}, j.id), ` ${methodOf(j)} `, statusEl(j.status), j.user_provided_suffix ? ` ${j.user_provided_suffix}` : ""));
  root.append(el("form", { class: "card", onsubmit: (e) => {
    e.preventDefault();
    const ids = boxes.map((b) => b.querySelector("input")).filter((i) => i.checked).map((i) => encodeURIComponent(i.value));
    location.hash = `#/compare?ids=${ids.join(",")}`;
  } }, el("fieldset", {}, el("legend", {}, "Jobs to compare (two or more)"), el("div", { class: "picker" }, boxes)),
  el("button", { type: "submit", class: "primary" }, "Compare")));
}

export function compareView(root, params) {
  document.title = "Compare · paec";
  const ctl = new AbortController();
  const ids = (params.get("ids") || "").split(",").map((s) => s.trim()).filter(Boolean);
  root.append(el("h1", {}, "Compare jobs"));
  (async () => {
    const all = await listAll("/v1/fine_tuning/jobs", { signal: ctl.signal });
    if (ids.length < 2) { picker(root, all, ids); return; }
    const jobs = await Promise.all(ids.map((id) => call(`/v1/fine_tuning/jobs/${encodeURIComponent(id)}`, { signal: ctl.signal })));
    const stores = await Promise.all(jobs.map(async (j) => SeriesStore.fromApi(await call(
      `/api/jobs/${encodeURIComponent(j.id)}/metrics?max_points=1000`, { signal: ctl.signal }))));
    const label = (j) => `${j.user_provided_suffix || j.id.slice(-8)} (${methodOf(j)})`;
    root.append(el("p", {}, jobs.map((j, i) => el("span", { style: `color:${seriesColor(i)};margin-right:16px` },
      "■ ", el("a", { href: `#/jobs/${encodeURIComponent(j.id)}`, class: "mono" }, j.id), ` ${methodOf(j)}`))));
    const grid = el("div", { class: "grid", id: "compare-charts" });
    root.append(el("h2", {}, "Curves"), grid);
    const group = new ChartGroup();
    for (const [name, title] of METRICS) {
      const chart = group.add(new Chart(grid, { title }));
      chart.setSeries(jobs.map((j, i) => ({ label: label(j), color: seriesColor(i), ...stores[i].get(name) })));
    }
    const evalNames = [...new Set(stores.flatMap((s) => s.names().filter((n) => n.startsWith("eval/"))))].sort();
    const evals = await listAll("/api/evaluations", { signal: ctl.signal }).catch(() => []);
    const rows = [];
    for (const [i, j] of jobs.entries()) {
      const ck = await listAll(`/v1/fine_tuning/jobs/${encodeURIComponent(j.id)}/checkpoints`, { signal: ctl.signal }).catch(() => []);
      const models = new Set([j.fine_tuned_model, ...ck.map((c) => c.fine_tuned_model_checkpoint)].filter(Boolean));
      const mine = evals.filter((e) => models.has(e.model) && e.status === "succeeded");
      rows.push({ job: j, i, store: stores[i], evals: mine });
    }
    // One column per score (avg@k, pass@k, maj@k, ...), whichever source it came from.
    const keys = [...new Set([...evalNames.map((n) => n.slice(5)),
      ...rows.flatMap((r) => r.evals.flatMap((e) => Object.values(e.results || {}).flatMap(Object.keys)))])].sort();
    const cells = (value) => keys.map((k) => el("td", { class: "num" }, fmt(value(k))));
    const lead = (r, source) => [el("td", { class: "mono", style: `color:${seriesColor(r.i)}` }, r.job.id),
      el("td", {}, methodOf(r.job)), el("td", {}, source)];
    root.append(el("h2", {}, "Evaluations"),
      el("table", { id: "compare-evals" }, el("thead", {}, el("tr", {},
        ["Job", "Method", "Source", ...keys].map((k, i) => el("th", { scope: "col", class: i > 2 ? "num" : null }, k)))),
      el("tbody", {}, rows.flatMap((r) => {
        const lines = [];
        const trained = evalNames.filter((n) => r.store.get(n).values.length);
        if (trained.length) {
          const last = (k) => { const s = r.store.get(`eval/${k}`); return s.values.length ? s.values[s.values.length - 1] : null; };
          lines.push(el("tr", {}, lead(r, "in training, last evaluation"), cells(last)));
        }
        for (const e of r.evals) {
          for (const [ds, res] of Object.entries(e.results || {})) {
            lines.push(el("tr", {}, lead(r, [el("code", {}, e.id), ` ${e.model.split(":").pop()} on ${ds}`]),
              cells((k) => res[k] ?? null)));
          }
        }
        if (!lines.length) lines.push(el("tr", {}, lead(r, "not evaluated"), cells(() => null)));
        return lines;
      }))));
  })().catch((err) => { if (!ctl.signal.aborted) toast(`Could not compare: ${err.message}`, true); });
  return () => ctl.abort();
}
