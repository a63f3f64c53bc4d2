"""The experiment's time budget: what a run costs (training steps and evaluation
completions) at a given speed, measured from the records already made where there are
some, and the arithmetic written out for the report and for `--plan`.

    seconds = steps x s_per_step + completions x s_per_completion   (per run)
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from experiments.arms import BASE, HARD_EVAL, Run
from experiments.records import Record
from experiments.settings import Settings

STEP_S = 25.0
"""Seconds per training step assumed before any run of these settings has been measured: the
first experiment measured a median 13.5 s at 4 x 8 samples of 24 tokens (~40-token prompts);
48 new tokens after ~60-token prompts about doubles the sequences (2026-12-06, this 2-core
CPU, quiet). The probe measures it."""
EVAL_S = 0.3
"""Seconds per evaluation completion assumed before one is measured: 0.25 s was measured at
24 tokens and 8 rows per call; 48 tokens at 32 rows per call (micro_batch_size 32) is about
the same per completion. The probe measures it."""
MECHANISM_S = 15.0
"""The mechanism figure's 8 completions with their features, per run."""


def eval_sets(run: Run) -> tuple[str, ...]:
    """The held-out sets a run is evaluated on."""
    return ("heldout", "hard") if run.arm in HARD_EVAL else ("heldout",)


def completions(s: Settings, run: Run) -> int:
    """Evaluation completions of one run: problems x k over its sets."""
    sizes = {"heldout": s.heldout_size, "hard": s.hard_size}
    return sum(sizes[k] for k in eval_sets(run)) * s.k


def run_seconds(s: Settings, run: Run, step_s: float, eval_s: float) -> float:
    train = 0.0 if run.arm == BASE else s.steps * step_s
    return train + completions(s, run) * eval_s + MECHANISM_S


def measured(records: Sequence[Record]) -> tuple[float | None, float | None]:
    """(median seconds per step, median seconds per evaluation completion) over `records`,
    None where none measured it."""
    steps = [float(st["time/step"]) for r in records for st in r.get("steps", [])
             if "time/step" in st]
    per = [float(r["eval_time_s"]) / r["eval_completions"] for r in records
           if r.get("eval_completions") and r.get("eval_time_s") is not None]
    return (statistics.median(steps) if steps else None,
            statistics.median(per) if per else None)


def speeds(records: Sequence[Record]) -> tuple[float, float, bool]:
    """(s per step, s per completion, whether both were measured) for estimates."""
    step_s, eval_s = measured(records)
    return step_s or STEP_S, eval_s or EVAL_S, step_s is not None and eval_s is not None


def arithmetic(s: Settings, runs: Sequence[Run], records: Sequence[Record]) -> list[str]:
    """The budget written out: runs, steps, completions, the speeds and the total."""
    step_s, eval_s, real = speeds(records)
    trained = [r for r in runs if r.arm != BASE]
    n_comp = sum(completions(s, r) for r in runs)
    total = sum(run_seconds(s, r, step_s, eval_s) for r in runs)
    source = ("medians of the finished runs" if real else
              "assumed (`experiments.budget`), not yet measured on these settings")
    return [
        f"- Training: {len(trained)} runs x {s.steps} steps x {step_s:.1f} s per step "
        f"({s.prompts_per_step} prompts x {s.group_size} samples, {s.max_new_tokens} new "
        f"tokens) = {len(trained) * s.steps * step_s / 60:.0f} min.",
        f"- Evaluation: {n_comp:,} completions ({s.heldout_size} held-out problems for every "
        f"run, {s.hard_size} hard ones for {', '.join(HARD_EVAL)}; k = {s.k}) x "
        f"{eval_s:.2f} s = {n_comp * eval_s / 60:.0f} min; the mechanism samples "
        f"{len(runs) * MECHANISM_S / 60:.0f} min.",
        f"- Total {total / 3600:.1f} h for {len(runs)} runs (speeds: {source}).",
    ]


def remaining(s: Settings, missing: Sequence[Run], records: Sequence[Record]) -> float:
    """Seconds the `missing` runs should take at the measured speeds."""
    step_s, eval_s, _ = speeds(records)
    return sum(run_seconds(s, r, step_s, eval_s) for r in missing)
