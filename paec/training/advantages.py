"""Group-normalised advantages of GRPO: each completion against the other samples of its prompt.

    A_i = (R_i - mean_G R) / (std_G R + eps)      or   R_i - mean_G R   (normalize_std=False,
                                                                       Dr. GRPO)
A group whose rewards are all equal has no signal: its advantages are 0 and it is reported,
so that the trainer can drop it from the optimisation batch.
"""

from __future__ import annotations

import torch
from torch import Tensor


def group_advantages(rewards: Tensor, group_size: int, *, normalize_std: bool = True,
                     eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """(advantages (B,), zero-variance groups (P,) bool) for rewards (B,) with B = P * G,
    rows grouped by prompt. std is the unbiased sample std (1 for a group of one)."""
    if rewards.dim() != 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"rewards must be (P * {group_size},), got {tuple(rewards.shape)}")
    grouped = rewards.view(-1, group_size).double()  # (P, G)
    centred = grouped - grouped.mean(-1, keepdim=True)  # (P, G)
    flat = (grouped == grouped[:, :1]).all(-1)  # (P,) every reward equal
    if normalize_std and group_size > 1:
        centred = centred / (grouped.std(-1, keepdim=True) + eps)  # (P, G)
    centred = torch.where(flat[:, None], 0.0, centred)  # (P, G) exact zeros, no rounding noise
    return centred.view(-1).to(rewards.dtype), flat
