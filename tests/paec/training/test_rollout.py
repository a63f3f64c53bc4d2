"""paec.training.rollout: completion masks, the logits of completion tokens, their log-probs."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from paec.calibration.scores import token_scores
from paec.modeling.loader import tiny_model
from paec.training.rollout import (
    completion_logits,
    completion_mask,
    encode_prompts,
    sample,
    sample_tokens,
    sequence_logits,
)


def test_completion_mask_keeps_the_first_eos() -> None:
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 2, 2, 2]])
    assert completion_mask(ids, eos_token_id=2).tolist() == [
        [True, True, False, False], [True, True, True, True], [True, False, False, False]]


def test_sequence_logits_are_the_full_forward_at_completion_positions(
    smollm2_tokenizer: PreTrainedTokenizerBase,
) -> None:
    model = tiny_model(smollm2_tokenizer, n_layer=1, n_embd=32)
    prompts = encode_prompts(smollm2_tokenizer, [[{"role": "user", "content": "1 + 1?"}],
                                                 [{"role": "user", "content": "Hi"}]],
                             torch.device("cpu"))
    roll = sample(model, smollm2_tokenizer, prompts, group_size=3, max_new_tokens=6,
                  temperature=0.7, top_p=1.0, generator_seed=1)
    assert roll.input_ids.shape[0] == 6 and roll.completion_mask.shape == (6, 6)
    with torch.no_grad():
        got = sequence_logits(model, roll, temperature=0.7)  # (B, T, V)
        full = model(input_ids=roll.input_ids, attention_mask=roll.attention_mask).logits
    want = full[:, roll.prompt_len - 1:-1] / 0.7
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the trainer's log-probs: raw logits, the temperature inside
        logp = token_scores(completion_logits(model, roll), roll.completion_ids,
                            roll.completion_mask, temperature=0.7).logp
    ref = torch.log_softmax(want, -1).gather(-1, roll.completion_ids[..., None]).squeeze(-1)
    mask = roll.completion_mask
    torch.testing.assert_close(logp[mask], ref[mask], atol=1e-5, rtol=1e-5)


def test_sampling_is_reproducible_from_its_seed(smollm2_tokenizer: PreTrainedTokenizerBase) -> None:
    model = tiny_model(smollm2_tokenizer, n_layer=1, n_embd=32)
    prompts = encode_prompts(smollm2_tokenizer, [[{"role": "user", "content": "2 + 2?"}]],
                             torch.device("cpu"))
    a, b, c = (sample(model, smollm2_tokenizer, prompts, group_size=4, max_new_tokens=5,
                      temperature=1.0, top_p=1.0, generator_seed=s) for s in (3, 3, 4))
    assert torch.equal(a.input_ids, b.input_ids) and not torch.equal(a.input_ids, c.input_ids)


def test_sample_tokens_follows_the_distribution_and_top_p() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05, 0.0]]))
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_tokens(logits, 1.0, gen) for _ in range(20_000)])
    freq = torch.bincount(draws.view(-1), minlength=5).double() / draws.numel()
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0],
                                                  dtype=torch.float64), atol=0.015, rtol=0)
    nucleus = torch.stack([sample_tokens(logits, 0.7, gen) for _ in range(2_000)])
    assert set(nucleus.view(-1).tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.7: two tokens


def test_decoding_steps_see_the_full_forward_logits(
    smollm2_tokenizer: PreTrainedTokenizerBase,
) -> None:
    model = tiny_model(smollm2_tokenizer, n_layer=2, n_embd=32)
    # Prompts of different lengths: left padding and positions must match a full forward.
    prompts = encode_prompts(smollm2_tokenizer, [[{"role": "user", "content": "7 + 8 = ?"}],
                                                 [{"role": "user", "content": "A longer one, "
                                                   "with more words in it?"}]],
                             torch.device("cpu"))
    seen: list[torch.Tensor] = []
    roll = sample(model, smollm2_tokenizer, prompts, group_size=2, max_new_tokens=7,
                  temperature=0.8, top_p=1.0, generator_seed=5,
                  on_step=lambda logits, alive: seen.append(logits.clone()))
    stepwise = torch.stack(seen, dim=1)  # (B, T, V)
    with torch.no_grad():
        full = sequence_logits(model, roll, temperature=0.8)  # (B, T, V)
    mask = roll.completion_mask
    torch.testing.assert_close(stepwise[mask], full[mask], atol=1e-4, rtol=1e-4)
