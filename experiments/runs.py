"""One run of the experiment through the public trainer: train (`Trainer.train()` with a
`Callback` that keeps every step's metrics), evaluate the final policy on the held-out sets
(`Trainer.evaluate(examples)`), sample the mechanism figure's completions, write the record.

`execute` skips a run whose record exists (and refuses one made with other settings), and
finishes a run from a probe's checkpoint when `experiments.probe` already trained it with
these settings (then only the evaluation is left). A finished run's checkpoint is deleted:
the record is the result (a SmolLM2 checkpoint is 0.5 GB).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from experiments.arms import BASE, PAEC, Run, arm_config, base_config
from experiments.budget import eval_sets, run_seconds, speeds
from experiments.mechanism import mechanism_sample
from experiments.records import (
    Record,
    load_finished,
    mismatch,
    plain,
    probe_path,
    read,
    record_path,
    write,
)
from experiments.settings import Settings
from experiments.tasks import ProblemSets, problem_sets, write_sets
from paec.config.training import TrainConfig
from paec.data import Example
from paec.training.callbacks import Callback


@dataclass(frozen=True)
class Context:
    """The settings and the problem sets every run of one invocation shares."""

    s: Settings
    sets: ProblemSets
    train_file: Path
    digest: str

    def config(self, run: Run, output_dir: Path) -> TrainConfig:
        return arm_config(run.arm, base_config(self.s, run.seed, self.train_file, output_dir))

    def examples(self, key: str) -> list[Example]:
        return self.sets.heldout if key == "heldout" else self.sets.hard


def prepare(s: Settings) -> Context:
    """Generate the problem sets and write them where the trainer reads them."""
    sets = problem_sets(s.task, s.hard_task, train_size=s.train_size,
                        heldout_size=s.heldout_size, hard_size=s.hard_size)
    return Context(s, sets, write_sets(s.work / "data", sets), sets.digest())


def _num(x: float | None, spec: str = ".3f") -> str:
    return "—" if x is None or math.isnan(x) else format(x, spec)


def step_line(label: str, step: int, total: int, metrics: dict[str, float]) -> str:
    """One step as the probe prints it: H_bar against the floor, reward, length, seconds."""
    h, floor = metrics.get("entropy/masked"), metrics.get("paec/floor")
    margin = None if h is None or floor is None else h - floor
    return (f"[{label}] step {step:>3}/{total}  H_bar {_num(h)}  floor {_num(floor)}  margin "
            f"{_num(margin, '+.3f')}  decisions {_num(metrics.get('paec/decision_frac'), '.2f')}"
            f"  reward {_num(metrics.get('reward/mean'))}  length "
            f"{_num(metrics.get('completion/length_mean'), '.1f')}  "
            f"{metrics.get('time/step', 0.0):.1f} s")


class StepRecorder(Callback):
    """Keeps every step's metrics and prints what the probe is for: H_bar against the floor,
    reward and speed; after step 1, a time estimate for the run and those left."""

    def __init__(self, label: str, steps: int,
                 estimate: Callable[[float], float] | None = None) -> None:
        self.label, self.total, self.estimate = label, steps, estimate
        self.history: list[dict[str, float]] = []

    def on_step_end(self, step: int, metrics: dict[str, float],
                    traces: list[dict[str, Any]]) -> None:
        self.history.append(dict(metrics))
        print(step_line(self.label, step, self.total, metrics), flush=True)
        dt = metrics.get("time/step", 0.0)
        if step == 1 and self.estimate is not None:
            print(f"[{self.label}] estimate: {dt * self.total / 60:.0f} min of training for "
                  f"this run; about {self.estimate(dt) / 60:.0f} min for it and the runs after "
                  "it, evaluations included", flush=True)


def evaluate(ctx: Context, run: Run, trainer: Any) -> dict[str, Any]:
    """The run's evaluations, the mechanism sample and their timing, as record fields."""
    t0 = time.perf_counter()
    keys = eval_sets(run)
    evals = {key: trainer.evaluate(ctx.examples(key)) for key in keys}
    t1 = time.perf_counter()
    paec_cfg = ctx.config(Run(PAEC, run.seed), Path(".")).paec
    mechanism = mechanism_sample(trainer, ctx.sets.heldout[0], paec_cfg)
    sizes = {key: len(ctx.examples(key)) for key in keys}
    print(f"[{run.name}] " + ", ".join(f"{k}: {v}" for k, v in evals.items())
          + f" ({(t1 - t0) / 60:.1f} min)", flush=True)
    return {"evals": evals, "eval_sizes": sizes, "eval_time_s": t1 - t0,
            "eval_completions": sum(sizes.values()) * ctx.s.k, "mechanism": mechanism,
            "mechanism_time_s": time.perf_counter() - t1}


def header(ctx: Context, run: Run, cfg: TrainConfig) -> Record:
    return {"arm": run.arm, "seed": run.seed, "config": plain(cfg.to_dict()),
            "data_sha256": ctx.digest, "task": ctx.s.task, "hard_task": ctx.s.hard_task,
            "train_size": len(ctx.sets.train)}


def train(ctx: Context, run: Run, cfg: TrainConfig, estimate: Callable[[float], float] | None
          ) -> tuple[Any, Record, Path | None]:
    """Train `run` to the end: (the trainer, the record so far, the final checkpoint).
    `estimate(seconds per step)` is the time of the runs left, printed after step 1."""
    from paec.training.trainer import Trainer  # torch loads only when a run is due

    recorder = StepRecorder(run.name, cfg.steps, estimate)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, [recorder])
    result = trainer.train()
    record = header(ctx, run, cfg) | {
        "status": result.status, "steps": plain(recorder.history),
        "train_time_s": time.perf_counter() - t0}
    return trainer, record, result.checkpoint


def finish(ctx: Context, run: Run, trainer: Any, record: Record, t0: float) -> Record:
    """Evaluate, time-stamp and write the record of a trained (or untrained) policy."""
    record = record | evaluate(ctx, run, trainer)
    record["wall_time_s"] = record.get("train_time_s", 0.0) + record["eval_time_s"] + \
        record["mechanism_time_s"]
    record["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    write(record_path(ctx.s.records, run), record)
    print(f"[{run.name}] done in {(time.perf_counter() - t0) / 60:.1f} min: "
          f"{record_path(ctx.s.records, run)}", flush=True)
    return record


def from_probe(ctx: Context, run: Run, cfg: TrainConfig) -> Record | None:
    """Finish `run` from the probe that trained it with these settings (its checkpoint is
    evaluated, then deleted); None if there is no such probe."""
    path = probe_path(ctx.s, run)
    probe = read(path)
    if probe is None:
        return None
    ckpt = Path(str(probe.get("checkpoint")))
    diff = mismatch(probe, plain(cfg.to_dict()), ctx.digest)
    if diff or not ckpt.exists():
        why = "; ".join(diff[:3]) if diff else f"its checkpoint {ckpt} is gone"
        print(f"[{run.name}] the probe {path} is not reused ({why})", flush=True)
        return None
    from paec.training.trainer import Trainer

    print(f"[{run.name}] trained by the probe {path}: evaluating its checkpoint", flush=True)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, resume_from=ckpt)
    record = {k: v for k, v in probe.items() if k not in ("checkpoint", "probe_evals")}
    record["from_probe"] = path.name
    done = finish(ctx, run, trainer, record, t0)
    shutil.rmtree(probe["config"]["output_dir"], ignore_errors=True)  # the probe's folder
    return done


def execute(ctx: Context, run: Run, left: list[Run], finished: list[Record]) -> Record:
    """The record of `run`: the one on disk, or one made now (see the module docstring)."""
    s = ctx.s
    output_dir = s.work / "ckpt" / run.name
    cfg = ctx.config(run, output_dir)
    done = load_finished(record_path(s.records, run), plain(cfg.to_dict()), ctx.digest)
    if done is not None:
        print(f"[{run.name}] done already, skipped", flush=True)
        return done
    reused = from_probe(ctx, run, cfg)
    if reused is not None:
        return reused
    t0 = time.perf_counter()
    if run.arm == BASE:
        from paec.training.trainer import Trainer

        return finish(ctx, run, Trainer(cfg), header(ctx, run, cfg) | {"status": "untrained"},
                      t0)
    _, eval_s, _ = speeds(finished)
    trainer, record, _ = train(ctx, run, cfg, lambda dt: sum(
        run_seconds(s, r, dt, eval_s) for r in [run, *left]))
    record = finish(ctx, run, trainer, record, t0)
    shutil.rmtree(output_dir, ignore_errors=True)
    return record
