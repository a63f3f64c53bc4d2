"""Per-token traces of a step: what the dashboard shows of the tokens PAEC selects."""

from __future__ import annotations

import math
from typing import Any

import torch

from paec.training.batch import OptimBatch
from paec.training.callbacks import json_safe


def token_traces(batch: OptimBatch, tokenizer: Any, samples: int) -> list[dict[str, Any]]:
    """Per-token records of the first `samples` completions of the batch, in the format of
    docs/cli.md ("Token traces"): one list per feature, as long as `tokens`; a value that is
    not defined (PAEC off) or not finite (a one-token distribution's top-two gap) is None, so
    that every record is valid JSON."""
    roll, out = batch.roll, []
    for row in range(min(samples, batch.ids.shape[0])):
        idx = slice(batch.offsets[row], batch.offsets[row + 1])
        n = idx.stop - idx.start
        nan = torch.full((n,), math.nan)  # (n,)
        feats = None if batch.features is None else batch.features.select(idx)  # (n,)
        prompt = roll.input_ids[row, :roll.prompt_len][  # (L,) without the left padding
            roll.attention_mask[row, :roll.prompt_len].bool()]
        out.append(json_safe({
            "prompt": tokenizer.decode(prompt.tolist()),
            "advantage": float(batch.advantages[row]),
            "tokens": [tokenizer.decode([t]) for t in batch.ids[row][batch.mask[row]].tolist()],
            "entropy": batch.entropies[idx].tolist(),
            "top_p_entropy": (nan if feats is None else feats.top_p_entropy).tolist(),
            "nucleus_size": [None] * n if feats is None else feats.nucleus_size.tolist(),
            "top_two_gap": (nan if feats is None else feats.top2_gap).tolist(),
            "mask": (nan if batch.paec is None else batch.paec.mask.weights[idx]).tolist(),
        }))
    return out
