"""Benchmark of one training step: paec's Trainer against TRL's GRPOTrainer, on this CPU.

Contenders, each in a fresh process (so that its peak RSS is its own): `trl` (GRPOTrainer,
transformers generate, no vLLM), `paec-grpo` (paec's Trainer, use_paec=False) and `paec`
(use_paec=True, defaults). After --warmup untimed steps, --steps timed ones give the median
step time and its sampling / grading / training split, RSS after the model is loaded, peak
RSS (VmHWM, ru_maxrss), and the cores other processes kept busy meanwhile (on a shared
2-core machine any contention spoils timings). Targets: trl / paec-grpo >= 1.3x,
paec peak memory <= trl's, paec / paec-grpo <= 1.05x (PAEC's overhead over plain GRPO).

Matched: the model (a random Llama from `paec.modeling.loader.tiny_model` over the real SmolLM2
tokenizer, vocabulary 49,152, saved to a temporary folder both load; fp32, CPU, default torch
threads; its logits scaled by --logit-scale, 20 by default, to a language model's next-token
entropy, see `build_model`); the prompts (builtin:add in the tokenizer's chat template); the reward
(fuzzy_match(completion, prompt text), so that rewards vary: paec's text_similarity grader, a
TRL reward function); P prompts x G completions per optimiser step, one update per batch,
equal micro-batches; max completion length, temperature 1.0, top_p 1.0, no top-k; beta 0 (no
reference model); std-normalised group advantages; token-mean loss over the whole batch with
clip-higher 0.2 / 0.28; torch AdamW at a constant LR; grad-norm clip 1.0; no gradient
checkpointing, logging or saving.

    .venv/bin/pip install -c constraints.txt 'trl>=0.20'
    .venv/bin/python bench/trainer.py             # 4 x 4 completions, 24 tokens (~1.5 min)
    .venv/bin/python bench/trainer.py --n-layer 2 --n-embd 64 -P 2 -G 4 -T 8 --steps 2
    .venv/bin/python bench/trainer.py --paired --lr 1e-12 --steps 20   # PAEC's overhead
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

SEED = 0
TRAIN_SIZE = 64
GRADER = {"type": "text_similarity", "name": "similarity", "input": "{{sample.output_text}}",
          "reference": "{{item.prompt}}", "evaluation_metric": "fuzzy_match"}
CONTENDERS = ("trl", "paec-grpo", "paec")
PARTS = ("sampling", "grading", "training")


def memory() -> dict[str, float]:
    """This process's current (VmRSS) and peak (VmHWM, ru_maxrss) resident memory, in MB."""
    with open("/proc/self/status") as f:
        rows = [line.split() for line in f if line.startswith(("VmRSS:", "VmHWM:"))]
    status = {row[0].rstrip(":"): int(row[1]) / 1024 for row in rows}
    status["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return status


def cpu_ticks() -> tuple[float, float]:
    """(CPU seconds the whole machine has been busy, CPU seconds of this process)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]  # user .. steal (guest is in user)
    with open("/proc/self/stat") as f:
        s = f.read().rsplit(")", 1)[1].split()  # from field 3 on: utime, stime are 14, 15
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(v) - v[3] - v[4]) / tick, (int(s[11]) + int(s[12])) / tick


class Clock:
    """Wall time of a window, and the cores other processes kept busy meanwhile (contention)."""

    def start(self) -> None:
        self.t0, self.c0 = time.perf_counter(), cpu_ticks()

    def stop(self) -> dict[str, float]:
        wall, (busy, own) = time.perf_counter() - self.t0, cpu_ticks()
        other = (busy - self.c0[0]) - (own - self.c0[1])
        return {"step": wall, "other": max(other, 0.0) / wall}


def paec_trainer(a: argparse.Namespace, use_paec: bool, out: str) -> Any:
    """paec's Trainer on the benchmark's model, data and batch (`use_paec` off: plain GRPO)."""
    from paec.config.calibration import PAECConfig
    from paec.config.training import TrainConfig
    from paec.training.trainer import Trainer

    cfg = TrainConfig(model=a.model_dir, train_data="builtin:add", train_size=TRAIN_SIZE,
                      grader=GRADER, output_dir=out, seed=SEED, dtype="float32",
                      device="cpu", steps=a.warmup + a.steps, prompts_per_step=a.P,
                      group_size=a.G, max_new_tokens=a.T, temperature=1.0, top_p=1.0,
                      update_epochs=1, micro_batch_size=a.micro, learning_rate=a.lr,
                      use_paec=use_paec,  # loss: PolicyLossConfig() (clip-higher, token-mean)
                      # --paec-active: a negligible bonus makes the term differentiable
                      # every step, the cost of a step whose penalty is active
                      paec=PAECConfig(entropy_bonus=1e-12 if a.paec_active else 0.0))
    return Trainer(cfg)


def timed_step(trainer: Any) -> dict[str, float]:
    """One step as `Trainer.train` runs it: wall time, contention and the part timings."""
    clock = Clock()
    clock.start()
    metrics, _ = trainer.train_step(trainer.step + 1)
    trainer.step += 1
    return (clock.stop() | {k: metrics[f"time/{k}"] for k in PARTS}
            | {"skipped": metrics.get("train/skipped", 0.0)})


def run_paec(a: argparse.Namespace, use_paec: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as out:
        trainer = paec_trainer(a, use_paec, out)
        loaded = memory()["VmRSS"]
        steps = [timed_step(trainer) for _ in range(a.warmup + a.steps)][a.warmup:]
    return {"loaded": loaded, "steps": steps}


def run_paired(a: argparse.Namespace) -> dict[str, Any]:
    """`--paired`: plain GRPO and PAEC in one process, one step each in turn (the order
    alternating), so that both see the same machine state: drift between two processes'
    runs (10-20% on this VM) cancels out of the per-pair ratios. No memory figures."""
    with tempfile.TemporaryDirectory() as out:
        trainers = {"paec-grpo": paec_trainer(a, False, out + "/grpo"),
                    "paec": paec_trainer(a, True, out + "/paec")}
        steps: dict[str, list[dict[str, float]]] = {name: [] for name in trainers}
        for i in range(a.warmup + a.steps):
            order = list(trainers) if i % 2 == 0 else list(trainers)[::-1]
            for name in order:
                step = timed_step(trainers[name])
                if i >= a.warmup:
                    steps[name].append(step)
    return {"steps": steps}


def trl_dataset() -> Any:
    """builtin:add as TRL's dataset: conversational prompts (TRL applies the tokenizer's chat
    template itself) and each prompt's text as the reference."""
    from datasets import Dataset

    from paec.data import builtin_task

    examples = builtin_task("builtin:add", size=TRAIN_SIZE, seed=SEED)
    return Dataset.from_list([{"prompt": e.messages, "reference": e.item["prompt"]}
                              for e in examples])


def trl_reward() -> Callable[..., list[float]]:
    """The benchmark's reward as a TRL reward function: fuzzy_match(completion, prompt)."""
    from paec.grading.graders import fuzzy_match

    def similarity(completions: list[list[dict[str, str]]], reference: list[str],
                   **_: Any) -> list[float]:
        return [fuzzy_match(c[0]["content"], r) for c, r in zip(completions, reference,
                                                                strict=True)]
    return similarity


def trl_config(a: argparse.Namespace, out: str) -> Any:
    """GRPOConfig matched to paec's Trainer (see the module docstring)."""
    from trl import GRPOConfig

    accum = a.P * a.G // a.micro
    return GRPOConfig(
        output_dir=out, report_to=[], logging_strategy="no", save_strategy="no",
        disable_tqdm=True, use_cpu=True, bf16=False, fp16=False,  # TRL defaults bf16 on
        gradient_checkpointing=False,  # TRL's default is True; paec's is False
        model_init_kwargs={"dtype": "float32"}, seed=SEED, max_steps=a.warmup + a.steps,
        # Batch semantics: an optimiser step takes per_device_train_batch_size *
        # gradient_accumulation_steps = micro * (P*G / micro) = P*G completions, and
        # generation_batch_size = per_device_train_batch_size * steps_per_generation = P*G
        # completions of P distinct prompts (RepeatSampler: generation_batch_size //
        # num_generations prompts, each num_generations times). steps_per_generation ==
        # gradient_accumulation_steps and num_iterations == 1: one generation per optimiser
        # step, used once (TRL then skips its old-log-prob pass: ratio 1, as in paec).
        per_device_train_batch_size=a.micro, gradient_accumulation_steps=accum,
        steps_per_generation=accum, num_generations=a.G, num_iterations=1,
        max_completion_length=a.T, temperature=1.0, top_p=1.0, top_k=0,
        beta=0.0, loss_type="dapo", epsilon=0.2, epsilon_high=0.28, scale_rewards="group",
        learning_rate=a.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        adam_beta1=0.9, adam_beta2=0.999, max_grad_norm=1.0,
        optim="adamw_torch",  # torch.optim.AdamW as paec (TRL's default here: the fused one)
        use_vllm=False, log_completions=False,
    )


def step_timer(steps: list[dict[str, float]], parts: dict[str, float]) -> Any:
    """A TrainerCallback that appends every step's timings to `steps`: its wall time and
    contention, and the `parts` the timed methods added up meanwhile."""
    from transformers import TrainerCallback

    # A step runs from one on_step_end to the next, so that it includes what the loop does
    # before on_step_begin (fetching the step's batches), as paec's step includes drawing
    # its prompts; on_step_begin -> on_step_end alone was < 0.01 s shorter when checked.
    class StepTimer(TrainerCallback):  # type: ignore[misc]
        clock = Clock()

        def on_train_begin(self, *_: Any, **__: Any) -> None:
            self.clock.start()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            step = self.clock.stop()
            steps.append(step | parts | {
                "training": step["step"] - parts["sampling"] - parts["grading"]})
            parts.update(sampling=0.0, grading=0.0)
            self.clock.start()

    return StepTimer()


def timed(fn: Any, key: str, parts: dict[str, float]) -> Any:
    """`fn`, adding the seconds each call takes to parts[key]."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        parts[key] += time.perf_counter() - t0
        return out
    return wrapper


def run_trl(a: argparse.Namespace) -> dict[str, Any]:
    from trl import GRPOTrainer

    parts = {"sampling": 0.0, "grading": 0.0}
    steps: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as out:
        trainer = GRPOTrainer(model=a.model_dir, reward_funcs=trl_reward(),
                              args=trl_config(a, out), train_dataset=trl_dataset(),
                              callbacks=[step_timer(steps, parts)])
        # sampling: prompt tokenisation, generate, decode; grading: the reward function.
        trainer._generate = timed(trainer._generate, "sampling", parts)
        trainer._calculate_rewards = timed(trainer._calculate_rewards, "grading", parts)
        loaded = memory()["VmRSS"]
        trainer.train()
    return {"loaded": loaded, "steps": steps[a.warmup:]}


def worker(a: argparse.Namespace) -> None:
    import torch

    torch.manual_seed(SEED)
    if a.worker == "paired":
        result = run_paired(a)
    elif a.worker == "trl":
        result = run_trl(a)
    else:
        result = run_paec(a, a.worker == "paec")
    result |= memory() | {"threads": torch.get_num_threads()}
    print("RESULT " + json.dumps(result), flush=True)


def build_model(a: argparse.Namespace, folder: str) -> int:
    """Save the tiny model and the SmolLM2 tokenizer to `folder`; returns the parameter count."""
    import torch
    from transformers import AutoTokenizer

    from paec.modeling.loader import resolve_model, tiny_model

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("builtin:smollm2-135m-instruct")))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = tiny_model(tokenizer, n_layer=a.n_layer, n_embd=a.n_embd, n_head=a.n_head, seed=SEED)
    # A random model's next-token distributions are nearly uniform (entropy ~ log V), unlike
    # any policy RLVR starts from, and the worst case of the top-p search. Scaling the final
    # norm scales every logit: the default --logit-scale 20 gives the tiny model a trained
    # LM's entropy (2.85 nats; SmolLM2 on its own samples: 2.57, docs/benchmarks.md);
    # --logit-scale 1 keeps the untrained model, the stress case.
    with torch.no_grad():
        model.model.norm.weight.mul_(a.logit_scale)
        ids = tokenizer(["What is 3 + 4? Answer with just the number."] * 2,
                        return_tensors="pt")["input_ids"]
        logp = torch.log_softmax(model(input_ids=ids).logits.float(), -1)  # (2, L, V)
        entropy = float(-(logp.exp() * logp).sum(-1).mean())
    print(f"logit scale {a.logit_scale}: mean next-token entropy {entropy:.2f} nats "
          f"(uniform: {math.log(len(tokenizer)):.2f})")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for flag, default, what in (("--n-layer", 4, "layers"), ("--n-embd", 128, "width"),
                                ("--n-head", 4, "heads"), ("-P", 4, "prompts per step"),
                                ("-G", 4, "completions per prompt"),
                                ("-T", 24, "max completion tokens"),
                                ("--micro", 8, "completions per forward/backward"),
                                ("--warmup", 1, "untimed steps"), ("--steps", 5, "timed steps")):
        p.add_argument(flag, type=int, default=default, help=what)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--model", help="benchmark this model (a folder or builtin:<name>) "
                   "instead of the tiny random one")
    p.add_argument("--logit-scale", type=float, default=20.0,
                   help="multiply the final norm (every logit) by this: 20 (default) gives "
                        "a language model's entropy, 1 the untrained model's near-uniform "
                        "distributions (the stress case)")
    p.add_argument("--only", choices=CONTENDERS, action="append", help="run only these")
    p.add_argument("--paec-active", action="store_true",
                   help="time PAEC with its differentiable term on every step (as while the "
                        "penalty is active); by default it runs only below the floor")
    p.add_argument("--paired", action="store_true",
                   help="only PAEC's overhead: paec-grpo and paec in one process, steps "
                        "alternating, with the median of the per-step ratios")
    p.add_argument("--worker", choices=(*CONTENDERS, "paired"), help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    return p


def print_versions(contenders: Sequence[str]) -> None:
    import torch
    import transformers

    trl_version = "not used"
    if "trl" in contenders:
        import trl

        trl_version = trl.__version__
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"trl {trl_version}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")


def prepare_model(a: argparse.Namespace, folder: str) -> str:
    """The folder of the model to benchmark (the tiny one is saved to `folder`); prints it."""
    if a.model:  # a real model instead of the tiny one, e.g. builtin:smollm2-135m-instruct
        from paec.modeling.loader import resolve_model

        folder = str(resolve_model(a.model))
        print(f"model: {a.model} ({folder}); ", end="")
    else:
        n_params = build_model(a, folder)
        print(f"model: Llama n_layer={a.n_layer} n_embd={a.n_embd} n_head={a.n_head}, "
              f"{n_params / 1e6:.1f}M parameters (tied embeddings, vocab 49,152); ", end="")
    print(f"P={a.P} x G={a.G}, T={a.T}, micro-batch {a.micro}, "
          f"{a.warmup} warm-up + {a.steps} timed steps")
    return folder


def run_contender(name: str, folder: str) -> dict[str, Any]:
    """Run one contender (or the paired run) in a fresh process; its RESULT."""
    flags = [f"--worker={name}", f"--model-dir={folder}", *sys.argv[1:]]
    proc = subprocess.run([sys.executable, __file__, *flags], capture_output=True,
                          text=True, check=False)  # inherits HF_HUB_OFFLINE=1
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return result


def main() -> None:
    p = parser()
    a = p.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    if a.worker:
        worker(a)
        return
    if (a.P * a.G) % a.micro:
        p.error("P * G must be a multiple of --micro")
    contenders = ("paec-grpo", "paec") if a.paired else (a.only or CONTENDERS)
    print_versions(contenders)
    with tempfile.TemporaryDirectory() as folder:
        model = prepare_model(a, folder)
        results = {name: run_contender(name, model)
                   for name in (["paired"] if a.paired else contenders)}
    if a.paired:
        report_paired(results["paired"])
    else:
        report(results)


def report_paired(result: dict[str, Any]) -> None:
    steps = result["steps"]
    print(f"\n{'contender':<10} {'step':>7} {'sample':>7} {'train':>7} {'other':>5}")
    for name, rows in steps.items():
        med = {k: statistics.median(s[k] for s in rows) for k in ("step", *PARTS, "other")}
        print(f"{name:<10} {med['step']:>6.3f}s {med['sampling']:>6.3f}s "
              f"{med['training']:>6.3f}s {med['other']:>5.2f}")
    ratios = sorted(p["step"] / g["step"] for p, g in zip(steps["paec"], steps["paec-grpo"],
                                                          strict=True))
    q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
    print(f"\npaec / paec-grpo step time, median of {len(ratios)} paired steps "
          f"(target <= 1.05): {statistics.median(ratios):.3f}x (quartiles {q1:.3f}-{q3:.3f})")
    if max(s["other"] for rows in steps.values() for s in rows) > 0.2:
        print("WARNING: other processes used the CPU during the timed steps: rerun when idle")


def report(results: dict[str, dict[str, Any]]) -> None:
    keys = ("step", *PARTS, "other")
    med = {n: {k: statistics.median(s[k] for s in r["steps"]) for k in keys}
           for n, r in results.items()}
    print(f"\n{'contender':<10} {'step':>7} {'min':>7} {'max':>7} {'sample':>7} {'grade':>7} "
          f"{'train':>7} {'other':>5} {'RSS load':>9} {'VmHWM':>8} {'maxrss':>8} thr")
    for n, r in results.items():
        times, m = [s["step"] for s in r["steps"]], med[n]
        skipped = sum(s.get("skipped", 0.0) for s in r["steps"])
        print(f"{n:<10} {m['step']:>6.3f}s {min(times):>6.3f}s {max(times):>6.3f}s "
              f"{m['sampling']:>6.3f}s {m['grading']:>6.3f}s {m['training']:>6.3f}s "
              f"{m['other']:>5.2f} {r['loaded']:>6.0f} MB {r['VmHWM']:>5.0f} MB "
              f"{r['ru_maxrss']:>5.0f} MB {r['threads']}"
              + (f"  ({skipped:.0f} updates skipped)" if skipped else ""))
    print("step, sample, grade, train, other: medians over the timed steps; other: cores kept "
          "busy by\nother processes meanwhile (contention); RSS load: after the model is loaded\n")
    for a, b, label in (("trl", "paec-grpo", "trl / paec-grpo step time  (target >= 1.3)"),
                        ("trl", "paec", "trl / paec step time"),
                        ("paec", "paec-grpo", "paec / paec-grpo step time (target <= 1.05)")):
        if a in med and b in med:
            print(f"{label}: {med[a]['step'] / med[b]['step']:.2f}x")
    for n in ("paec-grpo", "paec"):
        if n in results and "trl" in results:
            mine, theirs = results[n]["VmHWM"], results["trl"]["VmHWM"]
            print(f"peak memory {n} / trl (target <= 1): {mine:.0f} / {theirs:.0f} MB "
                  f"= {mine / theirs:.2f}")
    if max(m["other"] for m in med.values()) > 0.2:
        print("WARNING: other processes used the CPU during the timed steps: rerun when idle")


if __name__ == "__main__":
    main()
