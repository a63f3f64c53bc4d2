"""The probe: one GRPO run (with PAEC's instrumentation at penalty weight 0) that says whether
a learning rate and a number of steps reach the regime the experiment needs, GRPO's masked
entropy H_bar ending `REGIME_DEPTH` = 0.2 nats below its floor, and what the full experiment
would cost at the speed measured.

    .venv/bin/python -m experiments.probe --lr 1e-5 --steps 40

Every step prints H_bar, the floor, their margin, the share of positions that can decide,
the reward, the length and the seconds; then a summary: the final margin, the first step
0.2 nats below the floor, the seconds per step and per evaluation completion (measured on
`--eval-problems` held-out problems), and the full experiment's budget at those speeds.

The probe's record and final checkpoint stay in `<work>/probes/` (0.5 GB for SmolLM2;
delete the `-ckpt` folder when done with it). `experiments.reproduce` run with the same
settings (--lr, --steps and the rest) takes it as the run `grpo-seed0`: it only evaluates
the checkpoint. `--arm paec` probes PAEC instead (reused as `paec-seed0` the same way).
It takes the flags of `experiments.reproduce`, and --smoke.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

from experiments.arms import GRPO, MAIN_ARMS, Run, plan
from experiments.budget import arithmetic
from experiments.claims import REGIME_DEPTH
from experiments.records import Record, mismatch, plain, probe_path, read, write
from experiments.runs import Context, prepare, step_line, train
from experiments.settings import add_flags, settings_from
from experiments.stats import WINDOW, final_margin, first_below, present, series

EVAL_PROBLEMS = 8
"""Held-out problems the probe evaluates, to time the evaluation (k completions each)."""


def parse_args(argv: Sequence[str] | None) -> tuple[Run, int, Context]:
    p = argparse.ArgumentParser(prog="python -m experiments.probe",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_flags(p)
    p.add_argument("--arm", choices=MAIN_ARMS, default=GRPO, help="the arm to probe (grpo)")
    p.add_argument("--seed", type=int, default=None, help="its seed (the first of --seeds)")
    p.add_argument("--eval-problems", type=int, default=EVAL_PROBLEMS,
                   help="held-out problems evaluated to time the evaluation")
    a = p.parse_args(argv)
    s = settings_from(p, a)
    return Run(a.arm, s.seeds[0] if a.seed is None else a.seed), a.eval_problems, prepare(s)


def summary(record: Record, ctx: Context) -> list[str]:
    """What the probe says: the regime, the speeds, and the budget at those speeds."""
    s = ctx.s
    fm, below = final_margin(record), first_below(record, REGIME_DEPTH)
    reached = fm is not None and fm <= -REGIME_DEPTH
    steps = present(series(record, "time/step"))
    out = [
        f"H_bar - floor over the last {WINDOW} steps: "
        + ("n/a (the anchor never froze)" if fm is None else f"{fm:+.3f}")
        + f"; first step {REGIME_DEPTH:g} or more below the floor: "
        + ("none" if below is None else str(below)) + ".",
        ("Regime reached at this seed: the other seeds must reach it too (the report checks)."
         if reached else
         f"Regime NOT reached: raise --lr or --steps until H_bar ends {REGIME_DEPTH:g} below "
         "the floor (change the budget, not the claim)."),
        f"Speed: {statistics.median(steps):.1f} s per step (median; min {min(steps):.1f}, "
        f"max {max(steps):.1f})" if steps else "Speed: no step measured",
    ]
    per = record.get("probe_evals", {}).get("s_per_completion")
    if per is not None:
        out[-1] += f", {per:.3f} s per evaluation completion."
    out.append(f"The full experiment at these speeds ({len(plan(s))} runs):")
    out += arithmetic(s, plan(s), [record | {
        "eval_completions": record.get("probe_evals", {}).get("completions"),
        "eval_time_s": record.get("probe_evals", {}).get("seconds")}])
    return out


def probe(run: Run, eval_problems: int, ctx: Context) -> Record:
    """Train `run`, time a small evaluation, keep the checkpoint; or the existing probe."""
    from experiments.mechanism import mechanism_sample

    s = ctx.s
    path = probe_path(s, run)
    ckpt_dir = path.with_name(path.stem + "-ckpt")
    cfg = ctx.config(run, ckpt_dir)
    old = read(path)
    if old is not None and not mismatch(old, plain(cfg.to_dict()), ctx.digest):
        print(f"[{run.name}] probed already with these settings: {path}", flush=True)
        for i, metrics in enumerate(old["steps"], 1):
            print(step_line(run.name, i, len(old["steps"]), metrics), flush=True)
        return old
    trainer, record, ckpt = train(ctx, run, cfg, None)
    t0 = time.perf_counter()
    problems = ctx.sets.heldout[:eval_problems]
    evals = trainer.evaluate(problems)
    seconds = time.perf_counter() - t0
    paec_cfg = ctx.config(Run("paec", run.seed), ckpt_dir).paec
    record |= {"checkpoint": str(ckpt), "mechanism": mechanism_sample(
        trainer, ctx.sets.heldout[0], paec_cfg), "probe_evals": {
        "heldout_first": evals, "problems": len(problems), "seconds": seconds,
        "completions": len(problems) * s.k,
        "s_per_completion": seconds / max(len(problems) * s.k, 1)}}
    write(path, record)
    print(f"[{run.name}] probe record {path}; checkpoint {ckpt}", flush=True)
    return record


def main(argv: Sequence[str] | None = None) -> int:
    run, eval_problems, ctx = parse_args(argv)
    record = probe(run, eval_problems, ctx)
    for line in summary(record, ctx):
        print(line, flush=True)
    print(f"To run the experiment with these settings (the probe is reused as {run.name}): "
          f"python -m experiments.reproduce --lr {ctx.s.learning_rate:g} --steps {ctx.s.steps}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
