"""The PAEC loss term: masked top-p entropy held above a floor by a one-sided squared hinge.

    H_bar = sum_t m_t H^p_t / (sum_t m_t + eps)        masked mean entropy (with gradient)
    L_pen = max(0, H_low - H_bar)^2                      zero value and gradient above the floor
    term  = beta * L_pen - beta_H * H_bar                (beta_H: optional bonus, default 0)

H_bar is a ratio over the whole optimisation batch, but gradients are accumulated one
micro-batch at a time. The hinge's slope is therefore evaluated once, at the batch's H_bar
from the detached feature pass (`PAECBatch`), and each micro-batch contributes

    beta * (L_pen * w_mb + dL_pen/dH_bar * (S_mb - sg(S_mb)) / D) - beta_H * S_mb / D

with S_mb = sum_{t in mb} m_t H^p_t, D = sum_t m_t + eps and w_mb the micro-batch's share of
sum_t m_t. Summed over micro-batches, value and gradient equal the whole-batch term at the
parameters of the feature pass (exact for the first update epoch; later epochs keep the
step's slope, as PPO keeps the step's old log-probs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from paec.calibration.anchor import AnchorState
from paec.calibration.features import TokenFeatures
from paec.calibration.mask import PositionMask, position_mask
from paec.config.calibration import PAECConfig


def masked_mean_entropy(top_p_entropy: Tensor, weights: Tensor, eps: float = 1e-8) -> Tensor:
    """H_bar = sum(m H^p) / (sum(m) + eps) over (N,) tensors -> ()."""
    return (weights * top_p_entropy).sum() / (weights.sum() + eps)


def lower_bound_penalty(masked_entropy: Tensor, floor: float) -> Tensor:
    """L_pen = max(0, floor - H_bar)^2: one-sided squared hinge."""
    return torch.relu(floor - masked_entropy) ** 2


@dataclass(frozen=True)
class PAECBatch:
    """PAEC's view of one optimisation batch: detached features, the global mask, the floor
    and H_bar, computed once before the update; `loss` then serves each micro-batch."""

    features: TokenFeatures
    mask: PositionMask
    valid: Tensor  # (N,) bool
    masked_entropy: float | None  # H_bar of the batch, detached; None when sum_t m_t = 0
    mask_total: float  # sum_t m_t over the batch, read once (a host sync on a GPU)
    floor: float | None  # H_low, None while the anchor warms up
    anchor: float | None  # H_0
    cfg: PAECConfig

    @staticmethod
    def build(
        features: TokenFeatures, anchor: AnchorState, cfg: PAECConfig,
        valid: Tensor | None = None,
    ) -> PAECBatch:
        """Mask and H_bar of the whole batch from its features (N,); `valid` (N,) bool."""
        mask = position_mask(features, cfg, valid)
        if valid is None:
            valid = torch.ones(len(features), dtype=torch.bool, device=mask.weights.device)
        total = float(mask.total)
        # No position can decide (every nucleus is one token): H_bar is undefined, not 0. The
        # term then has nothing to act on and the anchor does not observe the step.
        h_bar = (float(masked_mean_entropy(features.top_p_entropy, mask.weights, cfg.eps))
                 if total > 0 else None)
        return PAECBatch(features, mask, valid, h_bar, total, anchor.floor, anchor.anchor, cfg)

    @property
    def needs_gradient(self) -> bool:
        """Whether the term has a gradient this step. The hinge's slope is fixed at the
        batch's detached H_bar, so above the floor (or while the anchor warms up) and without
        a bonus the term is a constant 0: the trainer then skips the differentiable H^p, a
        pass over every nucleus's logits forward and backward."""
        if self.masked_entropy is None:
            return False
        hinge = (self.floor is not None and self.cfg.penalty_weight > 0
                 and self.floor > self.masked_entropy)
        return hinge or self.cfg.entropy_bonus != 0

    @property
    def penalty(self) -> float:
        """L_pen at the batch's H_bar (0 while warming up, and with no position weighted)."""
        if self.floor is None or self.masked_entropy is None:
            return 0.0
        return max(0.0, self.floor - self.masked_entropy) ** 2

    def loss(self, top_p_entropy: Tensor, index: Tensor | slice) -> Tensor:
        """This micro-batch's share of the PAEC term: `top_p_entropy` (n,) with gradient (from
        `features.top_p_entropy`) at positions `index` of the batch. Sums to the batch term."""
        cfg = self.cfg
        weights = self.mask.weights[index]  # (n,)
        denom = self.mask_total + cfg.eps
        s_mb = (weights * top_p_entropy).sum()  # ()
        term = -cfg.entropy_bonus * s_mb / denom  # ()
        if self.floor is not None and self.masked_entropy is not None and cfg.penalty_weight > 0:
            slope = -2.0 * max(0.0, self.floor - self.masked_entropy)  # dL_pen / dH_bar
            share = float(weights.sum()) / self.mask_total if self.mask_total > 0 else 0.0
            term = term + cfg.penalty_weight * (
                self.penalty * share + slope * (s_mb - s_mb.detach()) / denom
            )
        return term

    def metrics(self) -> dict[str, float]:
        """Batch statistics, namespaced as in docs/metrics.md."""
        valid = self.valid
        n_valid = max(int(valid.sum()), 1)
        weights = self.mask.weights[valid]  # (n_valid,)
        f = self.features.select(valid)
        out = {
            "entropy": float(f.entropy.sum()) / n_valid,
            "entropy/top_p": float(f.top_p_entropy.sum()) / n_valid,
            "paec/penalty": self.penalty,
            "paec/mask_mean": float(weights.sum()) / n_valid,
            "paec/decision_frac": float(self.mask.candidates[valid].sum()) / n_valid,
            "paec/mask_frac_above_half": float((weights > 0.5).sum()) / n_valid,
            "paec/score_threshold": float(self.mask.threshold),
            "paec/competition_mean": float(self.mask.competition[valid].sum()) / n_valid,
            "paec/nucleus_size_mean": float(f.nucleus_size.sum()) / n_valid,
            "paec/active": float(self.floor is not None),
        }
        if self.masked_entropy is not None:  # undefined when no position is weighted
            out["entropy/masked"] = self.masked_entropy
        if self.anchor is not None and self.floor is not None:
            out["paec/anchor"] = self.anchor
            out["paec/floor"] = self.floor
        return out
