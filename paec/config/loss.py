"""The policy loss's configuration: loss types, aggregations and their knobs.

Kept apart from the tensor functions in `paec.training.losses` so that configurations can be
built and validated without torch (the service validates job hyperparameters with them).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from paec.config.checks import is_finite_number, parse_enum, require, require_finite


class PolicyLossType(StrEnum):
    """Which per-token policy surrogate to use."""

    GRPO = "grpo"
    """PPO clipped surrogate with separate low/high clip bounds (clip-higher, DAPO)."""
    CLIP_COV = "clip_cov"
    """GRPO, plus the gradient of a random few high-covariance tokens removed (arXiv 2505.22617)."""
    KL_COV = "kl_cov"
    """Unclipped -A r, plus |logp - old_logp| on the top covariance tokens (arXiv 2505.22617)."""
    CISPO = "cispo"
    """Clipped, detached importance weight times REINFORCE (MiniMax-M1, arXiv 2506.13585)."""


class LossAggregation(StrEnum):
    """How per-token losses are reduced to a scalar."""

    TOKEN_MEAN = "token-mean"
    """sum of all valid token losses / number of valid tokens (DAPO's token-level loss)."""
    SEQ_MEAN_TOKEN_MEAN = "seq-mean-token-mean"
    """mean over sequences of each sequence's token mean (original GRPO)."""
    SEQ_MEAN_TOKEN_SUM_NORM = "seq-mean-token-sum-norm"
    """mean over sequences of each sequence's token sum / a constant max length (Dr. GRPO,
    arXiv 2503.20783)."""


@dataclass(frozen=True)
class PolicyLossConfig:
    """Hyperparameters of the policy loss (the baselines' knobs; PAEC's live in PAECConfig)."""

    loss_type: PolicyLossType = PolicyLossType.GRPO
    """Per-token surrogate."""
    clip_low: float = 0.2
    """eps_low: the ratio is clipped below at 1 - eps_low (GRPO, Clip-Cov). In [0, 1)."""
    clip_high: float = 0.28
    """eps_high: the ratio is clipped above at 1 + eps_high (GRPO, Clip-Cov, CISPO). DAPO uses
    0.28 for GRPO; MiniMax-M1 uses a much larger bound for CISPO. >= 0."""
    aggregation: LossAggregation = LossAggregation.TOKEN_MEAN
    """Reduction of per-token losses to a scalar."""
    kl_coef: float = 0.0
    """beta of the per-token k3 KL to a reference model added to the loss; 0 turns it off. >= 0."""
    entropy_coef: float = 0.0
    """Global entropy regularisation: loss -= entropy_coef * aggregate(entropy); 0 turns it
    off. >= 0."""
    high_entropy_quantile: float | None = None
    """80/20 (arXiv 2506.01939): the policy gradient only on tokens whose entropy is >= this
    quantile of the valid tokens' entropies; 0.8 keeps the top 20%. None turns it off. [0, 1]."""
    clip_cov_ratio: float = 2e-4
    """Clip-Cov: fraction r of valid tokens whose gradient is removed. (0, 1]."""
    clip_cov_lb: float = 1.0
    """Clip-Cov: lower bound of the covariance band (exclusive). < clip_cov_ub."""
    clip_cov_ub: float = 5.0
    """Clip-Cov: upper bound of the covariance band (exclusive). > clip_cov_lb."""
    kl_cov_ratio: float = 2e-4
    """KL-Cov: fraction k of valid tokens, the top by covariance, that get the KL term. (0, 1]."""
    kl_cov_coef: float = 1.0
    """KL-Cov: coefficient of |logp - old_logp| on the selected tokens. >= 0."""

    def __post_init__(self) -> None:
        # The enums may arrive as plain strings from JSON; normalise them here, in one place.
        for name, cls in (("loss_type", PolicyLossType), ("aggregation", LossAggregation)):
            value = parse_enum(cls, getattr(self, name), f"PolicyLossConfig.{name}")
            object.__setattr__(self, name, value)
        where = "PolicyLossConfig."
        # Every float finite: an int past the float range or an inf would only
        # fail later, inside a training step.
        require_finite(self.clip_low, where + "clip_low", "in [0, 1)",
                       0.0 <= self.clip_low < 1.0)
        for name in ("clip_high", "kl_coef", "entropy_coef", "kl_cov_coef"):
            value = getattr(self, name)
            require_finite(value, where + name, ">= 0", value >= 0.0)
        for name in ("clip_cov_ratio", "kl_cov_ratio"):
            value = getattr(self, name)
            require_finite(value, where + name, "in (0, 1]", 0.0 < value <= 1.0)
        q = self.high_entropy_quantile
        require(q is None or 0.0 <= q <= 1.0, where + "high_entropy_quantile",
                "must be in [0, 1] or None", q)
        lb, ub = self.clip_cov_lb, self.clip_cov_ub
        require(is_finite_number(lb) and is_finite_number(ub) and lb < ub,
                where + "clip_cov_lb", "must be finite and < clip_cov_ub", (lb, ub))
