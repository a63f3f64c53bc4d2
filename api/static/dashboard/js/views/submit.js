// Start a job from a form: upload a JSONL file (POST /v1/files), then create the job
// (POST /v1/fine_tuning/jobs). The method and the main hyperparameters are shown with the
// defaults the server applies (read from its OpenAPI schema); an error names its field.
import { ApiError, call } from "../api.js";
import { el, toast } from "../format.js";

const DEFAULT_MODEL = "builtin:smollm2-135m-instruct";
const DEFAULT_GRADER = { type: "math_verify", name: "correct", input: "{{sample.output_text}}", reference: "{{item.answer}}" };

/** Methods: what each sets in the hyperparameters. */
export const METHODS = {
  paec: { label: "PAEC", set: { use_paec: true } },
  grpo: { label: "GRPO (baseline)", set: { use_paec: false } },
  entropy: { label: "GRPO + entropy regularisation", set: { use_paec: false, loss: { entropy_coef: 0.01 } } },
  "80-20": { label: "GRPO + 80/20 (high-entropy tokens only)", set: { use_paec: false, loss: { high_entropy_quantile: 0.8 } } },
  clip_cov: { label: "Clip-Cov", set: { use_paec: false, loss: { loss_type: "clip_cov" } } },
  kl_cov: { label: "KL-Cov", set: { use_paec: false, loss: { loss_type: "kl_cov" } } },
  cispo: { label: "CISPO", set: { use_paec: false, loss: { loss_type: "cispo" } } },
  ce_gppo: { label: "CE-GPPO (bounded gradients outside the clip)", set: { use_paec: false, loss: { loss_type: "ce_gppo" } } },
  erc: { label: "ERC (entropy ratio clipping)", set: { use_paec: false, loss: { loss_type: "erc" } } },
  entropic: { label: "EntroPIC (PI-controlled entropy)", set: { use_paec: false, loss: { loss_type: "entropic" } } },
  aent: { label: "AEnt (clamped entropy bonus)", set: { use_paec: false, loss: { loss_type: "aent" } } },
};

/** The main knobs: [path in the hyperparameters, label, input type]. */
const FIELDS = [
  ["steps", "Steps", "number"], ["batch_size", "Prompts per step (batch_size)", "number"],
  ["group_size", "Samples per prompt (group_size)", "number"], ["max_new_tokens", "Max new tokens", "number"],
  ["learning_rate", "Learning rate", "number"], ["temperature", "Sampling temperature", "number"],
  ["paec.penalty_weight", "PAEC penalty weight", "number"], ["paec.floor_ratio", "PAEC floor ratio", "number"],
  ["paec.anchor_steps", "PAEC anchor steps", "number"], ["paec.quantile", "PAEC mask quantile", "number"],
  ["checkpoint_every", "Checkpoint every (steps)", "number"], ["trace_samples", "Token traces per step", "number"],
];

function schemaDefault(props, path) {
  const [head, tail] = path.split(".");
  const p = props[head];
  if (!p) return undefined;
  if (!tail) return p.default;
  return p.properties?.[tail]?.default;
}

function setPath(obj, path, value) {
  const [head, tail] = path.split(".");
  if (!tail) { obj[head] = value; return; }
  obj[head] = { ...(obj[head] || {}), [tail]: value };
}

async function upload(file, purpose = "fine-tune") {
  const form = new FormData();
  form.append("purpose", purpose);
  form.append("file", file, file.name);
  return call("/v1/files", { method: "POST", body: form });
}

export function submitView(root) {
  document.title = "New job · paec";
  const errors = new Map();
  const fieldError = (id) => { const p = el("p", { class: "field-error", id: `${id}-error`, role: "alert" }); errors.set(id, p); return p; };
  const field = (text, control, withError = true) => el("div", { class: "field" },
    el("label", { for: control.id }, text), control, withError ? fieldError(control.id) : null);
  const input = (id, attrs) => el("input", { id, name: id, "aria-describedby": `${id}-error`, ...attrs });
  const trainFile = input("training_file", { type: "file", accept: ".jsonl,application/jsonl,application/x-ndjson", required: true });
  const valFile = input("validation_file", { type: "file", accept: ".jsonl" });
  const model = input("model", { type: "text", value: DEFAULT_MODEL, required: true, spellcheck: "false" });
  const suffix = input("suffix", { type: "text", placeholder: "optional", maxlength: "64" });
  const method = el("select", { id: "method", name: "method" }, Object.entries(METHODS).map(([k, m]) => el("option", { value: k }, m.label)));
  const grader = el("textarea", { id: "grader", rows: "5", "aria-describedby": "grader-error" }, JSON.stringify(DEFAULT_GRADER, null, 2));
  const knobs = FIELDS.map(([path, label, type]) => ({ path, input: input(`hp-${path}`, { type, step: "any", placeholder: "default" }), label }));
  const submit = el("button", { type: "submit", class: "primary" }, "Upload and start");
  const out = el("p", { role: "status" });
  const form = el("form", { id: "submit-form", novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    for (const p of errors.values()) p.textContent = "";
    out.textContent = "";
    if (!trainFile.files.length) { errors.get("training_file").textContent = "Choose a JSONL file."; trainFile.focus(); return; }
    let graderObj;
    try { graderObj = JSON.parse(grader.value); } catch (err) { errors.get("grader").textContent = `Not JSON: ${err.message}`; grader.focus(); return; }
    const hyper = structuredClone(METHODS[method.value].set);
    for (const k of knobs) {
      if (k.input.value === "") continue;
      const v = Number(k.input.value);
      setPath(hyper, k.path, Number.isFinite(v) ? v : k.input.value);
    }
    submit.disabled = true;
    try {
      out.textContent = "Uploading…";
      const train = await upload(trainFile.files[0]);
      const val = valFile.files.length ? await upload(valFile.files[0]) : null;
      out.textContent = "Creating the job…";
      const job = await call("/v1/fine_tuning/jobs", { method: "POST", body: {
        model: model.value.trim(), training_file: train.id, validation_file: val ? val.id : undefined,
        suffix: suffix.value.trim() || undefined,
        method: { type: "reinforcement", reinforcement: { grader: graderObj, hyperparameters: hyper } } } });
      toast(`Job ${job.id} created.`);
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (err) {
      out.textContent = "";
      showError(err);
    } finally { submit.disabled = false; }
  } },
  el("h1", {}, "New fine-tuning job"),
  el("p", { class: "muted" }, "A JSONL training file: one problem per line, {\"messages\": [...], \"answer\": ...} ",
    "(see docs/cli.md). Empty fields take the server's default, shown greyed."),
  el("div", { class: "form-grid" },
    field("Training file (JSONL)", trainFile), field("Validation file (optional)", valFile),
    field("Model", model), field("Method", method, false), field("Suffix", suffix)),
  el("h2", {}, "Hyperparameters"),
  el("div", { class: "form-grid" }, knobs.map((k) => field(k.label, k.input))),
  el("h2", {}, el("label", { for: "grader" }, "Grader (JSON)")), grader, fieldError("grader"),
  el("div", { class: "toolbar" }, submit, out));
  root.append(form);

  function showError(err) {
    if (!(err instanceof ApiError)) { toast(err.message, true); return; }
    const param = err.param || "";
    const hp = param.match(/^method\.reinforcement\.hyperparameters\.(.+)$/);
    let key = null;
    if (hp) key = `hp-${hp[1] === "prompts_per_step" ? "batch_size" : hp[1]}`;
    else if (param.startsWith("method.reinforcement.grader")) key = "grader";
    else if (param.startsWith("file") || param === "training_file") key = "training_file";
    else if (param === "validation_file") key = "validation_file";
    else if (param === "model" || param === "suffix") key = param;
    const box = key && (errors.get(key) || [...errors.entries()].find(([k]) => key.startsWith(k))?.[1]);
    if (box) {
      box.textContent = err.message;
      document.getElementById(box.id.replace(/-error$/, ""))?.focus();
    } else {
      out.textContent = "";
      toast(`${param ? `${param}: ` : ""}${err.message}`, true);
    }
  }

  call("/openapi.json").then((spec) => {
    const props = spec.components?.schemas?.Hyperparameters?.properties
      || Object.values(spec.components?.schemas || {}).find((s) => s.properties?.paec && s.properties?.group_size)?.properties || {};
    for (const k of knobs) {
      const d = schemaDefault(props, k.path);
      if (d !== undefined && d !== null && d !== "auto") k.input.placeholder = `default ${d}`;
    }
  }).catch(() => { /* the placeholders stay "default" */ });
  return null;
}
