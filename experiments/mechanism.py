"""The completions behind the mechanism figure: at the end of a run, the final policy samples
`MECHANISM_SAMPLES` completions of one held-out prompt (the same prompt and sampling seed in
every run), and for every token its full entropy, its top-p entropy, and the weight PAEC's
mask gives it (the `paec` arm's `PAECConfig`, the quantile taken over these completions).

The training traces (`TrainConfig.trace_samples`) are not used: they do not carry their
prompt, and they come from whichever groups of a step had reward variance, so two arms'
traces are not of the same prompt. Sampling afresh from each final policy is. Only public
functions of paec: the trainer's sampler and feature hook (`paec.training.rollout`), the
mask (`paec.calibration.mask.position_mask`) and the answer check (`paec.grading.answer`).

    sample = mechanism_sample(trainer, example, paec_cfg)   # a JSON-able dict
"""

from __future__ import annotations

from typing import Any

from paec.config.calibration import PAECConfig
from paec.data import Example

MECHANISM_SAMPLES = 8
"""Completions sampled; the mask's quantile is taken over all of them, the figure shows a
few."""
MECHANISM_SEED = 20_261_206
"""The sampling seed of every run's completions, so that arms differ only by their policy."""


def mechanism_sample(trainer: Any, example: Example, paec: PAECConfig,
                     n: int = MECHANISM_SAMPLES) -> dict[str, Any]:
    """`n` completions of `example` by `trainer`'s current policy, each with its tokens,
    their entropies and mask weights, its text and whether its answer is right."""
    import torch

    from paec.calibration.mask import position_mask
    from paec.grading.answer import is_correct
    from paec.training.rollout import FeatureCollector, encode_prompts, sample

    cfg, tok = trainer.cfg, trainer.tokenizer
    prompts = encode_prompts(tok, [example.messages], trainer.device)  # (1, L_p)
    hook = FeatureCollector(paec.top_p, top_k=paec.top_k, chunk_size=paec.chunk_size)
    roll = sample(trainer.model, tok, prompts, group_size=n, max_new_tokens=cfg.max_new_tokens,
                  temperature=cfg.temperature, top_p=cfg.top_p,
                  generator_seed=MECHANISM_SEED, on_step=hook)
    _, features = hook.result()  # (n, T) fields
    assert features is not None  # the hook was given a top_p
    valid = roll.completion_mask  # (n, T)
    flat = features.select(valid)  # (N,) fields, row by row
    mask = position_mask(flat, paec)  # (N,) weights
    lengths = valid.sum(-1).tolist()  # (n,)
    ends = torch.tensor([0, *lengths]).cumsum(0).tolist()
    answer = str(example.item.get("answer", ""))
    completions = []
    for row in range(n):
        ids = roll.completion_ids[row][valid[row]].tolist()
        part = slice(ends[row], ends[row + 1])
        text = tok.decode(ids, skip_special_tokens=True)
        completions.append({
            "tokens": [tok.decode([t]) for t in ids], "text": text,
            "correct": is_correct(text, answer) if answer else False,
            "entropy": flat.entropy[part].tolist(),
            "top_p_entropy": flat.top_p_entropy[part].tolist(),
            "nucleus_size": flat.nucleus_size[part].tolist(),
            "mask": mask.weights[part].tolist()})
    return {"prompt": example.item.get("prompt", example.messages[-1]["content"]),
            "answer": answer, "seed": MECHANISM_SEED, "completions": completions}


def summary(sample: dict[str, Any]) -> dict[str, float]:
    """Numbers of one run's sample: the mean entropy of all tokens and of the tokens the mask
    selects (weight > 0.5), the share of tokens that can decide (a nucleus of two or more),
    the share selected, the share of correct completions and the number of distinct texts."""
    comps = sample["completions"]
    tokens = [(h, m, n) for c in comps
              for h, m, n in zip(c["entropy"], c["mask"], c["nucleus_size"], strict=True)]
    picked = [h for h, m, _ in tokens if m > 0.5]
    count = max(len(tokens), 1)
    return {
        "entropy": sum(h for h, _, _ in tokens) / count,
        "entropy_selected": sum(picked) / len(picked) if picked else float("nan"),
        "decision_share": sum(n > 1 for _, _, n in tokens) / count,
        "selected_share": len(picked) / count,
        "correct": sum(bool(c["correct"]) for c in comps) / max(len(comps), 1),
        "distinct": float(len({c["text"] for c in comps})),
    }
