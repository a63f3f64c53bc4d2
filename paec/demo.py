"""The main job, until the service exists (issues 4-6): a real PAEC fine-tuning run of the
built-in SmolLM2-135M-Instruct, offline, on the CPU, through the trainer library.

1. PAEC's view of one rollout batch: which positions the mask selects (`[token|H^p]`).
2. Evaluation before training (avg@k, pass@k, maj@k on held-out problems).
3. PAEC RLVR training with a progress bar (reward, entropy, masked entropy vs the floor).
4. Evaluation after training; the final checkpoint verified and reloaded with plain
   `AutoModelForCausalLM.from_pretrained`.

    make demo                      # or: python -m paec.demo [--steps 8] [--output-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from paec.anchor import AnchorState
from paec.callbacks import Callback
from paec.checkpoint import verify_checkpoint
from paec.cli import JsonlMetrics, ProgressBar
from paec.config import PAECConfig
from paec.features import TokenFeatures
from paec.loss_config import PolicyLossConfig
from paec.penalty import PAECBatch
from paec.rollout import FeatureCollector, encode_prompts, sample
from paec.train_config import TrainConfig
from paec.trainer import Trainer


def demo_config(output_dir: Path, steps: int, model: str) -> TrainConfig:
    """SmolLM2 on one-digit additions: it is right some of the time, so GRPO has signal."""
    return TrainConfig(
        model=model, train_data="builtin:add", train_size=64,
        validation_data="builtin:add", validation_size=8, output_dir=str(output_dir),
        steps=steps, prompts_per_step=4, group_size=8, max_new_tokens=24, temperature=1.0,
        micro_batch_size=8, learning_rate=2e-6, loss=PolicyLossConfig(clip_high=0.28),
        paec=PAECConfig(anchor_steps=2), eval_k=4, device="auto", seed=0,
    )


class LastEval(Callback):
    """Keeps the metrics of the latest evaluation (the trainer evaluates at the end)."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self.metrics = metrics


def render(tokenizer: Any, ids: Tensor, weights: Tensor, features: TokenFeatures) -> str:
    """A completion with PAEC's selected positions (m > 0.5) in brackets, with their H^p."""
    parts = []
    for tok, w, hp in zip(ids.tolist(), weights.tolist(), features.top_p_entropy.tolist(),
                          strict=True):
        text = tokenizer.decode([tok]).replace("\n", "\\n")
        parts.append(f"[{text}|{hp:.2f}]" if w > 0.5 else text)
    return "".join(parts)


def show_mask(trainer: Trainer, prompts: int = 2, samples: int = 3) -> None:
    """Sample a few completions and print the positions PAEC's mask selects."""
    cfg, model, tok = trainer.cfg, trainer.model, trainer.tokenizer
    examples = trainer.val_examples[:prompts]
    enc = encode_prompts(tok, [e.messages for e in examples], trainer.device)
    # The features the trainer uses: from the sampler's own logits, no second forward pass.
    stats = FeatureCollector(cfg.paec.top_p, top_k=cfg.paec.top_k)
    roll = sample(model, tok, enc, group_size=samples, max_new_tokens=32,
                  temperature=cfg.temperature, top_p=1.0, generator_seed=cfg.seed,
                  on_step=stats)
    features_bt = stats.result()[1]
    assert features_bt is not None  # top_p was given
    features = features_bt.select(roll.completion_mask)  # (n,)
    batch = PAECBatch.build(features, AnchorState(cfg.paec.anchor_steps, cfg.paec.floor_ratio),
                            cfg.paec)
    ends = torch.cumsum(roll.completion_mask.sum(-1), 0).tolist()
    for row, end in enumerate(ends):
        start = ends[row - 1] if row else 0
        if row % samples == 0:
            ex = examples[row // samples]
            print(f"Q: {ex.messages[-1]['content']}   (answer {ex.item['answer']})")
        ids = roll.completion_ids[row][roll.completion_mask[row]]
        text = render(tok, ids, batch.mask.weights[start:end], features.select(slice(start,
                                                                                     end)))
        print(f"  {row % samples}: {text}")
    m = batch.metrics()
    print(f"  {len(features)} tokens: entropy {m['entropy']:.2f}, top-p entropy "
          f"{m['entropy/top_p']:.2f}, masked {m['entropy/masked']:.2f} nats; "
          f"{m['paec/mask_frac_above_half']:.0%} of positions selected\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="PAEC fine-tuning of SmolLM2, offline")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--model", default="builtin:smollm2-135m-instruct")
    ap.add_argument("--output-dir", type=Path, default=None,
                    help="where checkpoints go (default: a temporary folder)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="paec-demo-") as tmp:
        out = args.output_dir or Path(tmp)
        cfg = demo_config(out, args.steps, args.model)
        print(f"[1/4] loading {cfg.model} (converted once into a cached folder) ...")
        log = JsonlMetrics(out / "metrics.jsonl")
        trainer = Trainer(cfg, [log])
        print(f"      loaded in {time.perf_counter() - t0:.0f} s on {trainer.device}\n")
        print("PAEC's mask on a few sampled completions; [token|H^p] marks selected positions:")
        show_mask(trainer)

        print(f"[2/4] evaluation before training, {len(trainer.val_examples)} held-out "
              f"problems x {cfg.eval_k} samples ...")
        before = trainer.evaluate()
        print("      " + "  ".join(f"{k} {v:.3f}" for k, v in before.items()) + "\n")

        print(f"[3/4] PAEC training: {cfg.steps} steps x {cfg.prompts_per_step} prompts x "
              f"{cfg.group_size} samples, anchor over the first {cfg.paec.anchor_steps} "
              "steps, then the floor holds the masked entropy")
        bar = ProgressBar(cfg.steps, 0)
        final_eval = LastEval()
        trainer.callbacks += [bar, final_eval]
        result = trainer.train()
        bar.close()
        trainer.callbacks.remove(bar)
        if result.status != "completed" or result.checkpoint is None:
            print(f"training ended {result.status} at step {result.step}", file=sys.stderr)
            return 1
        first, last = result.history[0], result.history[-1]
        nan = float("nan")  # a step where every group had equal rewards made no update
        print(f"      reward {first['reward/mean']:.3f} -> {last['reward/mean']:.3f}; masked "
              f"entropy {last.get('entropy/masked', nan):.3f} vs floor "
              f"{last.get('paec/floor', nan):.3f}; "
              f"{sum(m['time/step'] for m in result.history):.0f} s\n")

        print("[4/4] evaluation after training (the trainer's final one), and the checkpoint")
        after = final_eval.metrics
        for key in before:
            print(f"      {key:12s} {before[key]:.3f} -> {after[key]:.3f}")
        bad = verify_checkpoint(result.checkpoint)
        if bad:
            print(f"checkpoint files do not match their sha256: {bad}", file=sys.stderr)
            return 1
        from transformers import AutoModelForCausalLM

        reloaded = AutoModelForCausalLM.from_pretrained(result.checkpoint)
        n_params = sum(p.numel() for p in reloaded.parameters())
        print(f"      {result.checkpoint.name}: sha256 verified, reloads with "
              f"AutoModelForCausalLM ({n_params / 1e6:.0f}M parameters)")
        print(f"\ndone in {time.perf_counter() - t0:.0f} s; per-step metrics: "
              f"{out / 'metrics.jsonl'}" + ("" if args.output_dir else " (temporary)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
