"""The PAEC position mask: which token positions are decision-sensitive.

    Hhat_t = H^p_t / log|N_t|  (0 when |N_t| = 1)      or H^p_t   (cfg.normalization)
    c_t    = exp(-(log p1 - log p2) / tau_c)            top-two competition, in [0, 1]
    s_t    = lam * Hhat_t + (1 - lam) * c_t             position score
    q      = rho-quantile of s over the valid tokens of the whole optimisation batch
    m_t    = sigmoid((s_t - q) / T_m) * r_t             soft mask   (or 1[s_t >= q] * r_t, hard)

Everything here is detached: the mask selects positions, it never carries gradient. The
quantile is taken once over the whole optimisation batch (all micro-batches), with padding
excluded, the two bugs TRL shipped (#3833, #3709).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from paec.config import EntropyNormalization, MaskMode, PAECConfig
from paec.features import TokenFeatures
from paec.losses import quantile_threshold


@dataclass(frozen=True)
class PositionMask:
    """The mask of one optimisation batch and the statistics that go with it (detached)."""

    weights: Tensor  # (N,) m_t in [0, 1], 0 at invalid positions
    scores: Tensor  # (N,) s_t
    competition: Tensor  # (N,) c_t
    threshold: Tensor  # () q

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


def mask_weights(scores: Tensor, threshold: Tensor, valid: Tensor, cfg: PAECConfig) -> Tensor:
    """m_t from scores (N,), the batch threshold () and the validity mask (N,)."""
    if cfg.mask_mode is MaskMode.HARD:
        m = (scores >= threshold).to(scores.dtype)  # (N,)
    else:
        m = torch.sigmoid((scores - threshold) / cfg.mask_temperature)  # (N,)
    return m * valid.to(scores.dtype)


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
        if not bool(valid.any()):  # nothing to select: no threshold, no weight, no NaN
            threshold = torch.tensor(torch.inf, device=scores.device)  # ()
        else:
            threshold = quantile_threshold(scores, valid, cfg.quantile)  # ()
        weights = mask_weights(scores, threshold, valid, cfg)  # (N,)
    return PositionMask(weights, scores, comp, threshold)
