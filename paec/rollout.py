"""Rollouts: sample G completions per prompt, then score them token by token.

A `RolloutBatch` holds B = P * G sequences: the left-padded prompts (width L_p) followed by
the completions (width T). A completion is valid up to and including its first EOS.
`sequence_logits` runs the model over the whole sequences and returns the logits that
predicted each completion token; `token_logprobs` turns them into log pi(y_t) without a
(B, T, V) log-softmax copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from paec.models import apply_chat_template


@dataclass(frozen=True)
class RolloutBatch:
    """Sequences of one step: prompts and their sampled completions."""

    input_ids: Tensor  # (B, L_p + T) prompt ids (left-padded) then completion ids
    attention_mask: Tensor  # (B, L_p + T) 1 on real prompt tokens and valid completion tokens
    prompt_len: int  # L_p
    completion_mask: Tensor  # (B, T) bool, valid completion tokens

    @property
    def completion_ids(self) -> Tensor:
        """(B, T) the sampled tokens."""
        return self.input_ids[:, self.prompt_len:]

    def select(self, rows: Tensor | slice) -> RolloutBatch:
        """A sub-batch of rows (for micro-batches and for dropping zero-variance groups)."""
        return RolloutBatch(self.input_ids[rows], self.attention_mask[rows], self.prompt_len,
                            self.completion_mask[rows])


def encode_prompts(tokenizer: Any, conversations: list[list[dict[str, str]]],
                   device: torch.device) -> dict[str, Tensor]:
    """Chat-templated, left-padded prompt ids and attention mask, (P, L_p) each."""
    texts = [apply_chat_template(tokenizer, messages) for messages in conversations]
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                    add_special_tokens=False)
    return {"input_ids": enc["input_ids"].to(device),
            "attention_mask": enc["attention_mask"].to(device)}


def completion_mask(completions: Tensor, eos_token_id: int) -> Tensor:
    """(B, T) True for every token up to and including the first EOS."""
    is_eos = completions == eos_token_id  # (B, T)
    eos_before = (is_eos.cumsum(-1) - is_eos.long()) > 0  # (B, T) an EOS came earlier
    return ~eos_before


@torch.no_grad()
def sample(model: Any, tokenizer: Any, prompts: dict[str, Tensor], *, group_size: int,
           max_new_tokens: int, temperature: float, top_p: float,
           generator_seed: int) -> RolloutBatch:
    """G completions for each prompt (rows grouped: prompt i owns rows i*G .. i*G + G - 1).
    Seeding from `generator_seed` makes a step's samples independent of what ran before it,
    so that a resumed run samples exactly what an uninterrupted one does."""
    ids = prompts["input_ids"].repeat_interleave(group_size, dim=0)  # (B, L_p)
    attn = prompts["attention_mask"].repeat_interleave(group_size, dim=0)  # (B, L_p)
    torch.manual_seed(generator_seed)
    was_training = model.training
    model.eval()
    out = model.generate(input_ids=ids, attention_mask=attn, do_sample=True,
                         temperature=temperature, top_p=top_p, top_k=0,
                         max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)  # (B, L_p + T)
    model.train(was_training)
    prompt_len = ids.shape[1]
    mask = completion_mask(out[:, prompt_len:], tokenizer.eos_token_id)  # (B, T)
    # Tokens after EOS are padding: give them the pad id so that they are inert everywhere.
    completions = out[:, prompt_len:].masked_fill(~mask, tokenizer.pad_token_id)  # (B, T)
    input_ids = torch.cat([ids, completions], dim=1)  # (B, L)
    attention = torch.cat([attn, mask.long()], dim=1)  # (B, L)
    return RolloutBatch(input_ids, attention, prompt_len, mask)


def sequence_logits(model: Any, batch: RolloutBatch, temperature: float) -> Tensor:
    """(B, T, V) logits that predicted each completion token, divided by the sampling
    temperature (the policy that sampled them), in the model's dtype; with grad if enabled."""
    n_completion = batch.completion_mask.shape[1]  # T
    # Only the last T + 1 positions get logits: the LM head over the prompt (often most of
    # the sequence) would be wasted work and memory.
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                use_cache=False, logits_to_keep=n_completion + 1)
    logits: Tensor = out.logits[:, :n_completion]  # (B, T, V) position i predicts i + 1
    return logits / temperature if temperature != 1.0 else logits


def token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """log softmax(logits)[token] for (B, T, V) logits and (B, T) tokens -> (B, T), float32,
    row by row so that no (B, T, V) log-softmax copy is made."""
    rows = []
    for lg, tok in zip(logits, tokens, strict=True):  # (T, V), (T,)
        lg = lg.float()  # (T, V)
        picked = lg.gather(-1, tok[:, None]).squeeze(-1)  # (T,)
        rows.append(picked - torch.logsumexp(lg, dim=-1))  # (T,)
    return torch.stack(rows)  # (B, T)
