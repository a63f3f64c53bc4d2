// Which metrics each chart shows (names as docs/metrics.md defines them), and how a metrics
// object of the API becomes chart series.

export const PANELS = [
  { title: "Reward and accuracy", lines: [["reward/mean", "reward"], ["reward/accuracy", "accuracy"]] },
  { title: "Entropy (nats) and PAEC's floor", lines: [["entropy", "full"], ["entropy/top_p", "top-p"],
    ["entropy/masked", "masked H̄"], ["paec/floor", "anchor floor", { dashed: true, color: "--floor" }]] },
  { title: "PAEC penalty", lines: [["paec/penalty", "penalty"]] },
  { title: "Mask", lines: [["paec/mask_mean", "mean weight"], ["paec/mask_frac_above_half", "weight > 0.5"],
    ["paec/decision_frac", "deciding positions"]] },
  { title: "KL to the reference", lines: [["policy/kl", "KL (k3)"]] },
  { title: "Clip fraction", lines: [["policy/clip_frac_low", "low"], ["policy/clip_frac_high", "high"]] },
  { title: "Response length (tokens)", lines: [["completion/length_mean", "mean"], ["completion/length_max", "max"]] },
  { title: "Step time (s)", lines: [["time/step", "step"], ["time/sampling", "sampling"], ["time/training", "update"]] },
  { title: "Evaluation", prefix: "eval/" },
];

/** Every metric name a panel draws, given the names a job logged. */
export function panelNames(panel, logged) {
  if (panel.prefix) return logged.filter((n) => n.startsWith(panel.prefix)).sort();
  return panel.lines.map(([name]) => name);
}

/** A growable series store: name -> {steps, values}, ascending by step. */
export class SeriesStore {
  constructor() { this.map = new Map(); }
  static fromApi(obj) {
    const s = new SeriesStore();
    for (const [name, ser] of Object.entries(obj.series || {})) {
      s.map.set(name, { steps: ser.steps.slice(), values: ser.values.slice() });
    }
    return s;
  }
  get(name) {
    if (!this.map.has(name)) this.map.set(name, { steps: [], values: [] });
    return this.map.get(name);
  }
  names() { return [...this.map.keys()].filter((n) => this.map.get(n).steps.length); }
  /** Append one step's values (a step not after the last one is ignored: it is known). */
  append(step, metrics) {
    let changed = false;
    for (const [name, v] of Object.entries(metrics || {})) {
      if (typeof v !== "number" || !Number.isFinite(v)) continue;
      const s = this.get(name);
      if (s.steps.length && s.steps[s.steps.length - 1] >= step) continue;
      s.steps.push(step);
      s.values.push(v);
      changed = true;
    }
    return changed;
  }
}
