// The job list: status, model, method, progress, created and finished times, a status
// filter, and a selection to compare. Refreshed every few seconds while it is shown.
import { listAll } from "../api.js";
import { el, methodOf, statusEl, toast, when } from "../format.js";

const STATUSES = ["all", "validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"];
const REFRESH_MS = 5000;

export function jobsView(root, params) {
  document.title = "Jobs · paec";
  let filter = params.get("status") || "all";
  const selected = new Set();
  const select = el("select", { id: "status-filter", onchange: () => {
    filter = select.value;
    history.replaceState(null, "", filter === "all" ? "#/jobs" : `#/jobs?status=${filter}`);
    render();
  } }, STATUSES.map((s) => el("option", { value: s, selected: s === filter }, s.replace("_", " "))));
  const compare = el("button", { type: "button", disabled: true, onclick: () => {
    location.hash = `#/compare?ids=${[...selected].map(encodeURIComponent).join(",")}`;
  } }, "Compare selected");
  const body = el("tbody");
  const count = el("span", { class: "muted" });
  root.append(
    el("h1", {}, "Fine-tuning jobs"),
    el("div", { class: "toolbar" },
      el("label", { for: "status-filter" }, "Status"), select, compare, count,
      el("a", { href: "#/submit", class: "button" }, "New job")),
    el("table", { id: "jobs" },
      el("caption", { class: "muted", style: "text-align:left" }, "Your jobs, newest first."),
      el("thead", {}, el("tr", {},
        el("th", { scope: "col" }, el("span", { class: "skip-label" }, "Select")),
        ["Job", "Status", "Model", "Method", "Progress", "Created", "Finished"].map((h) =>
          el("th", { scope: "col" }, h)))),
      body));
  let jobs = [];

  function render() {
    const shown = jobs.filter((j) => filter === "all" || j.status === filter);
    count.textContent = `${shown.length} of ${jobs.length}`;
    body.replaceChildren(...shown.map((job) => {
      const box = el("input", { type: "checkbox", "aria-label": `Select ${job.id} to compare`,
        checked: selected.has(job.id), onchange: () => {
          if (box.checked) selected.add(job.id); else selected.delete(job.id);
          compare.disabled = selected.size < 2;
        } });
      const total = job.total_steps || 0;
      return el("tr", { "data-job": job.id },
        el("td", {}, box),
        el("td", {}, el("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, class: "mono" }, job.id),
          job.user_provided_suffix ? el("div", { class: "muted" }, job.user_provided_suffix) : null),
        el("td", {}, statusEl(job.status)),
        el("td", { class: "mono" }, job.model),
        el("td", { class: "method" }, methodOf(job)),
        el("td", {}, el("progress", { max: String(Math.max(total, 1)), value: String(job.step || 0),
          "aria-label": `step ${job.step || 0} of ${total}` }), ` ${job.step || 0}/${total}`),
        el("td", {}, when(job.created_at)),
        el("td", {}, when(job.finished_at)));
    }));
    if (!shown.length) body.append(el("tr", {}, el("td", { colspan: "8", class: "muted" },
      jobs.length ? "No job has this status." : "No jobs yet: start one from New job, or run make demo.")));
  }

  const ctl = new AbortController();
  async function load() {
    try {
      jobs = await listAll("/v1/fine_tuning/jobs", { signal: ctl.signal });
      render();
    } catch (err) {
      if (!ctl.signal.aborted) toast(`Could not list jobs: ${err.message}`, true);
    }
  }
  load();
  const timer = setInterval(load, REFRESH_MS);
  return () => { clearInterval(timer); ctl.abort(); };
}
