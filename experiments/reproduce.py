"""PAEC against GRPO where GRPO's entropy collapses (issue 17), on this 2-core CPU: every run
of the plan, resumably, then `docs/results.md` regenerated from the records.

    .venv/bin/python -m experiments.reproduce              # run what is missing, then report
    .venv/bin/python -m experiments.reproduce --plan       # the runs, what is done, the time left
    .venv/bin/python -m experiments.reproduce --max-runs 3 # this sitting: at most 3 new runs
    .venv/bin/python -m experiments.reproduce --report-only

First decide the budget with the probe (`experiments.probe`): GRPO's masked entropy H_bar
must end 0.2 nats below its floor in every seed, or the experiment tests nothing. A probe
with the same --learning-rate and --steps is reused as the run `grpo-seed0`.

Each finished run is one JSON record, `docs/results/runs/<arm>-seed<seed>.json` (commit
them as they come); a run whose record exists is skipped, so an interrupted experiment
resumes at the run it was in (that run starts again). Nothing is committed here. The
report is regenerated after every new run and at the end, from whatever records exist, and
says which runs are missing. The smoke version, on a tiny model in seconds, writes
everything under --out:

    .venv/bin/python -m experiments.reproduce --smoke --model TINY_MODEL_DIR --out /tmp/smoke

Design (`experiments.arms`, `experiments.tasks`; the report says why):

- Task `sums` (a + b or a - b, terms of 1-2 digits, answer in \\boxed{}): 512 training
  problems, 100 held-out ones of the same generator with no prompt in common, and 100 of
  `sums_hard` (three 2-digit terms); k = 8, so one problem moves maj@8 by 0.01.
- 4 prompts x 8 samples a step, 48 new tokens (SmolLM2 writes 25-40 tokens of prose around
  a sum: several decision points per completion), micro-batch 32 (the whole batch in one
  pass; the evaluation samples 4 problems x 8 at once).
- Runs, in this order: `grpo` and `paec` at seed 0, at seed 1, at seed 2; the untrained
  policy's evaluation; `paec_no_mask`, `grpo_entropy`; the penalty-weight sweep
  `paec_w0.3`, `paec_w3`, `paec_w10` (seed 0; `paec` seed 0 is weight 1). `grpo` is GRPO
  with PAEC's instrumentation at penalty weight 0, which trains exactly as GRPO and is also
  "PAEC without the penalty": 11 training runs, not 14.
- Evaluation: every run on the held-out set; `grpo`, `paec` and the untrained policy on
  the hard set too.

Budget (this CPU, 2 cores, the machine to itself: another process on the cores doubles step
times or worse), with s the seconds per training step and c per evaluation completion:

    training     11 runs x steps x s
    evaluation   (7 x 200 + 5 x 100) problems x k 8 = 15,200 completions x c
    mechanism    12 runs x ~15 s = 3 min

    s ~ 25 s: the first experiment measured a median 13.5 s on a quiet machine at 4 x 8
      samples of 24 tokens after ~45-token prompts (4 s sampling, 9 s update); 48 tokens
      after ~60-token prompts doubles the sampling and makes the update ~1.5x longer.
    c ~ 0.3 s: 0.25 s was measured at 24 tokens and 8 rows per call; twice the tokens at 32
      rows per call costs about the same per completion.

    steps   training   evaluation + mechanism   total
    24      110 min    79 min                   3.2 h
    32      147 min    79 min                   3.8 h   <- the default
    40      183 min    79 min                   4.4 h

The probe of 2026-12-06 (GRPO, seed 0, lr 1e-5, 32 steps, the machine to itself) measured
22.1 s per step (median; 9-39 s) and 0.29 s per evaluation completion: 130 min of training
and 76 min of evaluation, 3.4 h for the 12 runs. Its H_bar fell 0.2 nats below the floor at
step 16 and ended 1.03 nats below it, so lr 1e-5 and 32 steps reached the regime at seed 0;
its grader still paid restated problems ("23 - 12 equals ..."), since refused by
`paec.grading.answer`, so the report checks the regime on the runs of record, every seed.
The probe prints the budget at the speeds it measured, and
`--plan` at the speeds of the finished runs; if they are slower than assumed, lower --steps
(if the regime is still reached) before cutting anything else.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace

from experiments.arms import Run, plan
from experiments.budget import remaining
from experiments.records import (
    Record,
    load_finished,
    mismatch,
    plain,
    probe_path,
    read,
    record_path,
)
from experiments.runs import Context, execute, prepare
from experiments.settings import Settings, add_flags, settings_from


def parse_args(argv: Sequence[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    """The settings, and the flags that say what to do with them."""
    p = argparse.ArgumentParser(prog="python -m experiments.reproduce",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_flags(p)
    p.add_argument("--plan", action="store_true",
                   help="print the runs, which are done, and the time left; run nothing")
    p.add_argument("--report-only", action="store_true",
                   help="regenerate the report from the records that exist; run nothing")
    p.add_argument("--max-runs", type=int, default=None,
                   help="stop after this many new runs (a sitting); the report is written")
    a = p.parse_args(argv)
    s = settings_from(p, a)
    known = {r.arm for r in plan(replace(s, arms=()))}
    if set(s.arms) - known:
        p.error(f"--arms: unknown {sorted(set(s.arms) - known)}; known: {sorted(known)}")
    return s, a


def collect(ctx: Context, runs: Sequence[Run]) -> dict[Run, Record]:
    """The finished records of `runs`; one made with other settings stops everything."""
    out = {}
    for run in runs:
        cfg = plain(ctx.config(run, ctx.s.work / "ckpt" / run.name).to_dict())
        record = load_finished(record_path(ctx.s.records, run), cfg, ctx.digest)
        if record is not None:
            out[run] = record
    return out


def state(ctx: Context, run: Run, records: dict[Run, Record]) -> str:
    """What is left of `run`: nothing, its evaluation (a probe trained it), or all of it."""
    if run in records:
        return "done"
    probe = read(probe_path(ctx.s, run))
    cfg = plain(ctx.config(run, ctx.s.work / "ckpt" / run.name).to_dict())
    if probe is not None and not mismatch(probe, cfg, ctx.digest):
        return "trained by a probe: its evaluation is left"
    return "to run"


def show_plan(ctx: Context, runs: Sequence[Run], records: dict[Run, Record]) -> None:
    for i, run in enumerate(runs, 1):
        print(f"{i:>2}. {run.name:<22} {state(ctx, run, records)}", flush=True)
    missing = [r for r in runs if r not in records]
    print(f"{len(runs) - len(missing)} of {len(runs)} done; about "
          f"{remaining(ctx.s, missing, list(records.values())) / 3600:.1f} h left "
          f"({len(ctx.sets.train)} training, {len(ctx.sets.heldout)} held-out and "
          f"{len(ctx.sets.hard)} hard problems; records in {ctx.s.records})", flush=True)


def run_all(ctx: Context, runs: Sequence[Run], max_runs: int | None) -> None:
    """Every missing run in order, at most `max_runs` new ones; the report after each new
    one (not in the smoke preset, whose report is written once at the end)."""
    new = 0
    for i, run in enumerate(runs):
        if max_runs is not None and new >= max_runs:
            print(f"stopping after {new} new run(s) (--max-runs)", flush=True)
            return
        fresh = not record_path(ctx.s.records, run).exists()
        records = collect(ctx, runs)
        execute(ctx, run, [r for r in runs[i + 1:] if r not in records], list(records.values()))
        if fresh:
            new += 1
            if not ctx.s.smoke:
                report(ctx)


def report(ctx: Context) -> None:
    """The report of every run of the plan, whichever `--arms` this sitting ran."""
    from experiments.report import write_report  # matplotlib only when a report is due

    every = plan(replace(ctx.s, arms=()))
    write_report(ctx.s, every, collect(ctx, every))
    print(f"wrote {ctx.s.report} and its figures in {ctx.s.plots}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    s, a = parse_args(argv)
    ctx = prepare(s)
    runs = plan(s)
    show_plan(ctx, runs, collect(ctx, runs))
    if a.plan:
        return 0
    if not a.report_only:
        run_all(ctx, runs, a.max_runs)
    report(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
