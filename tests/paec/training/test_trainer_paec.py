"""PAEC through the real trainer, where unit tests of the pieces cannot look: the whole
optimisation batch's mask and 80/20 thresholds under micro-batching, an update that raises
top-p entropy at the masked positions and nowhere else, and the anchor over several steps.

The model is a tiny random Llama whose final norm is scaled by 25, so that its logits are
sharp: about half of its positions have a one-token top-p nucleus, the regime of a trained
policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from paec.calibration.anchor import AnchorState
from paec.calibration.features import TokenFeatures, token_features
from paec.calibration.penalty import PAECBatch
from paec.calibration.scores import token_scores
from paec.config.calibration import PAECConfig
from paec.config.loss import PolicyLossConfig
from paec.config.training import TrainConfig
from paec.modeling.loader import tiny_model
from paec.training.engines import Rollout
from paec.training.rollout import RolloutBatch, completion_logits, encode_prompts, sample
from paec.training.trainer import Trainer

FUZZY = {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
         "reference": "{{item.prompt}}", "evaluation_metric": "fuzzy_match"}
SHARPNESS = 25.0  # the final norm's scale: logits x 25


@pytest.fixture(scope="module")
def sharp_dir(tmp_path_factory: pytest.TempPathFactory,
              smollm2_tokenizer: PreTrainedTokenizerBase) -> Path:
    folder = tmp_path_factory.mktemp("sharp")
    # seed 1: about half its sampled positions have a one-token nucleus, the rest nuclei of
    # a few tokens, and its groups' samples differ (some seeds repeat one token forever).
    model = tiny_model(smollm2_tokenizer, n_layer=2, n_embd=32, n_head=2, seed=1)
    with torch.no_grad():
        model.model.norm.weight.mul_(SHARPNESS)
    model.save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    return folder


def config(model_dir: Path, out: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        model=str(model_dir), train_data="builtin:add", train_size=16, grader=FUZZY,
        output_dir=str(out), steps=1, prompts_per_step=2, group_size=4, max_new_tokens=12,
        micro_batch_size=8, learning_rate=1e-3, seed=0, device="cpu",
        paec=PAECConfig(anchor_steps=1, floor_ratio=1.0))
    base.update(kw)
    return TrainConfig(**base)


def force_floor(trainer: Trainer, floor: float) -> None:
    """Freeze the anchor so that the floor is `floor`: with a floor above every H_bar the
    hinge is active from the first step."""
    cfg = trainer.cfg.paec
    trainer.anchor = AnchorState(cfg.anchor_steps, cfg.floor_ratio,
                                 steps_seen=cfg.anchor_steps, total=0.0,
                                 anchor=floor / cfg.floor_ratio)


class GradientSpy:
    """A pre-step hook on the optimiser: a copy of the gradients of every step it takes."""

    def __init__(self, trainer: Trainer) -> None:
        self.grads: list[dict[str, Tensor]] = []
        self._model = trainer.model
        trainer.optimizer.register_step_pre_hook(self)

    def __call__(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.grads.append({n: p.grad.detach().clone() for n, p in self._model.named_parameters()
                           if p.grad is not None})


# ----------------------------------------------------------------- whole-batch statistics

@pytest.mark.slow
def test_mask_thresholds_loss_and_gradients_do_not_depend_on_the_micro_batch_size(
        sharp_dir: Path, tmp_path: Path) -> None:
    """Eight rows split into micro-batches of 1, 3 and 8: the PAEC mask's quantile and the
    80/20 entropy threshold are the whole batch's, so every loss, metric and gradient is the
    same (up to float summation order)."""
    runs = []
    for size in (1, 3, 8):
        trainer = Trainer(config(sharp_dir, tmp_path / str(size), micro_batch_size=size,
                                 loss=PolicyLossConfig(high_entropy_quantile=0.8)))
        force_floor(trainer, 10.0)
        spy = GradientSpy(trainer)
        metrics, _ = trainer.train_step(1)
        assert len(spy.grads) == 1  # one optimiser step, accumulated over the micro-batches
        runs.append((metrics, spy.grads[0]))
    (m_ref, g_ref) = runs[-1]
    assert m_ref["paec/penalty"] > 0 and m_ref["loss/paec"] > 0  # the hinge is active
    assert 0 < m_ref["paec/decision_frac"] < 1  # a mix of decisions and one-token nuclei
    assert 0 < m_ref["policy/high_entropy_frac"] < 0.5
    for metrics, grads in runs[:-1]:
        for key in ("paec/score_threshold", "paec/mask_mean", "entropy/masked",
                    "policy/high_entropy_frac", "loss/policy", "loss/paec", "loss/total",
                    "train/grad_norm"):
            assert metrics[key] == pytest.approx(m_ref[key], rel=1e-5, abs=1e-8), key
        assert grads.keys() == g_ref.keys()
        for name in grads:
            torch.testing.assert_close(grads[name], g_ref[name], rtol=1e-4, atol=1e-7,
                                       msg=name)


@pytest.mark.slow
def test_the_anchor_averages_the_first_k_training_steps_whatever_the_update_epochs(
        sharp_dir: Path, tmp_path: Path) -> None:
    """anchor_steps = 2 with 2 update epochs per step: the anchor is the mean of steps 1 and
    2's H_bar (one observation per training step, not per optimiser step), the penalty is
    off during them, and from step 3 the floor is rho_min times that mean."""
    trainer = Trainer(config(sharp_dir, tmp_path, steps=4, update_epochs=2,
                             paec=PAECConfig(anchor_steps=2, floor_ratio=0.9)))
    history = trainer.train().history
    assert [m["paec/active"] for m in history] == [0.0, 0.0, 1.0, 1.0]
    anchor = (history[0]["entropy/masked"] + history[1]["entropy/masked"]) / 2
    assert trainer.anchor.steps_seen == 2
    assert trainer.anchor.anchor == pytest.approx(anchor, rel=1e-9)
    for m in history[2:]:
        assert m["paec/anchor"] == pytest.approx(anchor, rel=1e-9)
        assert m["paec/floor"] == pytest.approx(0.9 * anchor, rel=1e-9)
    assert "paec/floor" not in history[0] and history[0]["paec/penalty"] == 0.0


# ----------------------------------------------------------------- where PAEC acts

def rollout(trainer: Trainer) -> RolloutBatch:
    cfg = trainer.cfg
    examples = trainer.cursor.next_batch(cfg.prompts_per_step)
    prompts = encode_prompts(trainer.tokenizer, [e.messages for e in examples], trainer.device)
    return sample(trainer.model, trainer.tokenizer, prompts, group_size=cfg.group_size,
                  max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                  top_p=cfg.top_p, generator_seed=0)


def current_features(trainer: Trainer, roll: RolloutBatch) -> tuple[Tensor, TokenFeatures]:
    """Entropy (B, T) and features ((B, T) fields) of the rollout's positions under the
    current parameters, as the sampler reports them."""
    with torch.no_grad():
        logits = completion_logits(trainer.model, roll)[:, :-1].float()  # (B, T, V)
    b, t, v = logits.shape
    feats = token_features(logits.reshape(b * t, v) / trainer.cfg.temperature,
                           trainer.cfg.paec.top_p)  # (B * T,) fields
    shaped = TokenFeatures(*(x.reshape(b, t) for x in feats.tensors()))
    return shaped.entropy, shaped


@pytest.mark.slow
def test_a_paec_update_raises_top_p_entropy_at_the_masked_positions(
        sharp_dir: Path, tmp_path: Path) -> None:
    """The PAEC term alone (advantages 0, so the policy term has no gradient), hinge active:
    five real optimiser steps of the trainer's update raise H^p where the mask's weight is
    high and raise H_bar; positions with a one-token nucleus (weight 0) are not what moved."""
    trainer = Trainer(config(sharp_dir, tmp_path, learning_rate=3e-3))
    force_floor(trainer, 10.0)
    roll = rollout(trainer)
    mask = roll.completion_mask
    adv = torch.zeros(mask.shape[0])
    _, before = current_features(trainer, roll)
    start = PAECBatch.build(before.select(mask), trainer.anchor, trainer.cfg.paec)
    assert start.masked_entropy is not None
    weights = start.mask.weights  # (n_valid,)
    selected = weights > 0.5  # (n_valid,)
    assert 0 < int(selected.sum()) < int(start.mask.candidates.sum())
    h_bars = [start.masked_entropy]
    for _ in range(5):
        entropy, feats = current_features(trainer, roll)
        metrics, _ = trainer._update(Rollout(roll, entropy, feats), adv)
        assert metrics["loss/policy"] == 0.0 and metrics["loss/paec"] > 0
        h_bars.append(PAECBatch.build(current_features(trainer, roll)[1].select(mask),
                                      trainer.anchor, trainer.cfg.paec).masked_entropy or 0.0)
    after = current_features(trainer, roll)[1].select(mask)
    rise = after.top_p_entropy - before.select(mask).top_p_entropy  # (n_valid,)
    assert h_bars[-1] > h_bars[0]  # H_bar moved towards the floor
    assert float(rise[selected].mean()) > 0  # H^p rose where the mask is on


@pytest.mark.slow
def test_positions_without_weight_get_no_gradient_from_the_paec_term(
        sharp_dir: Path, tmp_path: Path) -> None:
    """d(PAEC term)/d(logits) is exactly 0 at every position whose mask weight is 0 (a
    one-token nucleus: scope `decision`), and nonzero at the selected ones."""
    trainer = Trainer(config(sharp_dir, tmp_path))
    force_floor(trainer, 10.0)
    roll = rollout(trainer)
    mask = roll.completion_mask
    _, feats_bt = current_features(trainer, roll)
    feats = feats_bt.select(mask)  # (n_valid,)
    batch = PAECBatch.build(feats, trainer.anchor, trainer.cfg.paec)
    assert batch.needs_gradient
    with torch.no_grad():
        logits = completion_logits(trainer.model, roll)
    logits = logits.detach().requires_grad_(True)  # (B, T + 1, V)
    scores = token_scores(logits, roll.completion_ids, mask,
                          temperature=trainer.cfg.temperature, entropy=False,
                          nucleus_size=feats.nucleus_size,
                          nucleus_min_logit=feats.nucleus_min_logit)
    assert scores.top_p_entropy is not None
    batch.loss(scores.top_p_entropy, slice(None))[0].backward()
    assert logits.grad is not None
    grad_rows = logits.grad[:, :-1][mask].abs().amax(-1)  # (n_valid,)
    unweighted = batch.mask.weights == 0
    assert int(unweighted.sum()) > 0 and bool((feats.nucleus_size[unweighted] == 1).all())
    assert bool((grad_rows[unweighted] == 0).all())
    assert bool((grad_rows[batch.mask.weights > 0.5] > 0).all())
