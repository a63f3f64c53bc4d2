"""PAEC hyperparameters: every choice the paper leaves open, named and documented.

Defaults follow ../shared/docs/paec-method.md: values marked [reported] there come from
secondary summaries of arXiv 2606.08543; values marked [ours] are this project's defaults
where nothing is known. The docstring of each field says which.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, TypeVar

_E = TypeVar("_E", bound=StrEnum)


class EntropyNormalization(StrEnum):
    """How the top-p entropy is normalised before it enters the position score."""

    LOG_NUCLEUS = "log_nucleus"
    """Hhat = H^p / log|N| (0 when |N| = 1), in [0, 1]: comparable with the competition term."""
    NONE = "none"
    """Hhat = H^p in nats."""


class MaskMode(StrEnum):
    """How the position mask turns scores into weights."""

    SOFT = "soft"
    """m = sigmoid((s - q) / T_m): smooth around the quantile threshold q."""
    HARD = "hard"
    """m = 1[s >= q]."""


@dataclass(frozen=True)
class PAECConfig:
    """Hyperparameters of Position-Aware Entropy Calibration (see docs/metrics.md for formulas)."""

    top_p: float = 0.9
    """Nucleus mass p of the local top-p entropy; the top-1 token is always in it. [ours]"""
    normalization: EntropyNormalization = EntropyNormalization.LOG_NUCLEUS
    """Normalisation of H^p inside the score. [ours]"""
    competition_temperature: float = 1.0
    """tau_c in c = exp(-(log p1 - log p2) / tau_c) = (p2 / p1)^(1 / tau_c). [ours]"""
    score_weight: float = 0.5
    """lambda in s = lambda * Hhat + (1 - lambda) * c; 1 uses entropy only, 0 competition only.
    [reported: a weighted combination; the value is ours]"""
    quantile: float = 0.8
    """rho: the score threshold is the rho-quantile of s over the valid tokens of the whole
    optimisation batch, so about (1 - rho) of positions are selected. [reported]"""
    mask_temperature: float = 0.05
    """T_m of the soft mask sigmoid((s - q) / T_m). [ours]"""
    mask_mode: MaskMode = MaskMode.SOFT
    """Soft (sigmoid) or hard (indicator) position mask. [ours: soft]"""
    anchor_steps: int = 4
    """K: the anchor H_0 is the mean masked entropy over the first K optimiser steps; the
    penalty is off during them. [reported]"""
    floor_ratio: float = 0.8
    """rho_min: the floor is H_low = rho_min * H_0. [ours]"""
    penalty_weight: float = 1.0
    """beta: weight of the squared-hinge penalty max(0, H_low - H_bar)^2. [ours]"""
    entropy_bonus: float = 0.0
    """beta_H: optional bonus -beta_H * H_bar on the masked entropy; 0 turns it off. [ours]"""
    top_k: int = 64
    """Size of the top-k fast path of the exact top-p computation: rows whose top-k mass
    reaches p are exact from those k values; the rest fall back to larger k, then a sort.
    Affects speed only, never the result."""
    chunk_size: int | None = None
    """Rows of logits processed at once by the feature pass; None picks 32 on the CPU (the
    chunk stays in cache) and 1024 on CUDA. Affects speed and memory only."""
    eps: float = 1e-8
    """Added to the mask total in H_bar = sum(m H^p) / (sum(m) + eps)."""

    def __post_init__(self) -> None:
        # The enums may arrive as plain strings from JSON; normalise them here, in one place.
        object.__setattr__(self, "normalization",
                           _enum(EntropyNormalization, self.normalization, "normalization"))
        object.__setattr__(self, "mask_mode", _enum(MaskMode, self.mask_mode, "mask_mode"))
        _check(0.0 < self.top_p <= 1.0, "top_p", "must be in (0, 1]", self.top_p)
        _check(self.competition_temperature > 0, "competition_temperature", "must be > 0",
               self.competition_temperature)
        _check(0.0 <= self.score_weight <= 1.0, "score_weight", "must be in [0, 1]",
               self.score_weight)
        _check(0.0 <= self.quantile <= 1.0, "quantile", "must be in [0, 1]", self.quantile)
        _check(self.mask_temperature > 0, "mask_temperature", "must be > 0",
               self.mask_temperature)
        _check(self.anchor_steps >= 1, "anchor_steps", "must be >= 1", self.anchor_steps)
        _check(0.0 <= self.floor_ratio <= 1.0, "floor_ratio", "must be in [0, 1]",
               self.floor_ratio)
        _check(self.penalty_weight >= 0, "penalty_weight", "must be >= 0", self.penalty_weight)
        _check(self.entropy_bonus >= 0, "entropy_bonus", "must be >= 0", self.entropy_bonus)
        _check(self.top_k >= 2, "top_k", "must be >= 2", self.top_k)
        _check(self.chunk_size is None or self.chunk_size >= 1, "chunk_size",
               "must be >= 1 or None", self.chunk_size)
        _check(self.eps > 0, "eps", "must be > 0", self.eps)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (enums as strings)."""
        return {k: (str(v) if isinstance(v, StrEnum) else v) for k, v in asdict(self).items()}


def _enum(cls: type[_E], value: object, name: str) -> _E:
    try:
        return cls(str(value))
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise ValueError(f"PAECConfig.{name} must be one of {allowed}, got {value!r}") from None


def _check(ok: bool, name: str, rule: str, value: object) -> None:
    if not ok or (isinstance(value, float) and math.isnan(value)):
        raise ValueError(f"PAECConfig.{name} {rule}, got {value!r}")
