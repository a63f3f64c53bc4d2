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
    CE_GPPO = "ce_gppo"
    """Dual-clip PPO whose out-of-clip tokens keep a bounded gradient (arXiv 2509.20712)."""
    ERC = "erc"
    """Dual-clip PPO, a gradient only where H(pi) / H(pi_old) is in a band (arXiv 2512.05591)."""
    ENTROPIC = "entropic"
    """Dual-clip PPO plus a PI-controlled term on high-probability tokens (arXiv 2511.15248)."""
    AENT = "aent"
    """GRPO plus a bonus on the entropy of the vocabulary's top logits (AEnt, arXiv 2509.03493)."""


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
    dual_clip: float = 3.0
    """c of dual-clip PPO (arXiv 1912.09729) in CE-GPPO, ERC and EntroPIC, whose code builds
    on verl's surrogate: for A < 0 the per-token loss is at most -c A. verl's default
    `clip_ratio_c` 3.0 (EntroPIC's runs); the CE-GPPO and ERC scripts set 10.0. > 1."""
    ce_gppo_beta1: float = 0.75
    """CE-GPPO: beta_1, the gradient scale of tokens with A < 0 below 1 - clip_low. 0.75 is
    the default of `compute_gppo_loss_general_beta` in the authors' README and their 7B
    script (their 1.5B script: 0.5). >= 0."""
    ce_gppo_beta2: float = 1.0
    """CE-GPPO: beta_2, the gradient scale of tokens with A > 0 above 1 + clip_high (authors'
    default and scripts: 1.0). >= 0."""
    erc_low: float = 0.95
    """ERC: lower bound l of the entropy ratio band (l, h), exclusive. 0.95 in every ERC
    training script of the authors (their config's default is 0.8). In [0, erc_high)."""
    erc_high: float = 1.05
    """ERC: upper bound h of the band, exclusive (authors' scripts: 1.05; config default
    1.2). > erc_low."""
    entropic_target: float = 0.1
    """EntroPIC: target entropy H* of the PI controller (authors' run_entropic.sh: 0.1).
    >= 0."""
    entropic_kp: float = 1.0
    """EntroPIC: proportional gain K_p (authors' config and script: 1). >= 0."""
    entropic_ki: float = 0.01
    """EntroPIC: integral gain K_i (authors' config and script: 0.01). >= 0."""
    entropic_high_prob: float = 0.95
    """EntroPIC: the extra term covers tokens with pi_theta(y_t) > this (authors' default
    `high_prob_thresh`). In (0, 1)."""
    aent_coef: float = 0.001
    """AEnt: coefficient of the clamped-entropy bonus (the default of AReaL's AEntConfig; its
    GSM8K example uses 0.0002 with rewards scaled by 10). >= 0."""
    aent_clamp: float = 0.2
    """AEnt: fraction of the vocabulary, the lowest logits, masked out before the entropy is
    taken: int(V * aent_clamp) tokens (AEntConfig's default 0.2; the example uses 0.4).
    In [0, 1)."""

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
        for name in ("clip_high", "kl_coef", "entropy_coef", "kl_cov_coef", "ce_gppo_beta1",
                     "ce_gppo_beta2", "entropic_target", "entropic_kp", "entropic_ki",
                     "aent_coef"):
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
        self._check_entropy_baselines(where)

    def _check_entropy_baselines(self, where: str) -> None:
        require_finite(self.dual_clip, where + "dual_clip", "> 1", self.dual_clip > 1.0)
        low, high = self.erc_low, self.erc_high
        require_finite(low, where + "erc_low", ">= 0", low >= 0.0)
        require(is_finite_number(high) and low < high, where + "erc_high",
                "must be finite and > erc_low", (low, high))
        p = self.entropic_high_prob
        require_finite(p, where + "entropic_high_prob", "in (0, 1)", 0.0 < p < 1.0)
        c = self.aent_clamp
        require_finite(c, where + "aent_clamp", "in [0, 1)", 0.0 <= c < 1.0)
