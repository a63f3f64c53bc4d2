"""The experiment's arms, their `TrainConfig`s, and the order the runs go in.

Arms (same seeds, data order, sampling seeds and budget; only the loss differs):

- `grpo`: GRPO (clipped surrogate, clip-higher 0.28), measured with PAEC's instrumentation
  at penalty weight 0. The PAEC term is then exactly 0 with no gradient
  (`PAECBatch.needs_gradient`), so this trains exactly as `use_paec = False` does
  (tests/experiments/test_arms.py checks it bit for bit on a tiny model; in the first
  experiment's records `grpo` and `paec_no_penalty` logged identical rewards, losses and
  evaluations over 2 seeds x 30 steps) while logging GRPO's masked entropy H_bar and the
  floor it would have. It is therefore also the ablation "PAEC without the penalty": one
  arm, not two, which saves three runs of the budget.
- `paec`: PAEC with its defaults (`PAECConfig()`, penalty weight 1).
- `paec_no_mask`: the penalty on all positions: `quantile = 0` with a hard mask over every
  valid position (`mask_scope = all`), so every weight is exactly 1 (the threshold is the
  smallest score); H_bar is then the mean top-p entropy of all positions.
- `grpo_entropy`: GRPO + global entropy regularisation (`loss.entropy_coef`,
  `ENTROPY_COEF`), instrumented like `grpo`.
- `paec_w<beta>`: the penalty-weight sweep, PAEC with `penalty_weight = beta`.
- The entropy baselines of 2025-2026 (issue 21), each at its authors' settings and
  instrumented like `grpo`: `ce_gppo` (CE-GPPO), `erc` (entropy ratio clipping, with two
  update epochs so that the old policy differs from the current one), `entropic` (EntroPIC's
  PI controller) and `aent` (AEnt's clamped entropy); `BASELINE_LOSSES` has their settings.

Order (`plan`): the most decisive runs first, so that a partial experiment already says the
most it can: `grpo` and `paec` at the first seed, then the other seeds pair by pair, then the
untrained policy's evaluation (the report's reference row), the two ablations, the sweep,
and the 2025-2026 baselines.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from experiments.settings import Settings
from paec.config.calibration import MaskMode, MaskScope, PAECConfig
from paec.config.loss import PolicyLossType
from paec.config.training import TrainConfig

GRPO, PAEC, NO_MASK, GLOBAL, BASE = "grpo", "paec", "paec_no_mask", "grpo_entropy", "base"
MAIN_ARMS = (GRPO, PAEC)
"""Arms that run every seed; the others run the first."""
ABLATIONS = (NO_MASK, GLOBAL)
SWEEP_PREFIX = "paec_w"

ARMS: dict[str, str] = {
    GRPO: "GRPO, with PAEC's instrumentation at penalty weight 0 (trains exactly as GRPO; "
          "also 'PAEC without the penalty')",
    PAEC: "PAEC with its defaults (penalty weight 1)",
    NO_MASK: "PAEC's penalty on all positions (every mask weight 1)",
    GLOBAL: "GRPO + global entropy regularisation (loss.entropy_coef 0.01)",
    "ce_gppo": "CE-GPPO: bounded gradients for clipped tokens (arXiv 2509.20712)",
    "erc": "ERC: entropy ratio clipping, 2 update epochs (arXiv 2512.05591)",
    "entropic": "EntroPIC: PI-controlled entropy toward H* = 1.0 (arXiv 2511.15248)",
    "aent": "AEnt: clamped-entropy bonus (arXiv 2509.03493)",
}
"""The fixed arms and what each is; the sweep's arms are `paec_w<beta>`."""

BASELINE_LOSSES: dict[str, dict[str, Any]] = {
    "ce_gppo": {"loss_type": PolicyLossType.CE_GPPO, "ce_gppo_beta1": 0.75,
                "ce_gppo_beta2": 1.0, "clip_low": 0.2, "clip_high": 0.2, "dual_clip": 10.0},
    "erc": {"loss_type": PolicyLossType.ERC, "erc_low": 0.95, "erc_high": 1.05,
            "clip_low": 0.2, "clip_high": 0.28, "dual_clip": 10.0},
    "entropic": {"loss_type": PolicyLossType.ENTROPIC, "entropic_target": 1.0,
                 "entropic_kp": 1.0, "entropic_ki": 0.01, "entropic_high_prob": 0.95,
                 "clip_low": 0.2, "clip_high": 0.2, "dual_clip": 3.0},
    "aent": {"loss_type": PolicyLossType.AENT, "aent_coef": 0.001, "aent_clamp": 0.2},
}
"""The `loss` settings of the 2025-2026 baselines: their authors' scripts (CE-GPPO's 7B
script, ERC's training scripts, EntroPIC's run script, AReaL's AEntConfig defaults), except
EntroPIC's target entropy H*: the authors' 0.1 nats was set for Qwen3-8B sampled at
temperature 0.6; SmolLM2 here starts near 2.5 nats (full entropy, step 1 of `grpo`) and
GRPO takes it to 0.1 by the end, so H* = 1.0 asks the controller to hold it about where GRPO
passes on its way down. [ours]"""
BASELINE_EPOCHS = {"erc": 2}
"""update_epochs of a baseline arm, where its method needs more than one: ERC's entropy ratio
is exactly 1 in a single on-policy epoch (paec.training.entropy_losses)."""

ENTROPY_COEF = 0.01
"""entropy_coef of `grpo_entropy`. Used values range from 1e-3 (verl's former default) to
1e-2; we take the upper end, which moved entropy visibly in the first experiment without
dominating the policy gradient. [ours]"""

HARD_EVAL = (GRPO, PAEC, BASE)
"""Arms evaluated on the harder set too. The ablations and the sweep are judged on the
held-out set only: the hard set answers the generalisation question of the main
comparison, and 800 completions per run are about 4 minutes of the budget."""

SMOKE_GRADER: dict[str, Any] = {
    "type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
    "reference": "{{item.prompt}}", "evaluation_metric": "fuzzy_match"}
"""The smoke preset's reward: a random tiny model never answers a sum, so with the
math-verify grader every group would have zero variance and no update would run."""


@dataclass(frozen=True, order=True)
class Run:
    """One run of the experiment: an arm at a seed (`base`: the untrained policy's
    evaluation)."""

    arm: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.arm}-seed{self.seed}"


def sweep_arm(weight: float) -> str:
    return f"{SWEEP_PREFIX}{weight:g}"


def plan(s: Settings) -> list[Run]:
    """Every run of the experiment, most decisive first (see the module docstring); with
    `--arms`, only those arms, in the same order."""
    first = s.seeds[0]
    runs = [Run(arm, seed) for seed in s.seeds for arm in MAIN_ARMS]
    runs.append(Run(BASE, first))
    runs += [Run(arm, first) for arm in ABLATIONS]
    runs += [Run(sweep_arm(w), first) for w in s.sweep]
    runs += [Run(arm, first) for arm in BASELINE_LOSSES]
    return [r for r in runs if not s.arms or r.arm in s.arms]


def base_config(s: Settings, seed: int, train_file: Path, output_dir: Path) -> TrainConfig:
    """The settings every arm shares."""
    smoke: dict[str, Any] = {}
    if s.smoke:
        # The anchor freezes after one step so that the floor and penalty paths run.
        smoke = {"grader": SMOKE_GRADER, "paec": PAECConfig(anchor_steps=1)}
    return TrainConfig(
        model=s.model, train_data=str(train_file), validation_data=None,
        output_dir=str(output_dir), seed=seed, device=s.device, steps=s.steps,
        prompts_per_step=s.prompts_per_step, group_size=s.group_size,
        max_new_tokens=s.max_new_tokens, micro_batch_size=s.micro_batch_size,
        learning_rate=s.learning_rate, eval_k=s.k, **smoke)


def arm_config(arm: str, base: TrainConfig) -> TrainConfig:
    """`base` with the arm's loss (see the module docstring)."""
    silent = replace(base.paec, penalty_weight=0.0)
    if arm in (GRPO, BASE):
        return replace(base, use_paec=True, paec=silent)
    if arm == GLOBAL:
        return replace(base, use_paec=True, paec=silent,
                       loss=replace(base.loss, entropy_coef=ENTROPY_COEF))
    if arm in BASELINE_LOSSES:
        return replace(base, use_paec=True, paec=silent,
                       update_epochs=BASELINE_EPOCHS.get(arm, base.update_epochs),
                       loss=replace(base.loss, **BASELINE_LOSSES[arm]))
    if arm == PAEC:
        return replace(base, use_paec=True)
    if arm == NO_MASK:
        return replace(base, use_paec=True,
                       paec=replace(base.paec, quantile=0.0, mask_mode=MaskMode.HARD,
                                    mask_scope=MaskScope.ALL))
    weight = penalty_weight(arm)
    if weight is not None:
        return replace(base, use_paec=True, paec=replace(base.paec, penalty_weight=weight))
    raise ValueError(f"unknown arm {arm!r}; known: {', '.join(ARMS)}, {SWEEP_PREFIX}<weight>")


def penalty_weight(arm: str) -> float | None:
    """The weight of a sweep arm `paec_w<beta>` (None for any other arm)."""
    if not arm.startswith(SWEEP_PREFIX):
        return None
    try:
        return float(arm.removeprefix(SWEEP_PREFIX))
    except ValueError:
        return None


def describe(arm: str) -> str:
    """One line saying what the arm is."""
    weight = penalty_weight(arm)
    if weight is not None:
        return f"PAEC with penalty weight {weight:g} (the sweep)"
    return ARMS.get(arm, "the untrained policy, evaluated once" if arm == BASE else arm)
