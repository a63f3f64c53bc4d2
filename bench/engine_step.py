"""Time training steps of the built-in model on each rollout engine (issue 20): native, vLLM.

For each engine asked for, builds paec's `Trainer` for `builtin:smollm2-135m-instruct` (or
--model) with `rollout_engine` set to it, on --device (cpu, cuda or auto) in --dtype (auto:
bfloat16 on CUDA, float32 on the CPU), runs --steps training steps and prints, from each
step's own metrics, the sampling / training / total seconds (`time/sampling`,
`time/training`, `time/step`; docs/metrics.md) as the median over the steps after the first
(the first pays for warm-up: CUDA kernels, vLLM's graphs). `--engine both` runs native, then
vLLM, in this one process, and prints the ratio of their medians.

Matched for both engines: the prompts (builtin:add), the reward (fuzzy_match of the
completion against the prompt's text, so that rewards vary and every step updates, as in
bench/trainer.py), P x G completions of at most T tokens, one update per batch, PAEC on,
AdamW at a tiny learning rate. The vLLM engine needs its virtualenv (`make vllm-venv`, or
PAEC_VLLM_PYTHON); when it cannot start, the reason is printed and the native numbers stand.

    .venv/bin/python bench/engine_step.py --device cpu                 # native, float32
    .venv/bin/python bench/engine_step.py --engine both --device cuda  # bfloat16, ratio
    .venv/bin/python bench/engine_step.py --engine both --device cuda -P 8 -G 8 -T 256 --steps 6

Exit status: 0 when every engine asked for was timed, 1 when the native engine failed, 3
when only the vLLM engine did (bench/gpu_check.sh tells a missing vLLM from a broken one).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from typing import Any

BUILTIN = "builtin:smollm2-135m-instruct"
GRADER = {"type": "text_similarity", "name": "similarity", "input": "{{sample.output_text}}",
          "reference": "{{item.prompt}}", "evaluation_metric": "fuzzy_match"}
PARTS = ("sampling", "training", "step")
ENGINES = ("native", "vllm")
EXIT_VLLM_FAILED = 3


def config(a: argparse.Namespace, engine: str, out: str) -> Any:
    """The TrainConfig of one engine's run. A checkout without `rollout_engine` (before issue
    20) can still time the native engine: the field is then left out."""
    from paec.config.training import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    extra: dict[str, Any] = {}
    if "rollout_engine" in fields:
        extra["rollout_engine"] = engine
    elif engine != "native":
        raise SystemExit("this checkout's TrainConfig has no rollout_engine field (issue 20's "
                         "vLLM engine is not in it): only --engine native can run")
    return TrainConfig(model=a.model, train_data="builtin:add", train_size=64, grader=GRADER,
                       output_dir=out, seed=0, dtype=a.dtype, device=a.device,
                       steps=a.steps, prompts_per_step=a.P, group_size=a.G,
                       max_new_tokens=a.T, micro_batch_size=a.micro, learning_rate=a.lr,
                       temperature=1.0, top_p=1.0, update_epochs=1, use_paec=True, **extra)


def synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_engine(a: argparse.Namespace, engine: str) -> dict[str, Any]:
    """Build the Trainer, run a.steps steps; the per-step metrics and the peak memory."""
    import torch

    from paec.training.trainer import Trainer

    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        trainer = Trainer(config(a, engine, out))
        built = time.perf_counter() - started
        try:
            if trainer.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(trainer.device)
            steps = []
            for _ in range(a.steps):
                t0 = time.perf_counter()
                metrics, _ = trainer.train_step(trainer.step + 1)
                synchronize(trainer.device)
                trainer.step += 1
                steps.append({k: v for k, v in metrics.items() if k.startswith("time/")}
                             | {"wall": time.perf_counter() - t0,
                                "tokens_per_second": metrics["perf/tokens_per_second"],
                                "skipped": metrics.get("train/skipped", 0.0)})
            peak = (torch.cuda.max_memory_allocated(trainer.device) / 2**20
                    if trainer.device.type == "cuda" else None)
        finally:
            close = getattr(trainer, "close", None)  # the vLLM engine's process; absent before
            if callable(close):                       # issue 20's Trainer
                close()
            device = trainer.device
            del trainer
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return {"engine": engine, "build_s": built, "steps": steps, "peak_mb": peak}


def medians(result: dict[str, Any]) -> dict[str, float]:
    """Median of every timing over the steps after the first."""
    timed = result["steps"][1:]
    keys = sorted({k for s in timed for k in s if k.startswith("time/")} | {"wall",
                                                                            "tokens_per_second"})
    return {k: statistics.median(s.get(k, 0.0) for s in timed) for k in keys}


def table(results: list[dict[str, Any]]) -> str:
    """The results as a markdown table (errors as rows), and the ratio when both ran."""
    extra = sorted({k for r in results if "error" not in r for k in medians(r)}
                   - {f"time/{p}" for p in PARTS} - {"wall", "tokens_per_second"})
    head = ["engine", "timed steps", *(f"{p} s" for p in PARTS), "wall s", "tokens/s",
            *(f"{k.removeprefix('time/')} s" for k in extra), "build s", "peak MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    done: dict[str, dict[str, float]] = {}
    for r in results:
        if "error" in r:  # its first line, in one cell (the traceback is on stderr)
            why = r["error"].splitlines()[0].replace("|", "/")[:240]
            lines.append(f"| {r['engine']} | not timed: {why} |" + " |" * (len(head) - 2))
            continue
        m = done[r["engine"]] = medians(r)
        peak = "-" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
        cells = [r["engine"], str(len(r["steps"]) - 1),
                 *(f"{m[f'time/{p}']:.3f}" for p in PARTS), f"{m['wall']:.3f}",
                 f"{m['tokens_per_second']:.0f}", *(f"{m.get(k, 0.0):.3f}" for k in extra),
                 f"{r['build_s']:.1f}", peak]
        lines.append("| " + " | ".join(cells) + " |")
    if {"native", "vllm"} <= done.keys():
        v, n = done["vllm"], done["native"]
        lines.append("\nvllm / native, medians: " + ", ".join(
            f"{p} {v[f'time/{p}'] / n[f'time/{p}']:.2f}x" for p in PARTS))
    skipped = sum(s["skipped"] for r in results if "error" not in r for s in r["steps"][1:])
    if skipped:
        lines.append(f"\nWARNING: {skipped:.0f} timed step(s) had no update (every group's "
                     "rewards equal): their training time is not a training step's")
    return "\n".join(lines)


def header(a: argparse.Namespace) -> str:
    import torch
    import transformers

    gpu = (torch.cuda.get_device_name(0) if a.device != "cpu" and torch.cuda.is_available()
           else "none")
    return (f"model {a.model}; device {a.device}, dtype {a.dtype}; P={a.P} x G={a.G}, "
            f"T={a.T}, micro-batch {a.micro}; {a.steps} steps, medians over the last "
            f"{a.steps - 1}\ntorch {torch.__version__} (CUDA {torch.version.cuda}), "
            f"transformers {transformers.__version__}, GPU {gpu}, {os.cpu_count()} CPUs, "
            f"torch threads {torch.get_num_threads()}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--engine", choices=(*ENGINES, "both"), default="native")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="auto: bfloat16 on CUDA, float32 on the CPU")
    p.add_argument("--model", default=BUILTIN)
    for flag, default, what in (("-P", 4, "prompts per step"), ("-G", 4, "completions per "
                                "prompt"), ("-T", 32, "max completion tokens"),
                                ("--micro", 8, "completions per forward/backward"),
                                ("--steps", 4, "steps per engine; the first is not timed")):
        p.add_argument(flag, type=int, default=default, help=what)
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--json", help="also write the results (every step) to this file")
    return p


def resolve(a: argparse.Namespace) -> None:
    """`auto` device and dtype made concrete, so that the report says what ran."""
    import torch

    if a.device == "auto":
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.dtype == "auto":
        a.dtype = "bfloat16" if a.device == "cuda" else "float32"


def main() -> int:
    p = parser()
    a = p.parse_args()
    if a.steps < 2:
        p.error("--steps must be at least 2: the first step is not timed")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the built-in model needs no hub
    resolve(a)
    print(header(a), flush=True)
    results = []
    for engine in ENGINES if a.engine == "both" else (a.engine,):
        try:
            results.append(time_engine(a, engine))
        except Exception as exc:  # reported, so that the other engine's numbers still print
            traceback.print_exc()
            results.append({"engine": engine, "error": f"{type(exc).__name__}: {exc}"})
    print(table(results), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"header": header(a), "results": results}, f, indent=2)
    failed = {r["engine"] for r in results if "error" in r}
    if "native" in failed:
        return 1
    return EXIT_VLLM_FAILED if failed else 0


if __name__ == "__main__":
    sys.exit(main())
