"""Benchmark of one training step: paec's Trainer against TRL's GRPOTrainer, on this CPU.

Three contenders, each in its own fresh process (so that its peak resident memory is its own):
  - trl:        trl.GRPOTrainer (transformers generate, no vLLM);
  - paec-grpo:  paec.trainer.Trainer with use_paec=False (plain GRPO, clip-higher, token-mean);
  - paec:       the same with use_paec=True (PAEC's defaults).
Each runs `--warmup` steps (not timed), then `--steps` timed steps; it reports the median step
time, the split into sampling / grading / training, the RSS after the model is loaded and the
process peak (VmHWM, and ru_maxrss). Targets (issue): trl / paec-grpo >= 1.3x, paec peak
memory <= trl's, paec / paec-grpo <= 1.05x (PAEC's overhead over plain GRPO).

Matched between the two sides:
  - model: a random Llama built by `paec.models.tiny_model` over the real SmolLM2 tokenizer
    (49,152 tokens), saved to a temporary folder that both load, fp32 on the CPU;
  - prompts: builtin:add (chat template of that tokenizer, add_generation_prompt);
  - reward: fuzzy_match(completion, prompt text), so that rewards vary within a group
    (paec: a text_similarity grader; TRL: a reward function calling the same function);
  - P prompts x G completions per optimiser step, max completion length, temperature 1.0,
    top_p 1.0, top_k off, no KL (beta 0, no reference model), one update per batch,
    micro-batches of the same size, std-normalised group advantages, token-mean loss over the
    whole batch with clip-higher (0.2 / 0.28), AdamW (torch's, not fused) at a constant LR,
    grad-norm clip 1.0, no gradient checkpointing, no logging, no saving.

    .venv/bin/pip install -c constraints.txt 'trl>=0.20'
    .venv/bin/python bench/trainer.py                        # the full size (a few minutes)
    .venv/bin/python bench/trainer.py --n-layer 2 --n-embd 64 -P 2 -G 4 -T 8 --steps 2  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

SEED = 0
TRAIN_SIZE = 64
GRADER = {"type": "text_similarity", "name": "similarity", "input": "{{sample.output_text}}",
          "reference": "{{item.prompt}}", "evaluation_metric": "fuzzy_match"}
CONTENDERS = ("trl", "paec-grpo", "paec")


def memory() -> dict[str, float]:
    """This process's current (VmRSS) and peak (VmHWM, ru_maxrss) resident memory, in MB."""
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                status[key] = int(value.split()[0]) / 1024
    status["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return status


def run_paec(a: argparse.Namespace, use_paec: bool) -> dict[str, Any]:
    from paec.train_config import TrainConfig
    from paec.trainer import Trainer

    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(model=a.model_dir, train_data="builtin:add", train_size=TRAIN_SIZE,
                          grader=GRADER, output_dir=out, seed=SEED, dtype="float32",
                          device="cpu", steps=a.warmup + a.steps, prompts_per_step=a.P,
                          group_size=a.G, max_new_tokens=a.T, temperature=1.0, top_p=1.0,
                          update_epochs=1, micro_batch_size=a.micro, learning_rate=a.lr,
                          use_paec=use_paec)  # loss: PolicyLossConfig() (clip-higher, token-mean)
        trainer = Trainer(cfg)
        loaded = memory()["VmRSS"]
        steps = []
        for i in range(a.warmup + a.steps):
            t0 = time.perf_counter()
            metrics, _ = trainer.train_step(trainer.step + 1)  # as Trainer.train does
            trainer.step += 1
            if i >= a.warmup:
                steps.append({"step": time.perf_counter() - t0,
                              "sampling": metrics["time/sampling"],
                              "grading": metrics["time/grading"],
                              "training": metrics["time/training"],
                              "skipped": metrics.get("train/skipped", 0.0)})
    return {"loaded": loaded, "steps": steps}


def run_trl(a: argparse.Namespace) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from paec.data import builtin_task
    from paec.graders import fuzzy_match

    examples = builtin_task("builtin:add", size=TRAIN_SIZE, seed=SEED)
    # Conversational prompts: TRL applies the tokenizer's chat template itself.
    data = Dataset.from_list([{"prompt": e.messages, "reference": e.item["prompt"]}
                              for e in examples])

    def similarity(completions: list[list[dict[str, str]]], reference: list[str],
                   **_: Any) -> list[float]:
        return [fuzzy_match(c[0]["content"], r) for c, r in zip(completions, reference,
                                                                strict=True)]

    accum = a.P * a.G // a.micro
    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(
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
        parts = {"sampling": 0.0, "grading": 0.0}
        steps: list[dict[str, float]] = []

        class StepTimer(TrainerCallback):  # type: ignore[misc]
            t0 = 0.0

            def on_step_begin(self, *_: Any, **__: Any) -> None:
                parts.update(sampling=0.0, grading=0.0)
                self.t0 = time.perf_counter()

            def on_step_end(self, *_: Any, **__: Any) -> None:
                total = time.perf_counter() - self.t0
                steps.append({"step": total, **parts,
                              "training": total - parts["sampling"] - parts["grading"]})

        trainer = GRPOTrainer(model=a.model_dir, reward_funcs=similarity, args=args,
                              train_dataset=data, callbacks=[StepTimer()])

        def timed(fn: Any, key: str) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    parts[key] += time.perf_counter() - t0
            return wrapper

        # sampling: prompt tokenisation, generate, decode; grading: the reward function.
        trainer._generate = timed(trainer._generate, "sampling")
        trainer._calculate_rewards = timed(trainer._calculate_rewards, "grading")
        loaded = memory()["VmRSS"]
        trainer.train()
    return {"loaded": loaded, "steps": steps[a.warmup:]}


def worker(a: argparse.Namespace) -> None:
    import torch

    torch.manual_seed(SEED)
    result = run_trl(a) if a.worker == "trl" else run_paec(a, a.worker == "paec")
    result |= memory() | {"threads": torch.get_num_threads()}
    print("RESULT " + json.dumps(result), flush=True)


def build_model(a: argparse.Namespace, folder: str) -> int:
    """Save the tiny model and the SmolLM2 tokenizer to `folder`; returns the parameter count."""
    from transformers import AutoTokenizer

    from paec.models import resolve_model, tiny_model

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("builtin:smollm2-135m-instruct")))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = tiny_model(tokenizer, n_layer=a.n_layer, n_embd=a.n_embd, n_head=a.n_head, seed=SEED)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("-P", type=int, default=8, help="prompts per step")
    p.add_argument("-G", type=int, default=8, help="completions per prompt")
    p.add_argument("-T", type=int, default=32, help="max completion tokens")
    p.add_argument("--micro", type=int, default=8, help="completions per forward/backward")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--only", choices=CONTENDERS, action="append", help="run only these")
    p.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    a = p.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    if a.worker:
        worker(a)
        return
    if (a.P * a.G) % a.micro:
        p.error("P * G must be a multiple of --micro")
    import platform

    import torch
    import transformers
    import trl

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"trl {trl.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        n_params = build_model(a, folder)
        print(f"model: Llama n_layer={a.n_layer} n_embd={a.n_embd} n_head={a.n_head}, "
              f"{n_params / 1e6:.1f}M parameters (tied embeddings, vocab 49,152); "
              f"P={a.P} x G={a.G}, T={a.T}, micro-batch {a.micro}, "
              f"{a.warmup} warm-up + {a.steps} timed steps")
        flags = [f"--n-layer={a.n_layer}", f"--n-embd={a.n_embd}", f"--n-head={a.n_head}",
                 f"-P={a.P}", f"-G={a.G}", f"-T={a.T}", f"--micro={a.micro}", f"--lr={a.lr}",
                 f"--warmup={a.warmup}", f"--steps={a.steps}", f"--model-dir={folder}"]
        for name in a.only or CONTENDERS:
            proc = subprocess.run([sys.executable, __file__, f"--worker={name}", *flags],
                                  capture_output=True, text=True,
                                  env=os.environ | {"HF_HUB_OFFLINE": "1"}, check=False)
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not lines:
                sys.exit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
            results[name] = json.loads(lines[-1].removeprefix("RESULT "))
    report(results)


def report(results: dict[str, dict[str, Any]]) -> None:
    med = {n: {k: statistics.median(s[k] for s in r["steps"])
               for k in ("step", "sampling", "grading", "training")}
           for n, r in results.items()}
    print(f"\n{'contender':<10} {'step':>7} {'min':>7} {'max':>7} {'sample':>7} {'grade':>7} "
          f"{'train':>7} {'RSS load':>9} {'VmHWM':>8} {'maxrss':>8} thr")
    for n, r in results.items():
        times = [s["step"] for s in r["steps"]]
        m = med[n]
        skipped = sum(s.get("skipped", 0.0) for s in r["steps"])
        print(f"{n:<10} {m['step']:>6.3f}s {min(times):>6.3f}s {max(times):>6.3f}s "
              f"{m['sampling']:>6.3f}s {m['grading']:>6.3f}s {m['training']:>6.3f}s "
              f"{r['loaded']:>6.0f} MB {r['VmHWM']:>5.0f} MB {r['ru_maxrss']:>5.0f} MB "
              f"{r['threads']}" + (f"  ({skipped:.0f} steps skipped)" if skipped else ""))
    print("(medians over the timed steps; sample/grade/train: medians of each part)")

    def ratio(a: str, b: str, label: str, target: str) -> None:
        if a in med and b in med:
            print(f"{label}: {med[a]['step'] / med[b]['step']:.2f}x  {target}")

    print()
    ratio("trl", "paec-grpo", "trl / paec-grpo step time", "(target >= 1.3)")
    ratio("trl", "paec", "trl / paec step time     ", "")
    ratio("paec", "paec-grpo", "paec / paec-grpo (PAEC overhead)", "(target <= 1.05)")
    for n in ("paec-grpo", "paec"):
        if n in results and "trl" in results:
            mine, theirs = results[n]["VmHWM"], results["trl"]["VmHWM"]
            print(f"peak memory {n} / trl: {mine:.0f} / {theirs:.0f} MB = {mine / theirs:.2f}  "
                  "(target <= 1)")


if __name__ == "__main__":
    main()
