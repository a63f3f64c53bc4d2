"""The trainer with `rollout_engine: "vllm"` (issue 20): a few real steps of a tiny model whose
rollouts vLLM samples in its own process. After every step the engine's log-probs of a fixed
sequence equal the trainer's (the new weights reached the engine: verl #7495 sampled the
initial policy forever with LoRA) and the importance ratio stays near 1.

Needs the vLLM virtualenv (`make vllm-venv`, or PAEC_VLLM_PYTHON): marked `vllm`, run with
PAEC_VLLM=1 (README, "vLLM rollouts")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from paec.config.calibration import PAECConfig
from paec.config.training import TrainConfig
from paec.modeling.loader import tiny_model
from paec.training.callbacks import Callback
from paec.training.trainer import Trainer

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

FUZZY = {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
         "reference": "{{item.prompt}}", "evaluation_metric": "fuzzy_match"}
TOLERANCE = 2e-3
"""Largest |log pi_engine - log pi_trainer| accepted on a token, float32 on the CPU."""


@pytest.fixture(scope="module")
def wide_dir(tmp_path_factory: pytest.TempPathFactory,
             smollm2_tokenizer: PreTrainedTokenizerBase) -> Path:
    """A tiny model vLLM's CPU attention takes (head_dim 32: it refuses the suite's 16)."""
    folder = tmp_path_factory.mktemp("tiny-vllm")
    tiny_model(smollm2_tokenizer, n_layer=2, n_embd=64, n_head=2, seed=0).save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    return folder


def trainer_logprobs(model: Any, ids: list[int], temperature: float) -> torch.Tensor:
    """log pi(ids[i] | ids[:i]) for i >= 1 under `model`, (len(ids) - 1,)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float() / temperature
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


class SyncCheck(Callback):
    """After each step: the engine's and the trainer's log-probs of `ids`."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids
        self.trainer: Trainer | None = None
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.metrics: list[dict[str, float]] = []

    def logprobs(self) -> tuple[torch.Tensor, torch.Tensor]:
        trainer = self.trainer
        assert trainer is not None
        client = trainer.engine.client  # type: ignore[attr-defined]
        engine = torch.tensor(client.sequence_logprobs(self.ids, trainer.cfg.temperature))
        return engine, trainer_logprobs(trainer.model, self.ids, trainer.cfg.temperature)

    def on_step_end(self, step: int, metrics: dict[str, float],
                    traces: list[dict[str, Any]]) -> None:
        self.metrics.append(metrics)
        self.pairs.append(self.logprobs())


# peft 0.21 still reads transformers' deprecated `is_gradient_checkpointing` when it wraps a
# model (as in test_trainer.py's LoRA tests).
@pytest.mark.parametrize("lora_rank", [0, pytest.param(4, marks=pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"))])
def test_vllm_rollouts_train_and_the_engine_follows_the_weights(
        wide_dir: Path, tmp_path: Path, lora_rank: int) -> None:
    cfg = TrainConfig(
        model=str(wide_dir), train_data="builtin:add", train_size=16, grader=FUZZY,
        output_dir=str(tmp_path / "run"), steps=3, prompts_per_step=2, group_size=4,
        max_new_tokens=8, micro_batch_size=4, learning_rate=5e-2 if lora_rank else 1e-2,
        update_epochs=2,  # the old policy's log-probs come from the scoring pass
        seed=0, device="cpu", temperature=0.9, lora_rank=lora_rank,
        paec=PAECConfig(anchor_steps=1, floor_ratio=1.0), rollout_engine="vllm",
        vllm_max_model_len=256, vllm_kv_cache_gib=0.25)
    ids = list(range(100, 140))  # a fixed sequence of 40 tokens
    check = SyncCheck(ids)
    with Trainer(cfg, [check]) as trainer:
        check.trainer = trainer
        engine0, trainer0 = check.logprobs()
        assert float((engine0 - trainer0).abs().max()) < TOLERANCE
        trainer.train()

    assert len(check.pairs) == 3
    for step, (engine, mine) in enumerate(check.pairs, start=1):
        gap = float((engine - mine).abs().max())
        assert gap < TOLERANCE, f"step {step}: engine and trainer differ by {gap}"
    moved = float((check.pairs[-1][1] - trainer0).abs().max())
    assert moved > 50 * TOLERANCE  # the policy changed: equal log-probs mean a real sync
    for m in check.metrics:
        if "train/skipped" in m:
            continue
        assert m["rollout/is_ratio_mean"] == pytest.approx(1.0, abs=0.01)
        assert m["rollout/is_ratio_max"] < 1.05
        assert m["rollout/is_truncated_frac"] == 0.0
        assert m["rollout/logp_diff_abs_mean"] < TOLERANCE
