"""paec: Position-Aware Entropy Calibration for RLVR, as a PyTorch library.

The math is pure tensor functions (features, mask, penalty, losses); nothing here imports the
service (api/, worker/, store/). See docs/metrics.md for every formula.

The names below load lazily (PEP 562), so that the torch-free modules (`paec.graders`,
`paec.data`, `paec.train_config`) can be imported without torch: the service validates
datasets, graders and hyperparameters with the very code the trainer runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from paec.anchor import AnchorState
    from paec.config import EntropyNormalization, MaskMode, MaskScope, PAECConfig
    from paec.features import TokenFeatures, token_features
    from paec.mask import PositionMask, position_mask, position_score
    from paec.penalty import PAECBatch, lower_bound_penalty, masked_mean_entropy
    from paec.scores import TokenScores, entropy, token_scores, top_p_entropy

_HOME = {
    "AnchorState": "paec.anchor",
    "EntropyNormalization": "paec.config",
    "MaskMode": "paec.config",
    "MaskScope": "paec.config",
    "PAECConfig": "paec.config",
    "PAECBatch": "paec.penalty",
    "PositionMask": "paec.mask",
    "TokenFeatures": "paec.features",
    "TokenScores": "paec.scores",
    "entropy": "paec.scores",
    "lower_bound_penalty": "paec.penalty",
    "masked_mean_entropy": "paec.penalty",
    "position_mask": "paec.mask",
    "position_score": "paec.mask",
    "token_features": "paec.features",
    "token_scores": "paec.scores",
    "top_p_entropy": "paec.scores",
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
