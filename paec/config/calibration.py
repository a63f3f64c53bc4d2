"""PAEC hyperparameters: every choice the paper leaves open, named and documented.

Defaults follow docs/method.md: values marked [reported] there come from
secondary summaries of arXiv 2606.08543; values marked [ours] are this project's defaults
where nothing is known. The docstring of each field says which.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from paec.config.checks import parse_enum, require_finite, require_int

MAX_ANCHOR_STEPS = 1_000_000
MAX_TOP_K = 1 << 20
MAX_CHUNK_SIZE = 1 << 20
"""Upper bounds of PAECConfig's integers (a vocabulary, a step count and a batch of logits
rows are all far below them)."""


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


class MaskScope(StrEnum):
    """Which positions the mask's quantile ranges over, and which can be weighted at all."""

    DECISION = "decision"
    """The positions that can decide: valid, with a top-p nucleus of two or more tokens. q is
    the rho-quantile of their scores and every other position gets m = 0, so the mask picks
    about the top (1 - rho) of the decisions however many near-deterministic positions the
    batch holds (docs/method.md). [ours]"""
    ALL = "all"
    """Every valid position. Once more than rho of the positions
    tie at s ~ 0 (one-token nuclei), q ~ 0 and each of them gets m ~ 0.5: H_bar then measures
    the share of easy tokens, not the entropy at decisions. Kept for comparison."""


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
    """rho: the score threshold is the rho-quantile of s over the candidate positions
    (`mask_scope`) of the whole optimisation batch, so about (1 - rho) of them are selected.
    [reported: rho = 0.8, the top 20% of positions]"""
    mask_temperature: float = 0.05
    """T_m of the soft mask sigmoid((s - q) / T_m). [ours]"""
    mask_mode: MaskMode = MaskMode.SOFT
    """Soft (sigmoid) or hard (indicator) position mask. [ours: soft]"""
    mask_scope: MaskScope = MaskScope.DECISION
    """Positions the quantile ranges over: those with a nucleus of two or more tokens
    (`decision`), or every valid one (`all`, the diluting form). [ours: decision]"""
    anchor_steps: int = 4
    """K: the anchor H_0 is the mean masked entropy over the first K training steps (rollout
    batches that reached an update, each observed once, whatever `update_epochs` is); the
    penalty is off during them. [reported: K = 4 steps]"""
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
        object.__setattr__(self, "normalization", parse_enum(
            EntropyNormalization, self.normalization, "PAECConfig.normalization"))
        object.__setattr__(self, "mask_mode",
                           parse_enum(MaskMode, self.mask_mode, "PAECConfig.mask_mode"))
        object.__setattr__(self, "mask_scope",
                           parse_enum(MaskScope, self.mask_scope, "PAECConfig.mask_scope"))
        for name, ok, rule in (
            ("top_p", 0.0 < self.top_p <= 1.0, "in (0, 1]"),
            ("competition_temperature", self.competition_temperature > 0, "> 0"),
            ("score_weight", 0.0 <= self.score_weight <= 1.0, "in [0, 1]"),
            ("quantile", 0.0 <= self.quantile <= 1.0, "in [0, 1]"),
            ("mask_temperature", self.mask_temperature > 0, "> 0"),
            ("floor_ratio", 0.0 <= self.floor_ratio <= 1.0, "in [0, 1]"),
            ("penalty_weight", self.penalty_weight >= 0, ">= 0"),
            ("entropy_bonus", self.entropy_bonus >= 0, ">= 0"),
            ("eps", 0 < self.eps < 1, "in (0, 1)"),
        ):
            require_finite(getattr(self, name), f"PAECConfig.{name}", rule, ok)
        # Integers are bounded above too: K past any run's steps, and top_k /
        # chunk_size past any vocabulary or batch, only ever cost memory.
        require_int(self.anchor_steps, "PAECConfig.anchor_steps", 1, MAX_ANCHOR_STEPS)
        require_int(self.top_k, "PAECConfig.top_k", 2, MAX_TOP_K)
        if self.chunk_size is not None:
            require_int(self.chunk_size, "PAECConfig.chunk_size", 1, MAX_CHUNK_SIZE)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (enums as strings)."""
        return {k: (str(v) if isinstance(v, StrEnum) else v) for k, v in asdict(self).items()}
