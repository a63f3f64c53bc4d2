"""The PAEC position mask: which token positions are decision-sensitive.

    Hhat_t = H^p_t / log|N_t|  (0 when |N_t| = 1)      or H^p_t   (cfg.normalization)
    c_t    = exp(-(log p1 - log p2) / tau_c)            top-two competition, in [0, 1]
    s_t    = lam * Hhat_t + (1 - lam) * c_t             position score
    d_t    = r_t * 1[|N_t| >= 2]                        can decide (cfg.mask_scope = decision;
                                                        d_t = r_t with scope = all)
    q      = rho-quantile of s over {t : d_t} of the whole optimisation batch
    m_t    = sigmoid((s_t - q) / T_m) * d_t             soft mask   (or 1[s_t >= q] * d_t, hard)

A position whose top-p nucleus is one token makes no decision: its H^p is 0 whatever the
parameters, so it can neither raise H_bar nor be raised by the penalty. Over every valid
position (scope `all`), such positions fill the quantile once they are more than rho of the
batch, q drops to their common score ~ 0 and each of them gets m ~ 0.5, which turns H_bar into
a measure of how many easy tokens the batch has (docs/method.md has the numbers).

Everything here is detached: the mask selects positions, it never carries gradient. The
quantile is taken once over the whole optimisation batch (all micro-batches), with padding
excluded, the two bugs TRL shipped (#3833, #3709).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from paec.calibration.features import TokenFeatures
from paec.calibration.kernels import quantile_threshold
from paec.config.calibration import EntropyNormalization, MaskMode, MaskScope, PAECConfig


@dataclass(frozen=True)
class PositionMask:
    """The mask of one optimisation batch and the statistics that go with it (detached)."""

    weights: Tensor  # (N,) m_t in [0, 1], 0 where d_t is false
    scores: Tensor  # (N,) s_t
    competition: Tensor  # (N,) c_t
    threshold: Tensor  # () q, +inf when no position can decide
    candidates: Tensor  # (N,) bool d_t: the positions the quantile ranges over

    @property
    def total(self) -> Tensor:
        """sum_t m_t over the batch: the normaliser of the masked mean entropy."""
        return self.weights.sum()


def competition(top2_gap: Tensor, temperature: float) -> Tensor:
    """c = exp(-gap / tau_c) = (p2 / p1)^(1 / tau_c): 1 for a tie, -> 0 for a clear winner."""
    return torch.exp(-top2_gap / temperature)  # (N,)


def normalized_top_p_entropy(
    top_p_entropy: Tensor, nucleus_size: Tensor, mode: EntropyNormalization
) -> Tensor:
    """Hhat: H^p / log|N| in [0, 1] (0 for a one-token nucleus), or H^p unchanged."""
    if mode is EntropyNormalization.NONE:
        return top_p_entropy
    log_n = nucleus_size.to(top_p_entropy.dtype).log()  # (N,)
    return torch.where(nucleus_size > 1, top_p_entropy / log_n.clamp_min(math.log(2)), 0.0)


def position_score(features: TokenFeatures, cfg: PAECConfig) -> tuple[Tensor, Tensor]:
    """s_t = lam * Hhat_t + (1 - lam) * c_t for every position: (scores (N,), c (N,))."""
    hhat = normalized_top_p_entropy(features.top_p_entropy, features.nucleus_size,
                                    cfg.normalization)  # (N,)
    comp = competition(features.top2_gap, cfg.competition_temperature)  # (N,)
    return cfg.score_weight * hhat + (1.0 - cfg.score_weight) * comp, comp


def mask_candidates(features: TokenFeatures, valid: Tensor, scope: MaskScope) -> Tensor:
    """d_t (N,) bool: the valid positions that the quantile ranges over and that may be
    weighted: those with a nucleus of two or more tokens (scope `decision`), or all."""
    if scope is MaskScope.ALL:
        return valid
    return valid & (features.nucleus_size > 1)  # (N,)


def mask_weights(scores: Tensor, threshold: Tensor, candidates: Tensor,
                 cfg: PAECConfig) -> Tensor:
    """m_t from scores (N,), the batch threshold () and the candidate positions (N,) bool."""
    if cfg.mask_mode is MaskMode.HARD:
        m = (scores >= threshold).to(scores.dtype)  # (N,)
    else:
        m = torch.sigmoid((scores - threshold) / cfg.mask_temperature)  # (N,)
    return m * candidates.to(scores.dtype)


def position_mask(
    features: TokenFeatures, cfg: PAECConfig, valid: Tensor | None = None
) -> PositionMask:
    """The detached mask of a whole optimisation batch: `features` of all its positions (N,),
    `valid` (N,) bool (None: all valid). Split the result per micro-batch afterwards."""
    with torch.no_grad():
        if valid is None:
            valid = torch.ones(len(features), dtype=torch.bool,
                               device=features.entropy.device)  # (N,)
        scores, comp = position_score(features, cfg)  # (N,), (N,)
        candidates = mask_candidates(features, valid, cfg.mask_scope)  # (N,)
        if not bool(candidates.any()):  # nothing to select: no threshold, no weight, no NaN
            threshold = torch.tensor(torch.inf, device=scores.device)  # ()
        else:
            threshold = quantile_threshold(scores, candidates, cfg.quantile)  # ()
        weights = mask_weights(scores, threshold, candidates, cfg)  # (N,)
    return PositionMask(weights, scores, comp, threshold, candidates)
