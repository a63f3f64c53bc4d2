"""What one invocation of the experiment runs and where it writes: flags over the full
preset (the real experiment on SmolLM2) or the smoke preset (a tiny model, in seconds),
shared by `experiments.reproduce` and `experiments.probe`.

The defaults and the arithmetic behind them are in `experiments.reproduce`'s docstring.
`--learning-rate` and `--steps` are the two a probe decides (`experiments.probe`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.tasks import known_task

DEFAULT_STEPS = 32
"""Training steps of every run (the anchor takes the first 4): the most that fits about 4
hours in all (`experiments.reproduce`'s docstring). The probe at seed 0 reached the regime
(see `DEFAULT_LR`); the report checks every seed."""
DEFAULT_LR = 1e-5
"""Peak learning rate (constant). The first experiment's 2e-6 reached the floor only near the
end of 30 steps; 5x that was the probe's starting point, and the probe of 2026-12-06 (seed 0,
32 steps, the machine to itself) kept it: GRPO's H_bar fell 0.2 nats below its floor at step
16 and ended 1.03 nats below it (mean of the last 3 steps), at 22.1 s per step (median).
That probe's grader still paid a completion that restated its problem ("23 - 12 equals"),
which the policy learnt; the checker now refuses it, and the runs of record, not the probe,
say whether the regime is reached."""
DEFAULT_SWEEP = "0.3,3,10"
"""Penalty weights of the sweep at the first seed, beside the default weight 1 of `paec`: a
factor of about 3 each way of 1, and 10 (the first experiment's `paec_strong`). Weights 0.5
and 2 would sit too close to 1 to tell apart with one seed."""

FULL: dict[str, Any] = dict(
    model="builtin:smollm2-135m-instruct", task="sums", hard_task="sums_hard",
    train_size=512, heldout_size=100, hard_size=100, steps=DEFAULT_STEPS,
    learning_rate=DEFAULT_LR, seeds="0,1,2", sweep=DEFAULT_SWEEP, arms="", k=8,
    prompts_per_step=4, group_size=8, max_new_tokens=48, micro_batch_size=32, device="auto",
    work="runs/reproduce", out=None)
SMOKE: dict[str, Any] = FULL | dict(
    model=None, train_size=16, heldout_size=3, hard_size=3, steps=3, learning_rate=1e-3,
    seeds="0", sweep="3", k=2, prompts_per_step=2, group_size=4, max_new_tokens=6,
    micro_batch_size=4, device="cpu", work=None, out="runs/reproduce-smoke")
"""The smoke preset: the plumbing on a tiny --model in seconds (a larger lr so that 3 steps
of a random model move); everything, report and records included, goes to --out."""


@dataclass(frozen=True)
class Settings:
    """One invocation: the experiment's sizes and where everything goes."""

    model: str
    task: str
    hard_task: str
    train_size: int
    heldout_size: int
    hard_size: int
    steps: int
    learning_rate: float
    seeds: tuple[int, ...]
    """Seeds of the main arms (`grpo`, `paec`); the other arms run the first."""
    sweep: tuple[float, ...]
    """Penalty weights of the sweep (at the first seed)."""
    arms: tuple[str, ...]
    """Only these arms (empty: all)."""
    k: int
    prompts_per_step: int
    group_size: int
    max_new_tokens: int
    micro_batch_size: int
    device: str
    work: Path
    """Data files, probes and (transient) checkpoints."""
    records: Path
    """One JSON record per finished run: what the report is made of."""
    report: Path
    plots: Path
    first_experiment: Path
    """The first experiment's records (30 steps at lr 2e-6), shown as a row of the report."""
    smoke: bool


def add_flags(p: argparse.ArgumentParser) -> None:
    """The flags both commands take; each overrides the preset's value."""
    p.add_argument("--model", help="builtin:<name> or a model folder (required with --smoke)")
    p.add_argument("--task", help="training task (experiments.tasks.TASKS or builtin:<name>)")
    p.add_argument("--hard-task", help="the harder held-out task")
    for name in ("train-size", "heldout-size", "hard-size", "steps", "k", "prompts-per-step",
                 "group-size", "max-new-tokens", "micro-batch-size"):
        p.add_argument(f"--{name}", type=int)
    p.add_argument("--learning-rate", "--lr", type=float, dest="learning_rate")
    p.add_argument("--seeds", help="comma-separated seeds of grpo and paec (default 0,1,2)")
    p.add_argument("--sweep", help=f"comma-separated penalty weights (default {DEFAULT_SWEEP}; "
                   "empty: no sweep)")
    p.add_argument("--arms", help="comma-separated arms to run (default: all)")
    p.add_argument("--device")
    p.add_argument("--work", help="folder of data, probes and checkpoints (runs/reproduce)")
    p.add_argument("--out", help="with --smoke: the folder of everything (records, report)")
    p.add_argument("--smoke", action="store_true",
                   help="plumbing check on a tiny --model: 3 steps, 1 seed, k=2; records, "
                        "report and plots go to --out instead of docs/")


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def settings_from(p: argparse.ArgumentParser, a: argparse.Namespace) -> Settings:
    """The preset (`FULL`, or `SMOKE` with --smoke) overridden by the flags given."""
    preset = SMOKE if a.smoke else FULL
    v: dict[str, Any] = {k: (getattr(a, k) if getattr(a, k, None) is not None else d)
                         for k, d in preset.items()}
    if v["model"] is None:
        p.error("--smoke needs --model (a tiny model folder)")
    for flag in ("task", "hard_task"):
        if not known_task(str(v[flag])):
            p.error(f"--{flag.replace('_', '-')}: unknown task {v[flag]!r}")
    seeds = tuple(int(x) for x in str(v["seeds"]).split(",") if x.strip())
    if not seeds:
        p.error("--seeds: at least one seed")
    out = Path(str(v["out"])) if a.smoke else None
    work = out if out is not None else Path(str(v["work"]))
    docs = out if out is not None else Path("docs")
    return Settings(
        model=str(v["model"]), task=str(v["task"]), hard_task=str(v["hard_task"]),
        train_size=int(v["train_size"]), heldout_size=int(v["heldout_size"]),
        hard_size=int(v["hard_size"]), steps=int(v["steps"]),
        learning_rate=float(v["learning_rate"]), seeds=seeds, sweep=_floats(str(v["sweep"])),
        arms=tuple(x.strip() for x in str(v["arms"]).split(",") if x.strip()), k=int(v["k"]),
        prompts_per_step=int(v["prompts_per_step"]), group_size=int(v["group_size"]),
        max_new_tokens=int(v["max_new_tokens"]), micro_batch_size=int(v["micro_batch_size"]),
        device=str(v["device"]), work=work, records=docs / "results" / "runs",
        report=docs / "results.md", plots=docs / "results",
        first_experiment=docs / "results" / "v1" / "records.json", smoke=bool(a.smoke))
