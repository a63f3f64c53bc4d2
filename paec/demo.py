"""The main job, until the trainer and the service exist: PAEC's per-token features and its
position mask on a real model's logits, for real prompts.

It loads the built-in SmolLM2-135M-Instruct (offline), samples a few completions of seeded
reasoning-gym arithmetic problems, recomputes the logits of every completion token, and
shows which positions PAEC selects (the decision-sensitive ones) and the batch statistics
the trainer will log.

    make demo                      # or: python -m paec.demo --prompts 4 --samples 4
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from paec.anchor import AnchorState
from paec.config import PAECConfig
from paec.features import TokenFeatures, token_features
from paec.models import apply_chat_template, load_model_and_tokenizer
from paec.penalty import PAECBatch


@dataclass(frozen=True)
class Rollouts:
    """Sampled completions of a batch of prompts and the logits of their tokens."""

    prompts: list[str]  # (P,) the problems as asked
    sequences: Tensor  # (B, L) prompt + completion ids, left-padded prompts
    prompt_len: int  # L_p: completions start at this column
    completion_mask: Tensor  # (B, T) True on completion tokens up to and including EOS
    logits: Tensor  # (n_valid, V) float32 logits of the valid completion tokens


def arithmetic_problems(n: int, seed: int) -> list[tuple[str, str]]:
    """Seeded one-digit arithmetic from reasoning-gym: (question, answer) pairs."""
    import reasoning_gym

    data = reasoning_gym.create_dataset("basic_arithmetic", size=n, seed=seed, min_terms=2,
                                        max_terms=2, min_digits=1, max_digits=1)
    return [(str(item["question"]), str(item["answer"])) for item in data]


def sample_rollouts(model: Any, tokenizer: Any, questions: list[str], *, samples: int,
                    max_new_tokens: int, seed: int, temperature: float = 1.0) -> Rollouts:
    """Sample `samples` completions per question, then one teacher-forced forward pass for
    the logits at every completion position (divided by the sampling temperature)."""
    texts = [apply_chat_template(tokenizer, [{"role": "user", "content": q}]) for q in questions]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    batch = {k: v.repeat_interleave(samples, dim=0) for k, v in batch.items()}  # (B, L_p)
    torch.manual_seed(seed)
    with torch.no_grad():
        seqs = model.generate(**batch, do_sample=True, temperature=temperature, top_p=1.0,
                              top_k=0, max_new_tokens=max_new_tokens,
                              pad_token_id=tokenizer.pad_token_id)  # (B, L)
        prompt_len = batch["input_ids"].shape[1]
        completion = seqs[:, prompt_len:]  # (B, T)
        # Valid: every token up to and including the first EOS.
        is_eos = completion == tokenizer.eos_token_id  # (B, T)
        after_eos = (is_eos.cumsum(-1) - is_eos.long()) > 0  # (B, T)
        mask = ~after_eos  # (B, T)
        attention = torch.cat([batch["attention_mask"], mask.long()], dim=1)  # (B, L)
        out = model(input_ids=seqs, attention_mask=attention)
        # Logits at position i predict token i + 1.
        logits = out.logits[:, prompt_len - 1:-1].float() / temperature  # (B, T, V)
    return Rollouts(questions, seqs, prompt_len, mask, logits[mask])


def render(tokenizer: Any, ids: Tensor, weights: Tensor, features: TokenFeatures) -> str:
    """A completion with PAEC's selected positions (m > 0.5) in brackets, with their H^p."""
    parts = []
    for tok, w, hp in zip(ids.tolist(), weights.tolist(), features.top_p_entropy.tolist(),
                          strict=True):
        text = tokenizer.decode([tok]).replace("\n", "\\n")
        parts.append(f"[{text}|{hp:.2f}]" if w > 0.5 else text)
    return "".join(parts)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="PAEC features and mask on SmolLM2 rollouts")
    ap.add_argument("--model", default="builtin:smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--samples", type=int, default=4, help="completions per prompt (G)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    print(f"loading {args.model} (converted once to a cached folder on first use) ...")
    model, tokenizer = load_model_and_tokenizer(args.model)
    problems = arithmetic_problems(args.prompts, args.seed)
    print(f"  loaded in {time.perf_counter() - t0:.1f} s; sampling {args.samples} completions "
          f"of {len(problems)} problems, up to {args.max_new_tokens} tokens each")
    t1 = time.perf_counter()
    roll = sample_rollouts(model, tokenizer, [q for q, _ in problems], samples=args.samples,
                           max_new_tokens=args.max_new_tokens, seed=args.seed)
    t2 = time.perf_counter()
    cfg = PAECConfig()
    features = token_features(roll.logits, cfg.top_p, top_k=cfg.top_k)
    t3 = time.perf_counter()
    # One optimisation batch with an anchor frozen on it, so the floor and penalty show.
    anchor = AnchorState(warmup_steps=1, floor_ratio=cfg.floor_ratio)
    batch = PAECBatch.build(features, anchor, cfg)
    anchor.observe(batch.masked_entropy)
    n_tok = len(features)
    print(f"  sampled {n_tok} completion tokens in {t2 - t1:.1f} s; features of "
          f"{n_tok} x {roll.logits.shape[1]} logits in {(t3 - t2) * 1000:.0f} ms\n")

    completions = roll.sequences[:, roll.prompt_len:]  # (B, T)
    offsets = torch.cumsum(roll.completion_mask.sum(-1), 0).tolist()
    starts = [0, *offsets[:-1]]
    for i, (start, end) in enumerate(zip(starts, offsets, strict=True)):
        question, answer = problems[i // args.samples]
        if i % args.samples == 0:
            print(f"Q: {question}   (answer {answer})")
        ids = completions[i][roll.completion_mask[i]]
        text = render(tokenizer, ids, batch.mask.weights[start:end], features.select(
            slice(start, end)))
        print(f"  {i % args.samples}: {text}")
    print()
    metrics = PAECBatch.build(features, anchor, cfg).metrics()
    sizes = features.nucleus_size
    metrics["paec/fast_path_share"] = float((sizes <= cfg.top_k).double().mean())
    width = max(len(k) for k in metrics)
    print("batch metrics (docs/metrics.md); [token|H^p] marks positions with mask > 0.5:")
    for key, value in metrics.items():
        print(f"  {key:<{width}}  {value:.4f}")
    print(f"\ndone in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
