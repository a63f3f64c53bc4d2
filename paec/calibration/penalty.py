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
from typing import TypeVar

import torch
from torch import Tensor

from paec.calibration.anchor import AnchorState
from paec.calibration.features import TokenFeatures
from paec.calibration.mask import PositionMask, position_mask
from paec.config.calibration import PAECConfig


def masked_mean_entropy(top_p_entropy: Tensor, weights: Tensor, eps: float = 1e-8) -> Tensor:
    """H_bar = sum(m H^p) / (sum(m) + eps) over (N,) tensors -> ()."""
    return (weights * top_p_entropy).sum() / (weights.sum() + eps)


Scalar = TypeVar("Scalar", Tensor, float)


def lower_bound_penalty(masked_entropy: Scalar, floor: float) -> Scalar:
    """L_pen = max(0, floor - H_bar)^2: the one-sided squared hinge, on a tensor (with its
    gradient: 0 at and above the floor) or on a float. The only place the hinge is written:
    `PAECBatch` takes its value and its slope from here (`hinge_at`)."""
    gap = floor - masked_entropy  # () or float
    # gap * 1[gap > 0] rather than relu: the same expression for tensors and floats.
    return (gap * (gap > 0)) ** 2  # () or float


def hinge_at(masked_entropy: float | None, floor: float | None) -> tuple[float, float]:
    """(L_pen, dL_pen/dH_bar) of `lower_bound_penalty` at a detached H_bar: the value on the
    float, the slope by autograd on one float64 scalar. (0, 0) while the anchor warms up
    (`floor` None) or when H_bar is undefined (`masked_entropy` None)."""
    if floor is None or masked_entropy is None:
        return 0.0, 0.0
    # Also under no_grad or inference_mode: the slope is one scalar's derivative.
    with torch.inference_mode(False), torch.enable_grad():
        h_bar = torch.tensor(masked_entropy, dtype=torch.float64, requires_grad=True)  # ()
        (slope,) = torch.autograd.grad(lower_bound_penalty(h_bar, floor), h_bar)  # ()
    # The value on the float itself: CPython's ** and torch's square can round x^2 apart in
    # the last bit, and `paec/penalty` has always been logged from the float.
    return lower_bound_penalty(masked_entropy, floor), float(slope)


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
    penalty: float  # L_pen at the batch's H_bar (0 while warming up or with H_bar undefined)
    slope: float  # dL_pen/dH_bar there, the hinge's slope every micro-batch uses
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
        penalty, slope = hinge_at(h_bar, anchor.floor)
        return PAECBatch(features, mask, valid, h_bar, total, anchor.floor, anchor.anchor,
                         penalty, slope, cfg)

    @property
    def needs_gradient(self) -> bool:
        """Whether the term has a gradient this step. The hinge's slope is fixed at the
        batch's detached H_bar, so above the floor (or while the anchor warms up) and without
        a bonus the term is a constant 0: the trainer then skips the differentiable H^p, a
        pass over every nucleus's logits forward and backward."""
        if self.masked_entropy is None:
            return False
        hinge = self.cfg.penalty_weight > 0 and self.slope != 0
        return hinge or self.cfg.entropy_bonus != 0

    def loss(self, top_p_entropy: Tensor | None, index: Tensor | slice
             ) -> tuple[Tensor, dict[str, Tensor]]:
        """This micro-batch's share of the PAEC term and its metric `loss/paec` (detached):
        `top_p_entropy` (n,) with gradient (from `features.top_p_entropy`) at positions
        `index` of the batch. Sums to the batch term. `top_p_entropy` None: the caller
        skipped the differentiable H^p because the term has no gradient this step
        (`needs_gradient`); the term is then exactly 0."""
        cfg = self.cfg
        if top_p_entropy is None:
            zero = torch.zeros((), device=self.mask.weights.device)  # ()
            return zero, {"loss/paec": zero}
        weights = self.mask.weights[index]  # (n,)
        denom = self.mask_total + cfg.eps
        s_mb = (weights * top_p_entropy).sum()  # ()
        term = -cfg.entropy_bonus * s_mb / denom  # ()
        if self.floor is not None and self.masked_entropy is not None and cfg.penalty_weight > 0:
            share = float(weights.sum()) / self.mask_total if self.mask_total > 0 else 0.0
            term = term + cfg.penalty_weight * (
                self.penalty * share + self.slope * (s_mb - s_mb.detach()) / denom
            )  # ()
        return term, {"loss/paec": term.detach()}

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
