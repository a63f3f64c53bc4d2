"""paec: Position-Aware Entropy Calibration for RLVR, as a PyTorch library.

The math is pure tensor functions (features, mask, penalty, losses); nothing here imports the
service (api/, worker/, store/). See docs/metrics.md for every formula.

The names below load lazily (PEP 562), so that the torch-free modules (`paec.grading.graders`,
`paec.data`, `paec.config.training`) can be imported without torch: the service validates
datasets, graders and hyperparameters with the very code the trainer runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from paec.calibration.anchor import AnchorState
    from paec.calibration.features import TokenFeatures, token_features
    from paec.calibration.mask import PositionMask, position_mask, position_score
    from paec.calibration.penalty import PAECBatch, lower_bound_penalty, masked_mean_entropy
    from paec.calibration.scores import TokenScores, entropy, token_scores, top_p_entropy
    from paec.config.calibration import EntropyNormalization, MaskMode, MaskScope, PAECConfig

_HOME = {
    "AnchorState": "paec.calibration.anchor",
    "EntropyNormalization": "paec.config.calibration",
    "MaskMode": "paec.config.calibration",
    "MaskScope": "paec.config.calibration",
    "PAECConfig": "paec.config.calibration",
    "PAECBatch": "paec.calibration.penalty",
    "PositionMask": "paec.calibration.mask",
    "TokenFeatures": "paec.calibration.features",
    "TokenScores": "paec.calibration.scores",
    "entropy": "paec.calibration.scores",
    "lower_bound_penalty": "paec.calibration.penalty",
    "masked_mean_entropy": "paec.calibration.penalty",
    "position_mask": "paec.calibration.mask",
    "position_score": "paec.calibration.mask",
    "token_features": "paec.calibration.features",
    "token_scores": "paec.calibration.scores",
    "top_p_entropy": "paec.calibration.scores",
}

__all__ = [
    "AnchorState",
    "EntropyNormalization",
    "MaskMode",
    "MaskScope",
    "PAECBatch",
    "PAECConfig",
    "PositionMask",
    "TokenFeatures",
    "TokenScores",
    "entropy",
    "lower_bound_penalty",
    "masked_mean_entropy",
    "position_mask",
    "position_score",
    "token_features",
    "token_scores",
    "top_p_entropy",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'paec' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
