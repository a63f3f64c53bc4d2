"""experiments.arms: the run order puts the decisive runs first, the arms differ only as
designed, and the `grpo` arm (GRPO with PAEC's instrumentation at penalty weight 0) trains
bit for bit as plain GRPO, which is why it also stands for "PAEC without the penalty"."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from experiments.arms import (
    BASE,
    BASELINE_LOSSES,
    GLOBAL,
    GRPO,
    NO_MASK,
    PAEC,
    SMOKE_GRADER,
    Run,
    arm_config,
    penalty_weight,
    plan,
    sweep_arm,
)
from experiments.tasks import ProblemSets, generate, write_sets
from paec.config.calibration import PAECConfig
from paec.config.training import TrainConfig
from paec.training.trainer import Trainer
from tests.experiments.synthetic import smoke_settings


def test_the_decisive_runs_come_first_then_seeds_then_ablations_then_the_sweep(
        tmp_path: Path) -> None:
    s = smoke_settings(tmp_path, seeds=(0, 1, 2), sweep=(0.3, 3.0, 10.0))
    assert [r.name for r in plan(s)] == [
        "grpo-seed0", "paec-seed0", "grpo-seed1", "paec-seed1", "grpo-seed2", "paec-seed2",
        "base-seed0", "paec_no_mask-seed0", "grpo_entropy-seed0",
        "paec_w0.3-seed0", "paec_w3-seed0", "paec_w10-seed0",
        "ce_gppo-seed0", "erc-seed0", "entropic-seed0", "aent-seed0"]
    only = replace(s, arms=("paec", "paec_w3"))
    assert plan(only) == [Run(PAEC, 0), Run(PAEC, 1), Run(PAEC, 2), Run("paec_w3", 0)]


def test_the_arms_differ_only_in_their_loss() -> None:
    base = TrainConfig(paec=PAECConfig(anchor_steps=1))
    configs = {arm: arm_config(arm, base) for arm in
               (GRPO, PAEC, NO_MASK, GLOBAL, BASE, sweep_arm(3.0))}
    assert configs[GRPO].use_paec and configs[GRPO].paec.penalty_weight == 0
    assert configs[BASE] == configs[GRPO]
    assert configs[PAEC].paec == base.paec
    assert configs[GLOBAL].loss.entropy_coef > 0 and configs[GLOBAL].paec.penalty_weight == 0
    assert configs[NO_MASK].paec.quantile == 0 and configs[NO_MASK].paec.mask_scope == "all"
    assert configs["paec_w3"].paec.penalty_weight == 3.0 and penalty_weight("paec_w3") == 3.0
    for cfg in configs.values():  # everything else is the shared base
        assert replace(cfg, use_paec=True, paec=base.paec, loss=base.loss) == base
    with pytest.raises(ValueError, match="unknown arm"):
        arm_config("paec_wx", base)


def test_the_2025_baselines_change_the_loss_and_erc_its_epochs_only() -> None:
    base = TrainConfig(paec=PAECConfig(anchor_steps=1))
    for arm, loss in BASELINE_LOSSES.items():
        cfg = arm_config(arm, base)
        assert cfg.loss.loss_type == loss["loss_type"] == arm
        assert cfg.use_paec and cfg.paec.penalty_weight == 0  # instrumented, as grpo
        assert cfg.update_epochs == (2 if arm == "erc" else base.update_epochs)
        assert replace(cfg, use_paec=True, paec=base.paec, loss=base.loss,
                       update_epochs=base.update_epochs) == base


def _train(cfg: TrainConfig) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    trainer = Trainer(cfg)
    result = trainer.train()
    return result.history, {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.slow
def test_grpo_with_paec_instrumentation_trains_bit_for_bit_as_plain_grpo(
        tiny_dir: Path, tmp_path: Path) -> None:
    rows = generate("sums", 16, 0)
    data = write_sets(tmp_path / "data", ProblemSets(rows, rows[:1], rows[:1]))
    kw: dict[str, Any] = dict(
        model=str(tiny_dir), train_data=str(data), grader=SMOKE_GRADER, steps=3,
        prompts_per_step=2, group_size=4, max_new_tokens=6, micro_batch_size=4,
        learning_rate=1e-3, device="cpu",
        # the floor is the anchor itself from step 2, so H_bar falls below it at some steps
        paec=PAECConfig(anchor_steps=1, floor_ratio=1.0))
    plain, plain_w = _train(TrainConfig(**kw, use_paec=False, output_dir=str(tmp_path / "a")))
    base = TrainConfig(**kw, output_dir=str(tmp_path / "b"))
    grpo, grpo_w = _train(arm_config(GRPO, base))
    assert "entropy/masked" in grpo[-1] and "paec/floor" in grpo[-1]  # instrumented
    for p, g in zip(plain, grpo, strict=True):
        for name in ("reward/mean", "loss/policy", "train/grad_norm", "completion/length_mean"):
            assert p[name] == g[name], name
    assert all(torch.equal(plain_w[k], grpo_w[k]) for k in plain_w)
    # The comparison sees a PAEC term that has a gradient: a bonus on H_bar moves the weights.
    bonus = replace(base, output_dir=str(tmp_path / "c"),
                    paec=replace(base.paec, entropy_bonus=1.0))
    _, bonus_w = _train(bonus)
    assert not all(torch.equal(plain_w[k], bonus_w[k]) for k in plain_w)
