// Small helpers shared by the views: element building, dates, statuses, method names.

/** el("a", {href: "#/"}, "text", child): attributes starting with "on" become listeners. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    // Through the CSSOM: a style attribute would be refused by the page's CSP.
    else if (k === "style") node.style.cssText = v;
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
}

export function when(ts) {
  if (!ts) return "—";
  const d = new Date(ts * 1000);
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function statusEl(status) {
  return el("span", { class: `status status-${status}` }, status.replace("_", " "));
}

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

const LOSS_NAMES = {
  grpo: "GRPO", clip_cov: "Clip-Cov", kl_cov: "KL-Cov", cispo: "CISPO",
  ce_gppo: "CE-GPPO", erc: "ERC", entropic: "EntroPIC", aent: "AEnt",
};

/** The job's effective hyperparameters (the echo under method.reinforcement). */
export function hyperOf(job) {
  return job?.method?.reinforcement?.hyperparameters || {};
}

/** "PAEC", or the baseline a job trains with ("GRPO", "GRPO + entropy", "Clip-Cov", ...). */
export function methodOf(job) {
  const h = hyperOf(job);
  const loss = h.loss || {};
  let name = LOSS_NAMES[loss.loss_type] || (loss.loss_type ? String(loss.loss_type) : "GRPO");
  if (loss.entropy_coef > 0) name += " + entropy";
  if (loss.high_entropy_quantile !== null && loss.high_entropy_quantile !== undefined) name += " + 80/20";
  if (loss.kl_coef > 0) name += " + KL";
  const paec = h.paec || {};
  if (h.use_paec !== false && (paec.penalty_weight === undefined || paec.penalty_weight > 0)) {
    return name === "GRPO" ? "PAEC" : `PAEC (${name})`;
  }
  return name;
}

/** {a: {b: 1}} -> [["a.b", 1]] */
export function flatten(obj, prefix = "") {
  const out = [];
  for (const [k, v] of Object.entries(obj || {})) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v)) out.push(...flatten(v, key));
    else out.push([key, v]);
  }
  return out;
}

export function show(v) {
  if (v === null || v === undefined) return "—";
  if (Array.isArray(v)) return v.join(", ");
  return String(v);
}

let toastTimer = null;
/** A short message in the live region (read by screen readers, hidden after a while). */
export function toast(text, isError = false) {
  const box = document.getElementById("status");
  box.textContent = text;
  box.classList.toggle("error", isError);
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, isError ? 8000 : 4000);
}
