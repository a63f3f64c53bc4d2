"""The report of the experiment, `docs/results.md`, regenerated from whatever run records
exist: which runs are still missing, the setup and its budget, why the design changed, the
claims checked, the mechanism figure, tables and curves. Every sentence about a result is
computed from the records (`experiments.claims`, `experiments.comparisons`,
`experiments.history`); none is written in advance.

    write_report(settings, plan, records)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from experiments.arms import BASE, GRPO, PAEC, Run, base_config, describe
from experiments.budget import arithmetic, remaining
from experiments.claims import TOLERANCE, claim_floor
from experiments.comparisons import (
    claim_ablations,
    claim_maj,
    claim_sweep,
    scale_notes,
    sweep_rows,
)
from experiments.figure import draw_mechanism
from experiments.history import history_section
from experiments.mechanism import summary
from experiments.plots import PLOTS, plot
from experiments.records import Record, strays
from experiments.settings import Settings
from experiments.stats import WINDOW, group
from experiments.tables import entropy_table, eval_table, table, training_table

Arms = dict[str, list[Record]]
MECHANISM_PNG = "mechanism.png"
SWEEP_PNG = "sweep_masked.png"
COMMAND = "python -m experiments.reproduce"


def status_section(s: Settings, plan: Sequence[Run], records: dict[Run, Record]) -> list[str]:
    """How far the experiment is: the runs finished and, plainly, those missing."""
    missing = [r for r in plan if r not in records]
    head = [f"**Status: {len(plan) - len(missing)} of {len(plan)} planned runs finished.**"]
    if missing:
        left = remaining(s, missing, list(records.values()))
        head.append("Missing, in the order they will run: "
                    + ", ".join(f"`{r.name}`" for r in missing)
                    + f" (about {left / 3600:.1f} h at the measured speeds). Every claim below "
                      "is computed from the finished runs only, and says when it is "
                      "undecided for lack of runs.")
    ignored = strays(s, list(plan))
    if ignored:
        head.append("Records in the folder that this plan does not include, ignored: "
                    + ", ".join(f"`{n}`" for n in ignored) + ".")
    return [" ".join(head)]


def setup_section(s: Settings, plan: Sequence[Run], records: dict[Run, Record]) -> list[str]:
    arms = sorted({r.arm for r in plan if r.arm != BASE}, key=lambda a: [r.arm for r in plan
                                                                        ].index(a))
    seeds = {a: ",".join(str(r.seed) for r in plan if r.arm == a) for a in arms}
    cfg = base_config(s, s.seeds[0], Path("train.jsonl"), Path("."))
    return [
        "## Setup",
        "",
        f"- Model `{s.model}`; {s.prompts_per_step} prompts x {s.group_size} samples a step, "
        f"{s.steps} steps at lr {s.learning_rate:g} ({cfg.lr_schedule}), {s.max_new_tokens} new "
        f"tokens, temperature {cfg.temperature:g}, clip {cfg.loss.clip_low:g}/"
        f"{cfg.loss.clip_high:g} (clip-higher), KL coefficient {cfg.loss.kl_coef:g}, the "
        f"`{cfg.grader['type']}` grader; PAEC's defaults (anchor over the first "
        f"{cfg.paec.anchor_steps} steps, floor {cfg.paec.floor_ratio:g} x anchor, top "
        f"{1 - cfg.paec.quantile:.0%} of the deciding positions).",
        f"- Task `{s.task}` (`experiments.tasks`): {s.train_size} training problems and "
        f"{s.heldout_size} held-out ones, no prompt in both; the harder set: {s.hard_size} "
        f"problems of `{s.hard_task}`; k = {s.k} samples per problem, so one problem moves "
        f"maj@{s.k} by {1 / max(s.heldout_size, 1):.2f}.",
        "- Arms: " + "; ".join(f"`{a}` (seeds {seeds[a]}): {describe(a)}" for a in arms)
        + f"; and `{BASE}`: the untrained policy, evaluated once.",
        "- `grpo` is GRPO measured with PAEC's instrumentation at penalty weight 0; the PAEC "
        "term is then exactly 0 with no gradient, so it trains exactly as plain GRPO "
        "(tests/experiments/test_arms.py checks the weights bit for bit), and it is also "
        "\"PAEC without the penalty\": one arm, not two.",
        "- Order: " + ", ".join(f"`{r.name}`" for r in plan) + " (the most decisive first).",
        *arithmetic(s, list(plan), list(records.values())),
        f"- Values are mean ± sample sd over seeds (a bare value: one seed); \"first\" and "
        f"\"final\" are means over the first and last {WINDOW} steps.",
    ]


def claims_section(s: Settings, arms: Arms, base: Record | None) -> list[str]:
    sizes = {"heldout": s.heldout_size, "hard": s.hard_size}
    cfg = next(iter(arms.values()))[0]["config"]
    return [
        "## Claims checked", "",
        "**Does PAEC hold the masked entropy at its floor where GRPO's collapses?**", "",
        *claim_floor(arms, s.seeds), "",
        f"**Is PAEC's maj@{s.k} at least GRPO's?**", "",
        *claim_maj(arms, s.k, sizes, base), "",
        "**What the ablations show**", "",
        *claim_ablations(arms, s.k, sizes), "",
        "**Which penalty weight the data favours**", "",
        *claim_sweep(arms, s.k, sizes), "",
        "**What this scale can and cannot say**", "",
        *scale_notes(arms, cfg, sizes, s.k),
    ]


def mechanism_section(arms: Arms, base: Record | None, plots: Path, rel: str) -> list[str]:
    """The figure (GRPO and PAEC at their first seed) and each run's numbers."""
    shown = {f"{a} seed {rs[0]['seed']}": rs[0]["mechanism"] for a in (GRPO, PAEC)
             if (rs := arms.get(a)) and rs[0].get("mechanism")}
    if not shown:
        return ["## Mechanism", "", "- Not drawn yet: no run of `grpo` or `paec` has finished."]
    draw_mechanism(shown, plots / MECHANISM_PNG)
    runs = ([("untrained", base)] if base is not None and base.get("mechanism") else []) + [
        (f"{a} seed {r['seed']}", r) for a, rs in arms.items() for r in rs[:1]
        if r.get("mechanism")]
    rows = []
    for label, r in runs:
        m = summary(r["mechanism"])
        rows.append([label, f"{m['distinct']:.0f}", f"{m['correct']:.2f}",
                     f"{m['entropy']:.3f}",
                     "—" if math.isnan(m["entropy_selected"]) else f"{m['entropy_selected']:.3f}",
                     f"{m['decision_share']:.2f}", f"{m['selected_share']:.2f}"])
    first = next(iter(shown.values()))
    return [
        "## Mechanism", "",
        f"{len(first['completions'])} completions of one held-out prompt, sampled with the same "
        "seed from each final policy; each token shaded by its entropy and outlined where "
        "PAEC's mask (its default configuration, quantile over these completions) selects it.",
        "", f"![completions under GRPO and PAEC]({rel}/{MECHANISM_PNG})", "",
        *table(["policy", "distinct completions", "correct", "mean entropy",
                "mean entropy where selected", "share that can decide", "share selected"],
               rows),
    ]


def curves_section(arms: Arms, plots: Path, rel: str) -> list[str]:
    main = {a: rs for a, rs in arms.items() if not a.startswith("paec_w")}
    for stem, metric, label in PLOTS:
        plot(main, metric, label, plots / f"{stem}.png")
    out = ["## Curves", "", *(f"![{label}]({rel}/{stem}.png)" for stem, _, label in PLOTS)]
    rows = sweep_rows(arms)
    if len(rows) > 1:
        sweep = {f"weight {r.weight:g}": [r.run] for r in rows}
        plot(sweep, "entropy/masked", "masked entropy H_bar by penalty weight (first seed); "
             "dashed: floor", plots / SWEEP_PNG)
        out.append(f"![masked entropy by penalty weight]({rel}/{SWEEP_PNG})")
    return out


def results_sections(s: Settings, arms: Arms, base: Record | None, rel: str) -> list[str]:
    return [
        *claims_section(s, arms, base), "",
        *mechanism_section(arms, base, s.plots, rel), "",
        "## Final evaluation", "", *eval_table(arms, s.k, base), "",
        "## Entropy", "",
        f"\"steps >= floor - {TOLERANCE:g}\", \"steps below floor\" and the mean margin are "
        "over the steps after the anchor froze; the one-token share is of the last steps' "
        "positions.",
        "", *entropy_table(arms), "",
        "## Training", "", *training_table(arms), "",
        *curves_section(arms, s.plots, rel),
    ]


def write_report(s: Settings, plan: Sequence[Run], records: dict[Run, Record]) -> None:
    """Regenerate the markdown report and its PNGs from the records of `plan` that exist."""
    arms = group([r for run, r in records.items() if run.arm != BASE])
    base = next((r for run, r in records.items() if run.arm == BASE), None)
    s.plots.mkdir(parents=True, exist_ok=True)
    s.report.parent.mkdir(parents=True, exist_ok=True)
    rel = s.plots.name if s.plots.parent == s.report.parent else str(s.plots)
    lines = [
        "# Results: does PAEC hold the entropy floor where GRPO's collapses? (issue 17)", "",
        f"Generated by `{COMMAND}` from the run records in `{rel}/{s.records.name}/` (one JSON "
        "file per finished run: its config, every step's metrics, its evaluations and "
        "mechanism samples); every number and verdict below is computed from them. Rerun it "
        "to finish the missing runs and regenerate this file; `--report-only` regenerates it "
        "without running anything.", "",
        *status_section(s, plan, records), "",
        *setup_section(s, plan, records), "",
        "## Why the design changed", "",
        *history_section(s.first_experiment, arms, s.seeds, f"`{s.task}`, `{s.hard_task}`",
                         s.heldout_size), "",
    ]
    if arms:
        lines += results_sections(s, arms, base, rel)
    else:
        lines.append("No training run has finished yet.")
    s.report.write_text("\n".join(lines) + "\n")
