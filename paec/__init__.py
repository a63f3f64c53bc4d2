"""paec: Position-Aware Entropy Calibration for RLVR, as a PyTorch library.

The math is pure tensor functions (features, mask, penalty, losses); nothing here imports the
service (api/, worker/, store/). See docs/metrics.md for every formula.
"""

from paec.anchor import AnchorState
from paec.config import EntropyNormalization, MaskMode, PAECConfig
from paec.features import TokenFeatures, entropy, token_features, top_p_entropy
from paec.mask import PositionMask, position_mask, position_score
from paec.penalty import PAECBatch, lower_bound_penalty, masked_mean_entropy

__all__ = [
    "AnchorState",
    "EntropyNormalization",
    "MaskMode",
    "PAECBatch",
    "PAECConfig",
    "PositionMask",
    "TokenFeatures",
    "entropy",
    "lower_bound_penalty",
    "masked_mean_entropy",
    "position_mask",
    "position_score",
    "token_features",
    "top_p_entropy",
]

__version__ = "0.1.0"
